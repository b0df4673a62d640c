import {
  type AcquiredLock,
  type AcquireRequest,
  BaseStore,
  backoff,
  bufferView,
  type Capabilities,
  ClosedError,
  delay,
  isBelow,
  KeyExistsError,
  KeyModifiedError,
  KeyNotFoundError,
  type KVError,
  LockLostError,
  monotonicNow,
  type PrimitiveReadOptions,
  type PrimitiveWriteOptions,
  type RawPair,
  type ResolvedConfig,
  stripPrefix,
  timeoutSignal,
  UnavailableError,
  ValueTooLargeError,
} from '@kv/core';
import Consul from 'consul';
import { type ConsulOptions, type ConsulSettings, consulSettings, parseGoDuration } from './consul-config.js';
import { ConsulHttpError, isPermanent, mapConsulError } from './consul-errors.js';
import { ConsulHttp, type HttpResponse, keyPath } from './consul-http.js';
import { ConsulTransaction, type TxnOp, type TxnResult } from './transaction.js';

/** The capabilities before the agent was asked; each store reports the agent's own limits. */
export const CONSUL_CAPABILITIES: Capabilities = Object.freeze({
  watch: true,
  watchTree: true,
  lock: true,
  ttl: true,
  keepAlive: true,
  consistentRead: true,
  // Twice Consul's default session_ttl_min (10 s): a session is freed 2×TTL after its last renewal.
  minTtl: 20_000,
  ttlGranularity: 1_000,
  maxValueSize: 390_144,
  distributed: true,
});

/** Consul's KV entry, as the HTTP API sends it. */
export interface ConsulEntry {
  readonly Key: string;
  readonly Value: string | null;
  readonly Flags: number;
  readonly Session?: string;
  readonly LockIndex: number;
  readonly CreateIndex: number;
  readonly ModifyIndex: number;
}

/**
 * A ttl key's deadline (wall clock, ms since the epoch) lives in the entry's
 * `Flags`, tagged by this marker in bits 42-52 so that flags other tools set
 * are never taken for a deadline (and the number stays under 2^53).
 */
const DEADLINE_MARK = 0x5a5 * 2 ** 42;
const DEADLINE_SPAN = 2 ** 42;
/** Consul's longest session TTL (24 h): a ttl session lives 2×TTL at most. */
const MAX_SESSION_TTL = 86_400_000;
/** Room in a /v1/txn body for the keys and the JSON around a value (values travel base64 in it). */
const TXN_OVERHEAD = 2_048;

/**
 * Consul 1.8 answers 400 to a URL whose path holds a character Go's
 * `unicode.IsPrint` refuses (U+0080, U+00A0, U+2028, U+FEFF...), and Go's
 * Unicode tables are older than JavaScript's. So a key with anything but
 * printable ASCII is read and written through /v1/txn (JSON carries it
 * fine), and watched through its longest printable-ASCII prefix.
 */
/** Prefix of a lock's guard key: a control character, so no listing shows it and no user directory holds it. */
const LOCK_GUARD = 'kv-lock\u0001/';

const NON_PRINTABLE = /[^\x20-\x7e]/;

function printablePrefix(key: string): string {
  const at = key.search(NON_PRINTABLE);
  if (at < 0) return key;
  const prefix = key.slice(0, at);
  // A path ending in a `.` or `..` segment is cleaned by Go's HTTP mux (a 301 to another path):
  // stop at the segment's start instead.
  const last = prefix.slice(prefix.lastIndexOf('/') + 1);
  return last === '.' || last === '..' ? prefix.slice(0, prefix.length - last.length) : prefix;
}

/** How many keys' last-seen versions a store keeps for its CAS checks (see `versions`). */
const VERSIONS_KEPT = 10_000;

function deadlineOf(entry: Pick<ConsulEntry, 'Flags' | 'Session'>): number | undefined {
  const flags = entry.Flags;
  if (!entry.Session && flags === 0) return undefined;
  if (flags >= DEADLINE_MARK && flags < DEADLINE_MARK + DEADLINE_SPAN) return flags - DEADLINE_MARK;
  return undefined;
}

function expired(entry: ConsulEntry, now = Date.now()): boolean {
  const deadline = deadlineOf(entry);
  return deadline !== undefined && deadline <= now;
}

function toRaw(entry: ConsulEntry): RawPair {
  const value = entry.Value ? new Uint8Array(Buffer.from(entry.Value, 'base64')) : new Uint8Array(0);
  return { key: entry.Key, value, lastIndex: entry.ModifyIndex };
}

function b64(value: Uint8Array): string {
  return bufferView(value).toString('base64');
}

class TxnFailed extends Error {
  readonly errors: readonly { OpIndex: number; What: string }[];
  constructor(errors: readonly { OpIndex: number; What: string }[]) {
    super(errors.map((e) => `op ${e.OpIndex}: ${e.What}`).join('; '));
    this.name = 'TxnFailed';
    this.errors = errors;
  }
}

