import { expect } from 'vitest';
import {
  type Capabilities,
  InvalidArgumentError,
  InvalidKeyError,
  KeyNotFoundError,
  NotSupportedError,
  type Store,
} from '../index.js';
import {
  type Define,
  expectKVError,
  type Settings,
  sleep,
  type TestEnv,
  text,
  waitUntil,
} from './harness.js';

/** An expiry seen this much before `ttl` still counts as on time (timer and clock rounding). */
const EARLY_TOLERANCE = 25;

const ttlBound = (caps: Capabilities, s: Settings) => 30_000 + 6 * (s.ttl + caps.ttlGranularity + s.slack);

export function ttlCases(define: Define): void {
  define(
    'a ttl key is visible before its ttl and gone after ttl + ttlGranularity; a later put without ttl makes it permanent',
    { rows: ['ttl'], requires: 'ttl', timeout: ttlBound },
    async (t) => {
      const { store } = t;
      const ttl = t.settings.ttl;
      const expiring: Tracked[] = [];
      const track = async (key: string, write: () => Promise<unknown>) => {
        const sent = performance.now();
        await write();
        expiring.push({ key, sent, written: performance.now() });
      };
      await track('plain', () => store.put('plain', 'v', { ttl }));
      await track('cas', () => store.atomicPut('cas', 'v', null, { ttl }));
      await track('parent', () => store.put('parent', 'v', { ttl }));
      await store.put('parent/child', 'no ttl');
      await store.put('permanent', 'v', { ttl });
      await store.put('permanent', 'v2');
      // Closing a store does not delete its plain ttl keys: they live out their ttl.
      const other = await t.open();
      await track('closed', () => other.put('closed', 'v', { ttl }));
      await other.close();
      await checkVisibleBeforeTtl(store, expiring, ttl);
      await waitForExpiry(t, expiring, ttl);
      expect(await store.exists('permanent'), 'a put without ttl made the key permanent').toBe(true);
      expect(await store.exists('parent/child'), 'the ttl of a key does not apply to its children').toBe(
        true,
      );
      expect((await store.list('')).map((p) => p.key)).toEqual(['parent/child', 'permanent']);
    },
  );

  define(
    'a CAS naming a ttl key after it expired fails as on a missing key and writes nothing, even before the server deletes it',
    { rows: ['ttl', 'atomicPut', 'atomicDelete'], requires: 'ttl', timeout: ttlBound },
    async (t) => {
      const { store, caps } = t;
      const ttl = t.settings.ttl;
      await store.put('k', 'v', { ttl });
      const written = performance.now();
      const pair = await store.get('k');
      // A store that never saw the key: what it knows of the version is the CAS's index alone.
      const other = await t.open();
      // No read of the key from here on: a read may make the backend delete the expired key, and
      // the CAS must fail in the window before anything did. Time passing is what is tested here.
      await sleep(Math.max(0, written + ttl + caps.ttlGranularity + 50 - performance.now()));
      await expectKVError(
        () => store.atomicPut('k', 'v2', pair),
        KeyNotFoundError,
        'atomicPut naming the expired version',
      );
      await expectKVError(
        () => other.atomicPut('k', 'v3', pair),
        KeyNotFoundError,
        'atomicPut naming the expired version (a store that never read it)',
      );
      await expectKVError(
        () => other.atomicDelete('k', pair),
        KeyNotFoundError,
        'atomicDelete naming the expired version',
      );
      await expectKVError(() => store.get('k'), KeyNotFoundError, 'get of the expired key');
      // A create-only put succeeds: the expired key is gone.
      await store.atomicPut('k', 'new', null);
      expect(text((await store.get('k')).value)).toBe('new');
    },
  );

  define(
    'remainingTtl (on a BaseStore, for tools that copy keys): within the ttl for a ttl key, undefined without a ttl or for a missing key',
    { rows: ['ttl'], requires: 'ttl' },
    async (t) => {
      const store = t.store as Store & { remainingTtl?: (key: string) => Promise<number | undefined> };
      // A store that is not a BaseStore (a third party's own) need not offer it.
      if (typeof store.remainingTtl !== 'function') return;
      const ttl = Math.max(t.caps.minTtl, 60_000);
      const sent = performance.now();
      await store.put('t', 'v', { ttl });
      await store.put('plain', 'v');
      const left = await store.remainingTtl('t');
      const elapsed = performance.now() - sent;
      const slack = t.caps.ttlGranularity + 1_000;
      expect(left, 'the ms a ttl key has left').toBeGreaterThan(ttl - elapsed - slack);
      expect(left).toBeLessThanOrEqual(ttl + slack);
      expect(await store.remainingTtl('plain'), 'a key without a ttl').toBeUndefined();
      expect(await store.remainingTtl('missing'), 'a missing key').toBeUndefined();
      await expectKVError(
        () => store.remainingTtl?.('') as Promise<unknown>,
        InvalidKeyError,
        'an invalid key',
      );
    },
  );

  define(
    'ttl must be a positive integer of at least minTtl: else InvalidArgumentError, and nothing is written',
    { rows: ['ttl'], requires: 'ttl' },
    async (t) => {
      const { store, caps } = t;
      const bad: unknown[] = [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '1000'];
      if (caps.minTtl > 1) bad.push(caps.minTtl - 1);
      for (const ttl of bad) {
        const options = { ttl: ttl as number };
        await expectKVError(
          () => store.put('k', 'v', options),
          InvalidArgumentError,
          `put ttl ${String(ttl)}`,
        );
        await expectKVError(
          () => store.atomicPut('k', 'v', null, options),
          InvalidArgumentError,
          `atomicPut ttl ${String(ttl)}`,
        );
        if (caps.lock) {
          t.tag('lock');
          await expectKVError(
            () => store.newLock('l', options).tryLock(),
            InvalidArgumentError,
            `lock ttl ${String(ttl)}`,
          );
        }
      }
      expect(await store.list('')).toEqual([]);
    },
  );

  define(
    'keepAlive keeps a key alive past several ttls while its store is open, and lets it go after close()',
    { rows: ['keepAlive'], requires: 'keepAlive', timeout: ttlBound },
    async (t) => {
      const owner = await t.open();
      const ttl = t.settings.ttl;
      const granularity = t.caps.ttlGranularity;
      const started = performance.now();
      await owner.put('alive', 'v', { ttl, keepAlive: true });
      await expectKVError(
        () => owner.put('no-ttl', 'v', { keepAlive: true }),
        InvalidArgumentError,
        'keepAlive without a ttl',
      );
      const until = started + 3 * ttl + granularity;
      while (performance.now() < until) {
        expect(
          await t.store.exists('alive'),
          `the keep-alive key vanished after ${performance.now() - started} ms`,
        ).toBe(true);
        await sleep(pollInterval(ttl));
      }
      expect(await t.store.exists('no-ttl'), 'a refused keepAlive write wrote nothing').toBe(false);
      const closed = performance.now();
      await owner.close();
      await waitUntil(async () => !(await t.store.exists('alive')), {
        deadline: closed + ttl + granularity + t.settings.slack,
        interval: pollInterval(ttl),
        what: `the keep-alive key is gone within ttl (${ttl} ms) + ttlGranularity (${granularity} ms) after close()`,
      });
    },
  );

  define(
    'a keep-alive key of a dead store (crashed, not closed) is gone within its ttl',
    { rows: ['keepAlive'], requires: 'keepAlive', needsCrash: true, timeout: ttlBound },
    async (t) => {
      const owner = await t.open();
      const ttl = t.settings.ttl;
      await owner.put('ephemeral', 'v', { ttl, keepAlive: true });
      const crashed = performance.now();
      await t.settings.crash?.(owner);
      await waitUntil(async () => !(await t.store.exists('ephemeral')), {
        deadline: crashed + ttl + t.caps.ttlGranularity + t.settings.slack,
        interval: pollInterval(ttl),
        what: 'the keep-alive key of a dead store is gone',
      });
    },
  );

  define(
    'ttl writes throw NotSupportedError when capabilities.ttl is false',
    { rows: ['ttl'], unsupported: 'ttl' },
    async ({ store, caps }) => {
      const ttl = Math.max(caps.minTtl, 1_000);
      await expectKVError(() => store.put('k', 'v', { ttl }), NotSupportedError, 'put with ttl');
      await expectKVError(
        () => store.atomicPut('k', 'v', null, { ttl }),
        NotSupportedError,
        'atomicPut with ttl',
      );
      expect(await store.exists('k')).toBe(false);
    },
  );

  define(
    'keepAlive writes throw NotSupportedError when capabilities.keepAlive is false',
    { rows: ['keepAlive'], unsupported: 'keepAlive' },
    async ({ store, caps }) => {
      const ttl = Math.max(caps.minTtl, 1_000);
      await expectKVError(
        () => store.put('k', 'v', { ttl, keepAlive: true }),
        NotSupportedError,
        'put with keepAlive',
      );
      expect(await store.exists('k')).toBe(false);
    },
  );
}

