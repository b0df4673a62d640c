import { randomUUID } from 'node:crypto';
import { existsSync, type FSWatcher, watch } from 'node:fs';
import { dirname, resolve } from 'node:path';
import {
  type AcquiredLock,
  type AcquireRequest,
  abortError,
  BaseStore,
  bufferView,
  type Capabilities,
  ClosedError,
  InvalidArgumentError,
  KeyExistsError,
  KeyModifiedError,
  KeyNotFoundError,
  type KVError,
  LockLostError,
  monotonicNow,
  PermissionDeniedError,
  type PrimitiveReadOptions,
  type PrimitiveWriteOptions,
  type RawPair,
  type RawTreeChange,
  type RawTreeUpdate,
  type ResolvedConfig,
  UnavailableError,
  uint8View,
} from '@kv/core';
import Database from 'better-sqlite3';
import { positiveInt, type SqliteOptions } from './sqlite-config.js';
import { Notifier } from './sqlite-notifier.js';
import { ensureSchema, LOG_ROW_SIZE, logRowSize, NewerSchemaError, SCHEMA_VERSION } from './sqlite-schema.js';

export const SQLITE_CAPABILITIES: Capabilities = Object.freeze({
  watch: true,
  watchTree: true,
  lock: true,
  ttl: true,
  keepAlive: true,
  consistentRead: true,
  minTtl: 50,
  // Reads hide an expired key at once; watchers see its delete when the sweeper runs, within this.
  ttlGranularity: 100,
  maxValueSize: 16 * 1024 * 1024,
  distributed: false,
});

/**
 * ms a lock waiter's place in the queue lives without a refresh: a waiter
 * refreshes it every third of this while it waits, so a waiter that died
 * leaves the queue within this, whatever the lock's ttl.
 */
export const WAITER_HEARTBEAT = 1_500;

interface Row {
  key: string;
  value: Buffer;
  version: number;
}

interface ChangeRow {
  seq: number;
  key: string;
  value: Buffer | null;
}

/** The change log's newest row as this transaction left it: its sequence and the bytes logged up to it. */
interface LogTail {
  seq: number;
  total: number;
}

/** A write waiting for its group's transaction (see `SqliteStore.grouped`). */
interface QueuedWrite {
  readonly fn: (now: number) => unknown;
  /** The call's signal: aborted when the call timed out or the store closed, and then not applied. */
  readonly signal: AbortSignal;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
}

/** An error of a write's own checks: thrown before the write changed anything (see `grouped`). */
const isCheckFailure = (error: unknown) =>
  KeyExistsError.isInstance(error) ||
  KeyNotFoundError.isInstance(error) ||
  KeyModifiedError.isInstance(error);

/** Process-wide: stores open on the same file wake each other at once after a commit. */
const neighbours = new Map<string, Set<SqliteStore>>();

// SQLite orders every TEXT value before every BLOB: a blob bound is above all keys.
const ABOVE_ALL_TEXT = Buffer.from([0xff]);

/** Keys strictly below `dir`: `[dir/, dir0)`, since `0` follows `/`. '' is everything. */
function rangeOf(dir: string): [string, string | Buffer] {
  return dir === '' ? ['', ABOVE_ALL_TEXT] : [`${dir}/`, `${dir}0`];
}

function isMemoryPath(path: string): boolean {
  return path === ':memory:' || path.startsWith('file::memory:');
}

function toRaw(row: Row): RawPair {
  return {
    key: row.key,
    value: uint8View(row.value),
    lastIndex: row.version,
  };
}

/**
 * The SQLite store: the embedded default. Several processes can share one
 * file (WAL, busy timeout); watches and locks work across them through a
 * change log with sequence numbers, found by polling `PRAGMA data_version`.
 */
export class SqliteStore extends BaseStore {
  // The better-sqlite3 connection: private, so better-sqlite3's types stay out of this package's
  // public types (a project with `skipLibCheck: false` would need `@types/better-sqlite3`).
  private readonly db: Database.Database;
  readonly path: string;
  private readonly id = randomUUID();
  private readonly notifier: Notifier;
  private readonly pollInterval: number;
  private readonly changeLogSize: number;
  private readonly changeLogBytes: number;
  private readonly fileKey: string | undefined;
  private readonly keepAlive = new Map<string, number>();
  private keepAliveTimer: NodeJS.Timeout | undefined;
  private keepAliveDue = 0;
  private pollTimer: NodeJS.Timeout | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  private dataVersion = 0;
  private logged = false;
  /** The log's newest row as the running write transaction left it (read at its first change). */
  private tail: LogTail | undefined;
  /** The log's oldest row when this store last looked, and the bytes logged before it (see `trimLog`). */
  private oldest: { seq: number; before: number } | undefined;
  private readonly stmt: ReturnType<SqliteStore['prepare']>;
  /** The body of every write transaction, made once (better-sqlite3 builds a wrapper per `transaction()`). */
  private readonly writeTransaction: Database.Transaction<(fn: (now: number) => unknown) => unknown>;
  /** Wakes the poll as soon as another connection writes the WAL file (the poll stays as a fallback). */
  private walWatcher: FSWatcher | undefined;
  /** Writes called after the first of this turn of the event loop, committed together (see `grouped`). */
  private queued: QueuedWrite[] = [];
  private readonly flushQueued = () => this.commitQueued();
  /** A write ran in this turn: the next ones are grouped. */
  private turnHasWrite = false;
  private readonly endTurn = () => {
    this.turnHasWrite = false;
  };