interface KeepAliveSession {
  id: string;
  readonly sessionTtl: number;
  timer: NodeJS.Timeout | undefined;
}

/**
 * The Consul store, on Consul's HTTP API (see the README for why not the
 * `consul` client for the data calls). Keys are Consul keys under the
 * prefix; `lastIndex` is the entry's `ModifyIndex`. Writes go through
 * `/v1/txn` so that a put replaces the whole entry (value, flags and any
 * session) in one step. A ttl key is held by a session of its own (behaviour
 * `delete`, TTL = ttl/2: Consul frees it 2×TTL after its last renewal) and
 * carries its deadline in `Flags`, so every reader hides it the moment it
 * expires.
 */
export class ConsulStore extends BaseStore {
  readonly settings: ConsulSettings;
  /** The HTTP transport every call of this store goes through. */
  readonly http: ConsulHttp;
  private rawClient: Consul | undefined;
  /** ms: the agent's session_ttl_min. */
  private sessionTtlMin: number;
  /** Bytes: the largest /v1/txn body the agent takes (txn_max_req_len). */
  private readonly txnMaxReqLen: number;
  private readonly valueLimitSetting: string;
  private readonly keepAlive = new Map<number, KeepAliveSession | Promise<KeepAliveSession>>();
  private readonly heldLocks = new Map<string, { key: string; lost: (reason: string) => void }>();
  private readonly reaping = new Set<string>();
  /**
   * The version of each key this store saw last (its ModifyIndex and ttl deadline), at most
   * VERSIONS_KEPT keys: a CAS names a version by its index, and one past its deadline is gone
   * even while Consul has not deleted it yet. A CAS naming a version not here reads it first.
   */
  private readonly versions = new Map<string, { index: number; deadline: number | undefined }>();

  static async open(config: ResolvedConfig & ConsulOptions): Promise<ConsulStore> {
    const settings = consulSettings(config);
    const http = new ConsulHttp(settings);
    let limits: Limits;
    try {
      limits = await readLimits(http, settings);
    } catch (error) {
      http.close();
      throw mapConsulError(error, 'connect');
    }
    return new ConsulStore(settings, http, limits);
  }

  private constructor(settings: ConsulSettings, http: ConsulHttp, limits: Limits) {
    const { maxValueSize, maxValueSetting } = valueLimit(limits);
    super({
      backend: 'consul',
      capabilities: { ...CONSUL_CAPABILITIES, minTtl: 2 * limits.sessionTtlMin, maxValueSize },
      prefix: settings.prefix,
      requestTimeout: settings.requestTimeout,
      minTtlSetting: 'session_ttl_min (the smallest ttl is twice it)',
      maxValueSetting,
    });
    this.settings = settings;
    this.http = http;
    this.sessionTtlMin = limits.sessionTtlMin;
    this.txnMaxReqLen = limits.txnMaxReqLen;
    this.valueLimitSetting = maxValueSetting;
  }

  /** The `consul` (2.0.1) client on the same agent, token and connection pool, for calls the Store does not cover. */
  get client(): Consul {
    this.assertOpen();
    if (!this.rawClient) {
      const { host, port } = this.http.endpoint;
      this.rawClient = new Consul({
        host,
        port,
        secure: this.settings.secure,
        agent: this.http.httpAgent,
        defaults: {
          ...(this.settings.token !== undefined ? { token: this.settings.token } : {}),
          ...(this.settings.datacenter !== undefined ? { dc: this.settings.datacenter } : {}),
        },
      } as ConstructorParameters<typeof Consul>[0]);
    }
    return this.rawClient;
  }

  // ---- HTTP helpers ----

  private readQuery(consistent: boolean): Record<string, boolean> {
    if (consistent || this.settings.consistency === 'consistent') return { consistent: true };
    if (this.settings.consistency === 'stale') return { stale: true };
    return {};
  }

  private async getEntries(
    path: string,
    query: Record<string, string | number | boolean | undefined>,
    signal: AbortSignal,
  ): Promise<{ entries: ConsulEntry[]; index: number | undefined }> {
    const res = await this.http.send({ method: 'GET', path, query, signal, write: false });
    if (res.status === 404) return { entries: [], index: res.index };
    return { entries: JSON.parse(res.body.toString('utf8')) as ConsulEntry[], index: res.index };
  }

  private async rawGet(
    key: string,
    signal: AbortSignal,
    consistent = false,
  ): Promise<ConsulEntry | undefined> {
    if (NON_PRINTABLE.test(key)) {
      // Read-only txns refuse such keys too: read the printable prefix's subtree and pick the key.
      const { entries } = await this.getEntries(
        `/kv/${keyPath(printablePrefix(key))}`,
        { recurse: true, ...this.readQuery(consistent) },
        signal,
      );
      return entries.find((e) => e.Key === key);
    }
    const { entries } = await this.getEntries(`/kv/${keyPath(key)}`, this.readQuery(consistent), signal);
    return entries.find((e) => e.Key === key);
  }

