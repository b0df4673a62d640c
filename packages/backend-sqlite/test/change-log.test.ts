import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createStore, type KVPair, type Store, type TreeEvent } from '@kv/core';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import '@kv/backend-sqlite';
import { pull } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'kv-sqlite-log-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The change log as another connection sees it: rows and bytes (keys and values). */
function logOf(path: string): { rows: number; bytes: number } {
  const db = new Database(path, { readonly: true });
  try {
    const row = db
      .prepare(
        'SELECT COUNT(*) AS rows, COALESCE(SUM(length(CAST(key AS BLOB)) + COALESCE(length(value), 0)), 0) AS bytes FROM changes',
      )
      .get() as { rows: number; bytes: number };
    return row;
  } finally {
    db.close();
  }
}

describe('sqlite: the change log stays bounded, whatever the stores', () => {
  it('many short-lived stores, each writing a few times, keep the log within changeLogSize rows', async () => {
    const path = join(dir, 'rows.db');
    for (let i = 0; i < 300; i++) {
      const store = await createStore({ backend: 'sqlite', path, prefix: 'app', changeLogSize: 100 });
      await store.put(`k/${i % 7}`, `v${i}`);
      await store.put('counter', String(i));
      await store.delete(`k/${(i + 3) % 7}`);
      await store.close();
    }
    const { rows } = logOf(path);
    console.info(`change log after 300 short-lived stores x 3 writes: ${rows} rows (bound 100)`);
    expect(rows).toBeLessThanOrEqual(100);
    expect(rows).toBeGreaterThan(0);
  });

  it('keeps the log within changeLogBytes: large values push the oldest entries out', async () => {
    const path = join(dir, 'bytes.db');
    const value = new Uint8Array(10_000).fill(7);
    for (let i = 0; i < 40; i++) {
      const store = await createStore({ backend: 'sqlite', path, changeLogBytes: 100_000 });
      for (let j = 0; j < 3; j++) await store.put(`big/${j}`, value);
      await store.close();
    }
    const { rows, bytes } = logOf(path);
    console.info(`change log after 120 writes of 10 kB: ${rows} rows, ${bytes} bytes (bound 100 000)`);
    expect(bytes).toBeLessThanOrEqual(100_000);
    expect(rows).toBeGreaterThan(0);
  });

  it('a log longer than the bound (an older version, a larger changeLogSize) is trimmed when a store opens', async () => {
    const path = join(dir, 'open.db');
    const big = await createStore({ backend: 'sqlite', path });
    for (let i = 0; i < 300; i++) await big.put(`k/${i % 5}`, String(i));
    await big.close();
    expect(logOf(path).rows).toBe(300);
    const small = await createStore({ backend: 'sqlite', path, changeLogSize: 50 });
    expect(logOf(path).rows).toBeLessThanOrEqual(50);
    expect(new TextDecoder().decode((await small.get('k/4')).value)).toBe('299');
    await small.close();
  });

  it('a watch that falls behind the trimmed log re-reads and yields the current state', async () => {
    const path = join(dir, 'resync.db');
    const store: Store = await createStore({ backend: 'sqlite', path, changeLogSize: 10 });
    try {
      for (let i = 0; i < 50; i++) await store.put(`d/${String(i).padStart(2, '0')}`, 'v');
      const watch = store.watch('d/00')[Symbol.asyncIterator]();
      const tree = store.watchTree('d')[Symbol.asyncIterator]();
      expect((await pull<KVPair | null>(watch))?.key).toBe('d/00');
      expect((await pull<TreeEvent>(tree)).pairs).toHaveLength(50);
      // One transaction logs 51 changes; only the last 10 stay in the log, the delete of d/00 is trimmed.
      await store.deleteTree('d');
      expect(logOf(path).rows).toBeLessThanOrEqual(10);
      expect(await pull<KVPair | null>(watch)).toBeNull();
      const event = await pull<TreeEvent>(tree);
      expect(event.pairs).toEqual([]);
      expect(event.changes).toHaveLength(50);
      // And both go on watching.
      await store.put('d/00', 'again');
      expect(new TextDecoder().decode((await pull<KVPair | null>(watch))?.value)).toBe('again');
      expect((await pull<TreeEvent>(tree)).pairs.map((p) => p.key)).toEqual(['d/00']);
      await watch.return?.();
      await tree.return?.();
    } finally {
      await store.close();
    }
  });
});