  static async open(config: ResolvedConfig & SqliteOptions): Promise<SqliteStore> {
    return new SqliteStore(config);
  }

  private constructor(config: ResolvedConfig & SqliteOptions) {
    super({
      backend: 'sqlite',
      capabilities: SQLITE_CAPABILITIES,
      prefix: config.prefix,
      requestTimeout: config.requestTimeout,
    });
    if (config.endpoints !== undefined) {
      throw new InvalidArgumentError('the sqlite backend takes a `path`, not `endpoints`');
    }
    for (const option of ['username', 'password', 'token', 'tls'] as const) {
      if (config[option] !== undefined) {
        throw new InvalidArgumentError(
          `the sqlite backend has no \`${option}\`: it is a local file, not a server`,
        );
      }
    }
    const path = config.path ?? ':memory:';
    if (typeof path !== 'string' || path === '')
      throw new InvalidArgumentError('path must be a file path or :memory:');
    this.path = path;
    this.pollInterval = positiveInt(config.pollInterval, 'pollInterval', 25);
    this.changeLogSize = positiveInt(config.changeLogSize, 'changeLogSize', 10_000);
    this.changeLogBytes = positiveInt(config.changeLogBytes, 'changeLogBytes', 64 * 1024 * 1024, 2 ** 48);
    const busyTimeout = positiveInt(config.busyTimeout, 'busyTimeout', config.requestTimeout);
    try {
      this.db = new Database(path, { timeout: busyTimeout });
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = NORMAL');
      ensureSchema(this.db);
    } catch (error) {
      (this as unknown as { db?: Database.Database }).db?.close();
      const directory = dirname(resolve(path));
      if (!isMemoryPath(path) && !existsSync(directory)) {
        throw new InvalidArgumentError(
          `sqlite ${path}: the directory ${directory} does not exist; create it first (the store creates the file, not its directories)`,
          { cause: error },
        );
      }
      if (error instanceof NewerSchemaError) {
        throw new InvalidArgumentError(
          `sqlite ${path}: the file has ${error.message}, newer than this version of @kv/backend-sqlite knows (${SCHEMA_VERSION}); upgrade it`,
        );
      }
      throw this.mapSqliteError(error, `open ${path}`);
    }
    this.stmt = this.prepare();
    this.writeTransaction = this.db.transaction((fn: (now: number) => unknown) => this.writeBody(fn));
    try {
      this.startLog();
    } catch {
      // Busy or read-only: the next write trims it.
    }
    this.notifier = new Notifier((active) => this.setPolling(active));
    if (!isMemoryPath(path)) {
      this.fileKey = resolve(path);
      const set = neighbours.get(this.fileKey) ?? new Set();
      neighbours.set(this.fileKey, set);
      set.add(this);
    }
  }

