import { createRequire } from 'node:module';
import { isIP } from 'node:net';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import { AuthenticationError } from '@kv/core';
import {
  castGrpcError,
  Etcd3,
  GRPCUnavailableError,
  type IDuplexStream,
  type IOptions,
  type IRangeRequest,
  type IWatchRequest,
  type IWatchResponse,
} from 'etcd3';
import type { EtcdSettings } from './etcd-config.js';
import { decodeRangeReply, type RangeReply } from './range-reply.js';

/*
 * How the etcd3 client is set up, and the few places where its internals are
 * adjusted (etcd3 is pinned to 1.1.2, whose internals these are):
 *
 * - Fault handling: etcd3's default circuit breaker stops calling a host for
 *   5 s after three failures, which delays reconnecting after a restart, and
 *   its global policy retries every call three times. Here a host is never
 *   blocked, and a call is tried once per endpoint on UNAVAILABLE only.
 * - Authentication: etcd3's authenticator opens a gRPC channel per token
 *   request and never closes it, and with a fixed token it would retry a
 *   rejected token forever. It is replaced by one that uses the host's own
 *   channel, supports a fixed `token`, and gives up on a rejected one.
 * - `tls.rejectUnauthorized: false` needs gRPC's verify options, which
 *   etcd3's `credentials` option cannot pass.
 * - An endpoint given as an IP address: gRPC would send the IP as the TLS
 *   server name (SNI), which TLS forbids and Node warns about (DEP0123). Such
 *   a host gets a placeholder server name and a check of the server's
 *   certificate against the IP itself, so the check is as strict as before.
 * - Store reads (`get`, `list`, watches' reads) send etcd3's Range request through its pool
 *   (same hosts, policies, auth and call options) but decode the reply with
 *   kv's own decoder (range-reply.ts): etcd3's KV service clients get one
 *   more method, `kvRangePairs`, that differs from `range` only there.
 */

type Policy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;
type PolicyContext = Parameters<Parameters<Policy['execute']>[0]>[0];
type ChannelOptions = NonNullable<IOptions['grpcOptions']>;

function makePolicy(execute: <T>(fn: (context: PolicyContext) => PromiseLike<T> | T) => Promise<T>): Policy {
  const noEvent = () => ({ dispose() {} });
  return { execute, onSuccess: noEvent, onFailure: noEvent } as unknown as Policy;
}

/** etcd3 never looks at the policy's signal, and these policies never cancel: one context serves every call. */
const CONTEXT = Object.freeze({ signal: new AbortController().signal }) as PolicyContext;

const passThrough = makePolicy(async (fn) => fn(CONTEXT));

/**
 * Tries a call on the next endpoint when one is unreachable, once per
 * endpoint, and never once `requestTimeout` has passed since the call began
 * (its caller has been told it failed: a late retry would be a surprise write).
 */
function tryEachHost(count: number, requestTimeout: number): Policy {
  return makePolicy(async (fn) => {
    const started = performance.now();
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn(CONTEXT);
      } catch (error) {
        if (attempt >= count || !(error instanceof GRPCUnavailableError)) throw error;
        if (performance.now() - started >= requestTimeout) throw error;
      }
    }
  });
}

/**
 * Call options for a call that kv bounds itself (every Store and toolkit
 * call runs under the store's deadline, which rejects it at
 * `requestTimeout`): no gRPC deadline of its own, which costs a timer and a
 * `grpc-timeout` header per call on both sides. Such a call that outlives its
 * bound on a silent connection ends when the gRPC keep-alive finds the
 * connection dead. Used only while keep-alive pings are on.
 */
export const KV_BOUNDED = Object.freeze({ deadline: Number.POSITIVE_INFINITY });

// ---- the parts of @grpc/grpc-js used here, taken from etcd3's own copy ----

