import { describe, expect, it } from 'vitest';
import {
  type BackendDefinition,
  createStore,
  InvalidArgumentError,
  KVError,
  parseOptionValue,
  parseStoreUrl,
  redactUrl,
  registerBackend,
  registeredBackends,
  resolveConfig,
  UnavailableError,
  UnknownBackendError,
} from '../src/index.js';
import { MEMORY_CAPABILITIES, MemoryServer, MemoryStore, memoryBackend } from '../src/memory-store.js';

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

describe('parseStoreUrl', () => {
  it('scheme is the backend, hosts a comma list, the path the prefix, the query options', () => {
    expect(
      parseStoreUrl('ETCD://user:p%40ss@h1:2379,h2:2380/app/x?requestTimeout=100&tls=true&name=abc&n=-3'),
    ).toEqual({
      backend: 'etcd',
      username: 'user',
      password: 'p@ss',
      endpoints: ['h1:2379', 'h2:2380'],
      prefix: '/app/x',
      requestTimeout: 100,
      tls: true,
      name: 'abc',
      n: -3,
    });
  });

  it('leaves out what the URL does not give', () => {
    expect(parseStoreUrl('redis://127.0.0.1:6379')).toEqual({
      backend: 'redis',
      endpoints: ['127.0.0.1:6379'],
    });
    expect(parseStoreUrl('redis://127.0.0.1:6379/')).toEqual({
      backend: 'redis',
      endpoints: ['127.0.0.1:6379'],
    });
    expect(parseStoreUrl('consul://tok@h/%E2%9C%93')).toEqual({
      backend: 'consul',
      username: 'tok',
      endpoints: ['h'],
      prefix: '/✓',
    });
  });

  it('rejects what is not a store URL with InvalidArgumentError', () => {
    for (const url of ['', 'etcd', 'etcd:/x', '://h', 'etcd://h/p#frag']) {
      expect(() => parseStoreUrl(url), url).toThrow(InvalidArgumentError);
    }
  });

  it('never echoes a password in its message', () => {
    const url = 'etcdv2://alice:s3cr%2Ft@127.0.0.1:2379/app#frag';
    expect(() => parseStoreUrl(url)).toThrow(InvalidArgumentError);
    expect(() => parseStoreUrl(url)).toThrow(/alice:\*\*\*@127/);
    expect(() => parseStoreUrl(url)).not.toThrow(/s3cr/);
    expect(redactUrl('redis://:pw@h:1/0')).toBe('redis://:***@h:1/0');
    expect(redactUrl('redis://user@h:1/0')).toBe('redis://user@h:1/0');
    expect(redactUrl('consul://tok-en@h:1/p', { secretUser: true })).toBe('consul://***@h:1/p');
    expect(redactUrl('consul://h:1/p?a=b@c', { secretUser: true })).toBe('consul://h:1/p?a=b@c');
  });

  it('rejects bad percent-encoding with InvalidArgumentError, not a URIError', () => {
    for (const url of ['etcd://h/%E0%A4%A', 'etcd://us%er:pw@h/', 'etcd://user:%zz@h/']) {
      let thrown: unknown;
      try {
        parseStoreUrl(url);
      } catch (error) {
        thrown = error;
      }
      expect(InvalidArgumentError.isInstance(thrown), `${url}: ${String(thrown)}`).toBe(true);
    }
  });

  it('an option given twice, or one that repeats a part of the URL, is an InvalidArgumentError', () => {
    expect(() => parseStoreUrl('redis://h:1/x?db=1&db=0')).toThrow(InvalidArgumentError);
    expect(() => parseStoreUrl('redis://h:1/x?db=1&db=0')).toThrow(/"db" more than once/);
    expect(() => parseStoreUrl('etcd://h:1/x?prefix=y')).toThrow(InvalidArgumentError);
    expect(() => parseStoreUrl('etcd://u:p@h:1/x?password=q')).toThrow(InvalidArgumentError);
    expect(() => parseStoreUrl('etcd://h:1/x?backend=redis')).toThrow(InvalidArgumentError);
    expect(parseStoreUrl('etcd://h:1?prefix=y')).toMatchObject({ prefix: 'y' });
  });

  it('parseOptionValue: integers and booleans convert, the rest stays text', () => {
    expect(parseOptionValue('42')).toBe(42);
    expect(parseOptionValue('-1')).toBe(-1);
    expect(parseOptionValue('false')).toBe(false);
    expect(parseOptionValue('1.5')).toBe('1.5');
    expect(parseOptionValue('')).toBe('');
  });
});

describe('resolveConfig', () => {
  const definition: BackendDefinition = {
    name: 'cfgtest',
    capabilities: MEMORY_CAPABILITIES,
    options: ['path'],
    create: () => Promise.reject(new Error('unused')),
  };

  it('applies defaults and normalises the prefix', () => {
    expect(resolveConfig(definition, { backend: 'cfgtest', prefix: '/a/b/', path: 'x' })).toEqual({
      backend: 'cfgtest',
      prefix: 'a/b',
      path: 'x',
      connectTimeout: 5_000,
      requestTimeout: 5_000,
    });
  });

  it('unknown options are an InvalidArgumentError that lists the accepted ones', () => {
    const error = (() => {
      try {
        resolveConfig(definition, { backend: 'cfgtest', bogus: 1 } as never);
      } catch (e) {
        return e as Error;
      }
    })();
    expect(InvalidArgumentError.isInstance(error)).toBe(true);
    expect(error?.message).toContain('bogus');
    expect(error?.message).toContain('path');
  });

  it.each([
    [{ connectTimeout: 0 }],
    [{ requestTimeout: -1 }],
    [{ requestTimeout: 1.5 }],
    [{ requestTimeout: '100' }],
    [{ endpoints: 'h:1' }],
    [{ endpoints: [''] }],
    [{ username: 1 }],
    [{ prefix: 5 }],
    [{ prefix: 'a//b' }],
  ])('rejects %j', (extra) => {
    expect(() => resolveConfig(definition, { backend: 'cfgtest', ...extra } as never)).toThrow(KVError);
  });
});