  private prepare() {
    const db = this.db;
    const live = '(expires_at IS NULL OR expires_at > @now)';
    return {
      get: db.prepare<{ key: string; now: number }, Row>(
        `SELECT key, value, version FROM kv WHERE key = @key AND ${live}`,
      ),
      expiresAt: db.prepare<{ key: string; now: number }, { at: number | null }>(
        `SELECT expires_at AS at FROM kv WHERE key = @key AND ${live}`,
      ),
      list: db.prepare<{ lo: string; hi: string | Buffer; now: number }, Row>(
        `SELECT key, value, version FROM kv WHERE key >= @lo AND key < @hi AND ${live}`,
      ),
      // The statements of every write take positional parameters: cheaper to bind than an object's.
      current: db.prepare<[string, number], { version: number }>(
        'SELECT version FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)',
      ),
      /** A compare-and-swap's write: changes nothing unless the live row has the expected version. */
      swap: db.prepare<[Buffer, number, number | null, string | null, string, number, number]>(
        `UPDATE kv SET value = ?, version = ?, expires_at = ?, owner = ?
         WHERE key = ? AND version = ? AND (expires_at IS NULL OR expires_at > ?)`,
      ),
      /**
       * A create-only write: changes nothing when a live row is there. (An expired row is replaced;
       * every write transaction deletes expired rows first, so this only guards that order.)
       */
      create: db.prepare<[string, Buffer, number, number | null, string | null, number]>(
        `INSERT INTO kv (key, value, version, expires_at, owner) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version,
           expires_at = excluded.expires_at, owner = excluded.owner
         WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?`,
      ),
      upsert: db.prepare<[string, Buffer, number, number | null, string | null]>(
        `INSERT INTO kv (key, value, version, expires_at, owner) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version,
           expires_at = excluded.expires_at, owner = excluded.owner`,
      ),
      // No RETURNING in the write path: SQLite runs a RETURNING statement through a temporary table.
      deleteKey: db.prepare<[string]>('DELETE FROM kv WHERE key = ?'),
      keysInRange: db.prepare<[string, string | Buffer], { key: string }>(
        'SELECT key FROM kv WHERE key >= ? AND key < ?',
      ),
      deleteRange: db.prepare<[string, string | Buffer]>('DELETE FROM kv WHERE key >= ? AND key < ?'),
      expired: db.prepare<[number], { key: string }>(
        'SELECT key FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?',
      ),
      deleteExpired: db.prepare<[number]>('DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?'),
      nextExpiry: db.prepare<[], { at: number | null }>(
        'SELECT MIN(expires_at) AS at FROM kv WHERE expires_at IS NOT NULL',
      ),
      log: db.prepare<[number, string, Buffer | null, number]>(
        'INSERT INTO changes (seq, key, value, total) VALUES (?, ?, ?, ?)',
      ),
      newest: db.prepare<[], { seq: number; total: number }>(
        'SELECT seq, total FROM changes ORDER BY seq DESC LIMIT 1',
      ),
      oldest: db.prepare<[], { seq: number; before: number }>(
        `SELECT seq, total - (${LOG_ROW_SIZE}) AS before FROM changes ORDER BY seq LIMIT 1`,
      ),
      maxVersion: db.prepare<[], { n: number | null }>('SELECT MAX(version) AS n FROM kv'),
      maxSeq: db.prepare<[], { seq: number | null }>('SELECT MAX(seq) AS seq FROM changes'),
      minSeq: db.prepare<[], { seq: number | null }>('SELECT MIN(seq) AS seq FROM changes'),
      changesOfKey: db.prepare<{ after: number; key: string }, ChangeRow>(
        'SELECT seq, key, value FROM changes WHERE seq > @after AND key = @key ORDER BY seq',
      ),
      changesInRange: db.prepare<{ after: number; lo: string; hi: string | Buffer }, ChangeRow>(
        'SELECT seq, key, value FROM changes WHERE seq > @after AND key >= @lo AND key < @hi ORDER BY seq',
      ),
      trimTo: db.prepare<[number]>('DELETE FROM changes WHERE seq <= ?'),
      /** The first row by whose end the log holds `total` bytes: scans only the rows a trim removes. */
      byteCutoff: db.prepare<[number], { seq: number }>(
        'SELECT seq FROM changes WHERE total >= ? ORDER BY seq LIMIT 1',
      ),
      touch: db.prepare<{ key: string; owner: string; expires: number; now: number }>(
        `UPDATE kv SET expires_at = @expires WHERE key = @key AND owner = @owner AND ${live}`,
      ),
      lockRow: db.prepare<{ key: string }, { holder: string; expires_at: number }>(
        'SELECT holder, expires_at FROM locks WHERE key = @key',
      ),
      lockSet: db.prepare<{ key: string; holder: string; expires: number }>(
        `INSERT INTO locks (key, holder, expires_at) VALUES (@key, @holder, @expires)
         ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at`,
      ),
      lockRenew: db.prepare<{ key: string; holder: string; expires: number; now: number }>(
        'UPDATE locks SET expires_at = @expires WHERE key = @key AND holder = @holder AND expires_at > @now',
      ),
      lockRenewKey: db.prepare<{ key: string; expires: number }>(
        'UPDATE kv SET expires_at = @expires WHERE key = @key',
      ),
      lockRelease: db.prepare<{ key: string; holder: string }>(
        'DELETE FROM locks WHERE key = @key AND holder = @holder',
      ),
      firstWaiter: db.prepare<{ key: string; now: number }, { holder: string; expires_at: number }>(
        'SELECT holder, expires_at FROM lock_waiters WHERE key = @key AND expires_at > @now ORDER BY id LIMIT 1',
      ),
      purgeWaiters: db.prepare<{ key: string; now: number }>(
        'DELETE FROM lock_waiters WHERE key = @key AND expires_at <= @now',
      ),
      touchWaiter: db.prepare<{ key: string; holder: string; expires: number }>(
        'UPDATE lock_waiters SET expires_at = @expires WHERE key = @key AND holder = @holder',
      ),
      addWaiter: db.prepare<{ key: string; holder: string; expires: number }>(
        'INSERT INTO lock_waiters (key, holder, expires_at) VALUES (@key, @holder, @expires)',
      ),
      removeWaiter: db.prepare<{ key: string; holder: string }>(
        'DELETE FROM lock_waiters WHERE key = @key AND holder = @holder',
      ),
    };
  }

  // ---- writing ----

  /**
   * Runs `fn` in an IMMEDIATE transaction, after purging expired keys (so
   * their deletes are logged before anything else happens to them), then
   * wakes every watcher on this file.
   */
  private write<T>(fn: (now: number) => T): T {
    this.commitQueued();
    this.logged = false;
    this.tail = undefined;
    const result = this.writeTransaction.immediate(fn) as T;
    if (this.logged) {
      try {
        this.afterCommit();
      } catch {
        // Committed: the write stands. (Only the sweep's scheduling can fail here; the next write or poll redoes it.)
      }
    }
    return result;
  }