interface GrpcMetadata {
  set(key: string, value: string): void;
  clone(): GrpcMetadata;
}
interface GrpcModule {
  Metadata: new () => GrpcMetadata;
  credentials: {
    createSsl(
      rootCerts?: Buffer | null,
      privateKey?: Buffer | null,
      certChain?: Buffer | null,
      verifyOptions?: {
        rejectUnauthorized?: boolean;
        checkServerIdentity?: (name: string, cert: PeerCertificate) => Error | undefined;
      },
    ): unknown;
  };
}
interface GrpcServiceClient {
  authenticate(
    request: { name: string; password: string },
    metadata: GrpcMetadata,
    options: { deadline: number },
    callback: (error: Error | null, response?: { token: string }) => void,
  ): void;
}
interface HostInternals {
  /** `host:port`, without the scheme. */
  readonly host: string;
  channelCredentials: unknown;
  channelOptions: ChannelOptions;
  getServiceClient(name: 'Auth'): GrpcServiceClient;
  getServiceClient(name: 'KV'): object;
}
interface PoolInternals {
  hosts: HostInternals[];
  authenticator: unknown;
  exec<T>(service: 'KV', method: typeof RANGE_PAIRS, request: IRangeRequest, options?: object): Promise<T>;
  withConnection<T>(
    service: 'Watch',
    fn: (args: { resource: unknown; client: unknown; metadata: GrpcMetadata }) => T,
  ): Promise<T>;
  markFailed(resource: unknown, error: Error): void;
}

let grpcModule: GrpcModule | undefined;
/** etcd3's own copy of @grpc/grpc-js: credentials and metadata must come from the copy that uses them. */
function grpc(): GrpcModule {
  if (!grpcModule) {
    const require = createRequire(import.meta.url);
    grpcModule = createRequire(require.resolve('etcd3'))('@grpc/grpc-js') as GrpcModule;
  }
  return grpcModule;
}

function poolOf(client: Etcd3): PoolInternals {
  const pool = (client as unknown as { pool?: PoolInternals }).pool;
  if (
    !pool ||
    !Array.isArray(pool.hosts) ||
    !('authenticator' in pool) ||
    typeof pool.withConnection !== 'function' ||
    typeof pool.markFailed !== 'function' ||
    typeof pool.exec !== 'function'
  ) {
    throw new Error('@kv/backend-etcd: unexpected etcd3 internals (this package needs etcd3 1.1.2)');
  }
  return pool;
}

/**
 * Gets etcd auth tokens over the hosts' own channels (closed with the
 * client), or hands out a fixed token. Plugged in as etcd3's authenticator.
 */
class Authenticator {
  private pending: Promise<GrpcMetadata> | undefined;
  private tokenRejected = false;

  constructor(
    private readonly pool: PoolInternals,
    private readonly settings: EtcdSettings,
  ) {}

  getMetadata(): Promise<GrpcMetadata> {
    const { Metadata } = grpc();
    const { token, username, password } = this.settings;
    if (token !== undefined) {
      if (this.tokenRejected) {
        return Promise.reject(new AuthenticationError('etcd rejected the auth token (invalid or expired)'));
      }
      const metadata = new Metadata();
      metadata.set('token', token);
      return Promise.resolve(metadata);
    }
    if (username === undefined || password === undefined) return Promise.resolve(new Metadata());
    this.pending ??= this.authenticate(username, password).catch((error: unknown) => {
      this.pending = undefined;
      throw error;
    });
    return this.pending;
  }

  /** etcd3 calls this when the server says the token is invalid (expired simple token). */
  invalidateMetadata(): void {
    if (this.settings.token !== undefined) this.tokenRejected = true;
    this.pending = undefined;
  }

