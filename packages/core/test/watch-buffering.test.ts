import { setImmediate as turn } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { Channel, diffListings, type KVPair, type TreeEvent, WATCH_BUFFER_BYTES } from '../src/index.js';
import { MemoryServer, MemoryStore } from '../src/memory-store.js';
import { TreeState } from '../src/tree-state.js';

const decoder = new TextDecoder();
const text = (pair: KVPair | null | undefined) => (pair ? decoder.decode(pair.value) : pair);

const stores: MemoryStore[] = [];
function open(server: MemoryServer): MemoryStore {
  const store = new MemoryStore({ server });
  stores.push(store);
  return store;
}
afterEach(async () => {
  await Promise.all(stores.splice(0).map((store) => store.close()));
});

describe('watchTree of a big directory (review #11)', () => {
  it('keeps up with a 6000-write burst on a 20k-key directory: under 2 s behind the last write', async () => {
    const server = new MemoryServer();
    const writer = open(server);
    const watcher = open(server);
    const size = 20_000;
    const burst = 6_000;
    for (let i = 0; i < size; i++) await writer.put(`big/k${i}`, 'v');

    const iterator = watcher.watchTree('big')[Symbol.asyncIterator]();
    const first = await iterator.next();
    expect(first.value?.pairs).toHaveLength(size);
    const keyOf = (i: number) => `big/k${(i * 7919) % size}`;
    const lastKey = keyOf(burst - 1);
    const lastValue = `burst-${burst - 1}`;
    let events = 0;
    let latest: TreeEvent | undefined;
    const caughtUp = (async () => {
      for (;;) {
        const { value, done } = await iterator.next();
        if (done) throw new Error('the watch ended early');
        events++;
        latest = value;
        if (
          value.changes.some((c) => c.type === 'put' && c.pair.key === lastKey && text(c.pair) === lastValue)
        )
          return performance.now();
      }
    })();

    caughtUp.catch(() => {}); // awaited below, unless the burst fails first
    const started = performance.now();
    for (let i = 0; i < burst; i++) {
      await writer.put(keyOf(i), `burst-${i}`);
      // The watcher shares this process: one that re-sorts per commit slows the burst down (160 s before the fix).
      if (performance.now() - started > 20_000) {
        await iterator.return?.();
        throw new Error(`the watcher slowed the burst down: ${i} of ${burst} writes in 20 s`);
      }
    }
    const lastWrite = performance.now();
    const seenAt = await caughtUp;
    const behind = Math.max(0, seenAt - lastWrite);
    console.log(
      `watchTree ${size} keys, ${burst} writes: burst ${((lastWrite - started) / 1000).toFixed(2)} s, ` +
        `watcher ${(behind / 1000).toFixed(3)} s behind, ${events} events`,
    );
    expect(behind).toBeLessThan(2_000);
    // The listing the watcher holds is the store's, in full and in order.
    expect(latest?.pairs).toEqual(await writer.list('big'));
    await iterator.return?.();
  }, 30_000);

  it.each([
    ['changes', false],
    ['full listings', true],
  ])(
    'merges what arrived while the consumer was away into one event (a backend yielding %s)',
    async (_, watchTreeListings) => {
      const server = new MemoryServer();
      const writer = open(server);
      const watcher = new MemoryStore({ server, watchTreeListings });
      stores.push(watcher);
      for (let i = 0; i < 100; i++) await writer.put(`d/k${String(i).padStart(3, '0')}`, 'v0');
      await writer.put('d/sub/x', 'x');
      await writer.put('d/sub/y', 'y');
      const iterator = watcher.watchTree('d')[Symbol.asyncIterator]();
      const first = (await iterator.next()).value as TreeEvent;
      expect(first.pairs).toHaveLength(102);
      expect(first.changes).toHaveLength(102);

      // The consumer is away: many commits arrive.
      for (let round = 1; round <= 20; round++) {
        for (let i = 0; i < 100; i += 3) await writer.put(`d/k${String(i).padStart(3, '0')}`, `v${round}`);
      }
      await writer.delete('d/k001');
      await writer.put('d/new', 'n');
      await writer.put('d/gone', 'g');
      await writer.delete('d/gone'); // created and deleted meanwhile: no change at all
      await writer.deleteTree('d/sub');
      await writer.put('outside', 'o');
      const expected = await writer.list('d');
      await turn();

      const event = (await iterator.next()).value as TreeEvent;
      expect(event.pairs).toEqual(expected);
      // Exactly the net difference from what the consumer saw last, sorted by key.
      expect(event.changes).toEqual(diffListings(first.pairs, expected));
      expect(event.changes).toHaveLength(34 + 1 + 1 + 2);
      expect(event.changes).toContainEqual({ type: 'delete', key: 'd/k001' });
      expect(event.changes).toContainEqual({ type: 'delete', key: 'd/sub/x' });
      expect(event.changes.some((c) => c.type === 'put' && c.pair.key === 'd/new')).toBe(true);
      for (const change of event.changes) if (change.type === 'put') expect(text(change.pair)).not.toBe('v0');

      // Nothing else is pending: the next event is the next commit, not a repeat.
      const next = iterator.next();
      await writer.put('d/k050', 'last');
      const last = (await next).value as TreeEvent;
      expect(last.changes).toEqual([{ type: 'put', pair: await writer.get('d/k050') }]);
      expect(last.pairs).toEqual(await writer.list('d'));
      await iterator.return?.();
    },
  );
});

