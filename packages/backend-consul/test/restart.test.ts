import { createStore, type KVPair, type Store, type TreeEvent } from '@kv/core';
import { afterAll, describe, expect, it } from 'vitest';
import { privateConsul, retry, text, within } from './helpers.js';

// A one-server agent whose raft data lives on disk: a restart keeps keys, sessions and the raft index.
const launched = await privateConsul('agent restart tests', { persistent: true });

const LOCK_TTL = 2_000;
const REQUEST_TIMEOUT = 1_000;

/** Reads a watch iterator until `want(state)` holds; each step bounded. */
async function until<T>(
  iterator: AsyncIterator<T>,
  want: (state: T) => boolean,
  ms: number,
  what: string,
): Promise<T[]> {
  const seen: T[] = [];
  const deadline = performance.now() + ms;
  for (;;) {
    const left = deadline - performance.now();
    if (left <= 0) throw new Error(`${what}: not within ${ms} ms (saw ${JSON.stringify(seen)})`);
    const next = await within(iterator.next(), left, what);
    if (next.done) throw new Error(`${what}: the watch ended`);
    seen.push(next.value);
    if (want(next.value)) return seen;
  }
}

const shown = (pair: KVPair | null): string | null => (pair ? text(pair.value) : null);

describe.skipIf(launched.skip !== false)('a Consul agent restart', () => {
  const server = launched.server as NonNullable<typeof launched.server>;
  const stores: Store[] = [];
  const open = async (prefix: string) => {
    const store = await createStore({
      backend: 'consul',
      endpoints: server.endpoints,
      prefix,
      requestTimeout: REQUEST_TIMEOUT,
    });
    stores.push(store);
    return store;
  };
  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await server.dispose();
  });

  it('a watch resumes by itself with the latest state; a held lock is lost, then regained with a larger token', async () => {
    const store = await open('restart');
    const watcher = await open('restart');
    await store.put('w', 'before');
    const before = await store.get('w');
    const watch = watcher.watch('w')[Symbol.asyncIterator]();
    const tree = watcher.watchTree('d')[Symbol.asyncIterator]();
    expect(shown((await within(watch.next(), 10_000, 'first watch event')).value as KVPair)).toBe('before');
    await within(tree.next(), 10_000, 'first watchTree event');

    const lock = store.newLock('l', { ttl: LOCK_TTL });
    const held = await lock.lock();
    const lost = new Promise<number>((resolve) =>
      held.lost.addEventListener('abort', () => resolve(performance.now()), { once: true }),
    );

    const stoppedAt = performance.now();
    await server.stop();
    // Nothing renews the session now: the holder must give the lock up on its own, within its ttl.
    const lostAt = await within(lost, LOCK_TTL + 2_000, 'lost while the agent is down');
    expect(lostAt - stoppedAt).toBeLessThan(LOCK_TTL + 1_000);
    await server.start();

    // A change right after the restart: the same watch iterators yield it by themselves.
    await retry(() => store.put('w', 'after'), 30_000);
    await retry(() => store.put('d/k', 'new'), 30_000);
    const after = await store.get('w');
    expect(after.lastIndex, 'lastIndex went backwards across the restart').toBeGreaterThan(before.lastIndex);
    await until(watch, (s) => shown(s as KVPair | null) === 'after', 30_000, 'watch after the restart');
    await until(
      tree,
      (s) => (s as TreeEvent).pairs.some((p) => p.key === 'd/k' && text(p.value) === 'new'),
      30_000,
      'watchTree after the restart',
    );

    // The lock: free again within its ttl (the old session, whose timer the new leader restarts,
    // ends at most 2 × ttl/2 after the restart), and the token is larger.
    const other = await open('restart');
    const regained = await within(
      retry(() => other.newLock('l', { ttl: LOCK_TTL }).lock(), 30_000),
      LOCK_TTL * 3 + 10_000,
      'the lock regained',
    );
    expect(regained.fencingToken, 'fencing token went backwards').toBeGreaterThan(held.fencingToken);
    expect(regained.lost.aborted).toBe(false);
    await watch.return?.();
    await tree.return?.();
  });

  it('a snapshot restore sends the index back: watches reset it and yield the restored state, then go on', async () => {
    const store = await open('restore');
    // A short server-side wait: a watch whose index were not reset would sit past the restore.
    const watcher = await createStore({
      backend: 'consul',
      endpoints: server.endpoints,
      prefix: 'restore',
      requestTimeout: REQUEST_TIMEOUT,
      blockingWait: 2_000,
    });
    stores.push(watcher);
    await store.put('w', 'snapshotted');
    const snapshot = await snapshotCall(server.urls[0] as string, 'GET');
    for (let i = 0; i < 5; i++) await store.put('w', `later-${i}`);
    await store.put('gone-after-restore', 'x');
    const watch = watcher.watch('w')[Symbol.asyncIterator]();
    expect(shown((await within(watch.next(), 10_000, 'first watch event')).value as KVPair)).toBe('later-4');
    const highest = (await store.get('gone-after-restore')).lastIndex;

    await snapshotCall(server.urls[0] as string, 'PUT', snapshot);
    // The agent's KV index is back below what the watch last saw: it resets and reads afresh.
    await until(
      watch,
      (s) => shown(s as KVPair | null) === 'snapshotted',
      2_000 + 10_000,
      'the restored state',
    );
    expect(await store.exists('gone-after-restore')).toBe(false);
    // And it goes on: the next write (a raft index above everything before) arrives.
    await store.put('w', 'after-restore');
    await until(watch, (s) => shown(s as KVPair | null) === 'after-restore', 10_000, 'a write after');
    expect((await store.get('w')).lastIndex).toBeGreaterThan(highest);
    await watch.return?.();
  });
});

/** Saves (GET) or restores (PUT) a snapshot of the agent's state. */
async function snapshotCall(url: string, method: 'GET' | 'PUT', body?: Uint8Array): Promise<Uint8Array> {
  const res = await fetch(`${url}/v1/snapshot`, {
    method,
    ...(body ? { body } : {}),
    signal: AbortSignal.timeout(20_000),
  });
  const bytes = new Uint8Array(await res.arrayBuffer());
  if (!res.ok)
    throw new Error(`${method} /v1/snapshot: HTTP ${res.status} ${new TextDecoder().decode(bytes)}`);
  return bytes;
}
