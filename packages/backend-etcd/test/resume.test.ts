import type { KVPair, TreeEvent } from '@kv/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EtcdStore } from '../src/index.js';
import { CuttableProxy, openTestStore, Pull, privateEtcd, text, within } from './helpers.js';

// A private etcd: these tests stop and start it, and compact its history.
const { server, skip } = await privateEtcd('watch resume tests');

const values = (pairs: (KVPair | null)[]) => pairs.map((p) => (p ? text(p.value) : null));

describe.skipIf(skip !== false)('watches resume from the last revision they saw', () => {
  const endpoint = server?.endpoints[0] as string;
  const stores: EtcdStore[] = [];
  const proxies: CuttableProxy[] = [];
  let writer: EtcdStore;

  const open = async (endpoints: string[], name: string) => {
    const store = await openTestStore(endpoints, name);
    stores.push(store);
    return store;
  };
  /** A store that reaches the server through a proxy the test can cut. */
  const behindProxy = async (name: string, prefix: string) => {
    const proxy = new CuttableProxy(endpoint);
    await proxy.start();
    proxies.push(proxy);
    const store = await openTestStore([proxy.endpoint], name, { prefix } as Record<string, unknown>);
    stores.push(store);
    return { proxy, store };
  };

  beforeAll(async () => {
    writer = await open([endpoint], 'writer');
  });
  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await Promise.allSettled(proxies.map((p) => p.close()));
    await server?.dispose();
  });

  it('a watch cut off from the server replays every change made meanwhile, in order, once', async () => {
    const { proxy, store } = await behindProxy('cut-watch', writer.prefix);
    const watch = new Pull(store.watch('cut/k'));
    const tree = new Pull(store.watchTree('cut/d'));
    expect(await watch.next()).toBeNull();
    expect((await tree.next()).pairs).toEqual([]);

    await proxy.cut();
    const written: number[] = [];
    for (const value of ['1', '2', '3']) {
      await writer.put('cut/k', value);
      written.push((await writer.get('cut/k')).lastIndex);
    }
    await writer.delete('cut/k');
    await writer.put('cut/d/x', 'x');
    await writer.put('cut/d/y/z', 'z');
    await writer.delete('cut/d/x');
    const cutAt = Date.now();
    await proxy.start();

    const seen = [await watch.next(), await watch.next(), await watch.next(), await watch.next()];
    const resumedIn = Date.now() - cutAt;
    expect(values(seen)).toEqual(['1', '2', '3', null]);
    expect(seen.slice(0, 3).map((p) => p?.lastIndex)).toEqual(written);
    // The tree reaches the final listing (this slow consumer may get intermediate listings merged).
    const events: TreeEvent[] = [];
    while (
      events
        .at(-1)
        ?.pairs.map((p) => p.key)
        .join() !== 'cut/d/y/z'
    )
      events.push(await tree.next());
    const changes = events.flatMap((e) =>
      e.changes.map((c) => `${c.type} ${c.type === 'put' ? c.pair.key : c.key}`),
    );
    expect(changes).toContain('put cut/d/y/z');
    // Nothing is replayed twice: the next event is the next write.
    await writer.put('cut/k', 'after');
    expect(values([await watch.next()])).toEqual(['after']);
    console.info(`watch resumed ${resumedIn} ms after the connection came back`);
    await watch.stop();
    await tree.stop();
  });

  it('a watch started while the server cannot be reached waits for it instead of failing', async () => {
    const { proxy, store } = await behindProxy('late-start', writer.prefix);
    await writer.put('late/k', 'there');
    await proxy.cut();
    const watch = new Pull(store.watch('late/k'));
    const first = watch.next(20_000);
    await writer.put('late/k', 'meanwhile');
    await proxy.start();
    expect(values([await first])).toEqual(['meanwhile']);
    await writer.put('late/k', 'next');
    expect(values([await watch.next()])).toEqual(['next']);
    await watch.stop();
  });

  it('a watch whose resume revision was compacted re-reads and yields the current state', async () => {
    const { proxy, store } = await behindProxy('compacted', writer.prefix);
    await writer.put('cmp/k', 'start');
    const watch = new Pull(store.watch('cmp/k'));
    const tree = new Pull(store.watchTree('cmp'));
    expect(values([await watch.next()])).toEqual(['start']);
    expect((await tree.next()).pairs.map((p) => p.key)).toEqual(['cmp/k']);
    await proxy.cut();
    await writer.put('cmp/k', 'lost-1');
    await writer.put('cmp/k', 'final');
    await writer.put('cmp/other', 'o');
    const { revision } = await writer.status();
    await writer.compact(revision);
    await proxy.start();
    const current = await watch.next();
    expect(values([current])).toEqual(['final']);
    expect(current?.lastIndex).toBe((await writer.get('cmp/k')).lastIndex);
    const event = await tree.next();
    expect(event.pairs.map((p) => [p.key, text(p.value)])).toEqual([
      ['cmp/k', 'final'],
      ['cmp/other', 'o'],
    ]);
    // It goes on watching after the re-read.
    await writer.put('cmp/k', 'later');
    expect(values([await watch.next()])).toEqual(['later']);
    await watch.stop();
    await tree.stop();
  });

  it('watches survive the server being stopped and started, without missing a change written in between', async () => {
    const direct = await open([endpoint], 'restart-watch');
    // A second watcher reaches the server through a proxy that stays cut until the writes are done,
    // so it must replay them from its revision after the restart.
    const { proxy, store: cutOff } = await behindProxy('restart-cut', direct.prefix);
    await direct.put('rs/k', 'before');
    const watch = new Pull(direct.watch('rs/k'));
    const tree = new Pull(direct.watchTree('rs'));
    const late = new Pull(cutOff.watch('rs/k'));
    expect(values([await watch.next()])).toEqual(['before']);
    expect(values([await late.next()])).toEqual(['before']);
    await tree.next();

    await proxy.cut();
    await (server as NonNullable<typeof server>).stop();
    await (server as NonNullable<typeof server>).start();
    const startedAt = Date.now();
    // A second client, connected after the restart, writes at once.
    const second = await openTestStore([endpoint], 'second', { prefix: direct.prefix } as Record<
      string,
      unknown
    >);
    stores.push(second);
    await second.put('rs/k', 'a');
    await second.put('rs/k', 'b');
    await second.put('rs/new', 'n');
    await second.delete('rs/k');

    const seen = [await watch.next(20_000), await watch.next(), await watch.next()];
    const resumedIn = Date.now() - startedAt;
    expect(values(seen)).toEqual(['a', 'b', null]);
    let last: TreeEvent | undefined;
    while (last?.pairs.map((p) => p.key).join() !== 'rs/new') last = await tree.next(20_000);

    const reconnectedAt = Date.now();
    await proxy.start();
    const replayed = [await late.next(20_000), await late.next(), await late.next()];
    expect(values(replayed)).toEqual(['a', 'b', null]);
    expect(replayed.map((p) => p?.lastIndex ?? 0).slice(0, 2)).toEqual(
      seen.map((p) => p?.lastIndex ?? 0).slice(0, 2),
    );
    console.info(
      `after a restart: the direct watch resumed ${resumedIn} ms after the server served; ` +
        `the cut-off one replayed the missed changes ${Date.now() - reconnectedAt} ms after its connection came back`,
    );
    await watch.stop();
    await tree.stop();
    await late.stop();
  });

  it('a lock holder and a waiter ride out a restart; the waiter gets the lock when the holder unlocks', async () => {
    const a = await open([endpoint], 'lock-a');
    const b = await openTestStore([endpoint], 'lock-b', { prefix: a.prefix } as Record<string, unknown>);
    stores.push(b);
    const lockA = a.newLock('job', { ttl: 10_000, value: 'a' });
    const held = await lockA.lock();
    const lockB = b.newLock('job', { ttl: 10_000, value: 'b' });
    let bHolds = false;
    const waiting = lockB.lock().then((lease) => {
      bHolds = true;
      return lease;
    });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(bHolds).toBe(false);

    await (server as NonNullable<typeof server>).stop();
    await (server as NonNullable<typeof server>).start();
    // Still held across the restart (the lease outlives it) and b still waits.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(held.lost.aborted).toBe(false);
    expect(bHolds).toBe(false);
    expect(text((await a.get('job')).value)).toBe('a');

    const releasedAt = Date.now();
    await lockA.unlock();
    const leaseB = await within(waiting, 15_000, 'the waiter taking the lock');
    console.info(`after the restart, the waiter took the lock ${Date.now() - releasedAt} ms after unlock()`);
    expect(leaseB.fencingToken).toBeGreaterThan(held.fencingToken);
    expect(text((await b.get('job')).value)).toBe('b');
    await lockB.unlock();
  });
});
