import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createStore, InvalidArgumentError, LockLostError, type Store, type TreeEvent } from '@kv/core';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import '@kv/backend-sqlite';

const dir = mkdtempSync(join(tmpdir(), 'kv-sqlite-edges-'));
const path = join(dir, 'kv.db');
const opened: Store[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close()));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
async function open(prefix = `edges/${++n}`): Promise<Store> {
  const store = await createStore({ backend: 'sqlite', path, prefix });
  opened.push(store);
  return store;
}

/** Polls `check` every few ms until `ms` have passed; every poll must hold. */
async function holdsFor(ms: number, check: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    expect(await check()).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('sqlite edge cases', () => {
  it('keep-alive keys of different ttls are each renewed in time', async () => {
    const store = await open();
    await store.put('long', 'v', { keepAlive: true, ttl: 60_000 });
    await store.put('short', 'v', { keepAlive: true, ttl: 300 });
    await holdsFor(1_200, () => store.exists('short'));
  });

  it('a watch sees the expiry of a key its own store wrote within ttl + ttlGranularity', async () => {
    const store = await open();
    const watch = store.watch('k')[Symbol.asyncIterator]();
    expect((await watch.next()).value).toBeNull();
    const ttl = 150;
    await store.put('k', 'v', { ttl });
    const written = Date.now();
    expect((await watch.next()).value).not.toBeNull();
    expect((await watch.next()).value).toBeNull();
    // Generous slack for a shared machine; the bug this guards against was ~900 ms late.
    expect(Date.now() - written).toBeLessThan(ttl + store.capabilities.ttlGranularity + 400);
    await watch.return?.();
  });

  it('deleting a held lock key never makes a second holder while the first believes it holds', async () => {
    const prefix = `edges/${++n}`;
    const a = await open(prefix);
    const b = await open(prefix);
    const leaseA = await a.newLock('jobs/nightly', { ttl: 1_500 }).lock();
    const waiting = b.newLock('jobs/nightly', { ttl: 1_500 }).lock();
    await b.deleteTree('jobs');
    const leaseB = await waiting;
    expect(leaseA.lost.aborted, 'A knows it lost the lock by the time B holds it').toBe(true);
    expect(LockLostError.isInstance(leaseA.lost.reason)).toBe(true);
    expect(leaseB.fencingToken).toBeGreaterThan(leaseA.fencingToken);
  });

  it('an unprefixed store lists and watches keys at the top of Unicode', async () => {
    const store = await createStore({ backend: 'sqlite', path: join(dir, 'unprefixed.db') });
    opened.push(store);
    const tree = store.watchTree('')[Symbol.asyncIterator]();
    await tree.next();
    for (const key of ['a', '\u{10ffff}', '\u{10ffff}x']) await store.put(key, 'v');
    expect((await store.list('')).map((p) => p.key)).toEqual(['a', '\u{10ffff}', '\u{10ffff}x']);
    let last: TreeEvent | undefined;
    while (last?.pairs.length !== 3) last = (await tree.next()).value as TreeEvent;
    await tree.return?.();
  });

  it('a watchTree never shows a deleteTree half done', async () => {
    const store = await open();
    for (const key of ['a/1', 'a/2', 'a/3']) await store.put(key, 'v');
    const tree = store.watchTree('a')[Symbol.asyncIterator]();
    expect(((await tree.next()).value as TreeEvent).pairs).toHaveLength(3);
    await store.deleteTree('a');
    const event = (await tree.next()).value as TreeEvent;
    expect(event.pairs).toEqual([]);
    expect(event.changes.map((c) => c.type)).toEqual(['delete', 'delete', 'delete']);
    await tree.return?.();
  });

  it('URL edge cases are clear InvalidArgumentErrors or kept as written', async () => {
    await expect(createStore('sqlite:./a%zz.db')).rejects.toBeInstanceOf(InvalidArgumentError);
    const store = await createStore(`sqlite:${path}?prefix=2024`);
    opened.push(store);
    expect(store.prefix).toBe('2024');
    await expect(createStore('sqlite::memory:?busyTimeout=3000000000')).rejects.toBeInstanceOf(
      InvalidArgumentError,
    );
  });
});
