import { createRequire } from 'node:module';

/** Rejects if `p` does not settle within `ms`: every wait in these tests is bounded. */
export function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** A promise plus its resolver, for awaiting an event. */
export function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

// `zookeeper` declares an ambient `export =` module that TypeScript only lets ESM default-import
// with allowSyntheticDefaultImports: load it through require instead (it is CommonJS anyway).

export type ZooKeeperClass = typeof import('zookeeper');
export type ZooKeeperClient = InstanceType<ZooKeeperClass>;
export const ZooKeeper = createRequire(import.meta.url)('zookeeper') as ZooKeeperClass;

/** Connects a ZooKeeper client, bounded by `ms`. */
export function zkConnect(hosts: string, ms = 20_000): Promise<ZooKeeperClient> {
  const client = new ZooKeeper({
    connect: hosts,
    timeout: 4000,
    debug_level: ZooKeeper.constants.ZOO_LOG_LEVEL_ERROR,
    host_order_deterministic: false,
  });
  const connected = new Promise<ZooKeeperClient>((resolve) => client.once('connect', () => resolve(client)));
  client.init({});
  return within(ms, `ZooKeeper session with ${hosts}`, connected).catch((err: unknown) => {
    client.close();
    throw err;
  });
}
