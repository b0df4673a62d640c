import { afterEach, describe, expect, it } from 'vitest';
import {
  type BackendDefinition,
  createStore,
  InvalidArgumentError,
  KVError,
  parseStoreUrl,
  registerBackend,
} from '../src/index.js';
import { MEMORY_CAPABILITIES, MemoryServer, MemoryStore } from '../src/memory-store.js';

const stores: MemoryStore[] = [];
afterEach(async () => {
  await Promise.all(stores.splice(0).map((s) => s.close()));
});
function open(): MemoryStore {
  const store = new MemoryStore({ server: new MemoryServer() });
  stores.push(store);
  return store;
}

describe('call options are checked, never silently ignored', () => {
  it('unknown, misspelt or mistyped options are InvalidArgumentError, and nothing is written', async () => {
    const store = open();
    const bad: Array<[string, () => Promise<unknown>]> = [
      ['keepalive typo', () => store.put('k', 'v', { keepalive: true } as never)],
      ['keepAlive as a string', () => store.put('k', 'v', { ttl: 200, keepAlive: 'true' } as never)],
      ['consistent as a string', () => store.get('k', { consistent: 'yes' } as never)],
      ['a read option on a write', () => store.put('k', 'v', { consistent: true } as never)],
      ['a signal that is not one', () => store.put('k', 'v', { signal: 'stop' } as never)],
      ['options that are not an object', () => store.delete('k', 5 as never)],
      ['unknown deleteTree option', () => store.deleteTree('d', { recursive: true } as never)],
      ['unknown lock call option', () => store.newLock('l').lock({ wait: false } as never)],
    ];
    for (const [what, call] of bad) {
      const error = await call().catch((e: unknown) => e);
      expect(InvalidArgumentError.isInstance(error), what).toBe(true);
    }
    expect(await store.exists('k')).toBe(false);
    const watchError = await store
      .watch('k', { since: 1 } as never)
      [Symbol.asyncIterator]()
      .next()
      .catch((e) => e);
    expect(InvalidArgumentError.isInstance(watchError)).toBe(true);
  });

  it('a ttl given as a string is named quoted, so it is told apart from the number', async () => {
    const store = open();
    const error = await store.put('k', 'v', { ttl: '100' } as never).catch((e: unknown) => e);
    expect(InvalidArgumentError.isInstance(error)).toBe(true);
    expect((error as Error).message).toMatch(/got "100"$/);
    expect(() => store.newLock('l', { ttl: '100' } as never)).toThrow(/got "100"$/);
    const number = await store.put('k', 'v', { ttl: 1.5 }).catch((e: unknown) => e);
    expect((number as Error).message).toMatch(/got 1\.5$/);
    expect(await store.exists('k')).toBe(false);
  });

  it('keepAlive without a ttl is an InvalidArgumentError that shows how to give one', async () => {
    const store = open();
    const error = await store.put('k', 'v', { keepAlive: true }).catch((e: unknown) => e);
    expect(InvalidArgumentError.isInstance(error)).toBe(true);
    expect((error as Error).message).toContain('keepAlive needs a ttl');
    expect((error as Error).message).toContain('{ ttl: 15000, keepAlive: true }');
    await expect(store.atomicPut('k', 'v', null, { keepAlive: true })).rejects.toSatisfy(
      InvalidArgumentError.isInstance,
    );
    expect(await store.exists('k')).toBe(false);
    await store.put('k', 'v', { ttl: 15_000, keepAlive: true });
    expect(await store.exists('k')).toBe(true);
  });

  it('newLock accepts null options as none', async () => {
    const lock = open().newLock('l', null as never);
    const lease = await lock.lock();
    expect(lease.fencingToken).toBeGreaterThan(0);
    await lock.unlock();
  });

  it('ttls and timeouts beyond what a timer can wait are refused', async () => {
    const store = open();
    await expect(store.put('k', 'v', { ttl: 2 ** 31 })).rejects.toBeInstanceOf(InvalidArgumentError);
    expect(() => store.newLock('l', { ttl: 3e9 })).toThrow(InvalidArgumentError);
    await expect(createStore({ backend: 'mem-options', requestTimeout: 2 ** 31 })).rejects.toBeInstanceOf(
      InvalidArgumentError,
    );
  });

  it('a second lock() on a Lock still acquiring is refused without breaking close()', async () => {
    const server = new MemoryServer();
    const holder = new MemoryStore({ server });
    const waiter = new MemoryStore({ server });
    const lock = waiter.newLock('l');
    await holder.newLock('l').lock();
    const first = lock.lock();
    await expect(lock.lock()).rejects.toBeInstanceOf(InvalidArgumentError);
    await waiter.close();
    const outcome = await first.catch((e: unknown) => e);
    expect(KVError.isInstance(outcome) && outcome.code).toBe('CLOSED');
    await holder.close();
    const third = new MemoryStore({ server });
    stores.push(third);
    // Neither the closed waiter nor the closed holder keeps it.
    expect(await third.newLock('l').tryLock()).not.toBeNull();
  });
});

describe('URLs', () => {
  it('string options stay strings even when they look like numbers', () => {
    expect(parseStoreUrl('etcd://h:1?prefix=2024&token=007&requestTimeout=10')).toMatchObject({
      prefix: '2024',
      token: '007',
      requestTimeout: 10,
    });
  });
});

describe('createStore', () => {
  const definition: BackendDefinition = {
    name: 'mem-options',
    capabilities: MEMORY_CAPABILITIES,
    create: async (config) => new MemoryStore({ server: new MemoryServer(), prefix: config.prefix }),
  };
  registerBackend(definition);
  registerBackend({
    name: 'throws-sync',
    capabilities: MEMORY_CAPABILITIES,
    create: () => {
      throw new Error('boom');
    },
  });

  it('a backend whose create throws synchronously rejects with a KVError', async () => {
    const error = await createStore({ backend: 'throws-sync', connectTimeout: 200 }).catch((e: unknown) => e);
    expect(KVError.isInstance(error)).toBe(true);
    expect((error as Error).message).toContain('boom');
  });
});
