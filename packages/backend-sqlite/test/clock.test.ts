import { type AcquiredLock, type AcquireRequest, createStore, type Store } from '@kv/core';
import { afterAll, describe, expect, it } from 'vitest';
import '@kv/backend-sqlite';

type Acquire = (key: string, request: AcquireRequest) => Promise<AcquiredLock | null>;

describe('sqlite: durations use the monotonic clock', () => {
  const stores: Store[] = [];
  afterAll(async () => {
    await Promise.all(stores.map((s) => s.close()));
  });

  it("a lock's sentAt is performance.now() taken just before the winning write, not wall time", async () => {
    const store = await createStore('sqlite::memory:');
    stores.push(store);
    const acquire = (store as unknown as { _acquireLock: Acquire })._acquireLock.bind(store);
    const before = performance.now();
    const acquired = await acquire('clock/lock', {
      value: new Uint8Array(),
      ttl: 5_000,
      wait: false,
      signal: new AbortController().signal,
      onLost: () => {},
    });
    const after = performance.now();
    expect(acquired).not.toBeNull();
    expect(acquired?.sentAt).toBeGreaterThanOrEqual(before);
    expect(acquired?.sentAt).toBeLessThanOrEqual(after);
    await acquired?.release(new AbortController().signal);
  });
});
