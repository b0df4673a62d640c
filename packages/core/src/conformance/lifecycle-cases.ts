import { expect } from 'vitest';
import { ClosedError, KeyNotFoundError, type KVPair, NotSupportedError } from '../index.js';
import {
  type Define,
  describeError,
  expectAbort,
  expectKVError,
  expectPair,
  keys,
  settle,
  text,
} from './harness.js';

export function lifecycleCases(define: Define): void {
  define(
    'two stores with different prefixes never see each other’s keys',
    { rows: ['get', 'put', 'list', 'exists', 'delete', 'deleteTree'] },
    async (t) => {
      // "app" and "apple": one prefix is a string prefix of the other.
      const app = await t.open('app');
      const apple = await t.open('apple');
      for (const [store, name] of [
        [app, 'app'],
        [apple, 'apple'],
      ] as const) {
        await store.put('k', name);
        await store.put('dir/x', name);
      }
      await apple.put('only-apple', 'x');
      expectPair(await app.get('k'), 'k', 'app');
      expectPair(await apple.get('k'), 'k', 'apple');
      expect(keys(await app.list(''))).toEqual(['dir/x', 'k']);
      expect(keys(await apple.list(''))).toEqual(['dir/x', 'k', 'only-apple']);
      expect(await app.exists('only-apple')).toBe(false);
      await expectKVError(() => app.get('only-apple'), KeyNotFoundError, 'a key of another prefix');
      await app.deleteTree('dir');
      await app.delete('k');
      expect(keys(await apple.list(''))).toEqual(['dir/x', 'k', 'only-apple']);
      const tree = t.caps.watchTree ? t.watchTree(app, '') : undefined;
      if (tree) {
        t.tag('watchTree');
        expect((await tree.next()).pairs).toEqual([]);
      }
      await apple.put('dir/y', 'apple');
      await app.put('mine', 'app');
      if (tree)
        expect(keys((await tree.next()).pairs), 'watchTree sees only its own prefix').toEqual(['mine']);
      // A store on the parent prefix sees both, under their prefixes.
      expect(keys(await t.store.list(''))).toEqual([
        'app/mine',
        'apple/dir/x',
        'apple/dir/y',
        'apple/k',
        'apple/only-apple',
      ]);
    },
  );

  define('calls after close() are ClosedError; close() twice is fine', { rows: ['close'] }, async (t) => {
    const store = await t.open();
    await store.put('k', 'v');
    const pair = await store.get('k');
    await store.close();
    await store.close();
    await store[Symbol.asyncDispose]();
    const calls: [string, () => unknown][] = [
      ['get', () => store.get('k')],
      ['tryGet', () => store.tryGet('k')],
      ['put', () => store.put('k', 'v')],
      ['delete', () => store.delete('k')],
      ['exists', () => store.exists('k')],
      ['list', () => store.list('')],
      ['deleteTree', () => store.deleteTree('d')],
      ['atomicPut', () => store.atomicPut('k', 'v', pair)],
      ['atomicDelete', () => store.atomicDelete('k', pair)],
    ];
    if (t.caps.lock) {
      calls.push(['lock', () => store.newLock('l').lock()], ['tryLock', () => store.newLock('l').tryLock()]);
    }
    if (t.caps.watch) calls.push(['watch', () => store.watch('k')[Symbol.asyncIterator]().next()]);
    if (t.caps.watchTree) calls.push(['watchTree', () => store.watchTree('')[Symbol.asyncIterator]().next()]);
    for (const [name, call] of calls) await expectKVError(call, ClosedError, `${name} after close()`);
    expectPair(await t.store.get('k'), 'k', 'v');
  });

  define(
    'an aborted signal rejects with an AbortError whose cause is signal.reason, and changes nothing',
    { rows: ['put', 'get', 'delete', 'exists', 'list', 'deleteTree', 'atomicPut', 'atomicDelete'] },
    async (t) => {
      const { store } = t;
      await store.put('k', 'before');
      await store.put('d/x', 'x');
      const pair = await store.get('k');
      const reason = new Error('the caller gave up');
      const controller = new AbortController();
      controller.abort(reason);
      const signal = controller.signal;
      const calls: [string, () => unknown][] = [
        ['put', () => store.put('k', 'after', { signal })],
        ['put new', () => store.put('new', 'x', { signal })],
        ['get', () => store.get('k', { signal })],
        ['tryGet', () => store.tryGet('missing', { signal })],
        ['delete', () => store.delete('k', { signal })],
        ['exists', () => store.exists('k', { signal })],
        ['list', () => store.list('', { signal })],
        ['deleteTree', () => store.deleteTree('d', { signal })],
        ['atomicPut', () => store.atomicPut('k', 'after', pair, { signal })],
        ['atomicPut create', () => store.atomicPut('new', 'x', null, { signal })],
        ['atomicDelete', () => store.atomicDelete('k', pair, { signal })],
      ];
      for (const [name, call] of calls) await expectAbort(call, reason, name);
      expectPair(await store.get('k'), 'k', 'before');
      expect((await store.get('k')).lastIndex).toBe(pair.lastIndex);
      expect(keys(await store.list(''))).toEqual(['d/x', 'k']);
      // A reason that is not an Error is passed through as the cause too.
      const other = new AbortController();
      other.abort('just a string');
      await expectAbort(
        () => store.get('k', { signal: other.signal }),
        'just a string',
        'get with a string reason',
      );
    },
  );

  define(
    'an abort during a write: AbortError means nothing was applied; otherwise the call settles with its real outcome',
    { rows: ['put', 'delete', 'deleteTree', 'atomicPut', 'atomicDelete'] },
    async (t) => {
      const { store } = t;
      const isAbort = (error: unknown) => error instanceof Error && error.name === 'AbortError';
      // Aborts land at several points of the request's flight: before the call, at once, after 1-3 ms.
      for (let round = 0; round < 12; round++) {
        const delayMs = (round % 4) - 1;
        const abortSoon = (): AbortSignal => {
          const controller = new AbortController();
          if (delayMs < 0) queueMicrotask(() => controller.abort(new Error('gave up')));
          else setTimeout(() => controller.abort(new Error('gave up')), delayMs);
          return controller.signal;
        };
        const key = `abort/${round}`;
        // atomicPut create-only
        const created = await settle(() => store.atomicPut(key, 'v1', null, { signal: abortSoon() }));
        const afterCreate = await settle(() => store.get(key));
        if (created.ok) {
          expect(afterCreate.ok, `round ${round}: atomicPut resolved, so the key exists`).toBe(true);
        } else {
          expect(isAbort(created.error), `round ${round}: ${describeError(created.error)}`).toBe(true);
          expect(afterCreate.ok, `round ${round}: atomicPut rejected with AbortError but was applied`).toBe(
            false,
          );
          await store.atomicPut(key, 'v1', null); // the retry a user would make must succeed
        }
        // put
        const put = await settle(() => store.put(key, 'v2', { signal: abortSoon() }));
        const value = text((await store.get(key)).value);
        if (put.ok) expect(value).toBe('v2');
        else {
          expect(isAbort(put.error), `round ${round}: ${describeError(put.error)}`).toBe(true);
          expect(value, `round ${round}: put rejected with AbortError but was applied`).toBe('v1');
        }
        // atomicDelete
        const current = await store.get(key);
        const deleted = await settle(() => store.atomicDelete(key, current, { signal: abortSoon() }));
        const still = await store.exists(key);
        if (deleted.ok) expect(still, `round ${round}: atomicDelete resolved`).toBe(false);
        else {
          expect(isAbort(deleted.error), `round ${round}: ${describeError(deleted.error)}`).toBe(true);
          expect(still, `round ${round}: atomicDelete rejected with AbortError but was applied`).toBe(true);
        }
        // delete and deleteTree
        await store.put(`${key}/child`, 'c');
        const tree = await settle(() => store.deleteTree(key, { signal: abortSoon() }));
        const childLeft = await store.exists(`${key}/child`);
        if (tree.ok) expect(childLeft, `round ${round}: deleteTree resolved`).toBe(false);
        else {
          expect(isAbort(tree.error), `round ${round}: ${describeError(tree.error)}`).toBe(true);
          expect(childLeft, `round ${round}: deleteTree rejected with AbortError but was applied`).toBe(true);
        }
        await store.put(key, 'v3');
        const removed = await settle(() => store.delete(key, { signal: abortSoon() }));
        const left = await store.exists(key);
        if (removed.ok) expect(left, `round ${round}: delete resolved`).toBe(false);
        else {
          expect(isAbort(removed.error), `round ${round}: ${describeError(removed.error)}`).toBe(true);
          expect(left, `round ${round}: delete rejected with AbortError but was applied`).toBe(true);
        }
      }
    },
  );

  define(
    'consistent reads see the latest write of another client',
    { rows: ['consistentRead'], requires: 'consistentRead' },
    async (t) => {
      const writer = await t.open();
      for (let i = 0; i < 5; i++) {
        await writer.put('c/k', String(i));
        expect(text((await t.store.get('c/k', { consistent: true })).value)).toBe(String(i));
        expect(await t.store.exists('c/k', { consistent: true })).toBe(true);
        const listed = (await t.store.list('c', { consistent: true })) as KVPair[];
        expect(listed.map((p) => text(p.value))).toEqual([String(i)]);
      }
      await writer.delete('c/k');
      expect(await t.store.exists('c/k', { consistent: true })).toBe(false);
    },
  );

  define(
    'consistent reads throw NotSupportedError when capabilities.consistentRead is false',
    { rows: ['consistentRead'], unsupported: 'consistentRead' },
    async ({ store }) => {
      await store.put('k', 'v');
      await expectKVError(() => store.get('k', { consistent: true }), NotSupportedError, 'get consistent');
      await expectKVError(
        () => store.exists('k', { consistent: true }),
        NotSupportedError,
        'exists consistent',
      );
      await expectKVError(() => store.list('', { consistent: true }), NotSupportedError, 'list consistent');
      expectPair(await store.get('k', { consistent: false }), 'k', 'v');
    },
  );
}
