import {
  type CommonConfig,
  describeValue,
  InvalidArgumentError,
  parseStoreUrl,
  type ResolvedConfig,
  redactUrl,
  type StoreConfig,
  tlsMaterial,
} from '@kv/core';

/** Options of the etcd v2 backend, beyond the common ones. */
export interface EtcdV2Options {
  /** Path of a PEM CA file, read when the store opens (the same as `tls.ca`; handy in URLs). */
  caFile?: string;
  /** Path of a PEM client certificate (the same as `tls.cert`). */
  certFile?: string;
  /** Path of the PEM private key of `certFile` (the same as `tls.key`). */
  keyFile?: string;
  /**
   * ms a watch's long poll (`wait=true`) waits for an event before it is
   * re-issued from the same index. Default 20 000.
   */
  pollTimeout?: number;
}

declare module '@kv/core' {
  interface BackendOptions {
    etcdv2: EtcdV2Options;
    etcdv2s: EtcdV2Options;
  }
}

export const ETCDV2_OPTIONS = ['caFile', 'certFile', 'keyFile', 'pollTimeout'] as const;
export const DEFAULT_ENDPOINT = '127.0.0.1:2379';

/** `etcdv2s://` is `etcdv2://` with TLS on; `?tls` (or `?tls=true`) does the same for `etcdv2://`. */
export function parseEtcdV2Url(url: string): StoreConfig {
  const secure = /^etcdv2s:\/\//i.test(url);
  if (!secure && !/^etcdv2:\/\//i.test(url)) {
    throw new InvalidArgumentError(`not an etcdv2 URL: ${JSON.stringify(redactUrl(url))}`);
  }
  // A bare `?tls` parses as the empty string: it means on.
  const normalised = url.replace(/([?&])tls(?=&|$)/i, '$1tls=true');
  const config = parseStoreUrl(`etcdv2://${normalised.slice(secure ? 10 : 9)}`) as Record<string, unknown>;
  config.backend = secure ? 'etcdv2s' : 'etcdv2';
  if (secure && config.tls === undefined) config.tls = true;
  return config as StoreConfig;
}

export interface EtcdV2Settings {
  /** `http://host:port` or `https://host:port`, in failover order. */
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
  /** The `Authorization` header of etcd's v2 basic auth, if any. */
  readonly authorization: string | undefined;
  readonly pollTimeout: number;
  readonly connectTimeout: number;
  readonly requestTimeout: number;
}

/** Validates a resolved config. */
export function settingsOf(config: ResolvedConfig & EtcdV2Options & CommonConfig): EtcdV2Settings {
  const {
    option: tlsOption,
    ca,
    cert,
    key,
    servername,
    rejectUnauthorized,
  } = tlsMaterial(config.tls, config as unknown as Record<string, unknown>);
  const endpoints = config.endpoints && config.endpoints.length > 0 ? config.endpoints : [DEFAULT_ENDPOINT];
  const explicitTls = endpoints.some((e) => /^https:\/\//i.test(e));
  const explicitPlain = endpoints.some((e) => /^http:\/\//i.test(e));
  if (explicitTls && explicitPlain) {
    throw new InvalidArgumentError(
      'endpoints mix http:// and https://: use one scheme for the whole cluster',
    );
  }
  const tlsOn =
    tlsOption === true ||
    typeof tlsOption === 'object' ||
    explicitTls ||
    (tlsOption === undefined && (ca !== undefined || cert !== undefined));
  if (tlsOption === false && explicitTls) {
    throw new InvalidArgumentError('tls is false but https endpoints were given');
  }
  const hosts = endpoints.map((endpoint) => {
    const bare = endpoint.replace(/^https?:\/\//i, '').replace(/\/+$/, '');
    if (!/^(\[[0-9a-f:.]+\]|[^\s/:@[\]]+):\d{1,5}$/i.test(bare)) {
      throw new InvalidArgumentError(`an etcd endpoint must be host:port, got ${JSON.stringify(endpoint)}`);
    }
    const port = Number(bare.slice(bare.lastIndexOf(':') + 1));
    if (port < 1 || port > 65_535) {
      throw new InvalidArgumentError(`an etcd endpoint's port must be 1 to 65535, got ${port}`);
    }
    return `${tlsOn ? 'https' : 'http'}://${bare}`;
  });
  if (config.token !== undefined) {
    throw new InvalidArgumentError("etcd's v2 API has no tokens: use username and password");
  }
  const { username, password } = config;
  if ((username === undefined) !== (password === undefined)) {
    throw new InvalidArgumentError('etcd v2 auth needs both username and password');
  }
  const pollTimeout = (config as EtcdV2Options).pollTimeout ?? 20_000;
  if (typeof pollTimeout !== 'number' || !Number.isSafeInteger(pollTimeout) || pollTimeout < 100) {
    throw new InvalidArgumentError(
      `pollTimeout must be an integer of at least 100 ms, got ${describeValue(pollTimeout)}`,
    );
  }
  return {
    hosts,
    tls: tlsOn ? { ca, cert, key, servername, rejectUnauthorized: rejectUnauthorized ?? true } : undefined,
    authorization:
      username === undefined
        ? undefined
        : `Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`,
    pollTimeout,
    connectTimeout: config.connectTimeout,
    requestTimeout: config.requestTimeout,
  };
}