describe('TreeState', () => {
  const filter = {
    pair: (raw: KVPair) => (raw.key.startsWith('d/') && !raw.key.includes('\u0001') ? raw : undefined),
    key: (raw: string) => (raw.startsWith('d/') ? raw : undefined),
  };
  const p = (key: string, lastIndex: number): KVPair => ({ key, value: new Uint8Array(), lastIndex });

  it('gives nothing before the first listing, then the listing as puts, then only real changes', () => {
    const tree = new TreeState(filter);
    expect(tree.take()).toBeUndefined();
    tree.apply({ type: 'listing', pairs: [p('d/b', 2), p('d/a', 1), p('x/a', 3), p('d/\u0001lock', 4)] });
    expect(tree.take()).toEqual({
      pairs: [p('d/a', 1), p('d/b', 2)],
      changes: [
        { type: 'put', pair: p('d/a', 1) },
        { type: 'put', pair: p('d/b', 2) },
      ],
    });
    expect(tree.take()).toBeUndefined();
    // A delete of an absent key, a repeat of a known state and a key outside change nothing.
    tree.apply({
      type: 'changes',
      changes: [
        { type: 'delete', key: 'd/zz' },
        { type: 'put', pair: p('d/a', 1) },
        { type: 'put', pair: p('x/q', 9) },
      ],
    });
    expect(tree.take()).toBeUndefined();
    expect(tree.pendingKeys).toBe(0);
  });

  it('keeps only the latest state of each key until the pull, and its listings are the consumer’s to keep', () => {
    const tree = new TreeState(filter);
    tree.apply({ type: 'listing', pairs: [] });
    const empty = tree.take() as TreeEvent;
    expect(empty).toEqual({ pairs: [], changes: [] });
    for (let i = 1; i <= 1000; i++)
      tree.apply({ type: 'changes', changes: [{ type: 'put', pair: p('d/a', i) }] });
    expect(tree.pendingKeys).toBe(1);
    const one = tree.take() as TreeEvent;
    expect(one).toEqual({ pairs: [p('d/a', 1000)], changes: [{ type: 'put', pair: p('d/a', 1000) }] });
    one.pairs.length = 0; // the consumer's array: changing it cannot change the state
    tree.apply({ type: 'changes', changes: [{ type: 'put', pair: p('d/b', 1001) }] });
    expect((tree.take() as TreeEvent).pairs).toEqual([p('d/a', 1000), p('d/b', 1001)]);
  });

  it('keys that come and go while the consumer is away are not held; its changes array is its own', () => {
    const tree = new TreeState(filter);
    tree.apply({ type: 'listing', pairs: [p('d/keep', 1)] });
    tree.take();
    for (let i = 0; i < 1000; i++) {
      tree.apply({
        type: 'changes',
        changes: [
          { type: 'put', pair: p(`d/s${i}`, 10 + i) },
          { type: 'delete', key: `d/s${i}` },
        ],
      });
    }
    expect(tree.pendingKeys, 'bounded by the directory, not by the keys that came and went').toBe(0);
    tree.apply({ type: 'changes', changes: [{ type: 'put', pair: p('d/new', 2000) }] });
    const event = tree.take() as TreeEvent;
    event.changes.length = 0; // the consumer's array: changing it cannot change the state
    tree.apply({ type: 'changes', changes: [{ type: 'put', pair: p('d/later', 2001) }] });
    expect((tree.take() as TreeEvent).pairs).toEqual([p('d/keep', 1), p('d/later', 2001), p('d/new', 2000)]);
  });

  it('builds a listing only for events whose pairs are read, each one as of its own event', () => {
    const tree = new TreeState(filter);
    const size = 20_000;
    const key = (i: number) => `d/k${String(i).padStart(5, '0')}`;
    tree.apply({ type: 'listing', pairs: Array.from({ length: size }, (_, i) => p(key(i), i + 1)) });
    expect(tree.take()?.changes).toHaveLength(size);
    const events: TreeEvent[] = [];
    for (let i = 0; i < 6000; i++) {
      const k = key((i * 7919) % size);
      tree.apply({
        type: 'changes',
        changes: i % 10 === 9 ? [{ type: 'delete', key: k }] : [{ type: 'put', pair: p(k, size + 1 + i) }],
      });
      events.push(tree.take() as TreeEvent);
    }
    // No event's pairs were read: a fold of the change log now and then, not one listing per event.
    expect(tree.listingsBuilt).toBeLessThan(6000 / 32 + 2);
    // Each event's listing is the state as of that event, whenever it is read.
    const model = new Map(Array.from({ length: size }, (_, i) => [key(i), p(key(i), i + 1)]));
    const checked = [5999, 0, 1, 31, 32, 33, 3000, 5998];
    const expected = new Map<number, KVPair[]>();
    events.forEach((event, i) => {
      for (const change of event.changes) {
        if (change.type === 'put') model.set(change.pair.key, change.pair);
        else model.delete(change.key);
      }
      if (checked.includes(i))
        expected.set(
          i,
          [...model.values()].sort((a, b) => (a.key < b.key ? -1 : 1)),
        );
    });
    for (const i of checked) expect(events[i]?.pairs).toEqual(expected.get(i));
  });

  it('a new listing (a resync) replaces everything; changes after it apply on top', () => {
    const tree = new TreeState(filter);
    tree.apply({ type: 'listing', pairs: [p('d/a', 1), p('d/b', 2), p('d/c', 3)] });
    tree.take();
    tree.apply({ type: 'changes', changes: [{ type: 'put', pair: p('d/lost', 4) }] });
    tree.apply({ type: 'listing', pairs: [p('d/c', 3), p('d/a', 5)] });
    tree.apply({ type: 'changes', changes: [{ type: 'put', pair: p('d/d', 6) }] });
    expect(tree.take()).toEqual({
      pairs: [p('d/a', 5), p('d/c', 3), p('d/d', 6)],
      changes: [
        { type: 'put', pair: p('d/a', 5) },
        { type: 'delete', key: 'd/b' },
        { type: 'put', pair: p('d/d', 6) },
      ],
    });
    // The same listing again is no change.
    tree.apply({ type: 'listing', pairs: [p('d/d', 6), p('d/a', 5), p('d/c', 3)] });
    expect(tree.take()).toBeUndefined();
  });
});