  /**
   * A value's bytes as the write will store them: a view when the write runs
   * now (the first of its turn), a copy when it waits for its group, since the
   * caller may reuse its buffer as soon as the call returned.
   */
  private blobOf(value: Uint8Array): Buffer {
    return this.turnHasWrite ? Buffer.from(value) : bufferView(value);
  }

  /**
   * The first write of a turn of the event loop commits at once, as `write`;
   * the writes called after it in the same turn (concurrent callers: their
   * continuations run in one burst of microtasks) are committed together at
   * its end (group commit): one transaction, one commit and one wake of the
   * watchers for all of them, and the pages they share (the change log's last
   * page, a key's neighbours) written once. Each write's outcome is its own:
   * `fn` may throw a check failure (KeyExists, KeyNotFound, KeyModified) only
   * before it changed anything, so that write fails and the others commit.
   * Any other error rolls the group back and each write runs again alone,
   * so one write's error (a full disk, a value too big) is never another's.
   * A write whose call already ended (timed out, or the store closed) is
   * not applied. Reads and the lock's writes commit the queue first, so
   * a store sees its own writes in the order they were called (two stores on
   * one file have a queue each: their writes in one turn may commit in either
   * order, as any two concurrent calls may). A queued write stores a copy of
   * its value (`blobOf`).
   */
  private grouped<T>(signal: AbortSignal, fn: (now: number) => T): T | Promise<T> {
    if (!this.turnHasWrite) {
      this.turnHasWrite = true;
      queueMicrotask(this.endTurn);
      // `write` commits any writes still queued first: this store's writes commit in the order they were called.
      return this.write(fn);
    }
    return new Promise<T>((resolve, reject) => {
      if (this.queued.length === 0) queueMicrotask(this.flushQueued);
      this.queued.push({ fn, signal, resolve: resolve as (value: unknown) => void, reject });
    });
  }

  /** Commits the queued writes now (nothing to do when none wait). */
  private commitQueued(): void {
    if (this.queued.length === 0) return;
    const queue = this.queued.filter((write) => {
      if (!write.signal.aborted) return true;
      write.reject(write.signal.reason);
      return false;
    });
    this.queued = [];
    if (queue.length === 0) return;
    if (this.closed) {
      for (const write of queue) write.reject(new ClosedError());
      return;
    }
    const alone = (write: QueuedWrite) => {
      try {
        write.resolve(this.write(write.fn));
      } catch (error) {
        write.reject(error);
      }
    };
    if (queue.length === 1) {
      alone(queue[0] as QueuedWrite);
      return;
    }
    const outcomes: { ok: boolean; value: unknown }[] = new Array(queue.length);
    let unexpected = false;
    try {
      this.write((now) => {
        for (let i = 0; i < queue.length; i++) {
          try {
            outcomes[i] = { ok: true, value: (queue[i] as QueuedWrite).fn(now) };
          } catch (error) {
            if (!isCheckFailure(error)) {
              unexpected = true;
              throw error;
            }
            outcomes[i] = { ok: false, value: error };
          }
        }
      });
    } catch (error) {
      // A write failed in a way that may have changed part of it: the group was rolled back; each runs alone.
      if (unexpected) for (const write of queue) alone(write);
      // The transaction itself failed (busy, I/O): nothing was applied, for any of them.
      else for (const write of queue) write.reject(error);
      return;
    }
    for (let i = 0; i < queue.length; i++) {
      const outcome = outcomes[i] as { ok: boolean; value: unknown };
      const write = queue[i] as QueuedWrite;
      if (outcome.ok) write.resolve(outcome.value);
      else write.reject(outcome.value);
    }
  }

  private writeBody(fn: (now: number) => unknown): unknown {
    const now = Date.now();
    // A read of the expiry index; the delete runs only when something expired (the usual write finds nothing).
    const expired = this.stmt.expired.all(now);
    if (expired.length > 0) {
      this.stmt.deleteExpired.run(now);
      for (const { key } of expired) this.logChange(key, null);
    }
    const out = fn(now);
    if (this.logged) this.trimLog();
    return out;
  }

  /**
   * Appends a change: its sequence is one above the log's newest row (the
   * newest row is never trimmed, so sequences only grow), and its `total` the
   * newest row's plus its own size. Two pages per write: the key's and the
   * log's last.
   */
  private logChange(key: string, value: Buffer | null): number {
    const seq = this.nextSeq();
    const total = (this.tail as LogTail).total + logRowSize(key, value);
    this.stmt.log.run(seq, key, value, total);
    this.tail = { seq, total };
    this.logged = true;
    return seq;
  }

  /** The sequence the next change of this transaction gets (see logChange). */
  private nextSeq(): number {
    if (this.tail === undefined) {
      // The transaction holds the write lock: the newest row stays the newest until it commits.
      this.tail = this.stmt.newest.get() ?? {
        // An empty log (a new file): start above every version there is.
        seq: this.stmt.maxVersion.get()?.n ?? 0,
        total: 0,
      };
    }
    return this.tail.seq + 1;
  }

