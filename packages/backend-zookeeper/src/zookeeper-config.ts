import {
  InvalidArgumentError,
  MAX_TIMER_MS,
  parseStoreUrl,
  type ResolvedConfig,
  redactUrl,
  type StoreConfig,
} from '@kv/core';

/** Options of the ZooKeeper backend, beyond the common ones. */
export interface ZooKeeperOptions {
  /**
   * ms asked of the server for the store's main session (reads, writes,
   * watches, lock queues). The server clamps it to its
   * `minSessionTimeout`..`maxSessionTimeout`. Default 10 000. In a URL:
   * `?sessionTimeout=5000`.
   */
  sessionTimeout?: number;
  /**
   * ZooKeeper authentication, added to every session. Only `digest`
   * (`user:password`) is supported. `username`/`password` (or the URL's
   * `user:pass@`) are the same as `{ scheme: 'digest', credentials: 'user:pass' }`.
   */
  auth?: { scheme: 'digest'; credentials: string };
}

declare module '@kv/core' {
  interface BackendOptions {
    zookeeper: ZooKeeperOptions;
  }
}

export const ZOOKEEPER_OPTIONS = ['sessionTimeout', 'auth'] as const;

export const DEFAULT_SESSION_TIMEOUT = 10_000;

/** Everything the store needs, validated. */
export interface ZooKeeperSettings {
  /** `host:port,host:port` for the C client. */
  connect: string;
  sessionTimeout: number;
  auth: { scheme: 'digest'; credentials: string } | undefined;
  connectTimeout: number;
  requestTimeout: number;
  prefix: string;
}

/** `zookeeper://[user:pass@]host:2181[,host:2182]/prefix[?sessionTimeout=10000&...]` */
export function parseZooKeeperUrl(url: string): StoreConfig {
  const config = parseStoreUrl(url) as Record<string, unknown>;
  if (config.backend !== 'zookeeper') {
    throw new InvalidArgumentError(`not a zookeeper:// URL: ${JSON.stringify(redactUrl(url))}`);
  }
  return config as StoreConfig;
}

function endpointOf(endpoint: string): string {
  let text = endpoint.trim();
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text);
  if (scheme) {
    if ((scheme[1] as string).toLowerCase() !== 'zookeeper') {
      throw new InvalidArgumentError(
        `endpoint ${JSON.stringify(endpoint)}: expected host:port or zookeeper://host:port`,
      );
    }
    text = text.slice(scheme[0].length).replace(/\/.*$/, '');
  }
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]/,\s]+))(?::(\d+))?$/.exec(text);
  if (!match) throw new InvalidArgumentError(`endpoint ${JSON.stringify(endpoint)}: expected host:port`);
  const port = match[3] === undefined ? 2181 : Number(match[3]);
  if (!Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new InvalidArgumentError(`endpoint ${JSON.stringify(endpoint)}: bad port`);
  }
  const host = match[1] !== undefined ? `[${match[1]}]` : (match[2] as string);
  return `${host}:${port}`;
}

/** Validates a resolved config into the settings the store uses. */
export function zooKeeperSettings(config: ResolvedConfig & ZooKeeperOptions): ZooKeeperSettings {
  const endpoints = config.endpoints ?? ['127.0.0.1:2181'];
  if (endpoints.length === 0) throw new InvalidArgumentError('endpoints must name at least one server');
  const connect = endpoints.map(endpointOf).join(',');
  if (config.tls !== undefined && config.tls !== false) {
    throw new InvalidArgumentError(
      'the zookeeper backend cannot use TLS: its client (the `zookeeper` package, a binding of the C client) is built without OpenSSL, so it has no TLS transport; reach ZooKeeper over a trusted network or a TLS tunnel',
    );
  }
  if (config.token !== undefined) {
    throw new InvalidArgumentError(
      'the zookeeper backend takes username/password or auth (digest), not a token',
    );
  }
  const sessionTimeout = config.sessionTimeout ?? DEFAULT_SESSION_TIMEOUT;
  if (
    typeof sessionTimeout !== 'number' ||
    !Number.isSafeInteger(sessionTimeout) ||
    sessionTimeout <= 0 ||
    sessionTimeout > MAX_TIMER_MS
  ) {
    throw new InvalidArgumentError(
      `sessionTimeout must be a positive integer number of ms, got ${JSON.stringify(sessionTimeout)}`,
    );
  }
  let auth: ZooKeeperSettings['auth'];
  if (config.auth !== undefined) {
    const a = config.auth as unknown;
    if (typeof a !== 'object' || a === null || Array.isArray(a)) {
      throw new InvalidArgumentError("auth must be { scheme: 'digest', credentials: 'user:password' }");
    }
    const { scheme, credentials, ...rest } = a as Record<string, unknown>;
    if (Object.keys(rest).length > 0) {
      throw new InvalidArgumentError(`unknown auth option(s): ${Object.keys(rest).join(', ')}`);
    }
    if (scheme !== 'digest') {
      throw new InvalidArgumentError(`auth.scheme must be 'digest', got ${JSON.stringify(scheme)}`);
    }
    if (typeof credentials !== 'string' || !credentials.includes(':')) {
      throw new InvalidArgumentError("auth.credentials must be 'user:password'");
    }
    if (config.username !== undefined || config.password !== undefined) {
      throw new InvalidArgumentError('give either auth or username/password, not both');
    }
    auth = { scheme, credentials };
  } else if (config.username !== undefined || config.password !== undefined) {
    if (!config.username) throw new InvalidArgumentError('a password needs a username (digest auth)');
    auth = { scheme: 'digest', credentials: `${config.username}:${config.password ?? ''}` };
  }
  const prefix = config.prefix;
  if (prefix === '') {
    throw new InvalidArgumentError(
      'the zookeeper backend needs a prefix (the path under / that holds the store, e.g. zookeeper://host:2181/myapp): it never works on the whole tree',
    );
  }
  if (prefix.split('/')[0] === 'zookeeper') {
    throw new InvalidArgumentError('the prefix must not be under /zookeeper, the server’s own tree');
  }
  return {
    connect,
    sessionTimeout,
    auth,
    connectTimeout: config.connectTimeout,
    requestTimeout: config.requestTimeout,
    prefix,
  };
}
