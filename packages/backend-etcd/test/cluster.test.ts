import type { KVPair, Store } from '@kv/core';
import { type ClusterHandle, type EtcdHandle, launchEtcdCluster } from '@kv/test-servers';
import { afterAll, describe, expect, it } from 'vitest';
import { type EtcdStore, openEtcd } from '../src/index.js';
import { Pull, text } from './helpers.js';

let cluster: ClusterHandle<EtcdHandle> | undefined;
let skip: string | false = false;
try {
  cluster = await launchEtcdCluster({ size: 3 });
} catch (error) {
  skip = `could not launch a private 3-member etcd cluster: ${(error as Error).message}`;
  if (process.env.CI === 'true') throw new Error(skip, { cause: error });
  process.stderr.write(`\n${'!'.repeat(78)}\n${skip}\nTHESE TESTS ARE SKIPPED\n${'!'.repeat(78)}\n`);
}

/** Retries a write while the cluster elects a new leader. */
async function eventually<T>(fn: () => Promise<T>, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

describe.skipIf(skip !== false)('a 3-member cluster losing one member at a time', () => {
  const stores: Store[] = [];
  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await cluster?.dispose();
  });

  it('watches, locks and reads carry on while each member in turn is stopped and started', async () => {
    const c = cluster as ClusterHandle<EtcdHandle>;
    const open = async () => {
      const store = await openEtcd({ endpoints: c.endpoints, prefix: 'cluster', requestTimeout: 3_000 });
      stores.push(store);
      return store;
    };
    const watcher = await open();
    const writer = await open();
    expect(await watcher.members()).toHaveLength(3);
    const watch = new Pull<KVPair | null>(watcher.watch('k'));
    const tree = new Pull(watcher.watchTree('d'));
    expect(await watch.next()).toBeNull();
    await tree.next();
    const lease = await watcher.newLock('leader-job', { ttl: 10_000 }).lock();

    for (const [i, member] of c.members.entries()) {
      await member.stop();
      await eventually(() => writer.put('k', `v${i}`));
      await eventually(() => writer.put(`d/${i}`, 'x'));
      expect(text((await watch.next(20_000))?.value ?? new Uint8Array())).toBe(`v${i}`);
      let listing: string[] = [];
      while (listing.length < i + 1) listing = (await tree.next(20_000)).pairs.map((p) => p.key);
      expect(listing).toEqual(Array.from({ length: i + 1 }, (_, j) => `d/${j}`));
      expect(text((await eventually(() => writer.get('k', { consistent: true }))).value)).toBe(`v${i}`);
      await member.start();
    }
    expect(lease.lost.aborted).toBe(false);
    expect((await (watcher as EtcdStore).status()).leader).not.toBe('0');
    await watch.stop();
    await tree.stop();
  });
});