  /**
   * Keeps the change log within `changeLogSize` rows and `changeLogBytes`
   * bytes, whichever is smaller, by the database's own sequence: run in every
   * write transaction of every store, so the bound holds however short-lived
   * the stores are. The oldest rows go first and the newest row always stays,
   * so a watcher can tell it fell behind (the oldest row is past the one it
   * needs) and re-reads. The log's bytes are the newest row's running total
   * less the total before the oldest row. The oldest row is remembered: other
   * stores only ever trim it away, so the remembered one gives an upper bound
   * of both rows and bytes, and the log is read only when that bound is over.
   * Trims go in batches (rows: up to 256, an eighth of the bound; bytes: a
   * sixteenth of the bound more), so most writes trim nothing.
   */
  private trimLog(): void {
    const tail = this.tail ?? this.stmt.newest.get();
    if (tail === undefined) return;
    const within = (oldest: { seq: number; before: number }) =>
      tail.seq - oldest.seq < this.changeLogSize && tail.total - oldest.before <= this.changeLogBytes;
    if (this.oldest !== undefined && this.oldest.seq <= tail.seq && within(this.oldest)) return;
    let oldest = this.stmt.oldest.get() ?? { seq: tail.seq, before: tail.total };
    if (!within(oldest)) {
      let upTo = oldest.seq - 1;
      const over = tail.seq - this.changeLogSize;
      if (oldest.seq <= over) upTo = over + Math.min(256, Math.floor(this.changeLogSize / 8));
      const excess = tail.total - oldest.before - this.changeLogBytes;
      if (excess > 0) {
        const target = oldest.before + excess + Math.floor(this.changeLogBytes / 16);
        upTo = Math.max(upTo, this.stmt.byteCutoff.get(target)?.seq ?? tail.seq);
      }
      this.stmt.trimTo.run(Math.min(upTo, tail.seq - 1));
      oldest = this.stmt.oldest.get() ?? { seq: tail.seq, before: tail.total };
    }
    this.oldest = oldest;
  }

  /** On open: trims a log past its bounds (a larger `changeLogSize` before); a log within them costs no write. */
  private startLog(): void {
    const tail = this.stmt.newest.get();
    const oldest = this.stmt.oldest.get();
    if (!tail || !oldest) return;
    if (tail.seq - oldest.seq < this.changeLogSize && tail.total - oldest.before <= this.changeLogBytes) {
      this.oldest = oldest;
      return;
    }
    this.db
      .transaction(() => {
        this.tail = undefined;
        this.trimLog();
      })
      .immediate();
  }

  private putRow(key: string, buffer: Buffer, expires: number | null, owner: string | null): Row {
    const version = this.logChange(key, buffer);
    this.stmt.upsert.run(key, buffer, version, expires, owner);
    return { key, value: buffer, version };
  }

  private deleteRow(key: string): boolean {
    const gone = this.stmt.deleteKey.run(key).changes > 0;
    if (gone) this.logChange(key, null);
    return gone;
  }

  private afterCommit(): void {
    // Our own commits do not move data_version: look at the next expiry here too.
    this.scheduleSweep();
    if (!this.fileKey) {
      this.notifier.wake();
      return;
    }
    for (const store of neighbours.get(this.fileKey) ?? []) store.notifier.wake();
  }

  private trackKeepAlive(key: string, ttl: number | undefined, keepAlive: boolean): void {
    if (keepAlive && ttl !== undefined) this.keepAlive.set(key, ttl);
    else this.keepAlive.delete(key);
    this.scheduleKeepAlive();
  }

  private scheduleKeepAlive(): void {
    if (this.keepAlive.size === 0 || this.closed) return;
    const interval = Math.max(10, Math.floor(Math.min(...this.keepAlive.values()) / 3));
    // Re-arm only for a key that needs an earlier renewal: constant puts must not postpone renewals.
    if (this.keepAliveTimer && this.keepAliveDue <= monotonicNow() + interval) return;
    clearTimeout(this.keepAliveTimer);
    this.keepAliveDue = monotonicNow() + interval;
    this.keepAliveTimer = setTimeout(() => {
      this.keepAliveTimer = undefined;
      this.renewKeepAlive();
      this.scheduleKeepAlive();
    }, interval);
    this.keepAliveTimer.unref();
  }

  private renewKeepAlive(): void {
    if (this.closed) return;
    try {
      this.db
        .transaction(() => {
          const now = Date.now();
          for (const [key, ttl] of this.keepAlive) {
            const { changes } = this.stmt.touch.run({ key, owner: this.id, expires: now + ttl, now });
            if (changes === 0) this.keepAlive.delete(key);
          }
        })
        .immediate();
    } catch {
      // Busy: the next round tries again, well before the keys can expire.
    }
  }

  // ---- primitives ----

