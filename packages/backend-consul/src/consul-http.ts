import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { backoff, delay, UnavailableError } from '@kv/core';
import type { ConsulEndpoint, ConsulSettings } from './consul-config.js';
import { ConsulConnectError, ConsulHttpError } from './consul-errors.js';

export interface HttpResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
  /** X-Consul-Index, when the agent sent one. */
  readonly index: number | undefined;
}

export interface HttpCall {
  readonly method: 'GET' | 'PUT' | 'DELETE';
  /** Path below /v1, already percent-encoded, e.g. `/kv/a/b`. */
  readonly path: string;
  readonly query?: Record<string, string | number | boolean | undefined>;
  readonly body?: Buffer | string;
  readonly signal: AbortSignal;
  /**
   * true for a call that changes something: it is sent to another agent only
   * when it never reached the first (a refused connection), since one that
   * may have been applied must not be applied twice.
   */
  readonly write: boolean;
}

const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

/**
 * A small HTTP client for Consul's API over several agents: one keep-alive
 * pool, the ACL token and datacenter on every call, an `AbortSignal` on
 * every request, and failover to the next agent when one cannot be reached.
 */
export class ConsulHttp {
  private readonly settings: ConsulSettings;
  private readonly agent: HttpAgent;
  private current = 0;
  private destroyed = false;

  constructor(settings: ConsulSettings) {
    this.settings = settings;
    const tls = settings.tls;
    this.agent = settings.secure
      ? new HttpsAgent({
          keepAlive: true,
          ...(tls?.ca !== undefined ? { ca: pem(tls.ca) } : {}),
          ...(tls?.cert !== undefined ? { cert: pem(tls.cert) } : {}),
          ...(tls?.key !== undefined ? { key: pem(tls.key) } : {}),
          ...(tls?.servername !== undefined ? { servername: tls.servername } : {}),
          ...(tls?.rejectUnauthorized !== undefined ? { rejectUnauthorized: tls.rejectUnauthorized } : {}),
        })
      : new HttpAgent({ keepAlive: true });
  }

  /** The agent the next call goes to first. */
  get endpoint(): ConsulEndpoint {
    return this.settings.endpoints[this.current] as ConsulEndpoint;
  }

  /** The pool, for the raw `consul` client. */
  get httpAgent(): HttpAgent {
    return this.agent;
  }

