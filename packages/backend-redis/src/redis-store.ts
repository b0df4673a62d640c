import { randomBytes, randomUUID } from 'node:crypto';
import {
  type AcquiredLock,
  type AcquireRequest,
  AuthenticationError,
  BaseStore,
  backoff,
  bufferView,
  type Capabilities,
  ClosedError,
  delay,
  InvalidArgumentError,
  isBelow,
  KeyExistsError,
  KeyModifiedError,
  KeyNotFoundError,
  KVError,
  LockLostError,
  monotonicNow,
  PermissionDeniedError,
  type PrimitiveReadOptions,
  type PrimitiveWriteOptions,
  type RawPair,
  type RawTreeChange,
  type RawTreeUpdate,
  type ResolvedConfig,
  stripPrefix,
  UnavailableError,
} from '@kv/core';
import { createClient, ErrorReply, RESP_TYPES } from 'redis';
import { copyBytes, copyLater, copyNow } from './byte-slabs.js';
import { type RedisOptions, type RedisSettings, redisSettings } from './redis-config.js';
import { type Feed, type FeedItem, Hub, type HubHost, keyInterest, treeInterest } from './redis-hub.js';
import { type Change, INLINE_LIMIT, parseData, SCRIPT, SCRIPT_SHA } from './redis-script.js';

export const REDIS_CAPABILITIES: Capabilities = Object.freeze({
  watch: true,
  watchTree: true,
  lock: true,
  ttl: true,
  keepAlive: true,
  consistentRead: true,
  minTtl: 50,
  // Reads never see an expired key (Redis expires on access); watchers see its delete within about
  // 100 ms of its deadline: while a watch is open the store makes Redis expire due keys itself.
  ttlGranularity: 250,
  maxValueSize: 16 * 1024 * 1024,
  distributed: true,
});

type Client = ReturnType<typeof createClient>;
type ClientOptions = NonNullable<Parameters<typeof createClient>[0]>;
type Arg = string | Buffer;
interface GetWaiter {
  resolve(data: Buffer | null): void;
  reject(error: unknown): void;
}
/** Gets of one turn of the event loop: their data keys, and who waits for each. */
interface GetBatch {
  readonly keys: string[];
  readonly waiters: GetWaiter[];
}

const BUFFERS = { [RESP_TYPES.BLOB_STRING]: Buffer } as const;
const AS_BUFFERS = { typeMapping: BUFFERS };

/** Redis key names of one namespace. */
interface Names {
  /** `{kv}:` */
  readonly ns: string;
  readonly index: string;
  readonly seq: string;
  readonly expiries: string;
  readonly dataPrefix: string;
  readonly lockPrefix: string;
  readonly probePrefix: string;
  readonly channel: string;
  readonly expiredChannel: string;
  readonly evictedChannel: string;
}

function namesOf(settings: RedisSettings): Names {
  const ns = `{${settings.namespace}}:`;
  return {
    ns,
    index: `${ns}idx`,
    seq: `${ns}seq`,
    expiries: `${ns}exp`,
    dataPrefix: `${ns}d:`,
    lockPrefix: `${ns}l:`,
    probePrefix: `${ns}probe:`,
    channel: `${ns}changes@${settings.db}`,
    expiredChannel: `__keyevent@${settings.db}__:expired`,
    evictedChannel: `__keyevent@${settings.db}__:evicted`,
  };
}

function text(value: unknown): string {
  return Buffer.isBuffer(value) ? value.toString('utf8') : String(value);
}

function num(value: unknown): number {
  return typeof value === 'number' ? value : Number(text(value));
}

function replyCode(error: unknown): string {
  return error instanceof ErrorReply ? (error.message.split(' ')[0] ?? '') : '';
}

function isAuthError(error: unknown): boolean {
  const code = replyCode(error);
  return (
    code === 'WRONGPASS' ||
    code === 'NOAUTH' ||
    (error instanceof ErrorReply &&
      /invalid (username-)?password|AUTH .* without any password/i.test(error.message))
  );
}

/**
 * The Redis store. Data layout, in one namespace (`{kv}` by default; the
 * braces are a hash tag, so every key of a namespace lives in one slot):
 *
 * - `{kv}:d:<key>`  a string per key, `<version>:<keepAlive owner>:<value bytes>`; a ttl is the
 *                   string's PEXPIRE
 * - `{kv}:idx`      the index: a sorted set of every key, all scored 0 (ZRANGEBYLEX lists a directory)
 * - `{kv}:seq`      the counter (INCR) behind versions, fencing tokens and change numbers
 * - `{kv}:l:<key>`  a lock's holder token (SET NX PX), never indexed
 * - channel `{kv}:changes@<db>`: one message per change, published by the same script that writes
 *
 * Every write is one Lua script (see redis-script.ts), so the value, its
 * version, the index and the change message move together.
 */