  protected async _get(key: string, _options: PrimitiveReadOptions): Promise<RawPair | null> {
    this.commitQueued();
    const row = this.stmt.get.get({ key, now: Date.now() });
    return row ? toRaw(row) : null;
  }

  protected override async _remainingTtl(key: string): Promise<number | undefined> {
    this.commitQueued();
    const now = Date.now();
    const at = this.stmt.expiresAt.get({ key, now })?.at;
    return at === undefined || at === null ? undefined : Math.max(1, Math.ceil(at - now));
  }

  protected async _put(key: string, value: Uint8Array, options: PrimitiveWriteOptions): Promise<void> {
    const blob = this.blobOf(value);
    await this.grouped(options.signal, (now) => {
      const expires = options.ttl === undefined ? null : now + options.ttl;
      this.putRow(key, blob, expires, options.keepAlive ? this.id : null);
    });
    this.trackKeepAlive(key, options.ttl, options.keepAlive);
  }

  protected async _delete(key: string, signal: AbortSignal): Promise<void> {
    await this.grouped(signal, () => {
      this.deleteRow(key);
    });
    this.keepAlive.delete(key);
  }

  protected async _list(dir: string, _options: PrimitiveReadOptions): Promise<RawPair[]> {
    this.commitQueued();
    const [lo, hi] = rangeOf(dir);
    return this.stmt.list.all({ lo, hi, now: Date.now() }).map(toRaw);
  }

  protected async _deleteTree(dir: string, signal: AbortSignal): Promise<void> {
    const [lo, hi] = rangeOf(dir);
    await this.grouped(signal, () => {
      this.deleteRow(dir);
      const keys = this.stmt.keysInRange.all(lo, hi);
      if (keys.length > 0) this.stmt.deleteRange.run(lo, hi);
      for (const { key } of keys) this.logChange(key, null);
    });
    for (const key of this.keepAlive.keys())
      if (key === dir || (key >= lo && key < hi)) this.keepAlive.delete(key);
  }

  protected async _atomicPut(
    key: string,
    value: Uint8Array,
    previousIndex: number | null,
    options: PrimitiveWriteOptions,
  ): Promise<RawPair> {
    const buffer = this.blobOf(value);
    const owner = options.keepAlive ? this.id : null;
    const row = await this.grouped(options.signal, (now) => {
      // The conditional write itself is the check (one statement); the row is read only to say why it failed.
      const version = this.nextSeq();
      const expires = options.ttl === undefined ? null : now + options.ttl;
      const written =
        previousIndex === null
          ? this.stmt.create.run(key, buffer, version, expires, owner, now).changes
          : this.stmt.swap.run(buffer, version, expires, owner, key, previousIndex, now).changes;
      if (written === 0) {
        if (previousIndex === null) throw new KeyExistsError(this.userKey(key));
        if (!this.stmt.current.get(key, now)) throw new KeyNotFoundError(this.userKey(key));
        throw new KeyModifiedError(this.userKey(key));
      }
      this.logChange(key, buffer);
      return { key, value: buffer, version };
    });
    this.trackKeepAlive(key, options.ttl, options.keepAlive);
    return toRaw(row);
  }

  protected async _atomicDelete(key: string, previousIndex: number, signal: AbortSignal): Promise<void> {
    await this.grouped(signal, (now) => {
      const current = this.stmt.current.get(key, now);
      if (!current) throw new KeyNotFoundError(this.userKey(key));
      if (current.version !== previousIndex) throw new KeyModifiedError(this.userKey(key));
      this.deleteRow(key);
    });
    this.keepAlive.delete(key);
  }

  private userKey(full: string): string {
    return this.prefix === '' ? full : full.slice(this.prefix.length + 1);
  }

  // ---- watches ----

  protected override async *_watch(key: string, signal: AbortSignal): AsyncIterable<RawPair | null> {
    const release = this.notifier.hold();
    try {
      let seen = this.notifier.generation;
      let { state, seq } = this.readAt(() => this.stmt.get.get({ key, now: Date.now() }) ?? null);
      yield state ? toRaw(state) : null;
      while (!signal.aborted) {
        await this.notifier.wait(seen, signal);
        seen = this.notifier.generation;
        const batch = this.readAt(() => {
          const from = this.stmt.minSeq.get()?.seq ?? 0;
          if (from > seq + 1)
            return { resync: this.stmt.get.get({ key, now: Date.now() }) ?? null, changes: [] };
          return { resync: undefined, changes: this.stmt.changesOfKey.all({ after: seq, key }) };
        });
        if (batch.state.resync !== undefined) {
          const current = batch.state.resync;
          yield current ? toRaw(current) : null;
        }
        for (const change of batch.state.changes) {
          yield change.value === null ? null : toRaw({ key, value: change.value, version: change.seq });
        }
        seq = batch.seq;
      }
    } finally {
      release();
    }
  }