describe('registerBackend and createStore', () => {
  it('an unknown backend is an UnknownBackendError naming the packages tried and the registered backends', async () => {
    registerBackend(memoryBackend('memreg'));
    for (const config of ['nosuchkv://127.0.0.1:1/app', { backend: 'nosuchkv' }] as const) {
      const error = await rejection(createStore(config));
      expect(UnknownBackendError.isInstance(error), String(error)).toBe(true);
      const unknown = error as UnknownBackendError;
      expect(unknown.packageName).toBe('kv-backend-nosuchkv');
      expect(unknown.message).toContain('tried @kv/backend-nosuchkv and kv-backend-nosuchkv');
      expect(unknown.registered).toContain('memreg');
    }
    const bad = await rejection(createStore({ backend: 'Not_A_Name' }));
    expect(UnknownBackendError.isInstance(bad)).toBe(true);
  });

  it('registering a name twice throws; bad definitions throw', () => {
    registerBackend(memoryBackend('memtwice'));
    expect(() => registerBackend(memoryBackend('memtwice'))).toThrow(InvalidArgumentError);
    expect(() => registerBackend(memoryBackend('Bad Name'))).toThrow(InvalidArgumentError);
    expect(registeredBackends()).toContain('memtwice');
  });

  it('opens a registered backend from a URL or a config, with the prefix applied', async () => {
    registerBackend(memoryBackend('memopen', new MemoryServer()));
    const fromUrl = await createStore('memopen://local/app?requestTimeout=1000');
    const fromConfig = await createStore({ backend: 'memopen', prefix: 'app' });
    try {
      expect(fromUrl).toBeInstanceOf(MemoryStore);
      expect(fromUrl.prefix).toBe('app');
      expect((fromUrl as MemoryStore).requestTimeout).toBe(1000);
      await fromUrl.put('k', 'v');
      expect((await fromConfig.get('k')).key).toBe('k');
    } finally {
      await fromUrl.close();
      await fromConfig.close();
    }
    expect(InvalidArgumentError.isInstance(await rejection(createStore('not a url')))).toBe(true);
    expect(
      InvalidArgumentError.isInstance(await rejection(createStore({ backend: 'memopen', nope: 1 } as never))),
    ).toBe(true);
    expect(InvalidArgumentError.isInstance(await rejection(createStore(null as never)))).toBe(true);
  });

  it('a create that hangs rejects within connectTimeout; a raw driver error becomes a KVError', async () => {
    registerBackend({
      name: 'memhang',
      capabilities: MEMORY_CAPABILITIES,
      create: () => new Promise(() => {}),
    });
    registerBackend({
      name: 'memraw',
      capabilities: MEMORY_CAPABILITIES,
      create: () => Promise.reject(new TypeError('ECONNREFUSED')),
    });
    const started = Date.now();
    const hung = await rejection(createStore({ backend: 'memhang', connectTimeout: 100 }));
    expect(UnavailableError.isInstance(hung)).toBe(true);
    expect(Date.now() - started).toBeLessThan(2_000);
    const raw = await rejection(createStore({ backend: 'memraw' }));
    expect(UnavailableError.isInstance(raw)).toBe(true);
    expect((raw as Error).cause).toBeInstanceOf(TypeError);
  });
});

describe('the memory: backend', () => {
  it('is built in: memory: is a new private data set, memory://name a shared one', async () => {
    expect(registeredBackends()).toContain('memory');
    const a = await createStore('memory:');
    const b = await createStore('memory:?prefix=app');
    const shared1 = await createStore('memory://registry-test/app?requestTimeout=1000');
    const shared2 = await createStore({ backend: 'memory', name: 'registry-test', prefix: 'app' });
    try {
      expect(a).toBeInstanceOf(MemoryStore);
      expect(b.prefix).toBe('app');
      expect(shared1.prefix).toBe('app');
      expect((shared1 as MemoryStore).requestTimeout).toBe(1000);
      await a.put('k', 'a');
      expect(await b.exists('k')).toBe(false);
      await shared1.put('k', 'shared');
      expect(new TextDecoder().decode((await shared2.get('k')).value)).toBe('shared');
    } finally {
      for (const store of [a, b, shared1, shared2]) await store.close();
    }
  });

  it('rejects what is not a memory URL or data set name with InvalidArgumentError', async () => {
    for (const config of [
      'memory:/x',
      'memory:name',
      'memory://a b',
      'memory://x?name=y',
      { backend: 'memory', name: '' },
      { backend: 'memory', name: 7 },
      { backend: 'memory', bogus: 1 },
    ]) {
      const error = await rejection(createStore(config as never));
      expect(InvalidArgumentError.isInstance(error), `${JSON.stringify(config)}: ${String(error)}`).toBe(
        true,
      );
    }
  });
});