  /**
   * Sends a call, trying each agent once from the current one; throws
   * `ConsulConnectError` or `ConsulHttpError` (status >= 400, 404 excepted).
   * An agent that answers it could not get the call to a leader (none known,
   * or the one it knows refuses connections: an election is under way) has
   * applied nothing: the call is sent again, with backoff, until its signal
   * ends it. A 5xx that may have come after the leader got the call
   * ("rpc error making call: EOF") is thrown: resending a write could apply it twice.
   */
  async send(call: HttpCall): Promise<HttpResponse> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.sendOnce(call);
      } catch (error) {
        if (!notForwarded(error) || call.signal.aborted || this.destroyed) throw error;
        await delay(backoff(attempt, 50, 500), call.signal).catch(() => {
          throw error;
        });
      }
    }
  }

  private async sendOnce(call: HttpCall): Promise<HttpResponse> {
    if (this.destroyed) throw new ConsulConnectError('consul: the connection pool is closed');
    const endpoints = this.settings.endpoints;
    let last: unknown;
    const start = this.current;
    for (let tried = 0; tried < endpoints.length; tried++) {
      const at = (start + tried) % endpoints.length;
      try {
        const response = await this.once(endpoints[at] as ConsulEndpoint, call);
        this.current = at;
        if (response.status >= 500 && !call.write && tried + 1 < endpoints.length) {
          // No leader as this agent sees it, or a server it forwards to is gone: another may do.
          last = new ConsulHttpError(response.status, response.body.toString('utf8'), this.where(at));
          continue;
        }
        if (response.status >= 400 && response.status !== 404 && response.status !== 409) {
          throw new ConsulHttpError(response.status, response.body.toString('utf8'), this.where(at));
        }
        return response;
      } catch (error) {
        if (error instanceof ConsulHttpError) throw error;
        if (call.signal.aborted) {
          // A read that timed out (not the caller's own abort): this agent hung, and a frozen or
          // cut-off one keeps hanging, so the next call starts at the next agent. Not after a write:
          // the hung agent may still apply it later (Consul cannot cancel it), and writes that
          // followed it through another agent would then be overwritten by it.
          if (!call.write && timedOut(call.signal.reason)) this.current = (at + 1) % endpoints.length;
          throw error;
        }
        last = error;
        // The next call starts at the next agent: this one failed or hung.
        this.current = (at + 1) % endpoints.length;
        if (call.write && !(error instanceof ConsulConnectError)) throw error;
      }
    }
    throw last;
  }

  private where(at: number): string {
    const e = this.settings.endpoints[at] as ConsulEndpoint;
    return `consul ${e.host}:${e.port}`;
  }

  private once(endpoint: ConsulEndpoint, call: HttpCall): Promise<HttpResponse> {
    const query = new URLSearchParams();
    if (this.settings.datacenter) query.set('dc', this.settings.datacenter);
    for (const [name, value] of Object.entries(call.query ?? {})) {
      if (value === undefined || value === false) continue;
      query.set(name, value === true ? '' : String(value));
    }
    const qs = query.toString().replace(/=(?=&|$)/g, '');
    const path = `/v1${call.path}${qs ? `?${qs}` : ''}`;
    const headers: Record<string, string | number> = {};
    if (this.settings.token !== undefined) headers['X-Consul-Token'] = this.settings.token;
    const body = typeof call.body === 'string' ? Buffer.from(call.body, 'utf8') : call.body;
    if (body !== undefined) headers['Content-Length'] = body.byteLength;
    const requester = this.settings.secure ? httpsRequest : httpRequest;
    const where = `consul ${endpoint.host}:${endpoint.port}`;
    return new Promise<HttpResponse>((resolve, reject) => {
      let connected = false;
      const req = requester(
        {
          host: endpoint.host,
          port: endpoint.port,
          method: call.method,
          path,
          headers,
          agent: this.agent,
          signal: call.signal,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => {
            const raw = res.headers['x-consul-index'];
            const index = typeof raw === 'string' && /^\d+$/.test(raw) ? Number(raw) : undefined;
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: Buffer.concat(chunks),
              index,
            });
          });
          res.on('error', (error) => reject(new Error(`${where}: ${error.message}`, { cause: error })));
        },
      );
      req.on('socket', (socket) => {
        // A pooled socket is already connected; a new one says so when it connects.
        if (!socket.connecting) connected = true;
        else socket.once('connect', () => (connected = true));
      });
      req.on('error', (error: NodeJS.ErrnoException) => {
        if (call.signal.aborted) return reject(call.signal.reason ?? error);
        const code = error.code ?? '';
        if (!connected && CONNECT_ERRORS.has(code)) {
          reject(new ConsulConnectError(`${where}: ${error.message}`, { cause: error }));
        } else {
          reject(new Error(`${where}: ${error.message}`, { cause: error }));
        }
      });
      req.end(body);
    });
  }

  /** True once `close()` was called: every later call fails without sending anything. */
  get closed(): boolean {
    return this.destroyed;
  }

  close(): void {
    this.destroyed = true;
    this.agent.destroy();
  }
}

/** Consul's answers for a call that never reached a leader (so nothing was applied). */
const NOT_FORWARDED = /No cluster leader|rpc error getting client|failed to get conn/i;

/** An abort reason saying a time bound ran out: `AbortSignal.timeout`'s, or the store's requestTimeout. */
function timedOut(reason: unknown): boolean {
  return (reason instanceof Error && reason.name === 'TimeoutError') || UnavailableError.isInstance(reason);
}

function notForwarded(error: unknown): boolean {
  return error instanceof ConsulHttpError && error.status >= 500 && NOT_FORWARDED.test(error.body);
}

function pem(value: string | Uint8Array): string | Buffer {
  return typeof value === 'string' ? value : Buffer.from(value);
}

/** A key as a URL path: each segment percent-encoded, `/` kept. */
export function keyPath(key: string): string {
  return key
    .split('/')
    .map((segment) => encodeURIComponent(segment))
    .join('/');
}
