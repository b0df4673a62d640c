import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { backoff, bufferView, delay, UnavailableError } from '@kv/core';
import { ZkError } from './zookeeper-errors.js';

const require = createRequire(import.meta.url);

/** The parts of the `zookeeper` client (the binding of the C client) this backend uses. */
export interface NativeStat {
  readonly czxid: number;
  readonly mzxid: number;
  readonly version: number;
  readonly numChildren: number;
  readonly dataLength: number;
  readonly mtime: Date;
  /** Hex session id, `0` for a persistent node. */
  readonly ephemeralOwner: string;
}

type Watcher = (type: number, state: number, path: string) => void;

interface NativeClient extends EventEmitter {
  init(config: Record<string, unknown>): NativeClient;
  close(): void;
  a_create(
    path: string,
    data: Buffer,
    flags: number,
    cb: (rc: number, error: string, path: string) => void,
  ): number;
  a_exists(path: string, watch: boolean, cb: (rc: number, error: string, stat: NativeStat) => void): number;
  aw_exists(
    path: string,
    watcher: Watcher,
    cb: (rc: number, error: string, stat: NativeStat) => void,
  ): number;
  a_get(
    path: string,
    watch: boolean,
    cb: (rc: number, error: string, stat: NativeStat, data: Buffer | null) => void,
  ): number;
  aw_get(
    path: string,
    watcher: Watcher,
    cb: (rc: number, error: string, stat: NativeStat, data: Buffer | null) => void,
  ): number;
  a_get_children(
    path: string,
    watch: boolean,
    cb: (rc: number, error: string, children: string[]) => void,
  ): number;
  aw_get_children(
    path: string,
    watcher: Watcher,
    cb: (rc: number, error: string, children: string[]) => void,
  ): number;
  a_set(
    path: string,
    data: Buffer,
    version: number,
    cb: (rc: number, error: string, stat: NativeStat) => void,
  ): number;
  a_delete_(path: string, version: number, cb: (rc: number, error: string) => void): number;
  a_set_acl(
    path: string,
    version: number,
    acl: { perms: number; scheme: string; auth: string }[],
    cb: (rc: number, error: string) => void,
  ): number;
  add_auth(scheme: string, auth: string, cb: (rc: number, error: string) => void): number;
  a_sync(path: string, cb: (rc: number, error: string) => void): number;
  readonly timeout: number;
  readonly client_id: string;
}

type NativeConstructor = new () => NativeClient;
let Native: NativeConstructor | undefined;
function native(): NativeConstructor {
  Native ??= require('zookeeper') as NativeConstructor;
  return Native;
}

/** Node flags of the C client. */
export const PERSISTENT = 0;
export const EPHEMERAL = 1;
export const EPHEMERAL_SEQUENTIAL = 3;

/** Event types of the C client's watchers. */
export const SESSION_EVENT = -1;

export interface SessionOptions {
  /** `host:port,host:port` */
  readonly connect: string;
  /** ms asked of the server; it answers with the timeout it grants, clamped to its min/maxSessionTimeout. */
  readonly timeout: number;
  readonly auth: { scheme: string; credentials: string } | undefined;
  readonly connectTimeout: number;
  /** Aborts when the store closes. */
  readonly closing: AbortSignal;
}

/**
 * One ZooKeeper session, and the sessions that replace it: when the server
 * expires it (the client learns this only when it reconnects), a new one is
 * built in the background and `session` is emitted with the new
 * generation, so owners re-create their ephemeral nodes and watches. A lost
 * connection within the session is the C client's to restore (it resends
 * the watches it holds); `disconnected` and `connected` tell about it.
 */
export class ZkSession extends EventEmitter {
  private client: NativeClient | undefined;
  private ready: Promise<NativeClient> | undefined;
  /** Counts sessions: a node or watch belongs to the generation that made it. */
  generation = 0;
  /** The timeout the server granted (ms). */
  granted = 0;
  /** Hex id of the current session. */
  sessionId = '';
  connected = false;
  private closed = false;

  constructor(private readonly options: SessionOptions) {
    super();
    this.setMaxListeners(0);
  }

  /** Connects the first session; rejects within `connectTimeout`. */
  async open(): Promise<void> {
    this.ready = this.connectOnce(this.options.connectTimeout);
    await this.ready;
  }

