import { expect } from 'vitest';
import { ClosedError, type KVPair, NotSupportedError, type TreeEvent } from '../index.js';
import { type Define, expectKVError, expectPair, format, keys, range, snapshot, text } from './harness.js';

export function watchCases(define: Define): void {
  // ---- watch ----

  define(
    'watch yields the current value first, then each change: same-value puts still yield, delete yields null',
    { rows: ['watch'], requires: 'watch' },
    async (t) => {
      const writer = await t.open();
      await writer.put('w', 'v1');
      const current = await writer.get('w');
      const w = t.watch(t.store, 'w');
      const first = await w.next();
      expectPair(first, 'w', 'v1');
      expect(first?.lastIndex).toBe(current.lastIndex);
      await writer.put('w', 'v2');
      const second = await w.next();
      expectPair(second, 'w', 'v2');
      expect(second?.lastIndex).toBe((await writer.get('w')).lastIndex);
      await writer.put('w', 'v2');
      const same = await w.next();
      expectPair(same, 'w', 'v2');
      expect(same?.lastIndex, 'a same-value put yields a new lastIndex').not.toBe(second?.lastIndex);
      await writer.delete('w');
      expect(await w.next()).toBeNull();
      await writer.put('w/child', 'not the key');
      await writer.put('w', 'v3');
      expectPair(await w.next(), 'w', 'v3');
    },
  );

  define(
    'watch of a missing key yields null first, then its creation (even without a parent)',
    { rows: ['watch'], requires: 'watch' },
    async (t) => {
      const writer = await t.open();
      const w = t.watch(t.store, 'no/parent/key');
      expect(await w.next()).toBeNull();
      await writer.put('no/parent/key', 'born');
      expectPair(await w.next(), 'no/parent/key', 'born');
      const cas = t.watch(t.store, 'cas');
      expect(await cas.next()).toBeNull();
      const created = await writer.atomicPut('cas', 'c1', null);
      expectPair(await cas.next(), 'cas', 'c1');
      await writer.atomicDelete('cas', created);
      expect(await cas.next()).toBeNull();
    },
  );

  define('watch events come in commit order', { rows: ['watch'], requires: 'watch' }, async (t) => {
    const writer = await t.open();
    const w = t.watch(t.store, 'seq');
    expect(await w.next()).toBeNull();
    for (const i of range(20)) await writer.put('seq', String(i));
    // Intermediate states may be merged for a slow consumer; the order may not change and the last state comes.
    const seen: number[] = [];
    while (seen.at(-1) !== 19) {
      const pair = await w.next();
      expect(pair, `watch yielded null in a run of puts (after ${format(seen)})`).not.toBeNull();
      seen.push(Number(text((pair as KVPair).value)));
    }
    for (let i = 1; i < seen.length; i++) {
      expect((seen[i] as number) > (seen[i - 1] as number), `events out of order: ${format(seen)}`).toBe(
        true,
      );
    }
  });

  define(
    'watch ends (done, no error) when its signal aborts, before or during the watch, or the loop breaks',
    { rows: ['watch'], requires: 'watch' },
    async (t) => {
      const before = new AbortController();
      before.abort(new Error('stop before starting'));
      const early = await t.store.watch('ab', { signal: before.signal })[Symbol.asyncIterator]().next();
      expect(early.done, 'a watch whose signal was already aborted ends at once').toBe(true);
      const controller = new AbortController();
      const w = t.watch(t.store, 'ab', controller.signal);
      expect(await w.next()).toBeNull();
      const pending = w.result();
      controller.abort(new Error('stop watching'));
      expect((await pending).done, 'the watch ends after abort').toBe(true);
      // Breaking out of for-await ends it too, and the store keeps working.
      await t.store.put('ab', 'x');
      for await (const pair of t.store.watch('ab')) {
        expectPair(pair, 'ab', 'x');
        break;
      }
      await t.store.put('ab', 'y');
      expectPair(await t.store.get('ab'), 'ab', 'y');
    },
  );

  define(
    'close() ends an active watch (done, no error); watch on a closed store throws ClosedError on first next()',
    { rows: ['watch', 'close'], requires: 'watch' },
    async (t) => {
      const store = await t.open();
      const w = t.watch(store, 'c');
      expect(await w.next()).toBeNull();
      const pending = w.result();
      await store.close();
      expect((await pending).done, 'the watch ends when its store closes').toBe(true);
      const iterator = store.watch('c')[Symbol.asyncIterator]();
      await expectKVError(() => iterator.next(), ClosedError, 'watch on a closed store');
    },
  );

  define(
    'watch throws NotSupportedError when capabilities.watch is false',
    { rows: ['watch'], unsupported: 'watch' },
    async ({ store }) => {
      await expectKVError(() => store.watch('k')[Symbol.asyncIterator]().next(), NotSupportedError, 'watch');
    },
  );

  // ---- watchTree ----

  define(
    'watchTree starts on a missing directory with an empty event, then sees creates at any depth',
    { rows: ['watchTree'], requires: 'watchTree' },
    async (t) => {
      const writer = await t.open();
      const w = t.watchTree(t.store, 'tree');
      expect(await w.next()).toEqual({ pairs: [], changes: [] });
      await writer.put('tree/a', '1');
      const e1 = await w.next();
      expect(keys(e1.pairs)).toEqual(['tree/a']);
      expect(e1.changes.map((c) => c.type)).toEqual(['put']);
      await writer.put('tree/x/y/z', 'deep');
      const e2 = await w.next();
      expect(keys(e2.pairs)).toEqual(['tree/a', 'tree/x/y/z']);
      expect(e2.changes).toHaveLength(1);
      // Neither the directory's own key nor a sibling that merely starts the same is a change.
      await writer.put('tree', 'the dir itself');
      await writer.put('treex/a', 'sibling');
      await writer.put('tree-a', 'sibling');
      await writer.put('tree/b', '2');
      const e3 = await w.next();
      expect(e3.changes.map((c) => (c.type === 'put' ? c.pair.key : c.key))).toEqual(['tree/b']);
      expect(keys(e3.pairs)).toEqual(['tree/a', 'tree/b', 'tree/x/y/z']);
    },
  );

  define(
    'watchTree first event lists every current pair as a put; later events see value changes, same-value puts and deletes',
    { rows: ['watchTree'], requires: 'watchTree' },
    async (t) => {
      const writer = await t.open();
      await writer.put('tree/b/c', '1');
      await writer.put('tree/a', '1');
      const w = t.watchTree(t.store, '/tree/');
      const first = await w.next();
      expect(keys(first.pairs)).toEqual(['tree/a', 'tree/b/c']);
      expect(first.changes.map((c) => c.type)).toEqual(['put', 'put']);
      await writer.put('tree/a', '2');
      const changed = await w.next();
      expect(changed.changes).toHaveLength(1);
      expectPair(changed.changes[0]?.type === 'put' ? changed.changes[0].pair : null, 'tree/a', '2');
      await writer.put('tree/a', '2');
      const same = await w.next();
      expect(same.changes).toHaveLength(1);
      expect(same.changes[0]?.type).toBe('put');
      await writer.delete('tree/b/c');
      const deleted = await w.next();
      expect(deleted.changes).toEqual([{ type: 'delete', key: 'tree/b/c' }]);
      expect(keys(deleted.pairs)).toEqual(['tree/a']);
      await writer.put('tree/z', 'z');
      await w.next();
      await writer.deleteTree('tree');
      const emptied = await w.until((e) => e.pairs.length === 0);
      expect(emptied.at(-1)?.pairs).toEqual([]);
    },
  );

  define(
    'watchTree under a burst of writes: every event is consistent and no listing is older than one already given',
    { rows: ['watchTree'], requires: 'watchTree' },
    async (t) => {
      const writer = await t.open();
      await writer.put('burst/k0', 'init');
      const w = t.watchTree(t.store, 'burst');
      const states: Record<string, string>[] = [];
      const state: Record<string, string> = { 'burst/k0': 'init' };
      states.push({ ...state });
      expect(snapshot((await w.next()).pairs)).toEqual(states[0]);
      // Read while writing, so intermediate listings reach the reader instead of being merged away.
      const end = 'burst/zz-end';
      const reading = w.until((e) => e.pairs.some((p) => p.key === end));
      reading.catch(() => {});
      for (const i of range(30)) {
        const key = `burst/k${i % 5}`;
        if (i % 7 === 6) {
          await writer.delete(key);
          delete state[key];
        } else if (i % 4 === 3 && state[key] !== undefined) {
          await writer.put(key, state[key]);
        } else if (i % 6 === 5) {
          await writer.put(`burst/deep/${i}/x`, String(i));
          state[`burst/deep/${i}/x`] = String(i);
        } else {
          await writer.put(key, `v${i}`);
          state[key] = `v${i}`;
        }
        states.push({ ...state });
      }
      await writer.put(end, 'end');
      state[end] = 'end';
      states.push({ ...state });
      const events = await reading;
      expect(
        same((events.at(-1) as TreeEvent).pairs, await writer.list('burst')),
        'the last event is the final listing',
      ).toBe(true);
      let position = 0;
      for (const event of events) {
        const seen = snapshot(event.pairs);
        let found = -1;
        for (let i = position; i < states.length; i++) {
          if (equalRecords(states[i] as Record<string, string>, seen)) {
            found = i;
            break;
          }
        }
        expect(
          found,
          `watchTree gave a listing that is not a state at or after the last one seen: ${format(seen)}`,
        ).not.toBe(-1);
        position = found;
      }
    },
  );

  define(
    'watchTree ends on abort (before or during it) and on close(); on a closed store it throws ClosedError on first next()',
    { rows: ['watchTree', 'close'], requires: 'watchTree' },
    async (t) => {
      const before = new AbortController();
      before.abort(new Error('stop before starting'));
      const early = await t.store.watchTree('d', { signal: before.signal })[Symbol.asyncIterator]().next();
      expect(early.done, 'a tree watch whose signal was already aborted ends at once').toBe(true);
      const controller = new AbortController();
      const aborted = t.watchTree(t.store, 'd', controller.signal);
      await aborted.next();
      const pendingAbort = aborted.result();
      controller.abort(new Error('stop'));
      expect((await pendingAbort).done).toBe(true);
      const store = await t.open();
      const closing = t.watchTree(store, '');
      await closing.next();
      const pendingClose = closing.result();
      await store.close();
      expect((await pendingClose).done).toBe(true);
      await expectKVError(
        () => store.watchTree('d')[Symbol.asyncIterator]().next(),
        ClosedError,
        'watchTree on a closed store',
      );
      for await (const event of t.store.watchTree('')) {
        expect(event.pairs).toEqual([]);
        break;
      }
    },
  );

  define(
    'watchTree throws NotSupportedError when capabilities.watchTree is false',
    { rows: ['watchTree'], unsupported: 'watchTree' },
    async ({ store }) => {
      await expectKVError(
        () => store.watchTree('d')[Symbol.asyncIterator]().next(),
        NotSupportedError,
        'watchTree',
      );
    },
  );
}

function same(a: readonly KVPair[], b: readonly KVPair[]): boolean {
  return (
    a.length === b.length &&
    a.every((p, i) => {
      const q = b[i] as KVPair;
      return p.key === q.key && p.lastIndex === q.lastIndex && text(p.value) === text(q.value);
    })
  );
}

function equalRecords(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}
