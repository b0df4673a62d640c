import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ClosedError,
  createStore,
  KeyExistsError,
  KeyModifiedError,
  KVError,
  type KVPair,
  type Store,
} from '@kv/core';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import '@kv/backend-sqlite';

const dir = mkdtempSync(join(tmpdir(), 'kv-sqlite-group-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
async function open(): Promise<{ store: Store; path: string }> {
  const path = join(dir, `group-${files++}.db`);
  return { store: await createStore({ backend: 'sqlite', path }), path };
}

/** Empties the file's WAL (from another connection, while the store is idle): frames are counted from here. */
function restartWal(path: string): void {
  const db = new Database(path);
  try {
    const [result] = db.pragma('wal_checkpoint(TRUNCATE)') as { busy: number }[];
    expect(result?.busy).toBe(0);
  } finally {
    db.close();
  }
}

/** Pages the commits since `restartWal` wrote to the WAL. */
function walFrames(path: string): number {
  const db = new Database(path);
  try {
    const [result] = db.pragma('wal_checkpoint(PASSIVE)') as { log: number }[];
    return result?.log ?? -1;
  } finally {
    db.close();
  }
}

const text = (pair: KVPair) => Buffer.from(pair.value).toString();

/** The keys of the file's change log in sequence order, read by another connection. */
function loggedKeys(path: string): string[] {
  const db = new Database(path, { readonly: true });
  try {
    return (db.prepare('SELECT key FROM changes ORDER BY seq').all() as { key: string }[]).map((r) => r.key);
  } finally {
    db.close();
  }
}

describe('sqlite: writes called in one turn of the event loop commit together', () => {
  it('64 concurrent creates write a few pages (one write alone, then one group), not a commit each; versions follow the calls', async () => {
    const { store, path } = await open();
    await store.put('warm', 'x');
    restartWal(path);
    const created = await Promise.all(
      Array.from({ length: 64 }, (_, i) =>
        store.atomicPut(`g/k${String(i).padStart(2, '0')}`, `v${i}`, null),
      ),
    );
    const frames = walFrames(path);
    console.info(`64 concurrent creates: ${frames} WAL frames (a commit each: 128)`);
    // A commit each would write 128 pages (the key's and the change log's): here two commits of a few pages.
    expect(frames).toBeGreaterThan(0);
    expect(frames).toBeLessThanOrEqual(12);
    for (let i = 1; i < created.length; i++) {
      expect((created[i] as KVPair).lastIndex).toBeGreaterThan((created[i - 1] as KVPair).lastIndex);
    }
    const listed = await store.list('g');
    expect(listed.map(text)).toEqual(Array.from({ length: 64 }, (_, i) => `v${i}`));
    expect(listed.map((p) => p.lastIndex)).toEqual(created.map((p) => p.lastIndex));
    await store.close();
  });

  it('each write of a group has its own outcome: a failed check fails only its own write, and the group still commits as one', async () => {
    const { store, path } = await open();
    const stale = await store.put('o/cas', 'old').then(() => store.get('o/cas'));
    await store.put('o/cas', 'newer');
    restartWal(path);
    const outcomes = await Promise.allSettled([
      store.put('o/first', '1'),
      store.atomicPut('o/k', 'a', null),
      store.atomicPut('o/k', 'b', null),
      store.put('o/other', 'x'),
      store.atomicPut('o/cas', 'lost', stale),
      store.atomicDelete('o/cas', stale),
      store.delete('o/first'),
    ]);
    expect(outcomes.map((o) => o.status)).toEqual([
      'fulfilled',
      'fulfilled',
      'rejected',
      'fulfilled',
      'rejected',
      'rejected',
      'fulfilled',
    ]);
    // Two commits (the first write alone, then the group) of the key page and the log's page: 4 frames.
    // Run one by one, the four writes that succeed after the first would write 8 more.
    expect(walFrames(path)).toBeLessThanOrEqual(6);
    const reason = (i: number) => (outcomes[i] as PromiseRejectedResult).reason;
    expect(KeyExistsError.isInstance(reason(2))).toBe(true);
    expect(KeyModifiedError.isInstance(reason(4))).toBe(true);
    expect(KeyModifiedError.isInstance(reason(5))).toBe(true);
    expect((await store.list('o')).map((p) => `${p.key}=${text(p)}`)).toEqual([
      'o/cas=newer',
      'o/k=a',
      'o/other=x',
    ]);
    await store.close();
  });

  it('an SQLite error in one write of a group is that write alone: the others commit, nothing of it is stored or logged', async () => {
    const { store, path } = await open();
    // The store's own connection refuses one key (a temporary trigger: only this connection has it).
    const db = (store as unknown as { db: Database.Database }).db;
    db.exec(
      "CREATE TEMP TRIGGER refuse BEFORE INSERT ON main.kv WHEN NEW.key LIKE '%/bad' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    );
    const outcomes = await Promise.allSettled([
      store.put('t/a', '1'),
      store.put('t/b', '2'),
      store.put('t/bad', '3'),
      store.put('t/c', '4'),
    ]);
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    const error = (outcomes[2] as PromiseRejectedResult).reason;
    expect(KVError.isInstance(error)).toBe(true);
    expect(String(error.message)).toContain('refused by the test');
    expect((await store.list('t')).map((p) => p.key)).toEqual(['t/a', 't/b', 't/c']);
    expect(await store.exists('t/bad')).toBe(false);
    // The change log, as another process's watcher reads it: the three writes, in call order, nothing of t/bad.
    expect(loggedKeys(path)).toEqual(['t/a', 't/b', 't/c']);
    await store.close();
  });

  it('a read sees the writes this process called before it, even those still waiting for their group', async () => {
    const { store } = await open();
    void store.put('r/k', '1');
    const second = store.put('r/k', '2');
    const listed = store.list('r');
    expect(text(await store.get('r/k'))).toBe('2');
    expect((await listed).map(text)).toEqual(['2']);
    await second;
    await store.close();
  });

  it('a caller may reuse its buffer once the call returned: a write waiting for its group stores the bytes it was given', async () => {
    const { store } = await open();
    const buffer = new Uint8Array([1, 2, 3]);
    const writes = [
      store.put('u/a', buffer),
      store.put('u/b', buffer),
      store.atomicPut('u/c', buffer.subarray(1), null),
    ];
    buffer.fill(9);
    const [, , created] = await Promise.all(writes);
    expect([...(created as KVPair).value]).toEqual([2, 3]);
    const stored = await store.list('u');
    expect(stored.map((p) => [...p.value])).toEqual([
      [1, 2, 3],
      [1, 2, 3],
      [2, 3],
    ]);
    await store.close();
  });

  it("a lock call commits the writes waiting before it: their log entries come before the lock key's", async () => {
    const { store, path } = await open();
    void store.put('l/first', '1');
    const waiting = store.put('l/waiting', '2');
    const lease = await store.newLock('l/lock').lock();
    await waiting;
    const written = await store.get('l/waiting');
    expect(written.lastIndex).toBeLessThan(lease.fencingToken);
    expect(loggedKeys(path)).toEqual(['l/first', 'l/waiting', 'l/lock']);
    await store.close();
  });

  it('a write still waiting for its group when the store closes is not applied, and fails with ClosedError', async () => {
    const { store, path } = await open();
    // The first write of the turn commits at once (its call still ends with ClosedError: close() came before it returned).
    const first = store.put('c/a', '1').catch(() => {});
    const queued = store.put('c/b', '2');
    const closing = store.close();
    await first;
    const error = await queued.catch((e: unknown) => e);
    expect(ClosedError.isInstance(error)).toBe(true);
    await closing;
    const again = await createStore({ backend: 'sqlite', path });
    expect(text(await again.get('c/a'))).toBe('1');
    expect(await again.exists('c/b')).toBe(false);
    await again.close();
  });
});
