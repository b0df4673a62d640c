import { rmSync } from 'node:fs';
import type { KVPair, TreeEvent } from '@kv/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EtcdStore } from '../src/index.js';
import { openTestStore, Pull, privateEtcd, text } from './helpers.js';

// A private etcd: this test wipes its data dir, as a cluster rebuilt empty (or restored from an
// older snapshot) would look to a client: same address, history gone, revisions start over.
const { server, skip } = await privateEtcd('restore tests');

const value = (pair: KVPair | null) => (pair ? text(pair.value) : null);

describe.skipIf(skip !== false)('a cluster whose history went backwards (restore, rebuild)', () => {
  const endpoint = server?.endpoints[0] as string;
  const stores: EtcdStore[] = [];
  let writer: EtcdStore;
  let watcher: EtcdStore;

  beforeAll(async () => {
    writer = await openTestStore([endpoint], 'restore');
    watcher = await openTestStore([endpoint], 'restore', { prefix: writer.prefix } as Record<
      string,
      unknown
    >);
    stores.push(writer, watcher);
  });
  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await server?.dispose();
  });

  it('watch and watchTree re-read and yield the current state after the server restarts with an empty data dir, then see every later change', async () => {
    const etcd = server as NonNullable<typeof server>;
    // Push the revision well past where the rebuilt server will be.
    for (let i = 0; i < 30; i++) await writer.put('r/k', `old-${i}`);
    await writer.put('r/d/x', 'old-x');
    const watch = new Pull(watcher.watch('r/k'));
    const tree = new Pull(watcher.watchTree('r/d'));
    expect(value(await watch.next())).toBe('old-29');
    expect((await tree.next()).pairs.map((p) => p.key)).toEqual(['r/d/x']);
    const before = (await writer.get('r/k')).lastIndex;

    await etcd.stop();
    rmSync(etcd.dataDir, { recursive: true, force: true });
    await etcd.start();
    const restartedAt = performance.now();

    await writer.put('r/k', 'new-1');
    await writer.put('r/d/y', 'new-y');
    const now = await writer.get('r/k');
    expect(now.lastIndex).toBeLessThan(before); // the history really went backwards

    // The watch yields the state after the restore (maybe `null` first, if it re-read before the put).
    let seen: KVPair | null | undefined;
    do seen = await watch.next(15_000, 'the watch noticing the rebuilt server');
    while (value(seen) !== 'new-1');
    expect(seen?.lastIndex).toBe(now.lastIndex);
    let event: TreeEvent | undefined;
    do event = await tree.next(15_000, 'the tree watch noticing the rebuilt server');
    while (event.pairs.map((p) => `${p.key}=${text(p.value)}`).join() !== 'r/d/y=new-y');
    expect(event.changes.map((c) => `${c.type} ${c.type === 'put' ? c.pair.key : c.key}`)).toContain(
      'put r/d/y',
    );
    console.info(
      `after an empty restart the watches caught up ${Math.round(performance.now() - restartedAt)} ms later`,
    );

    // And they go on from the new history: every later change, in order.
    await writer.put('r/k', 'new-2');
    await writer.delete('r/k');
    await writer.put('r/d/x', 'new-x');
    expect([value(await watch.next()), value(await watch.next())]).toEqual(['new-2', null]);
    event = await tree.next();
    expect(event.pairs.map((p) => `${p.key}=${text(p.value)}`)).toEqual(['r/d/x=new-x', 'r/d/y=new-y']);
    await watch.stop();
    await tree.stop();
  });
});
