import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createStore, InvalidArgumentError, type KVPair, type TreeEvent } from '@kv/core';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import '@kv/backend-sqlite';
import { pull } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'kv-sqlite-schema-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The first released layout (user_version 0), as its stores created it. */
const FIRST_LAYOUT = `
CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL, expires_at INTEGER, owner TEXT) WITHOUT ROWID;
CREATE INDEX kv_expires ON kv (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, value BLOB);
CREATE TABLE locks (key TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE fencing (key TEXT PRIMARY KEY, token INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE lock_waiters (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, holder TEXT NOT NULL, expires_at INTEGER NOT NULL);
CREATE INDEX lock_waiters_key ON lock_waiters (key, id);
CREATE TABLE log_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
`;

/**
 * A file of the first layout with what its stores wrote: 30 puts over five
 * keys (each key's version the sequence of its last put), one ttl key, the
 * oldest ten log rows trimmed, a lock key acquired seven times.
 */
function firstLayoutFile(name: string, { emptyLog = false } = {}): string {
  const path = join(dir, name);
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.exec(FIRST_LAYOUT);
  const log = db.prepare('INSERT INTO changes (key, value) VALUES (?, ?)');
  const upsert = db.prepare(
    'INSERT INTO kv (key, value, version, expires_at) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version, expires_at = excluded.expires_at',
  );
  db.transaction(() => {
    for (let i = 1; i <= 30; i++) {
      const key = i === 30 ? 'app/ttl' : `app/k/${i % 5}`;
      const value = Buffer.from(`v${i}`);
      const seq = Number(log.run(key, value).lastInsertRowid);
      upsert.run(key, value, seq, i === 30 ? Date.now() + 60_000 : null);
    }
    // With an empty log, a token above every version (a key locked many times, its puts since trimmed).
    db.prepare("INSERT INTO fencing (key, token) VALUES ('app/lock', ?)").run(emptyLog ? 100 : 7);
    db.prepare(emptyLog ? 'DELETE FROM changes' : 'DELETE FROM changes WHERE seq <= 10').run();
    const bytes = db
      .prepare(
        'SELECT COALESCE(SUM(length(CAST(key AS BLOB)) + COALESCE(length(value), 0) + 16), 0) AS n FROM changes',
      )
      .get() as { n: number };
    db.prepare("INSERT INTO log_meta (name, value) VALUES ('bytes', ?)").run(bytes.n);
  })();
  db.close();
  return path;
}

const text = (pair: KVPair | null | undefined) => (pair ? new TextDecoder().decode(pair.value) : null);

describe('sqlite: a file of the first layout is migrated when a store opens it', () => {
  it('keeps keys, versions, ttls, the log and its index; sequences and fencing tokens go on above the old ones', async () => {
    const path = firstLayoutFile('first.db');
    const store = await createStore({ backend: 'sqlite', path, prefix: 'app' });
    try {
      // Data and versions as they were: k/0 was last written by put 25, k/4 by put 29.
      expect((await store.list('k')).map((p) => [p.key, text(p), p.lastIndex])).toEqual([
        ['k/0', 'v25', 25],
        ['k/1', 'v26', 26],
        ['k/2', 'v27', 27],
        ['k/3', 'v28', 28],
        ['k/4', 'v29', 29],
      ]);
      expect(text(await store.get('ttl'))).toBe('v30');

      const db = new Database(path, { readonly: true });
      try {
        expect(db.pragma('user_version', { simple: true })).toBe(1);
        expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
        const tables = (
          db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]
        ).map((t) => t.name);
        expect(tables).not.toContain('log_meta');
        expect(tables).not.toContain('fencing');
        // The expiry index is still there and still used.
        const plan = db
          .prepare('EXPLAIN QUERY PLAN SELECT key FROM kv WHERE expires_at IS NOT NULL AND expires_at <= 1')
          .all() as { detail: string }[];
        expect(plan.map((p) => p.detail).join()).toContain('kv_expires');
        // The log's rows are all still there, each with the running total of bytes.
        const log = db.prepare('SELECT seq, total FROM changes ORDER BY seq').all() as {
          seq: number;
          total: number;
        }[];
        expect(log.map((r) => r.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 11));
        for (let i = 1; i < log.length; i++)
          expect(log[i]?.total).toBeGreaterThan(log[i - 1]?.total as number);
      } finally {
        db.close();
      }

      // A watch opened now replays from the migrated log onwards; new writes go above every old sequence.
      const watch = store.watch('k/1')[Symbol.asyncIterator]();
      expect(text(await pull(watch))).toBe('v26');
      await store.put('k/1', 'after');
      const event = await pull(watch);
      expect(text(event)).toBe('after');
      expect(event?.lastIndex).toBe(31);
      await watch.return?.();

      // CAS on a migrated version, and the lock's token above the seven handed out before.
      const k2 = await store.get('k/2');
      expect((await store.atomicPut('k/2', 'cas', k2)).lastIndex).toBeGreaterThan(31);
      const lock = store.newLock('lock');
      const lease = await lock.lock();
      expect(lease.fencingToken).toBeGreaterThan(7);
      await lock.unlock();
      const again = await lock.lock();
      expect(again.fencingToken).toBeGreaterThan(lease.fencingToken);
      await lock.unlock();
    } finally {
      await store.close();
    }

    // Reopened: nothing to migrate, everything still there.
    const reopened = await createStore({ backend: 'sqlite', path, prefix: 'app' });
    try {
      expect(text(await reopened.get('k/1'))).toBe('after');
      expect((await reopened.get('k/1')).lastIndex).toBe(31);
    } finally {
      await reopened.close();
    }
  });

  it('an empty old log: sequences still go on above every version and fencing token, and no watch sees the row that carries them', async () => {
    const path = firstLayoutFile('empty-log.db', { emptyLog: true });
    const store = await createStore({ backend: 'sqlite', path });
    try {
      const tree = store.watchTree('')[Symbol.asyncIterator]();
      expect(((await pull(tree)) as TreeEvent).pairs).toHaveLength(6);
      await store.put('app/k/0', 'next');
      const event = (await pull(tree)) as TreeEvent;
      expect(event.changes).toEqual([{ type: 'put', pair: expect.objectContaining({ key: 'app/k/0' }) }]);
      expect((await store.get('app/k/0')).lastIndex).toBeGreaterThan(100);
      await tree.return?.();
      const lock = store.newLock('app/lock');
      expect((await lock.lock()).fencingToken).toBeGreaterThan(100);
      await lock.unlock();
    } finally {
      await store.close();
    }
  });

  it('a file of a newer layout is refused with a clear error, untouched', async () => {
    const path = join(dir, 'newer.db');
    const db = new Database(path);
    db.pragma('user_version = 99');
    db.close();
    await expect(createStore({ backend: 'sqlite', path })).rejects.toThrow(InvalidArgumentError);
    await expect(createStore({ backend: 'sqlite', path })).rejects.toThrow(/newer than this version/);
    const after = new Database(path, { readonly: true });
    expect(after.pragma('user_version', { simple: true })).toBe(99);
    expect(after.prepare('SELECT COUNT(*) AS n FROM sqlite_master').get()).toEqual({ n: 0 });
    after.close();
  });
});
