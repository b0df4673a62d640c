import { createStore, type KVPair, type Store } from '@kv/core';
import { clusterFaultHooks, launchConsulCluster, privateServer } from '@kv/test-servers';
import '../src/index.js';
import { afterAll, describe, expect, it } from 'vitest';
import { retry, text, within } from './helpers.js';

// Three Consul servers on 127.0.0.1 (no namespaces needed): one of them stopped and started again.
const launched = await privateServer('the 3-server cluster test', () => launchConsulCluster());

const REQUEST_TIMEOUT = 2_000;

describe.skipIf(launched.skip !== false)('a 3-server Consul cluster', () => {
  const cluster = launched.server as NonNullable<typeof launched.server>;
  const stores: Store[] = [];
  const open = async (endpoints: string[]) => {
    const store = await createStore({
      backend: 'consul',
      endpoints,
      prefix: 'cluster',
      requestTimeout: REQUEST_TIMEOUT,
    });
    stores.push(store);
    return store;
  };
  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await cluster.dispose();
  });

  it('the leader stopped and started again: calls go on, its own watchers catch up, tokens grow', async () => {
    const hooks = clusterFaultHooks(cluster, REQUEST_TIMEOUT, async () => undefined);
    const leader = await (hooks.leader as () => Promise<number>)();
    const stopped = cluster.members[leader] as (typeof cluster.members)[number];
    const all = await open(cluster.endpoints);
    // A store on the member that is stopped, and nothing else: it must come back by itself.
    const onStopped = await open(stopped.endpoints);
    await all.put('k', 'before');
    const watch = onStopped.watch('k')[Symbol.asyncIterator]();
    expect(text(((await within(watch.next(), 10_000, 'first event')).value as KVPair).value)).toBe('before');
    const lock = all.newLock('l', { ttl: 3_000 });
    const first = await lock.lock();
    await lock.unlock();

    await stopped.stop();
    // An election among the two left (raft_multiplier 1: about a second); then every call works.
    await retry(() => all.put('k', 'while-down'), 15_000);
    // A put attempt of the retry above that timed out may still apply after a later one (Consul
    // cannot cancel a write): a CAS loop re-reads, as a user's would, and reads consistently (a
    // default-mode read right after an election may be stale).
    for (let i = 0; i < 5; i++) {
      const pair = await retry(
        async () => all.atomicPut('k', `while-down-${i}`, await all.get('k', { consistent: true })),
        10_000,
      );
      expect(text(pair.value)).toBe(`while-down-${i}`);
    }
    const second = all.newLock('l', { ttl: 3_000 });
    const during = await retry(() => second.lock(), 15_000);
    expect(during.fencingToken).toBeGreaterThan(first.fencingToken);
    await second.unlock();

    await stopped.start();
    // The stopped member's store and watch resume by themselves with what changed meanwhile: the
    // watch reaches the state a consistent read returns. Not necessarily 'while-down-4': a put of
    // the retry above that timed out while the leader was gone can still be applied later, by the
    // server that held it until a new leader took it (Consul cannot cancel a write).
    const deadline = performance.now() + 30_000;
    let seen = (await within(watch.next(), 30_000, 'the watch on the restarted member')).value as KVPair;
    for (;;) {
      const final = await retry(() => all.get('k', { consistent: true }), 15_000);
      if (seen.lastIndex === final.lastIndex) break;
      if (performance.now() > deadline) {
        throw new Error(
          `the watch never caught up: it gave ${text(seen.value)}@${seen.lastIndex}, the cluster holds ${text(final.value)}@${final.lastIndex}`,
        );
      }
      // Behind the cluster: the next event. Ahead of our read (a late write landed since): read again.
      if (seen.lastIndex < final.lastIndex) {
        seen = (await within(watch.next(), 30_000, 'the watch on the restarted member')).value as KVPair;
      }
    }
    expect((await retry(() => onStopped.get('k'), 15_000)).lastIndex).toBeGreaterThanOrEqual(seen.lastIndex);
    const third = onStopped.newLock('l', { ttl: 3_000 });
    expect((await third.lock()).fencingToken).toBeGreaterThan(during.fencingToken);
    await third.unlock();
    await watch.return?.();
  });
});