  /** The client of the current session, waiting for a replacement session if one is being built. */
  current(signal: AbortSignal): Promise<NativeClient> {
    if (this.closed) return Promise.reject(new UnavailableError('zookeeper: the session is closed'));
    const ready = this.ready ?? Promise.reject(new UnavailableError('zookeeper: not connected'));
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const onAbort = () => reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      ready.then(
        (c) => {
          signal.removeEventListener('abort', onAbort);
          resolve(c);
        },
        (e) => {
          signal.removeEventListener('abort', onAbort);
          reject(e);
        },
      );
    });
  }

  private connectOnce(timeoutMs: number): Promise<NativeClient> {
    const Client = native();
    const client = new Client();
    const generation = this.generation + 1;
    return new Promise<NativeClient>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        client.removeAllListeners();
        try {
          client.close();
        } catch {}
        reject(
          new UnavailableError(
            `zookeeper: no session with ${this.options.connect} within ${timeoutMs} ms (is the server up?)`,
          ),
        );
      }, timeoutMs);
      timer.unref?.();
      client.on('connect', () => {
        if (this.client === client) {
          // A reconnect within the same session.
          this.connected = true;
          this.emit('connected');
          return;
        }
        if (settled) return;
        const finish = () => {
          settled = true;
          clearTimeout(timer);
          this.client = client;
          this.generation = generation;
          this.granted = client.timeout;
          this.sessionId = client.client_id;
          this.connected = true;
          resolve(client);
        };
        const auth = this.options.auth;
        if (!auth) return finish();
        client.add_auth(auth.scheme, auth.credentials, (rc, error) => {
          if (settled) return;
          if (rc !== 0) {
            settled = true;
            clearTimeout(timer);
            client.removeAllListeners();
            try {
              client.close();
            } catch {}
            reject(new ZkError(rc, error, 'add_auth'));
            return;
          }
          finish();
        });
      });
      client.on('connecting', () => {
        if (this.client === client && this.connected) {
          this.connected = false;
          this.emit('disconnected');
        }
      });
      client.on('close', (_self: unknown, code: number) => {
        if (this.client !== client) {
          if (!settled) {
            settled = true;
            clearTimeout(timer);
            reject(new ZkError(typeof code === 'number' && code !== 0 ? code : -4, 'closed', 'connect'));
          }
          return;
        }
        this.connected = false;
        this.client = undefined;
        if (this.closed) return;
        // Expired (or the client gave up): build a new session; owners re-create what lived in the old one.
        this.ready = this.rebuild();
        this.ready.catch(() => {});
        this.emit('replacing');
      });
      try {
        client.init({
          connect: this.options.connect,
          timeout: this.options.timeout,
          debug_level: 0,
          host_order_deterministic: false,
          // The binding closes the handle (as if expired) after this many reads that completed no reply;
          // its default of 10 trips on any reply larger than ~10 socket reads (a value of a few 100 kB).
          response_counter_limit: 2_147_483_647,
        });
      } catch (error) {
        settled = true;
        clearTimeout(timer);
        reject(error);
      }
    });
  }

  private async rebuild(): Promise<NativeClient> {
    this.emit('expired', this.generation);
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw new UnavailableError('zookeeper: the session is closed');
      try {
        const client = await this.connectOnce(Math.max(this.options.connectTimeout, this.options.timeout));
        this.emit('session', this.generation);
        return client;
      } catch {
        await delay(backoff(attempt, 100, 2_000), this.options.closing).catch(() => {});
      }
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    const client = this.client;
    this.client = undefined;
    this.connected = false;
    if (client) {
      try {
        client.close();
      } catch {}
    }
    this.removeAllListeners();
  }

  // ---- calls: promises, bounded by the caller's signal ----

  /**
   * Runs one C-client call; rejects with `ZkError` on a non-zero return code.
   * A call refused because its session expired (the server answered
   * SESSIONEXPIRED, or the client failed it with CLOSING while it shut the
   * expired handle: it was never sent) did nothing, so it is issued again in
   * the replacement session, within the caller's signal.
   */
  async call<T>(
    signal: AbortSignal,
    operation: string,
    path: string,
    issue: (client: NativeClient, done: (rc: number, error: string, value: T) => void) => number,
  ): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const client = await this.current(signal);
      try {
        return await this.callOn(client, signal, operation, path, issue);
      } catch (error) {
        const expired =
          error instanceof ZkError && (error.rc === SESSION_EXPIRED_RC || error.rc === CLOSING_RC);
        if (!expired || this.closed || attempt >= 3) throw error;
        if (this.client === client) await this.replaced(signal);
      }
    }
  }

  /** Resolves once the expired handle is gone and a replacement is on its way. */
  private replaced(signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const done = () => {
        this.off('replacing', done);
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = () => {
        this.off('replacing', done);
        reject(signal.reason);
      };
      this.on('replacing', done);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  private callOn<T>(
    client: NativeClient,
    signal: AbortSignal,
    operation: string,
    path: string,
    issue: (client: NativeClient, done: (rc: number, error: string, value: T) => void) => number,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const onAbort = () => reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      const done = (rc: number, error: string, value: T) => {
        signal.removeEventListener('abort', onAbort);
        if (rc === 0) resolve(value);
        else reject(new ZkError(rc, error, operation, path));
      };
      let rc: number;
      try {
        rc = issue(client, done);
      } catch (error) {
        signal.removeEventListener('abort', onAbort);
        reject(error);
        return;
      }
      if (rc !== 0) {
        signal.removeEventListener('abort', onAbort);
        reject(new ZkError(rc, 'refused by the client', operation, path));
      }
    });
  }

  /** A watcher tied to the generation it was set in (at issue time): it never fires for a session that is gone. */
  private watcher(generation: number, fire: () => void): Watcher {
    return (type) => {
      if (type === SESSION_EVENT) return;
      if (generation !== this.generation) return;
      fire();
    };
  }

  get(
    signal: AbortSignal,
    path: string,
    watch?: () => void,
  ): Promise<{ stat: NativeStat; data: Buffer | null }> {
    return this.call(signal, 'get', path, (c, done) => {
      const cb = (rc: number, e: string, stat: NativeStat, data: Buffer | null) =>
        done(rc, e, { stat, data });
      return watch ? c.aw_get(path, this.watcher(this.generation, watch), cb) : c.a_get(path, false, cb);
    });
  }

  exists(signal: AbortSignal, path: string, watch?: () => void): Promise<NativeStat | null> {
    return this.call<NativeStat | null>(signal, 'exists', path, (c, done) => {
      const cb = (rc: number, e: string, stat: NativeStat) =>
        rc === NO_NODE ? done(0, e, null) : done(rc, e, stat);
      return watch
        ? c.aw_exists(path, this.watcher(this.generation, watch), cb)
        : c.a_exists(path, false, cb);
    });
  }

  children(signal: AbortSignal, path: string, watch?: () => void): Promise<string[]> {
    return this.call(signal, 'getChildren', path, (c, done) =>
      watch
        ? c.aw_get_children(path, this.watcher(this.generation, watch), done)
        : c.a_get_children(path, false, done),
    );
  }

  /**
   * Creates a node. With `auth`, the node is then restricted to the
   * authenticated identity (ACL `auth::cdrwa`, ZooKeeper's CREATOR_ALL_ACL):
   * the client binding creates every node with the open ACL, so this takes a
   * second call, and until it is answered the new node is open to anyone.
   */
  async create(signal: AbortSignal, path: string, data: Uint8Array, flags: number): Promise<string> {
    const created = await this.call<string>(signal, 'create', path, (c, done) =>
      c.a_create(path, bufferView(data), flags, done),
    );
    if (this.options.auth) await this.setAcl(signal, created, CREATOR_ALL_ACL);
    return created;
  }

  set(signal: AbortSignal, path: string, data: Uint8Array, version: number): Promise<NativeStat> {
    return this.call(signal, 'setData', path, (c, done) => c.a_set(path, bufferView(data), version, done));
  }

  remove(signal: AbortSignal, path: string, version: number): Promise<void> {
    return this.call<void>(signal, 'delete', path, (c, done) =>
      c.a_delete_(path, version, (rc, e) => done(rc, e, undefined)),
    );
  }

  sync(signal: AbortSignal, path: string): Promise<void> {
    return this.call<void>(signal, 'sync', path, (c, done) =>
      c.a_sync(path, (rc, e) => done(rc, e, undefined)),
    );
  }

  setAcl(
    signal: AbortSignal,
    path: string,
    acl: { perms: number; scheme: string; auth: string }[],
  ): Promise<void> {
    // The binding reads `perm`, not `perms`, from each entry.
    const entries = acl.map((a) => ({ perm: a.perms, scheme: a.scheme, auth: a.auth }));
    return this.call<void>(signal, 'setACL', path, (c, done) =>
      c.a_set_acl(path, -1, entries as never, (rc, e) => done(rc, e, undefined)),
    );
  }
}

export const NO_NODE = -101;
/** Every permission (read, write, create, delete, admin) for the identities the session authenticated as. */
const CREATOR_ALL_ACL = [{ perms: 31, scheme: 'auth', auth: '' }];
const SESSION_EXPIRED_RC = -112;
const CLOSING_RC = -116;
