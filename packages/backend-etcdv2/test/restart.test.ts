import { LockLostError, type Store } from '@kv/core';
import { Reader, within } from '@kv/core/conformance';
import { afterAll, describe, expect, it } from 'vitest';
import { openEtcdV2 } from '../src/index.js';
import { privateEtcd, text } from './helpers.js';

// A private etcd this file stops and starts (its data dir is kept across).
const { server, skip } = await privateEtcd('the restart tests');

describe.skipIf(skip !== false)('an etcd restart that outlasts a lock ttl', () => {
  afterAll(async () => {
    await server?.dispose();
  });

  it('the holder loses its lock within the ttl; a contender queued before the stop gets it after the restart, with a greater token; the watch resumes', async () => {
    const s = server as NonNullable<typeof server>;
    const stores: Store[] = [];
    const open = async () => {
      const store = await openEtcdV2({ endpoints: s.endpoints, prefix: 'restart', requestTimeout: 1_000 });
      stores.push(store);
      return store;
    };
    const holder = await open();
    const other = await open();
    const ttl = 2_000;
    await holder.put('r', 'before');
    const reader = new Reader(() => other.watch('r'), 'watch(r)', 30_000);
    try {
      expect(text((await reader.next())?.value)).toBe('before');
      const lease = await holder.newLock('job', { ttl }).lock();
      let lostAt: number | undefined;
      lease.lost.addEventListener('abort', () => {
        lostAt = performance.now();
      });

      // A contender already queued: its own place (a 2 s ttl) expires while the server is down too.
      const contender = other.newLock('job', { ttl });
      const waiting = contender.lock();
      waiting.catch(() => {});
      await new Promise((resolve) => setTimeout(resolve, 300));

      const stoppedAt = performance.now();
      await s.stop();
      // Renewals cannot reach the server: the holder must give the lock up by itself, within ttl (+ slack).
      await within(
        new Promise((resolve) => lease.lost.addEventListener('abort', resolve, { once: true })),
        ttl + 3_000,
        'the holder never lost its lock while the server was down',
      );
      expect(LockLostError.isInstance(lease.lost.reason), String(lease.lost.reason)).toBe(true);
      const lostAfter = (lostAt as number) - stoppedAt;
      // Down for longer than the ttl: the holder's place expires on the server.
      const downFor = ttl + 500 - (performance.now() - stoppedAt);
      if (downFor > 0) await new Promise((resolve) => setTimeout(resolve, downFor));
      await s.start();

      const taken = await within(
        waiting,
        30_000,
        'the queued contender never got the lock after the restart',
      );
      const acquiredAt = performance.now();
      expect(lostAt as number).toBeLessThan(acquiredAt);
      expect(taken.fencingToken).toBeGreaterThan(lease.fencingToken);
      await contender.unlock();

      // The same store objects go on: the write lands and the open watch yields it.
      await holder.put('r', 'after');
      let seen: string | undefined;
      while (seen !== 'after') seen = text((await reader.next())?.value);
      console.log(
        `lost ${Math.round(lostAfter)} ms after the stop (ttl ${ttl}); taken again ${Math.round(acquiredAt - stoppedAt)} ms after the stop`,
      );
    } finally {
      await reader.close();
      await Promise.allSettled(stores.map((store) => store.close()));
    }
  });
});
