import {
  type CommonConfig,
  InvalidArgumentError,
  parseStoreUrl,
  type ResolvedConfig,
  redactUrl,
  type StoreConfig,
  tlsMaterial,
} from '@kv/core';

/** Options of the etcd backend, beyond the common ones (`endpoints`, `prefix`, `username`, `password`, `token`, `tls`, `connectTimeout`, `requestTimeout`). */
export interface EtcdOptions {
  /** Path of a PEM CA file, read when the store opens (the same as `tls.ca`; handy in URLs). */
  caFile?: string;
  /** Path of a PEM client certificate (the same as `tls.cert`). */
  certFile?: string;
  /** Path of the PEM private key of `certFile` (the same as `tls.key`). */
  keyFile?: string;
  /**
   * Serve plain reads (those without `consistent: true`) from whichever member
   * the client reaches, without asking the leader: faster, possibly stale.
   * Default `false`: every read is linearizable.
   */
  serializableReads?: boolean;
  /** ms between gRPC keepalive pings, which detect a dead server under a watch or a lock. Default 10 000; 0 turns them off. At least 5 000 (the server's `--grpc-keepalive-min-time`). */
  keepAliveTime?: number;
  /** ms to wait for a ping's answer before the connection counts as dead. Default 5 000. */
  keepAliveTimeout?: number;
  /** bytes: the largest gRPC message this client sends. Default 2 MiB. */
  maxCallSendMessageSize?: number;
  /** bytes: the largest gRPC message this client accepts (a large listing). Default 2 GiB - 1. */
  maxCallRecvMessageSize?: number;
  /**
   * bytes: the server's `--max-request-bytes` (etcd's default 1.5 MiB). The
   * store's `maxValueSize` is the smaller of this and `maxCallSendMessageSize`,
   * less 1 KiB for the key and framing.
   */
  maxRequestBytes?: number;
  /** Extra gRPC channel options (config objects only), e.g. `{ 'grpc.initial_reconnect_backoff_ms': 200 }`. */
  grpcOptions?: Record<string, string | number>;
}

declare module '@kv/core' {
  interface BackendOptions {
    etcd: EtcdOptions;
    etcds: EtcdOptions;
  }
}

export const ETCD_OPTIONS = [
  'caFile',
  'certFile',
  'keyFile',
  'serializableReads',
  'keepAliveTime',
  'keepAliveTimeout',
  'maxCallSendMessageSize',
  'maxCallRecvMessageSize',
  'maxRequestBytes',
  'grpcOptions',
] as const;

export const DEFAULT_ENDPOINT = '127.0.0.1:2379';
export const DEFAULT_MAX_REQUEST_BYTES = 1_572_864;
export const DEFAULT_MAX_SEND = 2 * 1024 * 1024;
export const DEFAULT_MAX_RECV = 2 ** 31 - 1;
/** Room for the key, the lease and the protobuf framing within one request. */
export const REQUEST_OVERHEAD = 1024;

/** `etcds://` is `etcd://` with TLS on. */
export function parseEtcdsUrl(url: string): StoreConfig {
  if (!/^etcds:\/\//i.test(url))
    throw new InvalidArgumentError(`not an etcds URL: ${JSON.stringify(redactUrl(url))}`);
  const config = parseStoreUrl(`etcd://${url.slice('etcds://'.length)}`) as Record<string, unknown>;
  config.backend = 'etcds';
  if (config.tls === undefined) config.tls = true;
  return config as StoreConfig;
}

/** Everything the client needs, validated. */
export interface EtcdSettings {
  /** `http://host:port` or `https://host:port` */
  readonly hosts: string[];
  readonly tls:
    | {
        readonly ca: Buffer | undefined;
        readonly cert: Buffer | undefined;
        readonly key: Buffer | undefined;
        readonly servername: string | undefined;
        readonly rejectUnauthorized: boolean;
      }
    | undefined;
  readonly username: string | undefined;
  readonly password: string | undefined;
  readonly token: string | undefined;
  readonly serializableReads: boolean;
  readonly keepAliveTime: number;
  readonly keepAliveTimeout: number;
  readonly maxCallSendMessageSize: number;
  readonly maxCallRecvMessageSize: number;
  readonly maxRequestBytes: number;
  readonly grpcOptions: Record<string, string | number>;
  readonly connectTimeout: number;
  readonly requestTimeout: number;
}

function integer(config: Record<string, unknown>, name: string, fallback: number, min: number): number {
  const value = config[name];
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new InvalidArgumentError(
      `${name} must be an integer >= ${min}, got ${JSON.stringify(value)} (etcd backend option)`,
    );
  }
  return value;
}

