import { joinKey, parseStoreUrl, type Store } from '@kv/core';

/**
 * The Store contract has no call that tells how long a key has left to live, so `copy` reads it
 * through what each backend package exposes publicly: etcd's toolkit (the key's lease), the Redis
 * client (`PTTL` on the documented `{namespace}:d:<key>` data key), SQLite's database (`expires_at`).
 * On another backend, or when the reader fails, ttls are not copied (the summary says so).
 *
 * Resolves to the ms left (rounded up), `undefined` for a key without a ttl.
 */
export type TtlReader = (key: string) => Promise<number | undefined>;

interface EtcdToolkit {
  getKeyValue(key: string): Promise<{ lease?: string }>;
  leaseTimeToLive(id: string): Promise<{ ttl: number } | null>;
}
interface RedisClient {
  sendCommand(args: string[]): Promise<unknown>;
}
interface SqliteDb {
  prepare(sql: string): { get(...params: unknown[]): unknown };
}

/** A reader of remaining ttls for this store, or `undefined` when the backend offers none. */
export function ttlReaderFor(store: Store, url: string): TtlReader | undefined {
  const raw = store as unknown as Record<string, unknown>;
  const full = (key: string) => joinKey(store.prefix, key);
  if (store.backend === 'etcd' && typeof raw.getKeyValue === 'function') {
    const etcd = store as unknown as EtcdToolkit;
    return async (key) => {
      const { lease } = await etcd.getKeyValue(key);
      if (lease === undefined || lease === '0') return undefined;
      const info = await etcd.leaseTimeToLive(lease);
      return info && info.ttl > 0 ? info.ttl : undefined;
    };
  }
  if (store.backend === 'redis' && raw.client !== undefined) {
    const client = raw.client as RedisClient;
    const options = parseStoreUrl(url) as { namespace?: unknown };
    const namespace = typeof options.namespace === 'string' ? options.namespace : 'kv';
    return async (key) => {
      const ms = Number(await client.sendCommand(['PTTL', `{${namespace}}:d:${full(key)}`]));
      return ms > 0 ? ms : undefined;
    };
  }
  if (store.backend === 'sqlite' && raw.db !== undefined) {
    const statement = (raw.db as SqliteDb).prepare('SELECT expires_at AS at FROM kv WHERE key = ?');
    return async (key) => {
      const row = statement.get(full(key)) as { at: number | null } | undefined;
      if (!row || row.at === null) return undefined;
      const left = row.at - Date.now();
      return left > 0 ? Math.ceil(left) : undefined;
    };
  }
  return undefined;
}
