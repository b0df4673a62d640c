import * as http from 'node:http';
import * as https from 'node:https';
import { isIP } from 'node:net';
import { checkServerIdentity, type PeerCertificate, connect as tlsConnect } from 'node:tls';
import { ClosedError } from '@kv/core';
import type { EtcdV2Settings } from './etcdv2-config.js';
import { EtcdV2Error } from './etcdv2-errors.js';

/** A node as the v2 API returns it. */
export interface V2Node {
  readonly key?: string;
  readonly value?: string;
  readonly dir?: boolean;
  readonly nodes?: V2Node[];
  /** Seconds left, for a node with a ttl (rounded by the server). */
  readonly ttl?: number;
  /** When a node with a ttl expires (RFC 3339, the server's clock). */
  readonly expiration?: string;
  readonly modifiedIndex: number;
  readonly createdIndex: number;
}

export interface V2Answer {
  readonly action?: string;
  readonly node?: V2Node;
  readonly prevNode?: V2Node;
  /** X-Etcd-Index: the store's index when the answer was made. */
  readonly index: number;
}

export type Params = Record<string, string | number | boolean | undefined>;

/** Thrown when a request could not be sent to any endpoint, or got no answer in time. */
export class TransportError extends Error {
  constructor(
    message: string,
    /** false when the request may have reached the server (a write may have happened). */
    readonly notSent: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'TransportError';
  }
}

/**
 * The v2 HTTP API over Node's own `http`/`https` (the global `fetch` cannot
 * take a private CA or a client certificate on Node 20 without undici).
 * Several endpoints: a request that could not be sent (refused, reset before
 * an answer, connect timeout) goes to the next one; reads are also retried
 * there after a timeout; a write that may have reached a server is not
 * retried (it may have been applied), it fails and the next call starts on
 * the next endpoint.
 */
export class EtcdV2Client {
  private readonly agent: http.Agent;
  private current = 0;
  private halted = false;
  /**
   * The cluster accepted this client's credentials once (an answer past
   * etcd's auth check): a later 401 is a permission refused, not a wrong
   * password.
   */
  private credentialsAccepted = false;

  constructor(private readonly settings: EtcdV2Settings) {
    const tls = settings.tls;
    this.agent = tls
      ? new https.Agent({
          keepAlive: true,
          ...(tls.ca ? { ca: tls.ca } : {}),
          ...(tls.cert ? { cert: tls.cert } : {}),
          ...(tls.key ? { key: tls.key } : {}),
          // An IP as the TLS server name is not allowed (Node warns, DEP0123): check the certificate
          // against it instead, and send no SNI.
          ...(tls.servername && isIP(tls.servername) === 0 ? { servername: tls.servername } : {}),
          ...(tls.servername && isIP(tls.servername) !== 0
            ? {
                checkServerIdentity: (_: string, cert: PeerCertificate) =>
                  checkServerIdentity(tls.servername as string, cert),
              }
            : {}),
          rejectUnauthorized: tls.rejectUnauthorized,
        })
      : new http.Agent({ keepAlive: true });
  }

  /** Stops for good: every request in flight and later fails; sockets are destroyed. */
  halt(): void {
    this.halted = true;
    this.agent.destroy();
  }

  /** GET / PUT / POST / DELETE on `/v2/keys<path>`. Reads fail over after `attemptMs`. */
  async keys(
    method: 'GET' | 'PUT' | 'POST' | 'DELETE',
    path: string,
    params: Params,
    signal: AbortSignal,
    attemptMs?: number,
  ): Promise<V2Answer> {
    return this.request(method, `/v2/keys${path}`, params, signal, attemptMs);
  }

  async request(
    method: string,
    path: string,
    params: Params,
    signal: AbortSignal,
    attemptMs?: number,
  ): Promise<V2Answer> {
    const form = new URLSearchParams();
    for (const [name, value] of Object.entries(params))
      if (value !== undefined) form.set(name, String(value));
    const query = form.toString();
    const inQuery = method === 'GET' || method === 'DELETE';
    const hosts = this.settings.hosts;
    let last: unknown;
    for (let tried = 0; tried < hosts.length; tried++) {
      if (this.halted) throw new ClosedError('the etcdv2 client was stopped');
      if (signal.aborted) throw signal.reason;
      const at = (this.current + tried) % hosts.length;
      const host = hosts[at] as string;
      try {
        const answer = await this.once(
          method,
          host,
          inQuery && query ? `${path}?${query}` : path,
          inQuery ? undefined : query,
          signal,
          attemptMs,
        );
        this.current = at;
        return answer;
      } catch (error) {
        if (!(error instanceof TransportError)) throw error;
        last = error;
        // Next call starts on the next endpoint.
        this.current = (at + 1) % hosts.length;
        if (!error.notSent && method !== 'GET') throw error;
      }
    }
    throw last;
  }

