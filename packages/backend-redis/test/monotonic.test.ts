import { randomUUID } from 'node:crypto';
import { type AcquiredLock, type AcquireRequest, createStore } from '@kv/core';
import { serverFor } from '@kv/test-servers';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { RedisStore } from '../src/index.js';

const redis = await serverFor('redis');

/** The store's lock primitive, as the core calls it. */
const acquire = (store: RedisStore, key: string, request: AcquireRequest): Promise<AcquiredLock | null> =>
  (
    store as unknown as { _acquireLock(key: string, request: AcquireRequest): Promise<AcquiredLock | null> }
  )._acquireLock(key, request);

describe.skipIf(!redis.available)('redis: durations on a monotonic clock', () => {
  const stores: RedisStore[] = [];
  afterAll(async () => {
    vi.restoreAllMocks();
    await Promise.allSettled(stores.map((s) => s.close()));
  });

  it('a grant reports sentAt on performance.now(), taken just before the winning request, whatever the wall clock does', async () => {
    const store = await createStore({
      backend: 'redis',
      endpoints: redis.endpoints,
      namespace: `mono-${randomUUID()}`,
    });
    if (!(store instanceof RedisStore)) throw new Error('not a RedisStore');
    stores.push(store);
    // The wall clock steps back an hour (NTP, a resumed VM): nothing may depend on it.
    const wall = Date.now();
    vi.spyOn(Date, 'now').mockImplementation(() => wall - 3_600_000);
    const request = (wait: boolean): AcquireRequest => ({
      value: new Uint8Array(0),
      ttl: 10_000,
      wait,
      signal: AbortSignal.timeout(5_000),
      onLost: () => {},
    });
    for (const wait of [false, true]) {
      const before = performance.now();
      const grant = (await acquire(store, `mono/${wait}`, request(wait))) as AcquiredLock;
      const after = performance.now();
      expect(grant).not.toBeNull();
      expect(
        grant.sentAt,
        `sentAt (wait: ${wait}) is not on the performance.now() clock`,
      ).toBeGreaterThanOrEqual(before);
      expect(grant.sentAt).toBeLessThanOrEqual(after);
      await grant.release(AbortSignal.timeout(5_000));
    }
    vi.restoreAllMocks();
  });
});
