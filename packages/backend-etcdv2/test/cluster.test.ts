import { type KVPair, type Store, UnavailableError } from '@kv/core';
import { Reader, within } from '@kv/core/conformance';
import { clusterFaultHooks, launchEtcdCluster, privateServer } from '@kv/test-servers';
import { afterAll, describe, expect, it } from 'vitest';
import { openEtcdV2 } from '../src/index.js';
import { text } from './helpers.js';

// A private 3-member cluster whose members the tests kill and start again.
const launched = await privateServer('the cluster tests', () => launchEtcdCluster());

describe.skipIf(launched.skip !== false)('etcd v2 on a 3-member cluster', () => {
  const cluster = launched.server as NonNullable<typeof launched.server>;
  const hooks = clusterFaultHooks(cluster, 1_000, (endpoints, prefix) =>
    openEtcdV2({ endpoints, prefix, requestTimeout: 1_000 }),
  );
  const stores: Store[] = [];
  const open = async (endpoints: string[], prefix: string) => {
    const store = await openEtcdV2({ endpoints, prefix, requestTimeout: 1_000 });
    stores.push(store);
    return store;
  };
  const endpointOf = (i: number) => cluster.members[i]?.endpoints[0] as string;
  /** Retries `fn` while it fails with UnavailableError, up to `ms`. */
  const retry = async <T>(fn: () => Promise<T>, ms: number): Promise<T> => {
    const deadline = performance.now() + ms;
    for (;;) {
      try {
        return await fn();
      } catch (error) {
        if (!UnavailableError.isInstance(error) || performance.now() > deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  };

  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await cluster.dispose();
  });

  it('the leader killed: a store whose first endpoint it was fails over, writes go on after the election, the watch misses no final state, a consistent read sees the last write', async () => {
    const leader = await (hooks.leader as () => Promise<number>)();
    const order = [leader, ...[0, 1, 2].filter((i) => i !== leader)];
    const store = await open(order.map(endpointOf), 'leader');
    const watcher = await open(order.map(endpointOf), 'leader');
    await store.put('k', 'before');
    const reader = new Reader<KVPair | null>(() => watcher.watch('k'), 'watch(k)', 30_000);
    try {
      expect(text((await reader.next())?.value)).toBe('before');
      await hooks.kill(leader);
      const killedAt = performance.now();
      // Every call settles within requestTimeout (+ slack) while the others elect a new leader.
      for (let i = 0; i < 5; i++) {
        const started = performance.now();
        await within(
          store.put('k', `during-${i}`).catch(() => {}),
          3_000,
          'a put hung while the leader was gone',
        );
        expect(performance.now() - started).toBeLessThan(3_000);
      }
      await retry(() => store.put('k', 'after'), 20_000);
      const wroteAt = performance.now();
      let seen: string | undefined;
      while (seen !== 'after') seen = text((await reader.next())?.value);
      expect(text((await store.get('k', { consistent: true })).value)).toBe('after');
      console.log(
        `leader ${leader} killed: write accepted ${Math.round(wroteAt - killedAt)} ms later, watched ${Math.round(performance.now() - killedAt)} ms later`,
      );
    } finally {
      await reader.close();
      await hooks.start(leader);
    }
  });

  it('consistent: true reads through raft (quorum=true): a member that lost its quorum refuses them within requestTimeout, while a plain read answers from its own copy', async () => {
    const writer = await open(cluster.endpoints, 'quorum');
    await writer.put('k', 'v1');
    // Every member has applied v1 once a consistent read through each of them sees it.
    for (let i = 0; i < 3; i++) {
      const one = await open([endpointOf(i)], 'quorum');
      expect(text((await retry(() => one.get('k', { consistent: true }), 20_000)).value)).toBe('v1');
    }
    const alone = await open([endpointOf(2)], 'quorum');
    await hooks.kill(0);
    await hooks.kill(1);
    try {
      expect(text((await alone.get('k')).value)).toBe('v1');
      const started = performance.now();
      const refused = await alone.get('k', { consistent: true }).catch((e: unknown) => e);
      expect(UnavailableError.isInstance(refused), String(refused)).toBe(true);
      expect(performance.now() - started).toBeLessThan(1_000 + 1_000);
      // Nor is a write accepted without a quorum.
      const write = await alone.put('k', 'v2').catch((e: unknown) => e);
      expect(UnavailableError.isInstance(write), String(write)).toBe(true);
    } finally {
      await hooks.start(0);
      await hooks.start(1);
    }
    // Back to a quorum, consistent reads are served again (v2 only if the refused write was applied after all).
    expect(['v1', 'v2']).toContain(
      text((await retry(() => alone.get('k', { consistent: true }), 20_000)).value),
    );
  });
});