  /** A listing first (again after a resync), then each batch's changes: O(1) per change, not a listing per batch. */
  protected override async *_watchTreeChanges(
    dir: string,
    signal: AbortSignal,
  ): AsyncIterable<RawTreeUpdate> {
    const [lo, hi] = rangeOf(dir);
    const release = this.notifier.hold();
    try {
      let seen = this.notifier.generation;
      const list = () => this.stmt.list.all({ lo, hi, now: Date.now() }).map(toRaw);
      const first = this.readAt(list);
      let seq = first.seq;
      yield { type: 'listing', pairs: first.state };
      while (!signal.aborted) {
        await this.notifier.wait(seen, signal);
        seen = this.notifier.generation;
        const batch = this.readAt(() => {
          const from = this.stmt.minSeq.get()?.seq ?? 0;
          if (from > seq + 1) return { resync: list(), changes: [] };
          return { resync: undefined, changes: this.stmt.changesInRange.all({ after: seq, lo, hi }) };
        });
        if (batch.state.resync) yield { type: 'listing', pairs: batch.state.resync };
        // One batch, applied as one step: a deleteTree never shows half done.
        if (batch.state.changes.length > 0) {
          yield {
            type: 'changes',
            changes: batch.state.changes.map(
              (change): RawTreeChange =>
                change.value === null
                  ? { type: 'delete', key: change.key }
                  : {
                      type: 'put',
                      pair: toRaw({ key: change.key, value: change.value, version: change.seq }),
                    },
            ),
          };
        }
        seq = batch.seq;
      }
    } finally {
      release();
    }
  }

  /** Reads `fn` and the change log's head in one snapshot. */
  private readAt<T>(fn: () => T): { state: T; seq: number } {
    return this.db.transaction(() => ({ state: fn(), seq: this.stmt.maxSeq.get()?.seq ?? 0 }))();
  }

  private setPolling(active: boolean): void {
    if (!active) {
      this.walWatcher?.close();
      this.walWatcher = undefined;
      if (this.pollTimer) clearInterval(this.pollTimer);
      if (this.sweepTimer) clearTimeout(this.sweepTimer);
      this.pollTimer = undefined;
      this.sweepTimer = undefined;
      return;
    }
    if (this.pollTimer || this.closed) return;
    this.dataVersion = this.db.pragma('data_version', { simple: true }) as number;
    // Ref'd on purpose: a process whose only work is a watch or a lock wait keeps running, as with a socket.
    this.pollTimer = setInterval(() => this.poll(), this.pollInterval);
    this.watchWal();
    this.scheduleSweep();
  }

  /**
   * A commit of another connection appends to the WAL file: the OS tells us at
   * once, so watchers and lock waiters across processes need not wait for the
   * poll. Only a hint (the poll still decides by `data_version`, and still runs
   * in case the OS says nothing: a network file system, a missing file).
   */
  private watchWal(): void {
    if (!this.fileKey || this.walWatcher) return;
    try {
      const watcher = watch(`${this.fileKey}-wal`, { persistent: false }, () => this.poll());
      watcher.on('error', () => {
        watcher.close();
        if (this.walWatcher === watcher) this.walWatcher = undefined;
      });
      this.walWatcher = watcher;
    } catch {
      // No WAL file to watch (yet): the poll covers it.
    }
  }

  /** Another connection committed: `data_version` moved. */
  private poll(): void {
    if (this.closed) return;
    try {
      const version = this.db.pragma('data_version', { simple: true }) as number;
      if (version !== this.dataVersion) {
        this.dataVersion = version;
        this.notifier.wake();
        this.scheduleSweep();
      }
    } catch {
      // The next tick tries again.
    }
  }

  /** While anyone watches, expired keys are purged when they expire, so their deletes reach the watchers. */
  private scheduleSweep(): void {
    // `db.open` is false once the connection is gone underneath the store (a crashed process, in tests).
    if (!this.pollTimer || this.closed || !this.db.open) return;
    const at = this.stmt.nextExpiry.get()?.at ?? null;
    if (this.sweepTimer) clearTimeout(this.sweepTimer);
    const wait = at === null ? 1_000 : Math.min(1_000, Math.max(0, at - Date.now()));
    this.sweepTimer = setTimeout(() => {
      this.sweepTimer = undefined;
      try {
        this.write(() => {});
      } catch {
        // Busy: try at the next round.
      }
      this.scheduleSweep();
    }, wait);
    this.sweepTimer.unref();
  }

  // ---- locks ----