  private listPath(dir: string): string {
    return dir === '' ? '/kv/' : `/kv/${keyPath(dir)}/`;
  }

  /** Runs a /v1/txn; a failed check or lock is a `TxnFailed`. */
  async txn(ops: readonly TxnOp[], signal: AbortSignal, write = true): Promise<TxnResult[]> {
    const body = Buffer.from(JSON.stringify(ops), 'utf8');
    const tooLarge = (cause?: unknown) => {
      const size = ops.reduce((n, op) => n + ('KV' in op && op.KV.Value ? op.KV.Value.length : 0), 0);
      return new ValueTooLargeError(Math.floor((size * 3) / 4), this.capabilities.maxValueSize, {
        limit: `${this.valueLimitSetting}; this batch is ${body.byteLength} bytes in all`,
        ...(cause === undefined ? {} : { cause }),
      });
    };
    // Checked before sending: a batch of values each under maxValueSize can still be over it together.
    if (body.byteLength > this.txnMaxReqLen) throw tooLarge();
    let res: HttpResponse;
    try {
      res = await this.http.send({ method: 'PUT', path: '/txn', body, signal, write });
    } catch (error) {
      if (error instanceof ConsulHttpError && error.status === 413) throw tooLarge(error);
      throw error;
    }
    const answer = JSON.parse(res.body.toString('utf8') || '{}') as {
      Results?: TxnResult[] | null;
      Errors?: { OpIndex: number; What: string }[] | null;
    };
    if (res.status === 409 || (answer.Errors && answer.Errors.length > 0)) {
      const errors = answer.Errors ?? [];
      // An ACL refusal of one op comes back as an op error, not as a 403.
      const denied = errors.find((e) => /permission denied|acl not found/i.test(e.What));
      if (denied)
        throw mapConsulError(new ConsulHttpError(403, denied.What, 'consul /v1/txn'), 'transaction');
      throw new TxnFailed(errors);
    }
    return answer.Results ?? [];
  }

  /** Deletes an expired ttl key the server has not removed yet (its session lives up to ttl after it). */
  private reap(entry: ConsulEntry): void {
    const id = `${entry.Key}\u0000${entry.ModifyIndex}`;
    if (this.closed || this.reaping.has(id)) return;
    this.reaping.add(id);
    void this.http
      .send({
        method: 'DELETE',
        path: `/kv/${keyPath(entry.Key)}`,
        query: { cas: entry.ModifyIndex },
        signal: AbortSignal.timeout(this.requestTimeout),
        write: true,
      })
      .catch(() => {})
      .finally(() => this.reaping.delete(id));
  }

  private visible(entries: readonly ConsulEntry[]): ConsulEntry[] {
    const now = Date.now();
    const out: ConsulEntry[] = [];
    for (const entry of entries) {
      if (expired(entry, now)) this.reap(entry);
      else out.push(entry);
      this.remember(entry.Key, entry.ModifyIndex, deadlineOf(entry));
    }
    return out;
  }

  private remember(key: string, index: number, deadline: number | undefined): void {
    this.versions.delete(key);
    this.versions.set(key, { index, deadline });
    if (this.versions.size > VERSIONS_KEPT) {
      const oldest = this.versions.keys().next().value;
      if (oldest !== undefined) this.versions.delete(oldest);
    }
  }

  /**
   * True when the version `index` of `key` is a ttl entry past its deadline: a CAS on it must
   * fail as on a missing key, and write nothing (Consul's check-index alone would let it through
   * until the key's session is invalidated, or forever for a ttl longer than any session).
   */
  private async versionExpired(key: string, index: number, signal: AbortSignal): Promise<boolean> {
    let known = this.versions.get(key);
    if (known?.index !== index) {
      const entry = await this.rawGet(key, signal, true);
      // Another version (or none): the CAS's check-index fails and says which.
      if (!entry || entry.ModifyIndex !== index) return false;
      known = { index, deadline: deadlineOf(entry) };
    }
    return known.deadline !== undefined && known.deadline <= Date.now();
  }

  // ---- sessions ----

  /**
   * Creates a session: behaviour `delete`, no lock delay. `ttl` in ms (Consul
   * frees it 2×ttl after the last renewal). A session with a ttl has no
   * health checks: Consul's default ties it to its agent's `serfHealth`,
   * which the servers mark critical seconds after that agent is cut off, and
   * that would free a lock (or delete a ttl key) while its holder, renewing
   * through a reachable agent or not, still counts on its ttl.
   */
  async createSession(ttl: number | undefined, name: string, signal: AbortSignal): Promise<string> {
    const body: Record<string, unknown> = { LockDelay: '0s', Behavior: 'delete', Name: name };
    if (ttl !== undefined) {
      body.TTL = `${Math.max(ttl, this.sessionTtlMin)}ms`;
      body.Checks = [];
      body.NodeChecks = [];
    }
    const res = await this.http.send({
      method: 'PUT',
      path: '/session/create',
      body: JSON.stringify(body),
      signal,
      write: true,
    });
    return (JSON.parse(res.body.toString('utf8')) as { ID: string }).ID;
  }