describe('a slow watch() consumer (review #12)', () => {
  it('holds a bounded number of bytes while large values are put, and then yields the latest put last, in order', async () => {
    const server = new MemoryServer();
    const writer = open(server);
    const watcher = open(server);
    const big = new Uint8Array(1024 * 1024 - 256);
    const iterator = watcher.watch('blob')[Symbol.asyncIterator]();
    expect((await iterator.next()).value).toBeNull();

    const puts = 100;
    let peakBytes = 0;
    let peakItems = 0;
    for (let i = 0; i < puts; i++) {
      big[0] = i;
      await writer.put('blob', big);
      await turn(); // let the watch's pump deliver
      expect(iterator).toBeInstanceOf(Channel);
      const channel = iterator as Channel<KVPair | null>;
      peakBytes = Math.max(peakBytes, channel.bufferedBytes);
      peakItems = Math.max(peakItems, channel.bufferedItems);
    }
    const latest = await writer.get('blob');
    console.log(
      `slow watch, ${puts} puts of 1 MiB: at most ${peakItems} states, ${(peakBytes / 2 ** 20).toFixed(1)} MiB buffered`,
    );
    // At most WATCH_BUFFER_BYTES, plus the newest state, which is always kept.
    expect(peakBytes).toBeLessThanOrEqual(WATCH_BUFFER_BYTES + big.byteLength + 1024);
    expect(peakItems).toBeLessThanOrEqual(Math.ceil(WATCH_BUFFER_BYTES / big.byteLength) + 1);

    const yielded: KVPair[] = [];
    for (;;) {
      const { value } = await iterator.next();
      if (!value) throw new Error('unexpected end or delete');
      yielded.push(value);
      if (value.lastIndex === latest.lastIndex) break;
    }
    expect(yielded.length).toBeLessThan(puts / 5);
    const indexes = yielded.map((pair) => pair.lastIndex);
    expect(indexes).toEqual([...indexes].sort((a, b) => a - b));
    expect(yielded.at(-1)?.value[0]).toBe(puts - 1);
    // Then it waits for the next change: nothing older comes after the latest.
    const next = iterator.next();
    await writer.delete('blob');
    expect((await next).value).toBeNull();
    await iterator.return?.();
  });
});

describe('Channel byte bound', () => {
  it('merges the oldest items away past maxBytes, keeps the order, and always keeps the newest', async () => {
    const channel = new Channel<string>({ maxBytes: 10, weigh: (s) => s.length });
    for (const item of ['aaaa', 'bbbb', 'cccc', 'dddd']) channel.push(item);
    expect(channel.bufferedItems).toBe(2);
    expect(channel.bufferedBytes).toBe(8);
    channel.push('x'.repeat(50)); // alone over the bound: still kept
    expect(channel.bufferedItems).toBe(1);
    channel.push('e'); // together over the bound: the older one goes
    expect(channel.bufferedItems).toBe(1);
    expect(channel.mergedItems).toBe(5);
    channel.push('f');
    expect((await channel.next()).value).toBe('e');
    expect(channel.bufferedBytes).toBe(1);
    channel.end();
    const rest: string[] = [];
    for await (const item of channel) rest.push(item);
    expect(rest).toEqual(['f']);
    expect(channel.bufferedBytes).toBe(0);
  });
});