  /**
   * Waiters queue in `lock_waiters`, first come first served, so a process
   * that unlocks and locks again at once cannot starve the others. A waiter's
   * row lives on a heartbeat of its own (`WAITER_HEARTBEAT`, or the ttl if
   * shorter), refreshed every third of it while the waiter waits: the row of
   * a waiter that died expires within the heartbeat and the queue moves on,
   * and `tryLock()` finds the lock free. A live waiter that missed its
   * heartbeat (a stalled process) queues again at the back. The queue only
   * orders contenders: who holds is decided by the lock row, in one
   * transaction.
   */
  protected override async _acquireLock(key: string, request: AcquireRequest): Promise<AcquiredLock | null> {
    const holder = randomUUID();
    const { value, ttl, signal } = request;
    const heartbeat = Math.min(ttl, WAITER_HEARTBEAT);
    // Polling starts only once the lock was found taken: an uncontended lock costs no poller.
    let release: (() => void) | undefined;
    let queued = false;
    try {
      for (;;) {
        if (signal.aborted) throw abortError(signal);
        const seen = this.notifier.generation;
        // Monotonic, taken before the write that may win: the loss deadline counts from here.
        const sentAt = monotonicNow();
        const outcome = this.write<{ heldUntil: number } | { token: number }>((now) => {
          this.stmt.purgeWaiters.run({ key, now });
          const row = this.stmt.lockRow.get({ key });
          const first = this.stmt.firstWaiter.get({ key, now });
          const busyUntil =
            row && row.expires_at > now
              ? row.expires_at
              : first && first.holder !== holder
                ? first.expires_at
                : undefined;
          if (busyUntil !== undefined) {
            if (request.wait) {
              const expires = now + heartbeat;
              // A place that expired (this process stalled past its heartbeat) is taken anew, at the back.
              if (!queued || this.stmt.touchWaiter.run({ key, holder, expires }).changes === 0) {
                this.stmt.addWaiter.run({ key, holder, expires });
              }
              queued = true;
            }
            return { heldUntil: busyUntil };
          }
          this.stmt.lockSet.run({ key, holder, expires: now + ttl });
          // The fencing token is the sequence of the put that takes the lock: it only grows.
          const token = this.putRow(key, bufferView(value), now + ttl, null).version;
          if (queued) this.stmt.removeWaiter.run({ key, holder });
          queued = false;
          return { token };
        });
        if ('token' in outcome) return this.lockHandle(key, holder, ttl, outcome.token, sentAt);
        if (!request.wait) return null;
        if (release === undefined) {
          // A commit between the attempt and the poll's start would go unseen: try once more first.
          release = this.notifier.hold();
          continue;
        }
        // Wake on any change, at the holder's (or a dead waiter's) expiry, or in time to refresh our place.
        await this.notifier.wait(
          seen,
          signal,
          Math.min(outcome.heldUntil - Date.now() + 1, Math.floor(heartbeat / 3)),
        );
      }
    } finally {
      release?.();
      if (queued && this.db.open) {
        // Leave the queue, and wake the next waiter in case it is now first.
        try {
          this.db.transaction(() => this.stmt.removeWaiter.run({ key, holder })).immediate();
          this.afterCommit();
        } catch {
          // Our row expires within the ttl anyway.
        }
      }
    }
  }

  private lockHandle(key: string, holder: string, ttl: number, token: number, sentAt: number): AcquiredLock {
    return {
      fencingToken: token,
      sentAt,
      renew: async () => {
        this.assertOpen();
        const outcome = this.write((now) => {
          if (this.stmt.lockRenew.run({ key, holder, expires: now + ttl, now }).changes === 0)
            return 'expired';
          // Someone deleted the lock key (delete, deleteTree): the lock is gone; free it for the next holder.
          if (this.stmt.lockRenewKey.run({ key, expires: now + ttl }).changes === 0) {
            this.stmt.lockRelease.run({ key, holder });
            return 'deleted';
          }
          return 'held';
        });
        if (outcome === 'expired') throw new LockLostError(this.userKey(key), 'it expired or was taken over');
        if (outcome === 'deleted') throw new LockLostError(this.userKey(key), 'its key was deleted');
      },
      release: async () => {
        if (!this.db.open) return;
        this.write(() => {
          if (this.stmt.lockRelease.run({ key, holder }).changes > 0) this.deleteRow(key);
        });
      },
    };
  }

  // ---- errors and closing ----

  protected override _mapError(error: unknown, operation: string): KVError {
    return this.mapSqliteError(error, operation);
  }

  private mapSqliteError(error: unknown, operation: string): KVError {
    const code = (error as { code?: string }).code ?? '';
    const message = error instanceof Error ? error.message : String(error);
    const text = `sqlite ${this.path ?? ''}: ${operation} failed: ${message}${code ? ` (${code})` : ''}`;
    if (code.startsWith('SQLITE_READONLY') || code.startsWith('SQLITE_PERM') || code === 'SQLITE_AUTH') {
      return new PermissionDeniedError(text, { cause: error });
    }
    if (code === 'SQLITE_NOTADB' || code === 'SQLITE_CORRUPT' || code === 'SQLITE_MISMATCH') {
      return new InvalidArgumentError(`${text}: is this a kv SQLite database?`, { cause: error });
    }
    return new UnavailableError(text, { cause: error });
  }

  protected async _close(): Promise<void> {
    this.walWatcher?.close();
    this.walWatcher = undefined;
    for (const timer of [this.keepAliveTimer, this.sweepTimer]) if (timer) clearTimeout(timer);
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.keepAlive.clear();
    if (this.fileKey) {
      const set = neighbours.get(this.fileKey);
      set?.delete(this);
      if (set?.size === 0) neighbours.delete(this.fileKey);
    }
    this.notifier.wake();
    this.db.close();
  }
}
