import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import {
  createStore,
  InvalidArgumentError,
  registeredBackends,
  type Store,
  UnavailableError,
  ValueTooLargeError,
} from '@kv/core';
import { afterAll, describe, expect, it } from 'vitest';
import { parseEtcdsUrl } from '../src/etcd-config.js';
import { EtcdStore, openEtcd } from '../src/index.js';
import { openTestStore, privateEtcd, sharedEtcd, text } from './helpers.js';

const etcd = await sharedEtcd();

/** A port where nothing listens. */
async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('etcd URLs and options', () => {
  it('registers etcd and etcds', () => {
    expect(registeredBackends()).toEqual(expect.arrayContaining(['etcd', 'etcds']));
  });

  it('parses etcds:// as etcd with TLS on', () => {
    expect(parseEtcdsUrl('etcds://u:p@h1:2379,h2:2379/app/x?requestTimeout=2000&caFile=%2Fca.pem')).toEqual({
      backend: 'etcds',
      username: 'u',
      password: 'p',
      endpoints: ['h1:2379', 'h2:2379'],
      prefix: '/app/x',
      requestTimeout: 2000,
      caFile: '/ca.pem',
      tls: true,
    });
  });

  it('rejects unknown options and bad values with InvalidArgumentError, before connecting', async () => {
    const bad: Record<string, unknown>[] = [
      { colour: 'blue' },
      { keepAliveTime: 1_000 },
      { maxCallSendMessageSize: -1 },
      { serializableReads: 'yes' },
      { username: 'root' },
      { token: 't', username: 'u', password: 'p' },
      { endpoints: ['no-port'] },
      { endpoints: ['http://a:1', 'https://b:2'] },
      { endpoints: ['127.0.0.1:99999'] },
      { endpoints: ['127.0.0.1:65536'] },
      { endpoints: ['127.0.0.1:0'] },
      { endpoints: ['http://127.0.0.1:2379', '[::1]:70000'] },
      { tls: { ca: 'x', cert: 'only a cert' } },
      { tls: { colour: 'blue' } },
      { caFile: '/does/not/exist.pem' },
      { grpcOptions: { 'grpc.x': {} } },
    ];
    for (const options of bad) {
      const error = await createStore({ backend: 'etcd', ...options } as never).catch((e: unknown) => e);
      expect(InvalidArgumentError.isInstance(error), `${JSON.stringify(options)}: ${String(error)}`).toBe(
        true,
      );
    }
    await expect(createStore('etcd://127.0.0.1:2379/x?colour=blue')).rejects.toSatisfy(
      InvalidArgumentError.isInstance,
    );
    await expect(openEtcd('redis://127.0.0.1:1')).rejects.toSatisfy(InvalidArgumentError.isInstance);
    // A port out of range is a bad URL, not an unreachable server.
    for (const url of ['etcd://127.0.0.1:99999/x', 'etcd://127.0.0.1:2379,127.0.0.1:65536/x']) {
      await expect(createStore(url), url).rejects.toSatisfy(InvalidArgumentError.isInstance);
    }
  });

  it('a dead cluster is UnavailableError, quickly', async () => {
    const port = await deadPort();
    const started = Date.now();
    const error = await createStore(`etcd://127.0.0.1:${port}/x?connectTimeout=3000`).catch(
      (e: unknown) => e,
    );
    expect(UnavailableError.isInstance(error), String(error)).toBe(true);
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it('a server that accepts but never answers is UnavailableError within connectTimeout, never a hang', async () => {
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as AddressInfo;
    try {
      const started = Date.now();
      const error = await createStore({
        backend: 'etcd',
        endpoints: [`127.0.0.1:${port}`],
        connectTimeout: 1_000,
      }).catch((e: unknown) => e);
      const took = Date.now() - started;
      expect(UnavailableError.isInstance(error), String(error)).toBe(true);
      expect(took).toBeGreaterThanOrEqual(900);
      expect(took).toBeLessThan(2_000);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });
});

describe.skipIf(etcd.skip !== false)('etcd connection options against a server', () => {
  const stores: Store[] = [];
  const keep = <S extends Store>(store: S) => {
    stores.push(store);
    return store;
  };
  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
  });

  it('opens by URL with the prefix from the path; keys are the etcd keys under the prefix', async () => {
    const prefix = `kvtest-etcd/url-${Date.now()}`;
    const store = keep(await createStore(`etcd://${etcd.endpoints.join(',')}/${prefix}?requestTimeout=3000`));
    expect(store).toBeInstanceOf(EtcdStore);
    expect(store.backend).toBe('etcd');
    expect(store.prefix).toBe(prefix);
    await store.put('/a/b/', 'v');
    const raw = (store as EtcdStore).client;
    expect(await raw.get(`${prefix}/a/b`).string()).toBe('v');
    // A directory is a key range: `a` never sees `ab/...`.
    await raw.put(`${prefix}/ab/c`).value('x');
    expect((await store.list('a')).map((p) => p.key)).toEqual(['a/b']);
  });

  it('uses several endpoints: a dead one is skipped', async () => {
    const port = await deadPort();
    const store = keep(
      await openTestStore([`127.0.0.1:${port}`, ...etcd.endpoints], 'multi', { requestTimeout: 3_000 }),
    );
    for (let i = 0; i < 10; i++) {
      await store.put('k', String(i));
      expect(text((await store.get('k')).value)).toBe(String(i));
    }
  });

  it('serializableReads and consistent reads both read what was written', async () => {
    const store = keep(await openTestStore(etcd.endpoints, 'serializable', { serializableReads: true }));
    await store.put('k', 'v');
    expect(text((await store.get('k')).value)).toBe('v');
    expect(text((await store.get('k', { consistent: true })).value)).toBe('v');
    expect(await store.list('', { consistent: true })).toHaveLength(1);
  });

  it('maxValueSize follows maxRequestBytes; the largest value round-trips, a larger one is refused before sending', async () => {
    const store = keep(await openTestStore(etcd.endpoints, 'sizes'));
    expect(store.capabilities.maxValueSize).toBe(1_572_864 - 1024);
    const largest = new Uint8Array(store.capabilities.maxValueSize).fill(7);
    await store.put('big', largest);
    expect((await store.get('big')).value.byteLength).toBe(largest.byteLength);
    await expect(store.put('big', new Uint8Array(largest.byteLength + 1))).rejects.toSatisfy(
      ValueTooLargeError.isInstance,
    );
    const small = keep(await openTestStore(etcd.endpoints, 'small', { maxRequestBytes: 64 * 1024 }));
    expect(small.capabilities.maxValueSize).toBe(63 * 1024);
  });

  it('a ttl under the minimum lease TTL is InvalidArgumentError naming the server setting', async () => {
    const store = keep(await openTestStore(etcd.endpoints, 'minttl'));
    const error = await store.put('k', 'v', { ttl: 1_000 }).catch((e: unknown) => e);
    expect(InvalidArgumentError.isInstance(error)).toBe(true);
    expect(String(error)).toMatch(/election-timeout/);
  });

  it('close() leaves nothing running: the process exits at once, keep-alive keys are revoked', async () => {
    const prefix = `kvtest-etcd/exit-${Date.now()}`;
    const fixture = fileURLToPath(new URL('./fixtures/lifecycle.mjs', import.meta.url));
    const child = spawn(process.execPath, [fixture, etcd.endpoints[0] as string, prefix], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let closedAt = 0;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!closedAt && out.includes('"closed":true')) closedAt = Date.now();
    });
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code, err).toBe(0);
    const report = JSON.parse(out.trim().split('\n').at(-1) as string);
    expect(report).toMatchObject({ closed: true, watchDone: true, waiter: 'CLOSED' });
    expect(Date.now() - closedAt).toBeLessThan(1_500);
    const store = keep(await openEtcd({ endpoints: etcd.endpoints, prefix }));
    // Kept-alive keys went with their revoked leases; the lock was released; plain ttl keys live on.
    expect((await store.list('')).map((p) => p.key)).toEqual(['ttl']);
  });
});