  /** false when the session is gone (expired or destroyed). */
  async renewSession(id: string, signal: AbortSignal): Promise<boolean> {
    const res = await this.http.send({ method: 'PUT', path: `/session/renew/${id}`, signal, write: true });
    return res.status !== 404;
  }

  /** Destroys a session: every key it holds is deleted (behaviour `delete`). */
  async destroySession(id: string, signal: AbortSignal): Promise<void> {
    await this.http.send({ method: 'PUT', path: `/session/destroy/${id}`, signal, write: true });
  }

  private destroyQuietly(id: string): void {
    if (this.http.closed) return;
    void this.destroySession(id, AbortSignal.timeout(this.requestTimeout)).catch(() => {});
  }

  /** The store's session for keepAlive keys of this ttl, renewed every TTL/3 while the store is open. */
  private keepAliveSession(ttl: number, signal: AbortSignal): Promise<KeepAliveSession> {
    const existing = this.keepAlive.get(ttl);
    if (existing) return Promise.resolve(existing);
    const sessionTtl = Math.floor(ttl / 2);
    const creating = this.createSession(sessionTtl, 'kv keepAlive', signal).then(
      (id) => {
        const session: KeepAliveSession = { id, sessionTtl, timer: undefined };
        this.keepAlive.set(ttl, session);
        this.scheduleKeepAlive(ttl, session);
        return session;
      },
      (error) => {
        this.keepAlive.delete(ttl);
        throw error;
      },
    );
    this.keepAlive.set(ttl, creating);
    return creating;
  }

  private scheduleKeepAlive(
    ttl: number,
    session: KeepAliveSession,
    every = Math.floor(session.sessionTtl / 3),
  ): void {
    if (this.closed) return;
    session.timer = setTimeout(async () => {
      let next = Math.floor(session.sessionTtl / 3);
      try {
        const alive = await this.renewSession(session.id, AbortSignal.timeout(Math.max(next, 500)));
        if (!alive) {
          // Gone (the servers lost it, or a stall outlived it): its keys are gone too. Later puts make a new one.
          if (this.keepAlive.get(ttl) === session) this.keepAlive.delete(ttl);
          return;
        }
      } catch {
        next = Math.max(50, Math.floor(session.sessionTtl / 10));
      }
      if (this.keepAlive.get(ttl) === session) this.scheduleKeepAlive(ttl, session, next);
    }, every);
    session.timer.unref();
  }

  // ---- writes ----

  /** The op that writes the entry, with the session that must hold it for a ttl or keepAlive write. */
  private async writeOp(
    key: string,
    value: Uint8Array,
    options: PrimitiveWriteOptions,
  ): Promise<{ op: TxnOp; session?: string; own: boolean }> {
    const Value = b64(value);
    if (options.ttl === undefined)
      return { op: { KV: { Verb: 'set', Key: key, Value, Flags: 0 } }, own: false };
    if (options.keepAlive) {
      const session = await this.keepAliveSession(options.ttl, options.signal);
      return {
        op: { KV: { Verb: 'lock', Key: key, Value, Flags: 0, Session: session.id } },
        session: session.id,
        own: false,
      };
    }
    const deadline = Date.now() + options.ttl;
    const Flags = DEADLINE_MARK + deadline;
    const sessionTtl = Math.ceil(options.ttl / 2);
    if (sessionTtl > MAX_SESSION_TTL) {
      // Longer than any session: readers hide it at its deadline and delete it then.
      return { op: { KV: { Verb: 'set', Key: key, Value, Flags } }, own: false };
    }
    const session = await this.createSession(sessionTtl, 'kv ttl', options.signal);
    return { op: { KV: { Verb: 'lock', Key: key, Value, Flags, Session: session } }, session, own: true };
  }

  private async write(
    key: string,
    value: Uint8Array,
    options: PrimitiveWriteOptions,
    checks: readonly TxnOp[],
  ): Promise<number> {
    const { op, session, own } = await this.writeOp(key, value, options);
    try {
      const results = await this.txn([...checks, { KV: { Verb: 'delete', Key: key } }, op], options.signal);
      const last = results[results.length - 1];
      const index = last?.KV?.ModifyIndex ?? 0;
      if (last?.KV) this.remember(key, index, deadlineOf(last.KV));
      return index;
    } catch (error) {
      if (own && session) this.destroyQuietly(session);
      throw error;
    }
  }

  protected async _put(key: string, value: Uint8Array, options: PrimitiveWriteOptions): Promise<void> {
    await this.write(key, value, options, []);
    this.lockDataTouched((held) => held === key);
  }