  private async authenticate(name: string, password: string): Promise<GrpcMetadata> {
    const { Metadata } = grpc();
    const hosts = [...this.pool.hosts].sort(() => Math.random() - 0.5);
    let lastError: unknown;
    for (const host of hosts) {
      try {
        const token = await new Promise<string>((resolve, reject) => {
          host
            .getServiceClient('Auth')
            .authenticate(
              { name, password },
              new Metadata(),
              { deadline: Date.now() + this.settings.requestTimeout },
              (error, response) => (error ? reject(castGrpcError(error)) : resolve(response?.token ?? '')),
            );
        });
        const metadata = new Metadata();
        metadata.set('token', token);
        return metadata;
      } catch (error) {
        lastError = error;
        // Wrong credentials are wrong on every member.
        if (!(error instanceof GRPCUnavailableError)) throw error;
      }
    }
    throw lastError;
  }
}

/** A new etcd3 client for these settings. Nothing connects until the first call. */
export function createClient(settings: EtcdSettings): Etcd3 {
  const channelOptions: ChannelOptions = {
    'grpc.max_send_message_length': settings.maxCallSendMessageSize,
    'grpc.max_receive_message_length': settings.maxCallRecvMessageSize,
    // Reconnect soon after a server comes back (gRPC's default backoff grows to 120 s).
    'grpc.initial_reconnect_backoff_ms': 100,
    'grpc.max_reconnect_backoff_ms': 2_000,
    ...(settings.keepAliveTime > 0
      ? {
          'grpc.keepalive_time_ms': settings.keepAliveTime,
          'grpc.keepalive_timeout_ms': settings.keepAliveTimeout,
        }
      : {}),
    ...(settings.tls?.servername
      ? {
          'grpc.ssl_target_name_override': settings.tls.servername,
          'grpc.default_authority': settings.tls.servername,
        }
      : {}),
    ...settings.grpcOptions,
  };
  const tls = settings.tls;
  const options: IOptions = {
    hosts: settings.hosts,
    grpcOptions: channelOptions,
    // gRPC deadlines are absolute wall-clock times; each is computed as the call starts, from the
    // (monotonic) timeout, so nothing here measures a duration with the wall clock.
    defaultCallOptions: (call) => (call.isStream ? {} : { deadline: Date.now() + settings.requestTimeout }),
    faultHandling: {
      host: () => passThrough,
      global: tryEachHost(settings.hosts.length, settings.requestTimeout),
    },
  };
  if (tls && (tls.ca || tls.cert)) {
    options.credentials = {
      rootCertificate: tls.ca as Buffer,
      ...(tls.key ? { privateKey: tls.key } : {}),
      ...(tls.cert ? { certChain: tls.cert } : {}),
    };
  }
  const client = new Etcd3(options);
  const pool = poolOf(client);
  if (tls) {
    for (const host of pool.hosts) {
      const ip = tls.servername ? undefined : ipOf(host.host);
      if (tls.rejectUnauthorized && ip === undefined) continue;
      host.channelCredentials = grpc().credentials.createSsl(
        tls.ca ?? null,
        tls.key ?? null,
        tls.cert ?? null,
        {
          rejectUnauthorized: tls.rejectUnauthorized,
          checkServerIdentity: tls.rejectUnauthorized
            ? (_name, cert) => checkServerIdentity(ip as string, cert)
            : () => undefined,
        },
      );
      if (ip !== undefined) {
        host.channelOptions = { ...host.channelOptions, 'grpc.ssl_target_name_override': IP_SERVER_NAME };
      }
    }
  }
  pool.authenticator = new Authenticator(pool, settings);
  addRangePairs(pool);
  return client;
}

/** The KV service clients' method behind `rangePairs`. */
const RANGE_PAIRS = 'kvRangePairs';

interface UnaryMethod {
  readonly path: string;
  readonly requestSerialize: (request: unknown) => Buffer;
}
type UnaryCallback = (error: Error | null, reply?: RangeReply) => void;
interface ServiceClientClass {
  readonly service?: { readonly Range?: UnaryMethod };
}
interface KVServicePrototype {
  [RANGE_PAIRS]?: unknown;
  makeUnaryRequest?: unknown;
  constructor: ServiceClientClass;
}