/** Validates a resolved config and reads the TLS files. */
export function settingsOf(config: ResolvedConfig & EtcdOptions & CommonConfig): EtcdSettings {
  const raw = config as unknown as Record<string, unknown>;
  const { option: tlsOption, ca, cert, key, servername, rejectUnauthorized } = tlsMaterial(config.tls, raw);

  const endpoints = config.endpoints && config.endpoints.length > 0 ? config.endpoints : [DEFAULT_ENDPOINT];
  const explicitTls = endpoints.filter((e) => /^https:\/\//i.test(e)).length;
  const explicitPlain = endpoints.filter((e) => /^http:\/\//i.test(e)).length;
  if (explicitTls > 0 && explicitPlain > 0) {
    throw new InvalidArgumentError(
      'endpoints mix http:// and https://: use one scheme for the whole cluster',
    );
  }
  const tlsOn =
    tlsOption === true ||
    typeof tlsOption === 'object' ||
    ca !== undefined ||
    cert !== undefined ||
    explicitTls > 0;
  if (tlsOption === false && (explicitTls > 0 || ca !== undefined || cert !== undefined)) {
    throw new InvalidArgumentError('tls is false but https endpoints or TLS files were given');
  }
  const hosts = endpoints.map((endpoint) => {
    const withoutScheme = endpoint.replace(/^https?:\/\//i, '').replace(/\/+$/, '');
    if (!/^(\[[0-9a-f:.]+\]|[^\s/:@[\]]+):\d{1,5}$/i.test(withoutScheme)) {
      throw new InvalidArgumentError(`an etcd endpoint must be host:port, got ${JSON.stringify(endpoint)}`);
    }
    const port = Number(withoutScheme.slice(withoutScheme.lastIndexOf(':') + 1));
    if (port < 1 || port > 65_535) {
      throw new InvalidArgumentError(
        `an etcd endpoint's port must be 1 to 65535, got ${port} in ${JSON.stringify(endpoint)}`,
      );
    }
    return `${tlsOn ? 'https' : 'http'}://${withoutScheme}`;
  });

  const username = config.username;
  const password = config.password;
  const token = config.token;
  if (username !== undefined && password === undefined) {
    throw new InvalidArgumentError('username needs a password (etcd password auth)');
  }
  if (password !== undefined && username === undefined)
    throw new InvalidArgumentError('password needs a username');
  if (token !== undefined && username !== undefined) {
    throw new InvalidArgumentError('give either token or username/password, not both');
  }

  const serializableReads = raw.serializableReads ?? false;
  if (typeof serializableReads !== 'boolean')
    throw new InvalidArgumentError('serializableReads must be a boolean');
  const keepAliveTime = integer(raw, 'keepAliveTime', 10_000, 0);
  if (keepAliveTime !== 0 && keepAliveTime < 5_000) {
    throw new InvalidArgumentError(
      `keepAliveTime must be 0 (off) or at least 5000 ms: etcd's --grpc-keepalive-min-time (default 5 s) drops clients that ping more often, got ${keepAliveTime}`,
    );
  }
  const grpcOptions = raw.grpcOptions ?? {};
  if (
    typeof grpcOptions !== 'object' ||
    grpcOptions === null ||
    Array.isArray(grpcOptions) ||
    Object.values(grpcOptions).some((v) => typeof v !== 'string' && typeof v !== 'number')
  ) {
    throw new InvalidArgumentError('grpcOptions must be an object of string or number channel options');
  }

  return {
    hosts,
    tls: tlsOn ? { ca, cert, key, servername, rejectUnauthorized: rejectUnauthorized ?? true } : undefined,
    username,
    password,
    token,
    serializableReads,
    keepAliveTime,
    keepAliveTimeout: integer(raw, 'keepAliveTimeout', 5_000, 1),
    maxCallSendMessageSize: integer(raw, 'maxCallSendMessageSize', DEFAULT_MAX_SEND, 4 * 1024),
    maxCallRecvMessageSize: integer(raw, 'maxCallRecvMessageSize', DEFAULT_MAX_RECV, 4 * 1024),
    maxRequestBytes: integer(raw, 'maxRequestBytes', DEFAULT_MAX_REQUEST_BYTES, 4 * 1024),
    grpcOptions: grpcOptions as Record<string, string | number>,
    connectTimeout: config.connectTimeout,
    requestTimeout: config.requestTimeout,
  };
}
