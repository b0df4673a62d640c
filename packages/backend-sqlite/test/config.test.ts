import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createStore, InvalidArgumentError, KVError } from '@kv/core';
import { afterAll, describe, expect, it } from 'vitest';
import { parseSqliteUrl } from '../src/sqlite-config.js';
import '@kv/backend-sqlite';

const dir = mkdtempSync(join(tmpdir(), 'kv-sqlite-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('sqlite URLs and options', () => {
  it('parses relative, absolute and in-memory URLs with query options', () => {
    expect(parseSqliteUrl('sqlite:./data/kv.db?prefix=app')).toEqual({
      backend: 'sqlite',
      path: './data/kv.db',
      prefix: 'app',
    });
    expect(parseSqliteUrl('sqlite:///var/lib/kv.db')).toEqual({ backend: 'sqlite', path: '/var/lib/kv.db' });
    expect(parseSqliteUrl('sqlite::memory:?pollInterval=10')).toEqual({
      backend: 'sqlite',
      path: ':memory:',
      pollInterval: 10,
    });
    expect(() => parseSqliteUrl('sqlite:')).toThrow(InvalidArgumentError);
  });

  it('opens by URL and by config, with the prefix from either', async () => {
    const path = join(dir, 'a.db');
    const byUrl = await createStore(`sqlite:${path}?prefix=app`);
    const byConfig = await createStore({ backend: 'sqlite', path, prefix: 'app' });
    await byUrl.put('k', 'v');
    expect(byUrl.prefix).toBe('app');
    expect(new TextDecoder().decode((await byConfig.get('k')).value)).toBe('v');
    await byUrl.close();
    await byConfig.close();
  });

  it('rejects unknown options, bad values and endpoints with InvalidArgumentError', async () => {
    await expect(
      createStore({ backend: 'sqlite', path: ':memory:', colour: 'blue' } as never),
    ).rejects.toThrow(/unknown option\(s\) for the sqlite backend: colour/);
    await expect(createStore('sqlite::memory:?pollInterval=0')).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(createStore({ backend: 'sqlite', endpoints: ['127.0.0.1:1'] })).rejects.toBeInstanceOf(
      InvalidArgumentError,
    );
  });

  it('a file that is not a database is a KVError, not a raw driver error', async () => {
    const path = join(dir, 'not-a-db.db');
    writeFileSync(path, 'this is not sqlite'.repeat(100));
    const error = await createStore({ backend: 'sqlite', path }).catch((e: unknown) => e);
    expect(KVError.isInstance(error)).toBe(true);
    expect((error as KVError).code).toBe('INVALID_ARGUMENT');
  });

  it('a path in a missing directory is a clear KVError', async () => {
    const error = await createStore({ backend: 'sqlite', path: join(dir, 'missing', 'kv.db') }).catch(
      (e: unknown) => e,
    );
    expect(InvalidArgumentError.isInstance(error)).toBe(true);
    const message = (error as Error).message;
    expect(message).toContain(`the directory ${join(dir, 'missing')} does not exist; create it first`);
    expect(message).not.toMatch(/no code/);
  });

  it("?path= next to the URL's file is refused, never a silent override", async () => {
    for (const url of ['sqlite:./a.db?path=./b.db', 'sqlite::memory:?path=./b.db']) {
      const error = await createStore(url).catch((e: unknown) => e);
      expect(InvalidArgumentError.isInstance(error), url).toBe(true);
      expect((error as Error).message).toContain('"path"');
    }
    await expect(createStore('sqlite::memory:?pollInterval=abc')).rejects.toThrow(/got "abc"$/);
  });

  it('each :memory: store is private', async () => {
    const a = await createStore('sqlite::memory:');
    const b = await createStore('sqlite::memory:');
    await a.put('k', 'v');
    expect(await b.exists('k')).toBe(false);
    await a.close();
    await b.close();
  });
});
