import {
  InvalidArgumentError,
  parseStoreUrl,
  type ResolvedConfig,
  redactUrl,
  type StoreConfig,
  type TlsOptions,
} from '@kv/core';

/** Options of the Redis backend, beyond the common ones. */
export interface RedisOptions {
  /** Redis database number (`SELECT`). Default 0. In a URL: `?db=2`. */
  db?: number;
  /**
   * Name of the Redis key space this store's data lives in: every Redis key it
   * uses is `{<namespace>}:...` (one hash tag, so one slot). Stores with the
   * same namespace (and db) share keys; the store `prefix` then isolates them
   * by path, as on every backend. Default `kv`.
   */
  namespace?: string;
  /**
   * May the store turn keyspace notifications on (`CONFIG SET
   * notify-keyspace-events`, merged with the flags already set) when a watch
   * needs them and they are off? Default true. When false, or when the server
   * refuses CONFIG, a watch on a server without them fails with an error that
   * says how to enable them.
   */
  configureNotifications?: boolean;
}

declare module '@kv/core' {
  interface BackendOptions {
    redis: RedisOptions;
    rediss: RedisOptions;
  }
}

export const REDIS_OPTIONS = ['db', 'namespace', 'configureNotifications'] as const;

const NAMESPACE = /^[A-Za-z0-9_.:-]{1,64}$/;

/** Everything the store needs, validated. */
export interface RedisSettings {
  host: string;
  port: number;
  db: number;
  namespace: string;
  configureNotifications: boolean;
  username: string | undefined;
  password: string | undefined;
  tls: TlsOptions | undefined;
  connectTimeout: number;
  requestTimeout: number;
  prefix: string;
}

/**
 * `redis://[user[:password]@]host:port[/prefix][?db=2&namespace=kv&...]` and
 * `rediss://...` (TLS). The path is the key prefix, as for every backend; the
 * database number is the `db` query option (unlike the usual Redis URL, whose
 * path is the db number). Query parameters are options.
 */
export function parseRedisUrl(url: string): StoreConfig {
  const config = parseStoreUrl(url) as Record<string, unknown>;
  const scheme = config.backend;
  if (scheme !== 'redis' && scheme !== 'rediss') {
    throw new InvalidArgumentError(`not a redis:// or rediss:// URL: ${JSON.stringify(redactUrl(url))}`);
  }
  if (scheme === 'rediss' && config.tls === undefined) config.tls = true;
  return config as StoreConfig;
}

function splitEndpoint(endpoint: string): { host: string; port: number; tls: boolean } {
  let text = endpoint.trim();
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text);
  const tls = scheme !== null && (scheme[1] as string).toLowerCase() === 'rediss';
  if (scheme) {
    if (!/^rediss?$/i.test(scheme[1] as string)) {
      throw new InvalidArgumentError(
        `endpoint ${JSON.stringify(endpoint)}: expected host:port or redis://host:port`,
      );
    }
    text = text.slice(scheme[0].length).replace(/\/.*$/, '');
  }
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]/]+))(?::(\d+))?$/.exec(text);
  if (!match) throw new InvalidArgumentError(`endpoint ${JSON.stringify(endpoint)}: expected host:port`);
  const host = (match[1] ?? match[2]) as string;
  const port = match[3] === undefined ? 6379 : Number(match[3]);
  if (!Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new InvalidArgumentError(`endpoint ${JSON.stringify(endpoint)}: bad port`);
  }
  return { host, port, tls };
}

function bool(value: unknown, name: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean')
    throw new InvalidArgumentError(`${name} must be a boolean, got ${JSON.stringify(value)}`);
  return value;
}

function tlsOf(value: unknown): TlsOptions | undefined {
  if (value === undefined || value === false) return undefined;
  if (value === true) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidArgumentError(
      'tls must be true, false or an object of { ca, cert, key, servername, rejectUnauthorized }',
    );
  }
  const allowed = new Set(['ca', 'cert', 'key', 'servername', 'rejectUnauthorized']);
  const unknown = Object.keys(value).filter((k) => !allowed.has(k));
  if (unknown.length > 0) throw new InvalidArgumentError(`unknown tls option(s): ${unknown.join(', ')}`);
  return value as TlsOptions;
}

/** Validates a resolved config into the settings the store uses. */
export function redisSettings(config: ResolvedConfig & RedisOptions): RedisSettings {
  const endpoints = config.endpoints ?? ['127.0.0.1:6379'];
  if (endpoints.length !== 1) {
    throw new InvalidArgumentError(
      `the redis backend takes one endpoint (a single node, or the Sentinel-managed primary), got ${endpoints.length}; Redis Cluster is not supported yet`,
    );
  }
  const { host, port, tls: secureEndpoint } = splitEndpoint(endpoints[0] as string);
  const db = config.db ?? 0;
  if (typeof db !== 'number' || !Number.isSafeInteger(db) || db < 0) {
    throw new InvalidArgumentError(`db must be a database number (0, 1, ...), got ${JSON.stringify(db)}`);
  }
  const namespace = config.namespace ?? 'kv';
  if (typeof namespace !== 'string' || !NAMESPACE.test(namespace)) {
    throw new InvalidArgumentError(
      `namespace must be 1-64 characters of letters, digits and _ . : -, got ${JSON.stringify(namespace)}`,
    );
  }
  if (config.token !== undefined) {
    throw new InvalidArgumentError('the redis backend takes username/password, not a token');
  }
  // A rediss:// endpoint turns TLS on unless `tls` says otherwise.
  const tls = tlsOf(config.tls ?? (secureEndpoint ? true : undefined));
  return {
    host,
    port,
    db,
    namespace,
    configureNotifications: bool(config.configureNotifications, 'configureNotifications', true),
    // `redis://:password@host` (the usual Redis form) has an empty user name: that means none, so
    // the client sends `AUTH <password>` (the default user, or requirepass) rather than `AUTH "" <password>`.
    username: config.username === '' ? undefined : config.username,
    password: config.password,
    tls,
    connectTimeout: config.connectTimeout,
    requestTimeout: config.requestTimeout,
    prefix: config.prefix,
  };
}