  protected async _atomicPut(
    key: string,
    value: Uint8Array,
    previousIndex: number | null,
    options: PrimitiveWriteOptions,
  ): Promise<RawPair> {
    const user = stripPrefix(this.prefix, key);
    if (previousIndex === null) {
      try {
        const index = await this.write(key, value, options, [{ KV: { Verb: 'check-not-exists', Key: key } }]);
        return { key, value, lastIndex: index };
      } catch (error) {
        if (!(error instanceof TxnFailed)) throw error;
      }
      // It exists: unless it is a ttl key past its deadline (then it is gone, and replaced here).
      const entry = await this.rawGet(key, options.signal, true);
      if (entry && !expired(entry)) throw new KeyExistsError(user);
      try {
        const checks: TxnOp[] = entry
          ? [{ KV: { Verb: 'check-index', Key: key, Index: entry.ModifyIndex } }]
          : [{ KV: { Verb: 'check-not-exists', Key: key } }];
        const index = await this.write(key, value, options, checks);
        return { key, value, lastIndex: index };
      } catch (error) {
        if (error instanceof TxnFailed) throw new KeyExistsError(user, { cause: error });
        throw error;
      }
    }
    if (await this.versionExpired(key, previousIndex, options.signal)) throw new KeyNotFoundError(user);
    try {
      const index = await this.write(key, value, options, [
        { KV: { Verb: 'check-index', Key: key, Index: previousIndex } },
      ]);
      return { key, value, lastIndex: index };
    } catch (error) {
      if (!(error instanceof TxnFailed)) throw error;
      const entry = await this.rawGet(key, options.signal, true);
      if (!entry || expired(entry)) throw new KeyNotFoundError(user, { cause: error });
      throw new KeyModifiedError(user, { cause: error });
    }
  }

  protected async _delete(key: string, signal: AbortSignal): Promise<void> {
    if (NON_PRINTABLE.test(key)) await this.txn([{ KV: { Verb: 'delete', Key: key } }], signal);
    else await this.http.send({ method: 'DELETE', path: `/kv/${keyPath(key)}`, signal, write: true });
    this.lockDataTouched((held) => held === key);
  }