/**
 * Gives etcd3's generated KV service client class a method that sends Range as its `range` does
 * and decodes the reply with decodeRangeReply. Every host's KV client is of that class (generated
 * once, when etcd3 loads), so the method is added once per process.
 */
function addRangePairs(pool: PoolInternals): void {
  const host = pool.hosts[0];
  if (!host) return;
  const prototype = Object.getPrototypeOf(host.getServiceClient('KV')) as KVServicePrototype;
  if (typeof prototype[RANGE_PAIRS] === 'function') return;
  const range = prototype.constructor.service?.Range;
  if (
    range?.path !== '/etcdserverpb.KV/Range' ||
    typeof range.requestSerialize !== 'function' ||
    typeof prototype.makeUnaryRequest !== 'function'
  ) {
    throw new Error('@kv/backend-etcd: unexpected etcd3 internals (this package needs etcd3 1.1.2)');
  }
  Object.defineProperty(prototype, RANGE_PAIRS, {
    value: function rangePairs(
      this: {
        makeUnaryRequest(
          path: string,
          serialize: UnaryMethod['requestSerialize'],
          deserialize: (reply: Buffer) => RangeReply,
          request: IRangeRequest,
          metadata: unknown,
          options: object,
          callback: UnaryCallback,
        ): unknown;
      },
      request: IRangeRequest,
      metadata: unknown,
      options: object,
      callback: UnaryCallback,
    ) {
      return this.makeUnaryRequest(
        range.path,
        range.requestSerialize,
        decodeRangeReply,
        request,
        metadata,
        options,
        callback,
      );
    },
  });
}

/**
 * etcd's Range through etcd3's pool (its hosts, fault policies, auth and call options, as
 * `client.kv.range`), with the reply decoded straight into pairs (see range-reply.ts).
 */
export function rangePairs(client: Etcd3, request: IRangeRequest, options?: object): Promise<RangeReply> {
  return poolOf(client).exec<RangeReply>('KV', RANGE_PAIRS, request, options);
}

/**
 * The TLS server name sent to an endpoint given as an IP address, where SNI
 * must not carry the IP. The server's certificate is still checked against
 * the IP (`subjectAltName=IP:...`); etcd picks no certificate by this name.
 */
const IP_SERVER_NAME = 'etcd-by-ip.invalid';

/** The IP address of `host:port` / `[v6]:port`, or undefined for a DNS name. */
function ipOf(hostPort: string): string | undefined {
  const match = /^\[([^\]]+)\](?::\d+)?$/.exec(hostPort) ?? /^([^:]+)(?::\d+)?$/.exec(hostPort);
  const host = match?.[1];
  return host !== undefined && isIP(host) !== 0 ? host : undefined;
}

/** Makes the next call fetch a fresh auth token (after "invalid auth token" on a stream). */
export function invalidateAuth(client: Etcd3): void {
  const authenticator = poolOf(client).authenticator as Authenticator;
  authenticator.invalidateMetadata();
}

type WatchStream = IDuplexStream<IWatchRequest, IWatchResponse> & { readonly writable: boolean };

/**
 * Opens a raw Watch stream that requires a leader (etcd's `hasleader`
 * metadata, as the Go client's WithRequireLeader): a member cut off from the
 * cluster ends the stream instead of going silent, and the watch moves on.
 */
export function openWatchStream(client: Etcd3): Promise<IDuplexStream<IWatchRequest, IWatchResponse>> {
  const pool = poolOf(client);
  return pool.withConnection('Watch', ({ resource, client: service, metadata }) => {
    const withLeader = metadata.clone();
    withLeader.set('hasleader', 'true');
    const stream = (service as { watch(metadata: GrpcMetadata, options: object): WatchStream }).watch(
      withLeader,
      {},
    );
    // As etcd3 does: a stream that fails on its own marks the host failed (its channels are renewed).
    stream.on('error', (error: Error) => {
      if (stream.writable) pool.markFailed(resource, error);
    });
    return stream;
  });
}