  private once(
    method: string,
    host: string,
    path: string,
    body: string | undefined,
    signal: AbortSignal,
    attemptMs: number | undefined,
  ): Promise<V2Answer> {
    return new Promise<V2Answer>((resolve, reject) => {
      const url = new URL(path, host);
      const headers: Record<string, string> = { accept: 'application/json' };
      if (body !== undefined) {
        headers['content-type'] = 'application/x-www-form-urlencoded';
        headers['content-length'] = String(Buffer.byteLength(body));
      }
      if (this.settings.authorization) headers.authorization = this.settings.authorization;
      let sent = false;
      let done = false;
      const lib = url.protocol === 'https:' ? https : http;
      const req = lib.request(url, { method, headers, agent: this.agent });
      const finish = (error: unknown, value?: V2Answer) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        if (error) reject(error);
        else resolve(value as V2Answer);
      };
      const onAbort = () => {
        req.destroy();
        finish(signal.reason);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      const limit = attemptMs ?? this.settings.connectTimeout;
      const timer = setTimeout(() => {
        req.destroy();
        finish(new TransportError(`no answer from ${host} within ${limit} ms`, !sent));
      }, limit);
      timer.unref?.();
      req.on('socket', (socket) => {
        const connected = () => {
          sent = true;
        };
        // Listeners only on a socket still connecting: a reused keep-alive socket is connected
        // already, and adding listeners to it on every request would pile them up. Over TLS nothing
        // is sent before the handshake is done.
        if ((socket as { connecting?: boolean }).connecting) {
          socket.once(lib === https ? 'secureConnect' : 'connect', connected);
        } else connected();
      });
      req.on('error', (error) =>
        finish(
          new TransportError(`${host}: ${error.message}${tlsHint(error, lib === https && !sent)}`, !sent, {
            cause: error,
          }),
        ),
      );
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', (error) =>
          finish(new TransportError(`${host}: ${error.message}`, false, { cause: error })),
        );
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const index = Number(res.headers['x-etcd-index'] ?? Number.NaN);
          let parsed: Record<string, unknown> = {};
          try {
            parsed = text === '' ? {} : (JSON.parse(text) as Record<string, unknown>);
          } catch {
            parsed = { message: text.trim() };
          }
          const status = res.statusCode ?? 0;
          const code = typeof parsed.errorCode === 'number' ? parsed.errorCode : undefined;
          if (this.settings.authorization && passedAuth(status, code)) this.credentialsAccepted = true;
          if (status >= 200 && status < 300) {
            finish(undefined, { ...(parsed as object), index } as V2Answer);
            return;
          }
          const errIndex =
            typeof parsed.index === 'number' ? parsed.index : Number.isFinite(index) ? index : undefined;
          const message = `${status} ${String(parsed.message ?? parsed.error ?? res.statusMessage ?? '')}${
            parsed.cause ? ` (${String(parsed.cause)})` : ''
          }`;
          if (status >= 500 && code === undefined) {
            finish(new TransportError(`${host}: ${message}`, false));
            return;
          }
          const denied =
            status === 401 && this.settings.authorization !== undefined && this.credentialsAccepted;
          finish(new EtcdV2Error(status, code, message, errIndex, denied));
        });
      });
      if (body !== undefined) req.end(body);
      else req.end();
    });
  }
}

/**
 * An answer that etcd only gives once its auth check passed: a success, or a
 * store error (key errors 1xx but 110, raft 3xx, event 4xx). Request-parsing
 * errors (2xx codes) come before the check, and code 110 is the check
 * failing.
 */
function passedAuth(status: number, code: number | undefined): boolean {
  if (status >= 200 && status < 300) return true;
  if (code === undefined || code === 110) return false;
  return code < 200 || code >= 300;
}

/**
 * What to change, for the TLS errors a wrong setting causes. `handshaking`:
 * the error came before the TLS handshake was done.
 */
function tlsHint(error: Error & { code?: string }, handshaking: boolean): string {
  const code = error.code ?? '';
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/.test(code)) {
    return " (the server's certificate is not trusted: give the CA that signed it as tls.ca or caFile, or the name it carries as tls.servername)";
  }
  if (code === 'EPROTO' || /wrong version number|packet length too long/i.test(error.message)) {
    return ' (no TLS server answered: is this a plain http port? Then use etcdv2:// without tls)';
  }
  // A plain http server answers a ClientHello with a 400 and closes: the client reads that answer
  // (wrong version number), sees the close, or, when the close came with the hello unread, a reset.
  if (
    /before secure TLS connection was established/i.test(error.message) ||
    (handshaking && code === 'ECONNRESET')
  ) {
    return ' (the server closed the connection during the TLS handshake: is this a plain http port? Then use etcdv2:// without tls. Or does it want a client certificate: tls.cert and tls.key?)';
  }
  return '';
}

/**
 * Whether the first of `hosts` (`http://host:port`) answers a TLS handshake
 * (1 s at most): to tell a user who sent plain HTTP to a TLS port, which
 * etcd drops without an answer.
 */
export function speaksTls(hosts: readonly string[]): Promise<boolean> {
  const first = hosts[0];
  if (!first) return Promise.resolve(false);
  const url = new URL(first);
  return new Promise<boolean>((resolve) => {
    const socket = tlsConnect({
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: Number(url.port),
      rejectUnauthorized: false,
    });
    const done = (tls: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(tls);
    };
    const timer = setTimeout(() => done(false), 1_000);
    socket.once('secureConnect', () => done(true));
    // A TLS alert (a client certificate asked for, say) is a TLS server too.
    socket.once('error', (error: Error & { code?: string }) =>
      done(/^ERR_SSL_/.test(error.code ?? '') && !/WRONG_VERSION_NUMBER/.test(error.code ?? '')),
    );
  });
}
