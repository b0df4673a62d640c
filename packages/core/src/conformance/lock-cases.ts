import { expect } from 'vitest';
import {
  ClosedError,
  KeyNotFoundError,
  type LockLease,
  LockLostError,
  NotSupportedError,
  type Store,
} from '../index.js';
import {
  type Define,
  expectAbort,
  expectIndex,
  expectKVError,
  keys,
  settle,
  sleep,
  text,
  within,
} from './harness.js';

export const LOCK_WORKERS = 4;
export const LOCK_ROUNDS = 25;

/** How long a waiter is watched to make sure it does not get a held lock. */
const STILL_WAITING_MS = 300;

export function lockCases(define: Define): void {
  define(
    'lock, unlock and lock again with the same object; get returns the lock value while held; absent after unlock',
    { rows: ['lock'], requires: 'lock' },
    async (t) => {
      const lock = t.store.newLock('locks/a', { value: 'owner-1', ttl: t.settings.lockTtl });
      expect(lock.key).toBe('locks/a');
      const first = await lock.lock();
      expectIndex(first.fencingToken, 'fencingToken');
      expect(first.lost.aborted).toBe(false);
      expect(text((await t.store.get('locks/a')).value)).toBe('owner-1');
      await lock.unlock();
      expect(first.lost.aborted, 'lost aborts after unlock()').toBe(true);
      expect(
        LockLostError.isInstance(first.lost.reason),
        'after unlock() the reason is not a LockLostError',
      ).toBe(false);
      await expectKVError(() => t.store.get('locks/a'), KeyNotFoundError, 'the lock key after unlock');
      const second = await lock.lock();
      expect(second.fencingToken).toBeGreaterThan(first.fencingToken);
      expect(second.lost.aborted).toBe(false);
      await lock.unlock();
      await lock.unlock();
      const viaTry = await lock.tryLock();
      expect(viaTry, 'tryLock of a free lock').not.toBeNull();
      expect((viaTry as LockLease).fencingToken).toBeGreaterThan(second.fencingToken);
      await lock[Symbol.asyncDispose]();
      expect((viaTry as LockLease).lost.aborted, 'dispose unlocks').toBe(true);
      expect(await t.store.exists('locks/a')).toBe(false);
    },
  );

  define('a lock without a value holds an empty value', { rows: ['lock'], requires: 'lock' }, async (t) => {
    const lock = t.store.newLock('locks/empty', { ttl: t.settings.lockTtl });
    await lock.lock();
    expect((await t.store.get('locks/empty')).value.byteLength).toBe(0);
    await lock.unlock();
  });

  define(
    'a second locker waits while the first holds and gets the lock promptly after unlock(); tryLock gives null meanwhile',
    { rows: ['lock'], requires: 'lock' },
    async (t) => {
      const [one, two, three] = (await t.openMany(3)) as [Store, Store, Store];
      const ttl = t.settings.lockTtl;
      const a = one.newLock('locks/x', { value: 'a', ttl });
      const held = await a.lock();
      const b = two.newLock('locks/x', { value: 'b', ttl });
      let bLease: LockLease | undefined;
      const waiting = b.lock().then((lease) => {
        bLease = lease;
        return lease;
      });
      waiting.catch(() => {});
      expect(
        await three.newLock('locks/x', { ttl }).tryLock(),
        'tryLock from another client while held',
      ).toBeNull();
      expect(
        await one.newLock('locks/x', { ttl }).tryLock(),
        'tryLock from the same client while held',
      ).toBeNull();
      await sleep(STILL_WAITING_MS);
      expect(bLease, 'the waiter got the lock while it was held').toBeUndefined();
      expect(text((await three.get('locks/x')).value)).toBe('a');
      const released = performance.now();
      await a.unlock();
      const lease = await within(
        waiting,
        t.settings.prompt + t.settings.slack,
        'the waiter did not get the lock promptly',
      );
      const handover = performance.now() - released;
      expect(handover, `hand-over took ${handover} ms`).toBeLessThan(t.settings.prompt);
      expect(lease.fencingToken).toBeGreaterThan(held.fencingToken);
      expect(text((await three.get('locks/x')).value)).toBe('b');
      await b.unlock();
      const third = await three.newLock('locks/x', { ttl }).tryLock();
      expect(third, 'tryLock once free').not.toBeNull();
    },
  );

  define(
    'closing the holder store releases its lock at once; lost aborts',
    { rows: ['lock'], requires: 'lock' },
    async (t) => {
      const [one, two] = (await t.openMany(2)) as [Store, Store];
      const ttl = t.settings.lockTtl;
      const held = await one.newLock('locks/c', { ttl }).lock();
      const waiting = two.newLock('locks/c', { ttl, value: 'next' }).lock();
      waiting.catch(() => {});
      const closed = performance.now();
      await one.close();
      expect(held.lost.aborted, 'lost aborts when the store closes').toBe(true);
      const lease = await within(
        waiting,
        t.settings.prompt + t.settings.slack,
        'the waiter did not get the lock after close()',
      );
      expect(performance.now() - closed).toBeLessThan(t.settings.prompt);
      expect(lease.fencingToken).toBeGreaterThan(held.fencingToken);
      await expectKVError(
        () => one.newLock('locks/c', { ttl }).lock(),
        ClosedError,
        'lock() on a closed store',
      );
    },
  );

  define(
    'deleting a held lock key, or its directory, never makes two holders',
    { rows: ['lock', 'delete', 'deleteTree'], requires: 'lock' },
    async (t) => {
      const [one, two, three] = (await t.openMany(3)) as [Store, Store, Store];
      const ttl = t.settings.lockTtl;
      const a = one.newLock('jobs/lk/l', { value: 'a', ttl });
      const held = await a.lock();
      const b = two.newLock('jobs/lk/l', { value: 'b', ttl });
      let holderLostFirst: boolean | undefined;
      const waiting = b.lock().then((lease) => {
        // The one moment that matters: when the waiter holds, the first holder must know it lost.
        holderLostFirst = held.lost.aborted;
        return lease;
      });
      waiting.catch(() => {});
      await three.delete('jobs/lk/l');
      await sleep(STILL_WAITING_MS);
      await three.deleteTree('jobs/lk');
      await sleep(STILL_WAITING_MS);
      if (holderLostFirst !== undefined) {
        expect(holderLostFirst, 'the waiter got the lock while the first holder had not lost it').toBe(true);
      }
      const released = performance.now();
      await a.unlock();
      const lease = await within(
        waiting,
        t.settings.prompt + t.settings.slack,
        'the waiter did not get the lock promptly after the holder let go',
      );
      expect(holderLostFirst, 'two holders at once').toBe(true);
      expect(lease.fencingToken).toBeGreaterThan(held.fencingToken);
      expect(performance.now() - released).toBeLessThan(t.settings.prompt + t.settings.slack);
      await b.unlock();
    },
  );

  define(
    'a waiter that died in the queue does not hold up the hand-over; tryLock succeeds on a lock only dead waiters want',
    {
      rows: ['lock'],
      requires: 'lock',
      needsCrash: true,
      timeout: (caps, s) => 30_000 + 3 * (Math.max(s.lockTtl, 8_000) + caps.ttlGranularity),
    },
    async (t) => {
      const [one, dead, live, other] = (await t.openMany(4)) as [Store, Store, Store, Store];
      // Long enough that waiting for a dead waiter's ttl would show: its place must expire sooner.
      const ttl = Math.max(t.settings.lockTtl, 8_000);
      const a = one.newLock('locks/queue', { ttl });
      const held = await a.lock();
      const doomed = dead.newLock('locks/queue', { ttl }).lock();
      doomed.catch(() => {});
      // Let the doomed waiter take its place in the queue before the live one.
      await sleep(STILL_WAITING_MS);
      const waiting = live.newLock('locks/queue', { ttl }).lock();
      waiting.catch(() => {});
      await sleep(STILL_WAITING_MS);
      await t.settings.crash?.(dead);
      const released = performance.now();
      await a.unlock();
      const target = 2_000 * t.settings.timeScale + t.settings.slack;
      const lease = await within(
        waiting,
        ttl + t.caps.ttlGranularity + t.settings.slack,
        'the live waiter never got the lock',
      );
      const handover = performance.now() - released;
      expect(handover, `hand-over past a dead waiter took ${Math.round(handover)} ms`).toBeLessThan(target);
      expect(lease.fencingToken).toBeGreaterThan(held.fencingToken);
      // A lock that only a dead waiter still wants: tryLock must not wait for its place to expire.
      const [holder, dead2] = (await t.openMany(2)) as [Store, Store];
      const h = holder.newLock('locks/try', { ttl });
      await h.lock();
      const doomed2 = dead2.newLock('locks/try', { ttl }).lock();
      doomed2.catch(() => {});
      await sleep(STILL_WAITING_MS);
      await t.settings.crash?.(dead2);
      await h.unlock();
      const freed = performance.now();
      let taken: LockLease | null = null;
      while (!taken && performance.now() - freed < target) {
        taken = await other.newLock('locks/try', { ttl }).tryLock();
        if (!taken) await sleep(50);
      }
      const after = performance.now() - freed;
      expect(
        taken,
        `tryLock gave null for ${Math.round(after)} ms on a lock only a dead waiter wanted`,
      ).not.toBeNull();
    },
  );

  define(
    'a dead holder (crashed without unlocking) frees the lock within its ttl',
    {
      rows: ['lock'],
      requires: 'lock',
      needsCrash: true,
      timeout: (caps, s) => 30_000 + 2 * (s.lockTtl + caps.ttlGranularity),
    },
    async (t) => {
      const [one, two] = (await t.openMany(2)) as [Store, Store];
      const ttl = t.settings.lockTtl;
      const held = await one.newLock('locks/dead', { ttl }).lock();
      const waiting = two.newLock('locks/dead', { ttl }).lock();
      waiting.catch(() => {});
      const crashed = performance.now();
      await t.settings.crash?.(one);
      const bound = ttl + t.caps.ttlGranularity + t.settings.slack;
      const lease = await within(
        waiting,
        bound,
        `a dead holder still held the lock ${bound} ms after it died`,
      );
      expect(lease.fencingToken).toBeGreaterThan(held.fencingToken);
      expect(performance.now() - crashed).toBeLessThan(bound);
    },
  );

  define(
    'fencing tokens grow strictly across acquisitions and clients',
    { rows: ['lock'], requires: 'lock' },
    async (t) => {
      const stores = await t.openMany(3);
      const ttl = t.settings.lockTtl;
      const locks = stores.map((s) => s.newLock('locks/fence', { ttl }));
      const tokens: number[] = [];
      for (let round = 0; round < 3; round++) {
        for (const lock of locks) {
          const lease = round === 1 ? await lock.tryLock() : await lock.lock();
          expect(lease).not.toBeNull();
          tokens.push((lease as LockLease).fencingToken);
          await lock.unlock();
        }
      }
      for (let i = 1; i < tokens.length; i++) {
        expect(tokens[i] as number, `tokens ${tokens.join(', ')}`).toBeGreaterThan(tokens[i - 1] as number);
      }
    },
  );

  define(
    `${LOCK_WORKERS} workers x ${LOCK_ROUNDS} plain read-increment-write cycles under the lock end at exactly ${LOCK_WORKERS * LOCK_ROUNDS}`,
    { rows: ['lock'], requires: 'lock', timeout: () => 120_000 },
    async (t) => {
      const workers = await t.openMany(LOCK_WORKERS);
      await t.store.put('counter', '0');
      const read = { consistent: t.caps.consistentRead };
      let inside = 0;
      const tokens: number[] = [];
      await Promise.all(
        workers.map(async (store, worker) => {
          const lock = store.newLock('locks/counter', { ttl: t.settings.lockTtl, value: `worker-${worker}` });
          for (let round = 0; round < LOCK_ROUNDS; round++) {
            const lease = await lock.lock();
            inside++;
            try {
              expect(inside, 'two holders at once').toBe(1);
              tokens.push(lease.fencingToken);
              const value = Number(text((await store.get('counter', read)).value));
              await store.put('counter', String(value + 1));
            } finally {
              inside--;
              await lock.unlock();
            }
          }
        }),
      );
      expect(text((await t.store.get('counter', read)).value)).toBe(String(LOCK_WORKERS * LOCK_ROUNDS));
      for (let i = 1; i < tokens.length; i++) {
        expect(
          (tokens[i] as number) > (tokens[i - 1] as number),
          'fencing tokens grow with each holder',
        ).toBe(true);
      }
    },
  );

  define(
    'helper keys never show in list or watchTree while locks are held and waited for',
    { rows: ['lock'], requires: 'lock', timeout: () => 60_000 },
    async (t) => {
      const [one, two, three] = (await t.openMany(3)) as [Store, Store, Store];
      const ttl = t.settings.lockTtl;
      await t.store.put('jobs/data', 'd');
      const trees = t.caps.watchTree ? [t.watchTree(t.store, ''), t.watchTree(t.store, 'jobs')] : [];
      for (const tree of trees) await tree.next();
      const allowed = new Set(['jobs/data', 'jobs/lock', 'jobs/marker']);
      const lock = one.newLock('jobs/lock', { ttl, value: 'held' });
      await lock.lock();
      const waiters = [two.newLock('jobs/lock', { ttl }).lock(), three.newLock('jobs/lock', { ttl }).lock()];
      for (const w of waiters) w.catch(() => {});
      expect(await t.store.newLock('jobs/lock', { ttl }).tryLock()).toBeNull();
      await sleep(STILL_WAITING_MS);
      for (const store of [t.store, one, two]) {
        expect(keys(await store.list('jobs')), 'list of the lock parent').toEqual(['jobs/data', 'jobs/lock']);
        expect(keys(await store.list('')), "list('')").toEqual(['jobs/data', 'jobs/lock']);
        expect(await store.list('jobs/lock'), 'list of the lock key as a directory').toEqual([]);
      }
      await t.store.put('jobs/marker', 'm');
      for (const tree of trees) {
        const events = await tree.until((e) => e.pairs.some((p) => p.key === 'jobs/marker'));
        for (const event of events) {
          for (const pair of event.pairs)
            expect(allowed.has(pair.key), `watchTree showed ${pair.key}`).toBe(true);
        }
      }
      await lock.unlock();
      const next = await Promise.race(waiters);
      expect(keys(await t.store.list('jobs'))).toEqual(['jobs/data', 'jobs/lock', 'jobs/marker']);
      void next;
      await Promise.all([two.close(), three.close()]);
      await settle(() => Promise.all(waiters));
      expect(keys(await t.store.list('jobs')), 'no helper key left after the holders closed').toEqual([
        'jobs/data',
        'jobs/marker',
      ]);
    },
  );

  define(
    'an aborted lock() rejects with AbortError (cause: signal.reason) and never takes the lock later',
    { rows: ['lock'], requires: 'lock' },
    async (t) => {
      const [one, two, three] = (await t.openMany(3)) as [Store, Store, Store];
      const ttl = t.settings.lockTtl;
      const reason = new Error('gave up');
      const already = new AbortController();
      already.abort(reason);
      await expectAbort(
        () => one.newLock('locks/ab', { ttl }).lock({ signal: already.signal }),
        reason,
        'lock() with an aborted signal',
      );
      await expectAbort(
        () => one.newLock('locks/ab', { ttl }).tryLock({ signal: already.signal }),
        reason,
        'tryLock() with an aborted signal',
      );
      const holder = one.newLock('locks/ab', { ttl, value: 'one' });
      await holder.lock();
      const controller = new AbortController();
      const waiting = two.newLock('locks/ab', { ttl, value: 'two' }).lock({ signal: controller.signal });
      waiting.catch(() => {});
      await sleep(STILL_WAITING_MS);
      const later = new Error('waited long enough');
      controller.abort(later);
      await expectAbort(
        () => within(waiting, t.settings.eventTimeout, 'lock() did not end after abort'),
        later,
        'a waiting lock()',
      );
      await holder.unlock();
      const lease = await within(
        three.newLock('locks/ab', { ttl, value: 'three' }).lock(),
        t.settings.prompt + t.settings.slack,
        'the lock was not free after the aborted waiter',
      );
      expect(lease.lost.aborted).toBe(false);
      expect(text((await t.store.get('locks/ab')).value)).toBe('three');
    },
  );

  define(
    'locks throw NotSupportedError when capabilities.lock is false',
    { rows: ['lock'], unsupported: 'lock' },
    async ({ store }) => {
      await expectKVError(() => store.newLock('locks/n').lock(), NotSupportedError, 'lock()');
      await expectKVError(() => store.newLock('locks/n').tryLock(), NotSupportedError, 'tryLock()');
    },
  );
}