/** Waits until the kernel has stopped the process (state T in /proc), after SIGSTOP. */
async function stopped(pid: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (/^\d+ \(.*\) [Tt] /.test(stat)) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
}

// A private etcd to freeze: a server that stops answering.
const frozen = await privateEtcd('request timeout tests');

describe.skipIf(frozen.skip !== false)('timeouts against a frozen server', () => {
  afterAll(async () => {
    frozen.server?.thaw();
    await frozen.server?.dispose();
  });

  it('a call to a server that stopped answering rejects within requestTimeout; it works again after', async () => {
    const server = frozen.server as NonNullable<typeof frozen.server>;
    const store = await openEtcd({ endpoints: server.endpoints, requestTimeout: 1_000 });
    try {
      await store.put('k', 'v');
      server.freeze();
      await stopped(server.pid as number);
      const started = Date.now();
      const error = await store.get('k').catch((e: unknown) => e);
      expect(UnavailableError.isInstance(error), String(error)).toBe(true);
      expect(Date.now() - started).toBeLessThan(1_500);
      server.thaw();
      expect(text((await store.get('k')).value)).toBe('v');
    } finally {
      server.thaw();
      await store.close();
    }
  });

  it('a put that timed out on a frozen member is never retried on another member later (it was reported failed)', async () => {
    const server = frozen.server as NonNullable<typeof frozen.server>;
    const prefix = `late-retry-${process.pid}-${Date.now()}`;
    // Two unrelated servers as one store's members: a late retry of the put would land on the live one.
    const store = await openEtcd({
      endpoints: [...server.endpoints, ...etcd.endpoints],
      prefix,
      requestTimeout: 500,
      keepAliveTime: 5_000,
      keepAliveTimeout: 1_000,
    });
    const reader = await openEtcd({ endpoints: etcd.endpoints, prefix });
    try {
      // Calls go to a random member: connect to both before the freeze.
      for (let i = 0; i < 20; i++) await store.tryGet('warm-up');
      server.freeze();
      await stopped(server.pid as number);
      let timedOut: string | undefined;
      for (let i = 0; i < 40 && timedOut === undefined; i++) {
        const error = await store.put(`k${i}`, 'late').then(
          () => undefined,
          (e: unknown) => e,
        );
        if (error !== undefined) {
          expect(UnavailableError.isInstance(error), String(error)).toBe(true);
          timedOut = `k${i}`;
        }
      }
      expect(timedOut).toBeDefined();
      // The keep-alive finds the frozen connection dead within 6 s and fails the call left on it.
      await new Promise((resolve) => setTimeout(resolve, 7_500));
      expect(await reader.tryGet(timedOut as string)).toBeNull();
    } finally {
      server.thaw();
      await Promise.allSettled([store.close(), reader.close()]);
    }
  });
});