  protected async _atomicDelete(key: string, previousIndex: number, signal: AbortSignal): Promise<void> {
    const user = stripPrefix(this.prefix, key);
    if (await this.versionExpired(key, previousIndex, signal)) throw new KeyNotFoundError(user);
    try {
      // A DELETE ?cas=N of a missing key answers true: the txn's check-index tells a missing key apart.
      await this.txn(
        [
          { KV: { Verb: 'check-index', Key: key, Index: previousIndex } },
          { KV: { Verb: 'delete', Key: key } },
        ],
        signal,
      );
    } catch (error) {
      if (!(error instanceof TxnFailed)) throw error;
      if (/doesn't exist|does not exist/.test(error.message))
        throw new KeyNotFoundError(user, { cause: error });
      const entry = await this.rawGet(key, signal, true);
      if (!entry || expired(entry)) throw new KeyNotFoundError(user, { cause: error });
      throw new KeyModifiedError(user, { cause: error });
    }
    this.lockDataTouched((held) => held === key);
  }

  protected async _deleteTree(dir: string, signal: AbortSignal): Promise<void> {
    // `dir` itself and what is below `dir/`: a plain recurse on `dir` would also take `dirx`.
    await this.txn(
      [{ KV: { Verb: 'delete', Key: dir } }, { KV: { Verb: 'delete-tree', Key: `${dir}/` } }],
      signal,
    );
    this.lockDataTouched((held) => held === dir || isBelow(dir, held));
  }

  /** This store wrote over or deleted the key of a lock it holds: the holder learns at once. */
  private lockDataTouched(which: (key: string) => boolean): void {
    for (const [id, held] of [...this.heldLocks]) {
      if (which(held.key)) {
        this.heldLocks.delete(id);
        held.lost('its key was deleted or overwritten (delete, deleteTree or put)');
      }
    }
  }

  // ---- reads ----

  protected async _get(key: string, options: PrimitiveReadOptions): Promise<RawPair | null> {
    const entry = await this.rawGet(key, options.signal, options.consistent);
    if (!entry) return null;
    const [shown] = this.visible([entry]);
    return shown ? toRaw(shown) : null;
  }

  /** A ttl key's deadline is in its Flags; a keepAlive key rides on a session (no deadline to tell). */
  protected override async _remainingTtl(key: string, signal: AbortSignal): Promise<number | undefined> {
    const entry = await this.rawGet(key, signal);
    const shown = entry ? this.visible([entry])[0] : undefined;
    const deadline = shown ? deadlineOf(shown) : undefined;
    return deadline === undefined ? undefined : Math.max(1, Math.ceil(deadline - Date.now()));
  }

  protected async _list(dir: string, options: PrimitiveReadOptions): Promise<RawPair[]> {
    const { entries } = await this.getEntries(
      NON_PRINTABLE.test(dir) ? `/kv/${keyPath(printablePrefix(dir))}` : this.listPath(dir),
      { recurse: true, ...this.readQuery(options.consistent) },
      options.signal,
    );
    return this.visible(entries).map(toRaw);
  }

  // ---- watches ----

  /** Where a blocking query on one key goes: the key, or its printable prefix (recursive) when the key has characters a URL path may not. */
  private keyTarget(key: string): { path: string; query: Record<string, boolean> } {
    const watched = printablePrefix(key);
    return { path: `/kv/${keyPath(watched)}`, query: watched === key ? {} : { recurse: true } };
  }

  /**
   * A blocking query loop on `path`: yields the entries after each answer.
   * Follows Consul's rules for `X-Consul-Index`: an index that went
   * backwards (a restored or restarted cluster) resets it to 0, and it is
   * never used below 1. It also wakes at the next ttl deadline it holds, so
   * an expired key disappears on time. Connection trouble is retried with
   * backoff; a permanent error (token, policy) is thrown.
   */
  private async *blocking(
    path: string,
    query: Record<string, string | number | boolean | undefined>,
    signal: AbortSignal,
    maxWait = this.settings.blockingWait,
  ): AsyncGenerator<ConsulEntry[]> {
    let index = 0;
    let attempt = 0;
    let nextDeadline = Number.POSITIVE_INFINITY;
    while (!signal.aborted) {
      const wait = Math.max(1, Math.min(maxWait, Math.ceil(nextDeadline - Date.now()) + 1));
      // A first query (no index) answers at once: an agent that holds it longer than
      // requestTimeout is frozen or cut off, and the next attempt goes to the next agent.
      const bound = index > 0 ? wait + Math.ceil(wait / 16) + this.requestTimeout : this.requestTimeout;
      let result: { entries: ConsulEntry[]; index: number | undefined };
      try {
        result = await this.getEntries(
          path,
          { ...query, ...(index > 0 ? { index, wait: `${wait}ms` } : {}) },
          timeoutSignal(bound, signal),
        );
      } catch (error) {
        if (signal.aborted) return;
        if (this.closed) throw new ClosedError();
        if (isPermanent(error)) throw mapConsulError(error, 'watch');
        await delay(backoff(attempt++, 50, 2_000), signal).catch(() => {});
        // The connection may have gone to another agent, or the same one restarted: ask afresh.
        index = 0;
        continue;
      }
      attempt = 0;
      const next = result.index ?? 0;
      index = next < index ? 0 : Math.max(1, next);
      const now = Date.now();
      nextDeadline = Number.POSITIVE_INFINITY;
      for (const entry of result.entries) {
        const deadline = deadlineOf(entry);
        if (deadline !== undefined && deadline > now) nextDeadline = Math.min(nextDeadline, deadline);
      }
      yield result.entries;
    }
  }

  protected override async *_watch(key: string, signal: AbortSignal): AsyncIterable<RawPair | null> {
    const { path, query } = this.keyTarget(key);
    for await (const entries of this.blocking(path, { ...this.readQuery(false), ...query }, signal)) {
      const entry = this.visible(entries.filter((e) => e.Key === key))[0];
      yield entry ? toRaw(entry) : null;
    }
  }

  protected override async *_watchTree(dir: string, signal: AbortSignal): AsyncIterable<RawPair[]> {
    const query = { recurse: true, ...this.readQuery(false) };
    const watched = printablePrefix(dir);
    const path = watched === dir ? this.listPath(dir) : `/kv/${keyPath(watched)}`;
    for await (const entries of this.blocking(path, query, signal)) {
      yield this.visible(entries).map(toRaw);
    }
  }

  // ---- locks ----

  /**
   * A lock is its key plus a guard key, both held by one session of its own
   * (behaviour `delete`, no lock delay, TTL = ttl/2 so Consul frees it ttl
   * after the holder's last renewal). The guard lives outside every user
   * directory (`\u0001kv-lock/<key>`, a helper key no listing shows), so a
   * delete or deleteTree of the lock key cannot free the lock for a waiter
   * while its holder still holds the session: a waiter waits for the
   * holder's session itself to end. The fencing token is the `ModifyIndex`
   * of the acquiring write: a raft index, so it grows across deletes and
   * re-creations of the key, which `LockIndex` does not.
   */
  protected override async _acquireLock(key: string, request: AcquireRequest): Promise<AcquiredLock | null> {
    const { value, ttl, wait, signal } = request;
    const guard = `${LOCK_GUARD}${key}`;
    const sessionTtl = Math.floor(ttl / 2);
    let sentAt = Number.NEGATIVE_INFINITY;
    // Made (and remade) in the loop: a lock() that waits rides out an election or an agent restart.
    let session: string | undefined;
    let won = false;
    // Each request is bounded by requestTimeout: one stuck on a cut link must not stall the wait.
    const bounded = () => timeoutSignal(this.requestTimeout, signal);
    const refresh = async (): Promise<string> => {
      // The session must outlive the wait: renew it (or make a new one) well before it could expire.
      if (session !== undefined && monotonicNow() - sentAt < sessionTtl / 2) return session;
      const at = monotonicNow();
      if (session !== undefined && (await this.renewSession(session, bounded()))) {
        sentAt = at;
        return session;
      }
      session = undefined;
      session = await this.createSession(sessionTtl, 'kv lock', bounded());
      sentAt = at;
      return session;
    };
    let attempt = 0;
    /** A failed request: lock() waits out what may pass (no leader, a timeout), anything else is thrown. */
    const failed = async (error: unknown): Promise<void> => {
      if (signal.aborted) throw error;
      const mapped = mapConsulError(error, wait ? 'lock' : 'tryLock');
      if (!wait || !UnavailableError.isInstance(mapped)) throw mapped;
      await delay(backoff(attempt++, 50, 2_000), signal);
    };
    try {
      for (;;) {
        try {
          const held = await refresh();
          // Timed out, it may still have applied: trying again with the same session re-takes it.
          const results = await this.txn(
            [
              { KV: { Verb: 'lock', Key: guard, Value: '', Flags: 0, Session: held } },
              { KV: { Verb: 'lock', Key: key, Value: b64(value), Flags: 0, Session: held } },
            ],
            bounded(),
          );
          const token = results[1]?.KV?.ModifyIndex ?? results[0]?.KV?.ModifyIndex ?? 0;
          won = true;
          return this.lockHandle(key, held, token, sentAt, request);
        } catch (error) {
          if (!(error instanceof TxnFailed)) {
            await failed(error);
            continue;
          }
          if (/invalid session/i.test(error.message)) {
            sentAt = Number.NEGATIVE_INFINITY; // refresh() renews or makes a new one
            continue;
          }
          if (!wait) return null;
        }
        let holder: string | undefined;
        try {
          holder = await this.holderOf(guard, key, bounded());
        } catch (error) {
          await failed(error);
          continue;
        }
        if (holder)
          await this.awaitSessionEnd(holder, Math.max(1, Math.floor(sessionTtl / 3)), signal, refresh);
        else await delay(backoff(attempt++, 20, 500), signal); // freed between the try and the look: try again
      }
    } finally {
      if (!won && session !== undefined) this.destroyQuietly(session);
    }
  }

  /** The session holding the lock's guard (or, for a lock taken without one, its key). */
  private async holderOf(guard: string, key: string, signal: AbortSignal): Promise<string | undefined> {
    const entry = (await this.rawGet(guard, signal)) ?? (await this.rawGet(key, signal));
    return entry?.Session || undefined;
  }

  /** Blocks on `/v1/session/info/<id>` until that session is gone, renewing ours (`refresh`) between waits. */
  private async awaitSessionEnd(
    holder: string,
    waitMs: number,
    signal: AbortSignal,
    refresh: () => Promise<unknown>,
  ): Promise<void> {
    let index = 0;
    for (let attempt = 0; ; ) {
      let res: HttpResponse;
      try {
        await refresh();
        res = await this.http.send({
          method: 'GET',
          path: `/session/info/${encodeURIComponent(holder)}`,
          query: index > 0 ? { index, wait: `${waitMs}ms` } : {},
          signal: timeoutSignal(waitMs * 2 + this.requestTimeout, signal),
          write: false,
        });
      } catch (error) {
        if (signal.aborted || isPermanent(error)) throw error;
        await delay(backoff(attempt++, 50, 2_000), signal);
        return; // try the lock again: the holder may have changed meanwhile
      }
      const sessions = JSON.parse(res.body.toString('utf8') || 'null') as unknown[] | null;
      if (res.status === 404 || !sessions || sessions.length === 0) return;
      const next = res.index ?? 0;
      if (next < index) return;
      index = Math.max(1, next);
    }
  }

  private lockHandle(
    key: string,
    session: string,
    fencingToken: number,
    sentAt: number,
    request: AcquireRequest,
  ): AcquiredLock {
    const watching = new AbortController();
    const lost = (reason: string) => {
      watching.abort();
      request.onLost(reason);
    };
    this.heldLocks.set(session, { key, lost });
    void this.watchHeld(key, session, watching.signal, lost);
    return {
      fencingToken,
      sentAt,
      renew: async (signal) => {
        if (!(await this.renewSession(session, signal))) {
          this.heldLocks.delete(session);
          watching.abort();
          throw new LockLostError(stripPrefix(this.prefix, key), 'its session expired or was destroyed');
        }
      },
      release: async (signal) => {
        this.heldLocks.delete(session);
        watching.abort();
        if (this.http.closed) return;
        // Behaviour `delete`: the key goes with the session, and waiters wake.
        await this.destroySession(session, signal);
      },
    };
  }

  /** Follows a held lock's key: once it is gone or held by another session, the lock is lost. */
  private async watchHeld(
    key: string,
    session: string,
    signal: AbortSignal,
    lost: (reason: string) => void,
  ): Promise<void> {
    try {
      for await (const entries of this.blocking(
        `/kv/${keyPath(key)}`,
        {},
        AbortSignal.any([signal, this.closing]),
      )) {
        const entry = entries.find((e) => e.Key === key);
        if (entry?.Session === session) continue;
        if (signal.aborted) return;
        this.heldLocks.delete(session);
        lost(entry ? 'its key is held by another session' : 'its key was deleted');
        return;
      }
    } catch {
      // A permanent error: the renewals will tell.
    }
  }

  // ---- toolkit ----

  /** An atomic batch on `/v1/txn` (up to 64 operations): puts, deletes and checks, all or nothing. */
  transaction(): ConsulTransaction {
    return new ConsulTransaction({
      fullKey: (key) => this.fullKey(key),
      fullDir: (dir) => this.fullDir(dir),
      checkValue: (value) => this.checkValue(value),
      userKey: (key) => stripPrefix(this.prefix, key),
      run: (operation, ops) =>
        this.run(operation, undefined, async (signal) => {
          try {
            return await this.txn(ops, signal);
          } catch (error) {
            if (error instanceof TxnFailed) return { failed: error.errors };
            throw error;
          }
        }),
    });
  }

  // ---- errors and closing ----

  protected override _mapError(error: unknown, operation: string): KVError {
    return mapConsulError(error, operation);
  }

  protected async _close(): Promise<void> {
    const sessions: string[] = [];
    for (const entry of this.keepAlive.values()) {
      const session = await Promise.resolve(entry).catch(() => undefined);
      if (!session) continue;
      if (session.timer) clearTimeout(session.timer);
      sessions.push(session.id);
    }
    this.keepAlive.clear();
    this.heldLocks.clear();
    // keepAlive keys go with their sessions now, rather than a ttl later.
    if (!this.http.closed) {
      await Promise.allSettled(
        sessions.map((id) => this.destroySession(id, AbortSignal.timeout(this.requestTimeout))),
      );
    }
    this.rawClient = undefined;
    this.http.close();
  }
}

/**
 * The largest value every write path takes, and what sets it. Every write
 * goes through /v1/txn (see the README: a plain PUT keeps the session of an
 * entry it overwrites), where values travel base64 (4 bytes per 3) in a body
 * of at most `txn_max_req_len`; `kv_max_value_size` bounds each value too.
 */
function valueLimit(limits: Limits): { maxValueSize: number; maxValueSetting: string } {
  const inTxn = Math.floor((limits.txnMaxReqLen - TXN_OVERHEAD) / 4) * 3;
  if (limits.kvMaxValueSize <= inTxn)
    return { maxValueSize: limits.kvMaxValueSize, maxValueSetting: `the agent's kv_max_value_size` };
  return {
    maxValueSize: inTxn,
    maxValueSetting: `every write goes through /v1/txn, whose body the agent's txn_max_req_len limits to ${limits.txnMaxReqLen} bytes, with values base64-encoded in it`,
  };
}

interface Limits {
  /** ms */
  readonly sessionTtlMin: number;
  readonly kvMaxValueSize: number;
  readonly txnMaxReqLen: number;
}

/**
 * createStore's round trip: the agent's configuration (`/v1/agent/self`,
 * which needs `agent:read`), for session_ttl_min and the size limits. A
 * token without that right falls back to Consul's defaults (or the
 * `sessionTtlMin` option) and checks the agent with `/v1/status/leader`.
 */
async function readLimits(http: ConsulHttp, settings: ConsulSettings): Promise<Limits> {
  const signal = AbortSignal.timeout(settings.connectTimeout);
  const defaults: Limits = {
    sessionTtlMin: settings.sessionTtlMin ?? 10_000,
    kvMaxValueSize: 512 * 1024,
    txnMaxReqLen: 512 * 1024,
  };
  try {
    const res = await http.send({ method: 'GET', path: '/agent/self', signal, write: false });
    const self = JSON.parse(res.body.toString('utf8')) as { DebugConfig?: Record<string, unknown> };
    const debug = self.DebugConfig ?? {};
    const ttlMin = parseGoDuration(debug.SessionTTLMin);
    const kv = debug.KVMaxValueSize;
    const txn = debug.TxnMaxReqLen;
    return {
      sessionTtlMin: settings.sessionTtlMin ?? (ttlMin && ttlMin > 0 ? ttlMin : defaults.sessionTtlMin),
      kvMaxValueSize: typeof kv === 'number' && kv > 0 ? kv : defaults.kvMaxValueSize,
      txnMaxReqLen: typeof txn === 'number' && txn > 0 ? txn : defaults.txnMaxReqLen,
    };
  } catch (error) {
    if (!(error instanceof ConsulHttpError) || error.status !== 403) throw error;
    // An unknown token is refused at once; a known one without agent:read goes on.
    if (mapConsulError(error, 'connect').code === 'UNAUTHENTICATED') throw error;
  }
  const res = await http.send({ method: 'GET', path: '/status/leader', signal, write: false });
  const leader = res.body.toString('utf8').trim();
  if (leader === '""' || leader === '')
    throw new UnavailableError('consul: the agent knows no cluster leader');
  return defaults;
}