interface Tracked {
  readonly key: string;
  /** When the write was sent: the key may not expire before sent + ttl. */
  readonly sent: number;
  /** When the write was acknowledged: the key must be gone by written + ttl + ttlGranularity. */
  readonly written: number;
}

function pollInterval(ttl: number): number {
  return Math.max(10, Math.min(250, Math.floor(ttl / 20)));
}

/** A read that completed before sent + ttl must see the key. */
async function checkVisibleBeforeTtl(store: Store, keys: readonly Tracked[], ttl: number): Promise<void> {
  for (const { key, sent } of keys) {
    const exists = await store.exists(key);
    if (performance.now() < sent + ttl - EARLY_TOLERANCE)
      expect(exists, `${key} vanished before its ttl`).toBe(true);
  }
}

/** Polls until every key is gone, failing if one goes before its ttl or lingers past ttl + granularity. */
async function waitForExpiry(t: TestEnv, keys: readonly Tracked[], ttl: number): Promise<void> {
  const granularity = t.caps.ttlGranularity;
  const pending = new Set(keys);
  const interval = pollInterval(ttl);
  while (pending.size > 0) {
    for (const tracked of [...pending]) {
      const exists = await t.store.exists(tracked.key);
      const now = performance.now();
      if (!exists) {
        expect(
          now >= tracked.sent + ttl - EARLY_TOLERANCE,
          `${tracked.key} expired ${tracked.sent + ttl - now} ms before its ttl of ${ttl} ms`,
        ).toBe(true);
        pending.delete(tracked);
      } else if (now > tracked.written + ttl + granularity + t.settings.slack) {
        throw new Error(
          `${tracked.key} still exists ${now - tracked.written} ms after it was written with ttl ${ttl} ms (ttlGranularity ${granularity} ms)`,
        );
      }
    }
    if (pending.size > 0) await sleep(interval);
  }
}
