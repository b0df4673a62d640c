import type { KVPair } from '@kv/core';
import { Reader } from '@kv/core/conformance';
import { serverFor, startFaultProxy } from '@kv/test-servers';
import { describe, expect, it, vi } from 'vitest';
import { EtcdV2Error } from '../src/etcdv2-errors.js';
import { openEtcdV2 } from '../src/index.js';
import { text } from './helpers.js';

const etcd = await serverFor('etcd');

describe.skipIf(!etcd.available)('keep-alive keys', () => {
  it('a refresh that landed but whose answer came too late does not end the keep-alive', async () => {
    const prefix = `kvtest-etcdv2/keepalive-${Date.now().toString(36)}-${process.pid}`;
    const proxy = await startFaultProxy(etcd.endpoints[0] as string);
    const owner = await openEtcdV2({ endpoints: [proxy.endpoint], prefix });
    const observer = await openEtcdV2({ endpoints: etcd.endpoints, prefix });
    const calls = vi.spyOn(owner, 'call');
    const ttl = 3_000;
    try {
      await owner.put('k', 'alive', { ttl, keepAlive: true });
      const written = (await observer.get('k')).lastIndex;
      // Every byte now takes 1.4 s each way: the first refresh (due after ttl/3) reaches the server
      // in time, and its answer comes after the attempt gave up (at the key's expiry).
      proxy.latency(1_400);
      const deadline = performance.now() + 10_000;
      while ((await observer.get('k')).lastIndex === written) {
        if (performance.now() > deadline) throw new Error('no refresh reached the server');
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
      // The refresh landed; its answer is still on its way. Later bytes go through at once.
      proxy.latency(0);
      // Two ttls later the key is still there: the keep-alive went on past the failed compare.
      await new Promise((resolve) => setTimeout(resolve, 2 * ttl));
      expect(text((await observer.get('k')).value)).toBe('alive');
      const refused = calls.mock.settledResults.filter(
        (r) => r.type === 'rejected' && r.value instanceof EtcdV2Error && r.value.errorCode === 101,
      ).length;
      expect(refused, 'refreshes refused for a stale prevIndex').toBeGreaterThanOrEqual(1);
      // And a rewrite by someone else still ends it.
      await observer.put('k', 'rewritten', { ttl });
      const rewrittenAt = performance.now();
      const watch = new Reader<KVPair | null>(() => observer.watch('k'), 'watch(k)', ttl + 5_000);
      try {
        while ((await watch.next()) !== null) {}
      } finally {
        await watch.close();
      }
      // Gone within the ttl and its granularity (plus slack), not renewed by the old owner.
      expect(performance.now() - rewrittenAt).toBeLessThan(ttl + 2_000 + 1_500);
    } finally {
      await Promise.allSettled([owner.close(), observer.close()]);
      await proxy.close();
    }
  }, 30_000);
});
