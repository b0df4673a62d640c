import { readFileSync } from 'node:fs';
import {
  InvalidArgumentError,
  parseStoreUrl,
  type ResolvedConfig,
  redactUrl,
  type StoreConfig,
  type TlsOptions,
} from '@kv/core';

/** Options of the Consul backend, beyond the common ones (`endpoints`, `prefix`, `token`, `tls`, timeouts). */
export interface ConsulOptions {
  /** Datacenter every call goes to (`?dc=`). Default: the agent's own. */
  datacenter?: string;
  /** The same as `datacenter`, as Consul's own query parameter is named (handy in URLs: `?dc=dc2`). */
  dc?: string;
  /**
   * Mode of plain reads (those without `consistent: true`): `default` (the
   * leader answers without checking it still leads), `consistent` (every read
   * linearizable) or `stale` (any server answers, possibly behind). Default `default`.
   */
  consistency?: 'default' | 'consistent' | 'stale';
  /** Path of a PEM CA file (the same as `tls.ca`; handy in URLs). */
  caFile?: string;
  /** Path of a PEM client certificate (the same as `tls.cert`). */
  certFile?: string;
  /** Path of the PEM key of `certFile` (the same as `tls.key`). */
  keyFile?: string;
  /**
   * ms: the agent's `session_ttl_min`, when the store cannot read it from
   * `/v1/agent/self` (a token without `agent:read`). Default: read it, else 10 000.
   */
  sessionTtlMin?: number;
  /** ms a blocking query (watch, lock wait) waits on the server before it asks again. Default 10 000. */
  blockingWait?: number;
}

declare module '@kv/core' {
  interface BackendOptions {
    consul: ConsulOptions;
    consuls: ConsulOptions;
  }
}

export const CONSUL_OPTIONS = [
  'datacenter',
  'dc',
  'consistency',
  'caFile',
  'certFile',
  'keyFile',
  'sessionTtlMin',
  'blockingWait',
] as const;

export const DEFAULT_PORT = 8500;

export interface ConsulEndpoint {
  readonly host: string;
  readonly port: number;
}

/** Everything the store needs, validated. */
export interface ConsulSettings {
  readonly endpoints: readonly ConsulEndpoint[];
  readonly secure: boolean;
  readonly tls: TlsOptions | undefined;
  readonly token: string | undefined;
  readonly datacenter: string | undefined;
  readonly consistency: 'default' | 'consistent' | 'stale';
  readonly sessionTtlMin: number | undefined;
  readonly blockingWait: number;
  readonly connectTimeout: number;
  readonly requestTimeout: number;
  readonly prefix: string;
}

/**
 * `consul://[token@]host:8500[,host:8500...]/prefix?dc=...&consistency=...`
 * and `consuls://...` (TLS). The user part of the URL is the ACL token.
 */
export function parseConsulUrl(url: string): StoreConfig {
  const config = parseStoreUrl(url) as Record<string, unknown>;
  const scheme = config.backend;
  if (scheme !== 'consul' && scheme !== 'consuls') {
    throw new InvalidArgumentError(
      `not a consul:// or consuls:// URL: ${JSON.stringify(redactUrl(url, { secretUser: true }))}`,
    );
  }
  if (config.username !== undefined) {
    if (config.password !== undefined) {
      throw new InvalidArgumentError(
        'a consul URL carries an ACL token (consul://TOKEN@host), not user:password',
      );
    }
    if (config.token !== undefined) throw new InvalidArgumentError('the consul URL gives the token twice');
    config.token = config.username;
    delete config.username;
  }
  if (scheme === 'consuls' && config.tls === undefined) config.tls = true;
  return config as StoreConfig;
}

function splitEndpoint(endpoint: unknown): ConsulEndpoint & { secure: boolean | undefined } {
  if (typeof endpoint !== 'string') {
    throw new InvalidArgumentError(`endpoints must be strings (host:port), got ${JSON.stringify(endpoint)}`);
  }
  let text = endpoint.trim();
  let secure: boolean | undefined;
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text);
  if (scheme) {
    const name = (scheme[1] as string).toLowerCase();
    if (name !== 'http' && name !== 'https') {
      throw new InvalidArgumentError(
        `endpoint ${JSON.stringify(endpoint)}: expected host:port or http(s)://host:port`,
      );
    }
    secure = name === 'https';
    text = text.slice(scheme[0].length).replace(/\/.*$/, '');
  }
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]/]+))(?::(\d+))?$/.exec(text);
  if (!match) throw new InvalidArgumentError(`endpoint ${JSON.stringify(endpoint)}: expected host:port`);
  const host = (match[1] ?? match[2]) as string;
  const port = match[3] === undefined ? DEFAULT_PORT : Number(match[3]);
  if (!Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new InvalidArgumentError(`endpoint ${JSON.stringify(endpoint)}: bad port`);
  }
  return { host, port, secure };
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
  return { ...(value as TlsOptions) };
}

