import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { type EtcdHandle, type EtcdOptions, launchEtcd, privateServer, serverFor } from '@kv/test-servers';
import { EtcdStore, openEtcd, type EtcdOptions as StoreOptions } from '../src/index.js';

/** The shared etcd of the run, or the reason it is missing (throws under CI=true). */
export async function sharedEtcd(): Promise<
  { endpoints: string[]; skip: false } | { endpoints: []; skip: string }
> {
  const etcd = await serverFor('etcd');
  return etcd.available ? { endpoints: etcd.endpoints, skip: false } : { endpoints: [], skip: etcd.reason };
}

/**
 * A private etcd for tests that change server settings (auth, TLS) or stop
 * and start it. Outside CI a server that cannot be launched skips the tests
 * loudly; with CI=true it fails.
 */
export function privateEtcd(
  what: string,
  options: EtcdOptions = {},
): Promise<{ server: EtcdHandle; skip: false } | { server: undefined; skip: string }> {
  return privateServer(what, () => launchEtcd(options));
}

let counter = 0;
/** A store under a prefix of its own. */
export function openTestStore(
  endpoints: string[],
  name: string,
  options: StoreOptions & Record<string, unknown> = {},
): Promise<EtcdStore> {
  const prefix = `kvtest-etcd/${Date.now().toString(36)}-${process.pid}-${++counter}/${name}`;
  return openEtcd({ endpoints, prefix, ...options });
}

/** Rejects if `promise` does not settle within `ms`. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export const text = (value: Uint8Array): string => new TextDecoder().decode(value);

export { EtcdStore };

/**
 * A TCP proxy on 127.0.0.1 in front of one endpoint, which a test can cut
 * (every connection dropped, new ones refused) and restore: a lost
 * connection for one client while the server and other clients go on.
 */
export class CuttableProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  port = 0;

  constructor(private readonly upstream: string) {}

  get endpoint(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const [host, port] = this.upstream.split(':') as [string, string];
    const server = createServer((client) => {
      const upstream = connect(Number(port), host);
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.on('close', () => this.sockets.delete(socket));
        socket.on('error', () => {});
      }
      client.pipe(upstream).pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /** Drops every connection and refuses new ones until `start()`. */
  async cut(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const socket of this.sockets) socket.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  async close(): Promise<void> {
    await this.cut();
  }
}

/** Pulls from an async iterator with a bound per item. */
export class Pull<T> {
  private readonly iterator: AsyncIterator<T>;
  constructor(iterable: AsyncIterable<T>) {
    this.iterator = iterable[Symbol.asyncIterator]();
  }
  async next(ms = 15_000, what = 'the next event'): Promise<T> {
    const result = await within(this.iterator.next(), ms, what);
    if (result.done) throw new Error(`the iterator ended while waiting for ${what}`);
    return result.value;
  }
  async stop(): Promise<void> {
    await this.iterator.return?.();
  }
}

/** The waiter keys of a lock (user `key`) in etcd, with their create revision and lease. */
export async function waiters(
  store: EtcdStore,
  key: string,
): Promise<{ key: string; createRevision: number; lease: string }[]> {
  const base = `${store.prefix}/${key}\u0001lock/`;
  const kvs = await store.client.getAll().prefix(base).exec();
  return kvs.kvs.map((kv) => ({
    key: kv.key.toString(),
    createRevision: Number(kv.create_revision),
    lease: String(kv.lease),
  }));
}

/** Resolves once `count` waiters (the holder included) are queued on `key`. */
export async function untilWaiters(store: EtcdStore, key: string, count: number): Promise<void> {
  const end = performance.now() + 15_000;
  while ((await waiters(store, key)).length < count) {
    if (performance.now() > end) throw new Error(`${count} waiters on ${key}: not within 15 s`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
