import type { AcquiredLock, AcquireRequest } from '@kv/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EtcdStore } from '../src/index.js';
import { openTestStore, sharedEtcd, untilWaiters } from './helpers.js';

const etcd = await sharedEtcd();

type Acquire = (key: string, request: AcquireRequest) => Promise<AcquiredLock | null>;
const acquireOf = (store: EtcdStore): Acquire =>
  (store as unknown as { _acquireLock: Acquire })._acquireLock.bind(store);
const request = (wait: boolean): AcquireRequest => ({
  value: new Uint8Array(),
  ttl: 5_000,
  wait,
  signal: new AbortController().signal,
  onLost: () => {},
});

describe.skipIf(etcd.skip !== false)('etcd: durations use the monotonic clock', () => {
  let a: EtcdStore;
  let b: EtcdStore;
  beforeAll(async () => {
    a = await openTestStore(etcd.endpoints, 'clock');
    b = await openTestStore(etcd.endpoints, 'clock-b', { prefix: a.prefix } as Record<string, unknown>);
  });
  afterAll(async () => {
    await Promise.allSettled([a?.close(), b?.close()]);
  });

  it("a lock's sentAt is performance.now() from before the winning request, at once and after queueing", async () => {
    const key = `${a.prefix}/clock/lock`;
    const before = performance.now();
    const first = await acquireOf(a)(key, request(false));
    const after = performance.now();
    expect(first).not.toBeNull();
    expect(first?.sentAt).toBeGreaterThanOrEqual(before);
    expect(first?.sentAt).toBeLessThanOrEqual(after);

    const queuedAt = performance.now();
    const waiting = acquireOf(b)(key, request(true));
    await untilWaiters(a, 'clock/lock', 2); // b is in the queue behind a
    await first?.release(new AbortController().signal);
    const second = await waiting;
    const got = performance.now();
    expect(second?.sentAt).toBeGreaterThanOrEqual(queuedAt);
    expect(second?.sentAt).toBeLessThanOrEqual(got);
    await second?.release(new AbortController().signal);
  });
});