export class RedisStore extends BaseStore {
  /** The node-redis client, for anything the Store does not cover. */
  readonly client: Client;
  readonly settings: RedisSettings;
  private readonly names: Names;
  private readonly id = randomUUID();
  private readonly keepAliveKeys = new Map<string, number>();
  /** Locks this store holds, by holder token: re-checked at once after every reconnect. */
  private readonly heldLocks = new Map<string, { key: string; onLost: AcquireRequest['onLost'] }>();
  private keepAliveTimer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private expiring = false;
  private feedCount = 0;
  private hub: Hub | undefined;
  private established = false;
  private destroyed = false;
  /** Gets waiting to be sent together (see batchedGet). */
  private getBatch: GetBatch | undefined;

  static async open(config: ResolvedConfig & RedisOptions): Promise<RedisStore> {
    const store = new RedisStore(redisSettings(config));
    await store.connect();
    return store;
  }

  private constructor(settings: RedisSettings) {
    super({
      backend: 'redis',
      capabilities: REDIS_CAPABILITIES,
      prefix: settings.prefix,
      requestTimeout: settings.requestTimeout,
    });
    this.settings = settings;
    this.names = namesOf(settings);
    this.client = createClient(
      this.clientOptions((retries) => {
        // The first connection is createStore's: it fails at once. Later ones are retried until close.
        if (!this.established || this.closed) return false;
        return reconnectDelay(retries);
      }),
    );
    this.client.on('error', () => {
      // Reported to the calls that fail; reconnects are the client's job.
    });
    this.client.on('ready', () => {
      // A reconnect: the server may have restarted and lost the lock keys. Ask now, not at the
      // next renewal (up to ttl/3 later), so `lost` aborts as soon as the server can tell.
      if (this.established && !this.closed) void this.recheckLocks();
    });
  }

  /** Asks the server about the locks this store holds (those `which` selects): `onLost` for any it lost. */
  private async recheckLocks(which: (key: string) => boolean = () => true): Promise<void> {
    for (const [token, { key, onLost }] of [...this.heldLocks]) {
      if (this.closed) return;
      if (!which(key)) continue;
      let held: number;
      try {
        held = await this.script<number>('check', [key, token], AbortSignal.timeout(this.requestTimeout));
      } catch {
        return; // unreachable again: the next reconnect (or renewal) asks again
      }
      if (held === 1 || !this.heldLocks.has(token)) continue;
      this.heldLocks.delete(token);
      onLost(
        held === 2
          ? 'its key was deleted (delete or deleteTree)'
          : 'its lock key was gone or held by another (the server restarted or lost it)',
      );
    }
  }

  private clientOptions(reconnectStrategy: (retries: number, cause: Error) => number | false): ClientOptions {
    const s = this.settings;
    const common = { host: s.host, port: s.port, connectTimeout: s.connectTimeout, reconnectStrategy };
    let socket: ClientOptions['socket'];
    if (s.tls) {
      const t = s.tls;
      socket = {
        ...common,
        tls: true,
        ...(t.ca !== undefined ? { ca: tlsBytes(t.ca) } : {}),
        ...(t.cert !== undefined ? { cert: tlsBytes(t.cert) } : {}),
        ...(t.key !== undefined ? { key: tlsBytes(t.key) } : {}),
        ...(t.servername !== undefined ? { servername: t.servername } : {}),
        ...(t.rejectUnauthorized !== undefined ? { rejectUnauthorized: t.rejectUnauthorized } : {}),
      };
    } else {
      socket = common;
    }
    return {
      socket,
      RESP: 2,
      ...(s.username !== undefined ? { username: s.username } : {}),
      ...(s.password !== undefined ? { password: s.password } : {}),
      ...(s.db !== 0 ? { database: s.db } : {}),
      disableClientInfo: true,
      maintNotifications: 'disabled',
      // No timer of node-redis's own per command (its default is a 5 s AbortSignal.timeout() each):
      // every command kv sends carries an abort signal, a bounded call's (core's deadlines: one timer
      // per store) or, for background work, an AbortSignal.timeout() of its own.
      commandOptions: { timeout: 0 },
    } as ClientOptions;
  }