function readPem(path: unknown, what: string): string {
  if (typeof path !== 'string' || path === '') {
    throw new InvalidArgumentError(`${what} must be a file path`);
  }
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw new InvalidArgumentError(
      `${what} ${JSON.stringify(path)} cannot be read: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
}

function positiveMs(value: unknown, name: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new InvalidArgumentError(
      `${name} must be a positive integer number of ms, got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

/** Validates a resolved config into the settings the store uses. */
export function consulSettings(config: ResolvedConfig & ConsulOptions): ConsulSettings {
  const raw = config.endpoints ?? [`127.0.0.1:${DEFAULT_PORT}`];
  if (!Array.isArray(raw) || raw.length === 0) {
    throw new InvalidArgumentError('endpoints must be a non-empty list of host:port');
  }
  const parsed = raw.map(splitEndpoint);
  const schemes = new Set(parsed.map((e) => e.secure).filter((s) => s !== undefined));
  if (schemes.size > 1) throw new InvalidArgumentError('endpoints mix http:// and https://');
  if (config.username !== undefined || config.password !== undefined) {
    throw new InvalidArgumentError('the consul backend takes an ACL token (token), not username/password');
  }
  if (config.token !== undefined && (typeof config.token !== 'string' || config.token === '')) {
    throw new InvalidArgumentError('token must be a non-empty string');
  }
  if (config.datacenter !== undefined && config.dc !== undefined && config.datacenter !== config.dc) {
    throw new InvalidArgumentError('datacenter and dc name different datacenters');
  }
  const datacenter = config.datacenter ?? config.dc;
  if (
    datacenter !== undefined &&
    (typeof datacenter !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(datacenter))
  ) {
    throw new InvalidArgumentError(
      `datacenter must be a Consul datacenter name, got ${JSON.stringify(datacenter)}`,
    );
  }
  const consistency = config.consistency ?? 'default';
  if (consistency !== 'default' && consistency !== 'consistent' && consistency !== 'stale') {
    throw new InvalidArgumentError(
      `consistency must be default, consistent or stale, got ${JSON.stringify(consistency)}`,
    );
  }
  let tls = tlsOf(config.tls ?? (schemes.has(true) ? true : undefined));
  const files = { ca: config.caFile, cert: config.certFile, key: config.keyFile };
  for (const [name, path] of Object.entries(files)) {
    if (path === undefined) continue;
    tls = { ...(tls ?? {}), [name]: readPem(path, `${name}File`) };
  }
  if (tls && schemes.has(false)) throw new InvalidArgumentError('tls is on but an endpoint says http://');
  return {
    endpoints: parsed.map(({ host, port }) => ({ host, port })),
    secure: tls !== undefined,
    tls,
    token: config.token,
    datacenter,
    consistency,
    sessionTtlMin: positiveMs(config.sessionTtlMin, 'sessionTtlMin'),
    blockingWait: positiveMs(config.blockingWait, 'blockingWait') ?? 10_000,
    connectTimeout: config.connectTimeout,
    requestTimeout: config.requestTimeout,
    prefix: config.prefix,
  };
}

/** Parses a Go duration as Consul prints it (`1s`, `1m30s`, `500ms`) into ms. */
export function parseGoDuration(text: unknown): number | undefined {
  if (typeof text === 'number') return text / 1e6; // nanoseconds
  if (typeof text !== 'string' || text === '') return undefined;
  const units: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1e3, m: 6e4, h: 3.6e6 };
  let total = 0;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g;
  let consumed = 0;
  for (const m of text.matchAll(re)) {
    total += Number(m[1]) * (units[m[2] as string] as number);
    consumed += m[0].length;
  }
  return consumed === text.length ? total : undefined;
}
