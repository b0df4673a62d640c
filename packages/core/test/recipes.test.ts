import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type ConformanceResults, describeConformance } from '../src/conformance/index.js';
import {
  type EncryptedStore,
  encrypted,
  IntegrityError,
  InvalidArgumentError,
  InvalidValueError,
  json,
  KVError,
  keyFromPassphrase,
  register,
  typed,
} from '../src/index.js';
import { MemoryServer, MemoryStore } from '../src/memory-store.js';

const resultsDir = mkdtempSync(join(tmpdir(), 'kv-recipes-'));
const server = new MemoryServer();
const key = new Uint8Array(32).fill(7);
const open = (prefix = 'unit') => new MemoryStore({ server, prefix });

// The whole kit through the encrypted wrapper: it is a Store like any other.
describeConformance({
  name: 'memory-encrypted',
  open: async (prefix) => encrypted(open(prefix), { keys: { a: key }, current: 'a' }),
  ttl: 300,
  lockTtl: 1_500,
  crash: (store) => ((store as EncryptedStore).inner as MemoryStore).crash(),
  resultsDir,
});

afterAll(() => {
  const results = JSON.parse(
    readFileSync(join(resultsDir, 'memory-encrypted.json'), 'utf8'),
  ) as ConformanceResults;
  expect(results.summary.failed, 'failed tests through encrypted()').toBe(0);
});

describe('encrypted(): bad options are InvalidArgumentError without key material', () => {
  it.each([
    [{ keys: { a: new Uint8Array(31) }, current: 'a' }, '32-byte'],
    [{ keys: { a: 'secret-passphrase' }, current: 'a' }, '32-byte'],
    [{ keys: { '': key }, current: '' }, '1 to 255 bytes'],
    [{ keys: { ['x'.repeat(256)]: key }, current: 'x' }, '1 to 255 bytes'],
    [{ keys: { a: key }, current: 'b' }, 'current must be one of'],
    [{ keys: {}, current: 'a' }, 'current must be one of'],
    [undefined, 'needs { keys'],
  ])('%#', (options, message) => {
    let error: unknown;
    try {
      encrypted(open(), options as never);
    } catch (e) {
      error = e;
    }
    expect(InvalidArgumentError.isInstance(error)).toBe(true);
    expect((error as Error).message).toContain(message);
    expect((error as Error).message).not.toContain('secret-passphrase');
  });

  it('the same physical key under another prefix split authenticates (the AAD is the full storage key)', async () => {
    const a = encrypted(new MemoryStore({ server, prefix: 'p' }), { keys: { a: key }, current: 'a' });
    const b = encrypted(new MemoryStore({ server, prefix: 'p/q' }), { keys: { a: key }, current: 'a' });
    await a.put('q/k', 'v');
    expect(new TextDecoder().decode((await b.get('k')).value)).toBe('v');
    const c = encrypted(new MemoryStore({ server, prefix: 'other' }), { keys: { a: key }, current: 'a' });
    await c.inner.put('q/k', (await a.inner.get('q/k')).value);
    await expect(c.get('q/k')).rejects.toSatisfy((e: unknown) => IntegrityError.isInstance(e));
    await Promise.all([a.close(), b.close(), c.close()]);
  });

  it('keyFromPassphrase refuses an empty passphrase and a short salt', async () => {
    await expect(keyFromPassphrase('', new Uint8Array(16))).rejects.toSatisfy(
      InvalidArgumentError.isInstance,
    );
    await expect(keyFromPassphrase('pw', new Uint8Array(8))).rejects.toSatisfy(
      InvalidArgumentError.isInstance,
    );
    const k = await keyFromPassphrase('pw', new Uint8Array(16));
    expect(k.byteLength).toBe(32);
  });
});

describe('typed()', () => {
  it('types flow: json<T>() gives Promise<T>', async () => {
    interface Config {
      readonly port: number;
    }
    const store = typed(open('typed'), json<Config>());
    await store.put('c', { port: 1 });
    const config: Config = await store.get('c');
    expect(config.port).toBe(1);
    // A value JSON cannot hold is refused before anything is sent.
    await expect(store.put('bad', (() => 1) as unknown as Config)).rejects.toSatisfy(
      (e: unknown) => InvalidValueError.isInstance(e) && KVError.isInstance(e),
    );
    expect(await store.exists('bad')).toBe(false);
    await store.close();
  });
});

describe('register()', () => {
  it.each(['a/b', '', '..', 'x\u0001'])('refuses the id %j with InvalidArgumentError', async (id) => {
    const store = open('reg');
    await expect(register(store, 'svc', { id })).rejects.toSatisfy(
      (e: unknown) =>
        InvalidArgumentError.isInstance(e) || (KVError.isInstance(e) && e.code === 'INVALID_KEY'),
    );
    expect(await store.list('svc')).toEqual([]);
    await store.close();
  });
});