  /** createStore's round trip: connect (AUTH, SELECT) and PING, within connectTimeout. */
  private async connect(): Promise<void> {
    const { host, port, connectTimeout } = this.settings;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new UnavailableError(
              `redis ${host}:${port}: no answer within connectTimeout (${connectTimeout} ms)`,
            ),
          ),
        connectTimeout,
      );
      timer.unref();
    });
    try {
      await Promise.race([
        (async () => {
          await this.client.connect();
          await this.client.sendCommand(['PING']);
        })(),
        timedOut,
      ]);
      this.established = true;
    } catch (error) {
      this.destroyClient();
      throw this.mapRedisError(error, 'connect');
    } finally {
      clearTimeout(timer);
    }
  }

  private destroyClient(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    try {
      this.client.destroy();
    } catch {
      // never connected
    }
  }

  // ---- commands ----

  /**
   * The signal a command gives node-redis. `bounded`: the command serves a Store call, whose promise
   * the core's deadline settles by itself; its signal then goes to node-redis only while the
   * connection is not ready (the command waits in the offline queue, and an aborted call must not
   * be sent after a reconnect). On a ready connection the command is written at once and only its
   * reply is awaited; node-redis would add and remove an EventTarget listener per command (several
   * µs each, more with the thousands of calls that share one deadline signal at high concurrency).
   * Background work and watch reads, which nothing else bounds, always pass theirs.
   */
  private signalFor(signal: AbortSignal | undefined, bounded: boolean): AbortSignal | undefined {
    return signal !== undefined && (!bounded || !this.client.isReady) ? signal : undefined;
  }

  private command<T>(args: Arg[], signal?: AbortSignal, bounded = false): Promise<T> {
    const abortSignal = this.signalFor(signal, bounded);
    return this.client.sendCommand<T>(args, abortSignal ? { typeMapping: BUFFERS, abortSignal } : AS_BUFFERS);
  }

  /** A command whose replies are text (keys of the index): decoded as strings by the client. */
  private textCommand<T>(args: Arg[], signal: AbortSignal, bounded: boolean): Promise<T> {
    const abortSignal = this.signalFor(signal, bounded);
    return this.client.sendCommand<T>(args, abortSignal ? { abortSignal } : undefined);
  }

  /** Runs one operation of the script: EVALSHA, and EVAL when the server does not have it cached yet. */
  private async script<T>(op: string, args: Arg[], signal?: AbortSignal, bounded = false): Promise<T> {
    const n = this.names;
    const command: Arg[] = [
      'EVALSHA',
      SCRIPT_SHA,
      '3',
      n.index,
      n.seq,
      n.expiries,
      op,
      n.ns,
      n.channel,
      INLINE,
    ];
    for (const arg of args) command.push(arg);
    try {
      return await this.command<T>(command, signal, bounded);
    } catch (error) {
      if (replyCode(error) !== 'NOSCRIPT') throw error;
      command[0] = 'EVAL';
      command[1] = SCRIPT;
      return this.command<T>(command, signal, bounded);
    }
  }

  private dataKey(full: string): string {
    return `${this.names.dataPrefix}${full}`;
  }

  private userKey(full: string): string {
    return stripPrefix(this.prefix, full);
  }

  // ---- primitives ----

  protected async _get(key: string, options: PrimitiveReadOptions): Promise<RawPair | null> {
    const data = this.client.isReady
      ? await this.batchedGet(key)
      : await this.command<Buffer | null>(['GET', this.dataKey(key)], options.signal, true);
    return this.pairOf(key, data);
  }

  /**
   * A key's data string, read with the other gets of this turn of the event loop: they are gathered
   * until the promise callbacks of the turn have run (process.nextTick) and sent as one MGET (a lone
   * get is a GET). One command instead of many is less work for node-redis and for the server; each
   * get still reads the state at one moment between its call and its answer, the moment the MGET
   * ran. Only on a ready connection, where the core's deadline bounds the call (see signalFor).
   */
  private batchedGet(key: string): Promise<Buffer | null> {
    let batch = this.getBatch;
    if (batch === undefined || batch.keys.length >= GET_BATCH) {
      batch = { keys: [], waiters: [] };
      this.getBatch = batch;
      const sending = batch;
      process.nextTick(() => this.sendGets(sending));
    }
    const { keys, waiters } = batch;
    keys.push(this.dataKey(key));
    return new Promise((resolve, reject) => {
      waiters.push({ resolve, reject });
    });
  }

  private sendGets(batch: GetBatch): void {
    if (this.getBatch === batch) this.getBatch = undefined;
    const { keys, waiters } = batch;
    if (keys.length === 1) {
      const waiter = waiters[0] as GetWaiter;
      this.command<Buffer | null>(['GET', keys[0] as string]).then(waiter.resolve, waiter.reject);
      return;
    }
    this.command<(Buffer | null)[]>(['MGET', ...keys]).then(
      (data) => {
        for (let i = 0; i < waiters.length; i++) (waiters[i] as GetWaiter).resolve(data[i] ?? null);
      },
      (error: unknown) => {
        for (const waiter of waiters) waiter.reject(error);
      },
    );
  }

  /** The pair a key's data string holds; null for no data. */
  private pairOf(key: string, data: Buffer | null | undefined, copy = copyBytes): RawPair | null {
    if (data === null || data === undefined) return null;
    const pair = parseData(key, data, copy);
    if (!pair) {
      throw new UnavailableError(
        `redis ${this.settings.host}:${this.settings.port}: ${this.dataKey(key)} does not hold kv data`,
      );
    }
    return pair;
  }

  /** The key's hash carries the ttl (PTTL: -1 without one, -2 missing). */
  protected override async _remainingTtl(key: string, signal: AbortSignal): Promise<number | undefined> {
    const ms = await this.command<number>(['PTTL', this.dataKey(key)], signal);
    return ms > 0 ? ms : undefined;
  }

  protected override async _exists(key: string, options: PrimitiveReadOptions): Promise<boolean> {
    return (await this.command<number>(['EXISTS', this.dataKey(key)], options.signal, true)) === 1;
  }

  protected async _put(key: string, value: Uint8Array, options: PrimitiveWriteOptions): Promise<void> {
    await this.script(
      'put',
      [key, bufferView(value), String(options.ttl ?? 0), this.owner(options)],
      options.signal,
      true,
    );
    this.trackKeepAlive(key, options);
  }

  protected async _delete(key: string, signal: AbortSignal): Promise<void> {
    await this.script('del', [key], signal, true);
    this.keepAliveKeys.delete(key);
    this.lockDataDeleted((held) => held === key);
  }

  protected async _list(dir: string, options: PrimitiveReadOptions): Promise<RawPair[]> {
    return (await this.listAt(dir, options.signal, true)).pairs;
  }

  /**
   * A listing and the change counter it is consistent with. Read in chunks by plain commands (no
   * script: the server never runs a long step for it, and no per-key work runs in Lua): the counter,
   * then each chunk's keys from the index and one MGET of their data with the counter again. Every
   * change to the index or to data goes through a script that increments the counter, so when the
   * counter read before the first chunk equals the one every MGET returns, nothing changed in
   * between: the index chunks are one index, and the listing is the state at the first MGET. (Redis
   * expiring or evicting a key changes no counter, but only removes: a key a later MGET finds is
   * one the first would have found; one it does not find might have been there then, so that
   * reads again.) After LIST_ATTEMPTS reads that met a change, one script lists it all in one step.
   */
  private async listAt(
    dir: string,
    signal: AbortSignal,
    bounded = false,
  ): Promise<{ pairs: RawPair[]; seq: number }> {
    for (let attempt = 0; attempt < LIST_ATTEMPTS; attempt++) {
      const listing = await this.listChunked(dir, signal, bounded);
      if (listing) return listing;
    }
    const reply = await this.script<unknown[]>('list', [dir], signal, bounded);
    const pairs: RawPair[] = [];
    for (let i = 1; i + 1 < reply.length; i += 2) {
      const key = text(reply[i]);
      const pair = this.pairOf(key, reply[i + 1] as Buffer);
      if (pair) pairs.push(pair);
    }
    return { pairs, seq: num(reply[0]) };
  }

  /** One chunked read of a listing (see listAt); undefined when it met a change. */
  private async listChunked(
    dir: string,
    signal: AbortSignal,
    bounded: boolean,
  ): Promise<{ pairs: RawPair[]; seq: number } | undefined> {
    const n = this.names;
    const high = dir === '' ? '+' : `(${dir}0`;
    let low = dir === '' ? '-' : `[${dir}/`;
    const limit = String(LIST_CHUNK);
    // Sent together (one round trip), run in this order.
    const [counter, first] = await Promise.all([
      this.command<Buffer | null>(['GET', n.seq], signal, bounded),
      this.textCommand<string[]>(['ZRANGEBYLEX', n.index, low, high, 'LIMIT', '0', limit], signal, bounded),
    ]);
    if (counter === null) return undefined; // no counter yet: the script seeds it
    const seq = num(counter);
    const pairs: RawPair[] = [];
    const stale: string[] = [];
    for (let keys = first, chunk = 0; keys.length > 0; chunk++) {
      const args: Arg[] = new Array(keys.length + 2);
      args[0] = 'MGET';
      args[1] = n.seq;
      for (let i = 0; i < keys.length; i++) args[i + 2] = n.dataPrefix + keys[i];
      const data = await this.command<(Buffer | null)[]>(args, signal, bounded);
      if (data[0] === null || data[0] === undefined || num(data[0]) !== seq) return undefined;
      try {
        for (let i = 0; i < keys.length; i++) {
          const key = keys[i] as string;
          const pair = this.pairOf(key, data[i + 1], copyLater);
          if (pair) pairs.push(pair);
          else if (chunk > 0) return undefined;
          else stale.push(key);
        }
      } finally {
        copyNow();
      }
      if (keys.length < LIST_CHUNK) break;
      low = `(${keys[keys.length - 1]}`;
      keys = await this.textCommand<string[]>(
        ['ZRANGEBYLEX', n.index, low, high, 'LIMIT', '0', limit],
        signal,
        bounded,
      );
    }
    // Index entries of expired or evicted keys: dropped in the background (watchers hear deletes).
    if (stale.length > 0) this.sweepLater(stale);
    return { pairs, seq };
  }

  private sweepLater(keys: string[]): void {
    if (this.closed) return;
    this.script('sweep', keys.slice(0, 1_000), AbortSignal.timeout(this.requestTimeout)).catch(() => {});
  }

  private async getAt(key: string, signal: AbortSignal): Promise<{ pair: RawPair | null; seq: number }> {
    const [seq, data] = await this.script<[number, Buffer | null]>('get', [key], signal);
    return { pair: this.pairOf(key, data), seq: num(seq) };
  }

  protected async _deleteTree(dir: string, signal: AbortSignal): Promise<void> {
    await this.script('deltree', [dir], signal, true);
    for (const key of this.keepAliveKeys.keys()) {
      if (key === dir || isBelow(dir, key)) this.keepAliveKeys.delete(key);
    }
    this.lockDataDeleted((held) => held === dir || isBelow(dir, held));
  }

  protected async _atomicPut(
    key: string,
    value: Uint8Array,
    previousIndex: number | null,
    options: PrimitiveWriteOptions,
  ): Promise<RawPair> {
    const result = await this.script<number>(
      'cas',
      [
        key,
        bufferView(value),
        String(options.ttl ?? 0),
        this.owner(options),
        previousIndex === null ? '' : String(previousIndex),
      ],
      options.signal,
      true,
    );
    this.checkCas(key, result);
    this.trackKeepAlive(key, options);
    return { key, value, lastIndex: result };
  }

  protected async _atomicDelete(key: string, previousIndex: number, signal: AbortSignal): Promise<void> {
    const result = await this.script<number>('cad', [key, String(previousIndex)], signal, true);
    this.checkCas(key, result);
    this.keepAliveKeys.delete(key);
    this.lockDataDeleted((held) => held === key);
  }

  private checkCas(key: string, result: number): void {
    if (result === -1) throw new KeyExistsError(this.userKey(key));
    if (result === -2) throw new KeyNotFoundError(this.userKey(key));
    if (result === -3) throw new KeyModifiedError(this.userKey(key));
  }

  /**
   * This store deleted the value of a lock it may hold: the lock stays held on the server (a data
   * delete never frees it), and the holder here learns at once rather than at its next renewal.
   * Holders in other stores learn at their next renewal (within ttl/3).
   */
  private lockDataDeleted(which: (key: string) => boolean): void {
    if (this.heldLocks.size === 0) return;
    for (const { key } of this.heldLocks.values()) {
      if (which(key)) {
        void this.recheckLocks(which);
        return;
      }
    }
  }

  // ---- keepAlive ----

  private owner(options: PrimitiveWriteOptions): string {
    return options.keepAlive && options.ttl !== undefined ? this.id : '';
  }

  private trackKeepAlive(key: string, options: PrimitiveWriteOptions): void {
    if (options.keepAlive && options.ttl !== undefined) this.keepAliveKeys.set(key, options.ttl);
    else this.keepAliveKeys.delete(key);
    this.scheduleKeepAlive();
  }

  private scheduleKeepAlive(): void {
    if (this.keepAliveTimer || this.keepAliveKeys.size === 0 || this.closed) return;
    let shortest = Number.POSITIVE_INFINITY;
    for (const ttl of this.keepAliveKeys.values()) shortest = Math.min(shortest, ttl);
    const every = Math.max(10, Math.floor(shortest / 3));
    this.keepAliveTimer = setTimeout(() => {
      void this.renewKeepAlive(every).finally(() => {
        this.keepAliveTimer = undefined;
        this.scheduleKeepAlive();
      });
    }, every);
    this.keepAliveTimer.unref();
  }

  private async renewKeepAlive(budget: number): Promise<void> {
    const entries = [...this.keepAliveKeys];
    const signal = AbortSignal.timeout(Math.max(budget, Math.min(this.requestTimeout, 1_000)));
    for (let i = 0; i < entries.length && !this.closed; i += 500) {
      const batch = entries.slice(i, i + 500);
      try {
        const held = await this.script<number[]>(
          'touch',
          [this.id, ...batch.flatMap(([key, ttl]) => [key, String(ttl)])],
          signal,
        );
        batch.forEach(([key], j) => {
          if (held[j] === 0 && this.keepAliveKeys.get(key) !== undefined) this.keepAliveKeys.delete(key);
        });
      } catch {
        // Unreachable for now: the next round tries again, well before the keys can expire.
        return;
      }
    }
  }

  // ---- expiry sweeping ----

  /**
   * While this store has a watch or a lock wait open, it makes Redis expire due ttl keys on time:
   * the `expire` script touches every key of the namespace's deadline set whose time has come
   * (whichever store wrote it), so Redis deletes it and the watchers hear of it at once, instead of
   * when Redis's own active expiry reaches it (which, on a server with many keys with a ttl, can
   * be a minute late). It runs at the next deadline, and at least every EXPIRY_EVERY ms for keys
   * other stores add.
   */
  private scheduleExpiry(ms: number): void {
    if (this.closed || this.feedCount === 0) return;
    this.expiryTimer = setTimeout(() => {
      this.expiryTimer = undefined;
      void this.expireDue();
    }, ms);
    this.expiryTimer.unref();
  }

  private async expireDue(): Promise<void> {
    if (this.closed || this.feedCount === 0) return;
    this.expiring = true;
    let next = EXPIRY_EVERY;
    try {
      const [handled, until] = await this.script<[number, number]>(
        'expire',
        [String(EXPIRY_BATCH)],
        AbortSignal.timeout(this.requestTimeout),
      );
      if (num(handled) >= EXPIRY_BATCH) next = 0;
      else if (num(until) >= 0) next = Math.min(EXPIRY_EVERY, num(until));
    } catch {
      next = EXPIRY_RETRY; // unreachable or refused for now
    } finally {
      this.expiring = false;
    }
    if (!this.expiryTimer) this.scheduleExpiry(next);
  }

  // ---- watches ----

  private getHub(): Hub {
    this.assertOpen();
    if (!this.hub) {
      const names = this.names;
      const host: HubHost = {
        channel: names.channel,
        expiredChannel: names.expiredChannel,
        evictedChannel: names.evictedChannel,
        dataPrefix: names.dataPrefix,
        lockPrefix: names.lockPrefix,
        probePrefix: names.probePrefix,
        configureNotifications: this.settings.configureNotifications,
        closing: this.closing,
        newSubscriber: () => {
          const sub = createClient(
            this.clientOptions((retries, cause) => {
              if (this.closed || isAuthError(cause) || replyCode(cause) === 'NOPERM') return false;
              return reconnectDelay(retries);
            }),
          );
          return sub as unknown as ReturnType<HubHost['newSubscriber']>;
        },
        isPermanent: (error) => isAuthError(error) || replyCode(error) === 'NOPERM',
        mapError: (error, operation) => this.mapRedisError(error, operation),
        sweep: (full) => {
          if (this.closed) return;
          const signal = AbortSignal.timeout(this.requestTimeout);
          this.script('sweep', [full], signal).catch(() => {});
        },
        command: (args, signal) => this.command(args, signal),
        isReplyError: (error) => error instanceof ErrorReply,
        feedsChanged: (count) => {
          this.feedCount = count;
          if (count > 0 && !this.expiryTimer && !this.expiring && !this.closed) this.scheduleExpiry(0);
        },
      };
      this.hub = new Hub(host);
    }
    return this.hub;
  }

  /** Runs `fn` until it succeeds, waiting out connection trouble; a permanent error is thrown. */
  private async retrying<T>(operation: string, signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (error) {
        if (signal.aborted) throw error;
        if (this.closed) throw new ClosedError();
        const mapped = this.mapRedisError(error, operation);
        if (!UnavailableError.isInstance(mapped)) throw mapped;
        await delay(backoff(attempt, 50, 2_000), signal);
      }
    }
  }

  /**
   * Subscribes (so nothing is missed), reads the state with the change
   * counter, then applies change messages in sequence; a gap in the sequence,
   * a reconnect or an overflow makes it read again.
   */
  private async *follow<S>(
    operation: 'watch' | 'watchTree',
    feed: Feed,
    signal: AbortSignal,
    read: () => Promise<{ state: S; seq: number }>,
    apply: (state: S, change: Change) => 'same' | 'changed' | 'reread',
  ): AsyncGenerator<S> {
    const hub = this.getHub();
    await this.retrying(operation, signal, () => hub.ready(signal));
    await this.retrying(operation, signal, () => hub.notificationsOn(signal));
    for (;;) {
      const { state, seq } = await this.retrying(operation, signal, read);
      yield state;
      let last = seq;
      let fresh = true;
      for (;;) {
        const item = (await feed.next(signal)) as FeedItem;
        if (item.kind === 'fail') throw item.error;
        if (item.kind === 'resync') {
          await this.retrying(operation, signal, () => hub.notificationsOn(signal));
          break;
        }
        if (item.kind === 'expired') continue;
        const from = item.kind === 'skip' ? item.from : item.change.seq;
        const to = item.kind === 'skip' ? item.to : item.change.seq;
        if (to <= last) {
          // Older than the read: already in it. After a newer one, it means the counter went back.
          if (fresh) continue;
          break;
        }
        if (from > last + 1) break; // missed messages
        last = to;
        fresh = false;
        if (item.kind === 'skip') continue;
        const outcome = apply(state, item.change);
        if (outcome === 'reread') break;
        if (outcome === 'changed') yield state;
      }
    }
  }

  protected override async *_watch(key: string, signal: AbortSignal): AsyncIterable<RawPair | null> {
    const feed = this.getHub().attach(keyInterest(key));
    try {
      const box: { pair: RawPair | null } = { pair: null };
      for await (const state of this.follow(
        'watch',
        feed,
        signal,
        async () => {
          const { pair, seq } = await this.getAt(key, signal);
          box.pair = pair;
          return { state: box, seq };
        },
        (state, change) => {
          if (change.type === 'put') {
            if (change.value === undefined) return 'reread';
            state.pair = { key, value: change.value, lastIndex: change.seq };
          } else {
            state.pair = null;
          }
          return 'changed';
        },
      )) {
        yield state.pair;
      }
    } finally {
      feed.close();
    }
  }

  /** A listing after each (re)read, then the changes of each message: O(1) per change (a deleteTree: per key it removes). */
  protected override async *_watchTreeChanges(
    dir: string,
    signal: AbortSignal,
  ): AsyncIterable<RawTreeUpdate> {
    const feed = this.getHub().attach(treeInterest(dir));
    try {
      for await (const state of this.follow(
        'watchTree',
        feed,
        signal,
        async () => {
          const { pairs, seq } = await this.listAt(dir, signal);
          // `changes` is null until the listing was handed out.
          const state = {
            pairs: new Map(pairs.map((pair) => [pair.key, pair])),
            changes: null as RawTreeChange[] | null,
          };
          return { state, seq };
        },
        (state, change) => {
          const changes = state.changes as RawTreeChange[];
          if (change.type === 'put') {
            if (change.value === undefined) return 'reread';
            const pair = { key: change.key, value: change.value, lastIndex: change.seq };
            state.pairs.set(change.key, pair);
            changes.push({ type: 'put', pair });
            return 'changed';
          }
          if (change.type === 'delete') {
            if (!state.pairs.delete(change.key)) return 'same';
            changes.push({ type: 'delete', key: change.key });
            return 'changed';
          }
          let changed = false;
          for (const key of [...state.pairs.keys()]) {
            if ((key === change.key || isBelow(change.key, key)) && state.pairs.delete(key)) {
              changes.push({ type: 'delete', key });
              changed = true;
            }
          }
          return changed ? 'changed' : 'same';
        },
      )) {
        if (state.changes === null) {
          yield { type: 'listing', pairs: [...state.pairs.values()] };
        } else {
          yield { type: 'changes', changes: state.changes };
        }
        state.changes = [];
      }
    } finally {
      feed.close();
    }
  }

  // ---- locks ----

  protected override async _acquireLock(key: string, request: AcquireRequest): Promise<AcquiredLock | null> {
    const { value, ttl, signal, wait } = request;
    const token = randomBytes(16).toString('hex');
    const feed = wait ? this.getHub().attach(keyInterest(key)) : undefined;
    try {
      if (feed) await this.retrying('lock', signal, () => (this.hub as Hub).ready(signal));
      for (let attempt = 0; ; ) {
        feed?.clear();
        let reply: [number, number];
        // The server's PX clock starts after this: the loss deadline counts from here. Monotonic
        // (the core's clock for lock deadlines): a wall-clock step must not stretch the deadline.
        const sentAt = monotonicNow();
        try {
          reply = await this.script<[number, number]>(
            'lock',
            [key, token, String(ttl), bufferView(value)],
            signal,
          );
        } catch (error) {
          if (signal.aborted) {
            // The script may have run before the abort: free what this token may hold.
            this.script('unlock', [key, token], AbortSignal.timeout(this.requestTimeout)).catch(() => {});
          }
          const mapped = this.mapRedisError(error, wait ? 'lock' : 'tryLock');
          if (!feed || signal.aborted || !UnavailableError.isInstance(mapped)) throw mapped;
          await delay(backoff(attempt++, 50, 2_000), signal);
          continue;
        }
        attempt = 0;
        const [acquired, n] = reply;
        if (acquired === 1) {
          this.heldLocks.set(token, { key, onLost: request.onLost });
          return this.lockHandle(key, token, ttl, n, sentAt);
        }
        if (!feed) return null;
        // Held: wait for the key to change or expire, or for the holder's ttl at the latest.
        const until = monotonicNow() + (n >= 0 ? n + 2 : 1_000);
        for (;;) {
          const item = await feed.next(signal, until - monotonicNow());
          if (item === undefined) break;
          if (item.kind === 'fail') throw item.error;
          if (item.kind !== 'skip') break;
        }
      }
    } finally {
      feed?.close();
    }
  }

  private lockHandle(
    key: string,
    token: string,
    ttl: number,
    fencingToken: number,
    sentAt: number,
  ): AcquiredLock {
    return {
      fencingToken,
      sentAt,
      renew: async (signal) => {
        const held = await this.script<number>('renew', [key, token, String(ttl)], signal);
        if (held !== 1) this.heldLocks.delete(token);
        if (held === 2) {
          // Still ours on the server: the core aborts `lost` first, then releases (unlock) it.
          throw new LockLostError(this.userKey(key), 'its key was deleted (delete or deleteTree)');
        }
        if (held !== 1) throw new LockLostError(this.userKey(key), 'it expired or was taken over');
      },
      release: async (signal) => {
        this.heldLocks.delete(token);
        if (this.destroyed) return;
        await this.script('unlock', [key, token], signal);
      },
    };
  }

  // ---- errors and closing ----

  protected override _mapError(error: unknown, operation: string): KVError {
    return this.mapRedisError(error, operation);
  }

  private mapRedisError(error: unknown, operation: string): KVError {
    if (KVError.isInstance(error)) return error;
    const { host, port } = this.settings;
    const message = error instanceof Error ? error.message : String(error);
    const where = `redis ${host}:${port}: ${operation} failed: ${message}`;
    const code = replyCode(error);
    if (isAuthError(error)) return new AuthenticationError(where, { cause: error });
    if (
      code === 'NOPERM' ||
      (error instanceof ErrorReply && /user executing the script can't/i.test(message))
    ) {
      return new PermissionDeniedError(`${where} (see the ACL this backend needs in its README)`, {
        cause: error,
      });
    }
    if (code === 'MOVED' || code === 'ASK' || code === 'CROSSSLOT' || code === 'CLUSTERDOWN') {
      return new UnavailableError(`${where}: Redis Cluster is not supported yet`, { cause: error });
    }
    if (error instanceof ErrorReply && /DB index is out of range|invalid DB index/i.test(message)) {
      return new InvalidArgumentError(`${where}: no such database number (db ${this.settings.db})`, {
        cause: error,
      });
    }
    if (this.destroyed && (error as Error)?.name === 'ClientClosedError') {
      return new ClosedError(`the store was closed during ${operation}`, { cause: error });
    }
    return new UnavailableError(where, { cause: error });
  }

  protected async _close(): Promise<void> {
    if (this.keepAliveTimer) clearTimeout(this.keepAliveTimer);
    this.keepAliveTimer = undefined;
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
    this.keepAliveKeys.clear();
    this.heldLocks.clear();
    this.hub?.close();
    this.destroyClient();
  }
}

const INLINE = String(INLINE_LIMIT);
/** Gets sent in one MGET at most (see batchedGet). */
const GET_BATCH = 1_000;
/** Keys per chunk of a listing: one ZRANGEBYLEX and one MGET each (see listAt). */
const LIST_CHUNK = 10_000;
/** Chunked reads of a listing that met a concurrent change before the one-script listing. */
const LIST_ATTEMPTS = 3;
/** ms: the longest pause between two expiry sweeps while a watch or lock wait is open. */
const EXPIRY_EVERY = 100;
/** ms: the pause after a sweep that failed. */
const EXPIRY_RETRY = 250;
/** Due keys handled per sweep script (each costs a few µs on the server). */
const EXPIRY_BATCH = 1_000;

function reconnectDelay(retries: number): number {
  return Math.min(1_000, 50 * 2 ** Math.min(retries, 5)) + Math.floor(Math.random() * 50);
}

function tlsBytes(value: string | Uint8Array): string | Buffer {
  return typeof value === 'string' ? value : bufferView(value);
}
