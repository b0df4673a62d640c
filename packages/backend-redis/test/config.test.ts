import { execFile } from 'node:child_process';
import { createServer, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { createStore, InvalidArgumentError, type Store, UnavailableError } from '@kv/core';
import { freePorts, serverFor } from '@kv/test-servers';
import { afterAll, describe, expect, it } from 'vitest';
import { parseRedisUrl } from '../src/index.js';
import { text, within } from './helpers.js';

const redis = await serverFor('redis');
const fixture = fileURLToPath(new URL('./fixtures/lifecycle.mjs', import.meta.url));

/** A TCP server that accepts connections and never answers. */
async function blackhole(): Promise<{ endpoint: string; close: () => void }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => sockets.add(socket));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    endpoint: `127.0.0.1:${port}`,
    close: () => {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

function child(mode: string, endpoint: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [fixture, mode, endpoint], { timeout: 15_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`child ${mode} did not exit by itself: ${error.message}\n${stderr}`));
      else resolve(JSON.parse(stdout.trim().split('\n').pop() as string) as Record<string, unknown>);
    });
  });
}

describe('redis URLs and options', () => {
  it('parses the prefix from the path and the db number and other options from the query', () => {
    expect(parseRedisUrl('redis://app:s%40cret@10.0.0.1:6380/my/app?db=2&namespace=svc')).toEqual({
      backend: 'redis',
      username: 'app',
      password: 's@cret',
      endpoints: ['10.0.0.1:6380'],
      prefix: '/my/app',
      db: 2,
      namespace: 'svc',
    });
    expect(parseRedisUrl('rediss://127.0.0.1:6380')).toEqual({
      backend: 'rediss',
      endpoints: ['127.0.0.1:6380'],
      tls: true,
    });
    expect(parseRedisUrl('redis://:pw@127.0.0.1?configureNotifications=false')).toMatchObject({
      password: 'pw',
      configureNotifications: false,
    });
    expect(() => parseRedisUrl('http://127.0.0.1')).toThrow(InvalidArgumentError);
  });

  it('rejects unknown options, bad values, several endpoints and tokens with InvalidArgumentError', async () => {
    const bad: Record<string, unknown>[] = [
      { colour: 'blue' },
      { db: -1 },
      { db: 'two' },
      { namespace: 'has space' },
      { namespace: '' },
      { configureNotifications: 'yes' },
      { endpoints: ['127.0.0.1:1', '127.0.0.1:2'] },
      { endpoints: ['127.0.0.1:99999'] },
      { endpoints: ['http://127.0.0.1:6379'] },
      { token: 't' },
      { tls: 'yes' },
      { tls: { cafile: 'x' } },
    ];
    for (const config of bad) {
      const error = await createStore({ backend: 'redis', ...config }).catch((e: unknown) => e);
      expect(InvalidArgumentError.isInstance(error), `${JSON.stringify(config)}: ${String(error)}`).toBe(
        true,
      );
    }
    await expect(createStore('redis://127.0.0.1:1/x?colour=blue')).rejects.toSatisfy(
      InvalidArgumentError.isInstance,
    );
  });

  it('a dead server is UnavailableError at once; a silent one within connectTimeout', async () => {
    const [port] = await freePorts(1);
    const started = performance.now();
    await expect(createStore(`redis://127.0.0.1:${port}/x`)).rejects.toSatisfy(UnavailableError.isInstance);
    await expect(createStore(`rediss://127.0.0.1:${port}/x`)).rejects.toSatisfy(UnavailableError.isInstance);
    expect(performance.now() - started).toBeLessThan(2_000);
    const hole = await blackhole();
    try {
      const t0 = performance.now();
      const error = await createStore({
        backend: 'redis',
        endpoints: [hole.endpoint],
        connectTimeout: 400,
      }).catch((e: unknown) => e);
      expect(UnavailableError.isInstance(error), String(error)).toBe(true);
      expect(performance.now() - t0).toBeLessThan(400 + 1_000);
    } finally {
      hole.close();
    }
  });

  it('a failed createStore leaves nothing that keeps the process alive', async () => {
    const hole = await blackhole();
    try {
      const result = await child('fail', hole.endpoint);
      expect(result.error).toBe('UnavailableError');
    } finally {
      hole.close();
    }
  });
});

describe.skipIf(!redis.available)('redis stores on a real server', () => {
  const endpoint = redis.endpoints[0] as string;
  const stores: Store[] = [];
  const open = async (config: Record<string, unknown>) => {
    const store = await createStore({ backend: 'redis', endpoints: [endpoint], ...config });
    stores.push(store);
    return store;
  };
  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
  });

  it('db numbers and namespaces isolate stores with the same prefix', async () => {
    const ns = `cfg${Date.now()}`;
    const zero = await open({ namespace: ns, prefix: 'same' });
    const one = await createStore(`redis://${endpoint}/same?db=1&namespace=${ns}`);
    stores.push(one);
    const other = await open({ namespace: `${ns}x`, prefix: 'same' });
    const watch = one.watch('k')[Symbol.asyncIterator]();
    expect((await within(watch.next(), 10_000, 'first event')).value).toBeNull();
    await zero.put('k', 'db0');
    await other.put('k', 'other namespace');
    await one.put('k', 'db1');
    // The watch on db 1 saw only db 1's write.
    const event = (await within(watch.next(), 10_000, 'db 1 event')).value;
    expect(event && text(event.value)).toBe('db1');
    await watch.return?.();
    expect(text((await zero.get('k')).value)).toBe('db0');
    expect(text((await other.get('k')).value)).toBe('other namespace');
    for (const store of [zero, one, other]) await store.delete('k');
  });

  it('close() with a watch, a held lock, a waiter and a keep-alive key leaves nothing that keeps the process alive', async () => {
    const result = await child('use', endpoint);
    expect(result).toMatchObject({ closed: true, lost: true });
    expect(String(result.waiter)).toMatch(/ClosedError|AbortError/);
  });
});
