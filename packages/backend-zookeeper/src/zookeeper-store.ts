import {
  type AcquiredLock,
  type AcquireRequest,
  BaseStore,
  backoff,
  type Capabilities,
  delay,
  InvalidArgumentError,
  KeyExistsError,
  KeyModifiedError,
  KeyNotFoundError,
  type KVError,
  type PrimitiveReadOptions,
  type PrimitiveWriteOptions,
  type RawPair,
  type ResolvedConfig,
  stripPrefix,
  timeoutSignal,
} from '@kv/core';
import { Wake } from './wake.js';
import { type ZooKeeperOptions, type ZooKeeperSettings, zooKeeperSettings } from './zookeeper-config.js';
import { isRc, mapZkError, ZK } from './zookeeper-errors.js';
import { acquireZkLock, type ZkLockHost } from './zookeeper-lock.js';
import {
  childPath,
  decodeNode,
  encodeSegment,
  encodeValue,
  implicitData,
  isHelperName,
  keyOf,
  parentOf,
  pathOf,
} from './zookeeper-nodes.js';
import { EPHEMERAL, type NativeStat, PERSISTENT, ZkSession } from './zookeeper-session.js';
import { ZkTreeWatch } from './zookeeper-tree-watch.js';

/**
 * The largest value: ZooKeeper refuses a packet over `jute.maxbuffer`
 * (1 MiB - 1 by default), which holds the path and the header byte too.
 */
export const ZOOKEEPER_MAX_VALUE = 1_000_000;

/**
 * What the backend registers with; a store's own `capabilities` replace
 * `minTtl` and `ttlGranularity` with what its server grants (the server's
 * `minSessionTimeout`, 2 × tickTime by default).
 */
export const ZOOKEEPER_CAPABILITIES: Capabilities = Object.freeze({
  watch: true,
  watchTree: true,
  lock: true,
  ttl: true,
  keepAlive: true,
  consistentRead: true,
  minTtl: 4_000,
  ttlGranularity: 2_500,
  maxValueSize: ZOOKEEPER_MAX_VALUE,
  distributed: true,
});

/** ms asked for the waiter session (the server grants at least its minSessionTimeout). */
const WAITER_SESSION_ASK = 1_000;

/** Reads and tree scans in flight at once, per call. */
const PIPELINE = 256;

/** The ephemeral nodes of one session: keepAlive keys (re-created when the session is replaced) and lock holders. */
export interface EphemeralSession {
  readonly session: ZkSession;
  /** Path -> node data of the keepAlive keys written in this session. */
  readonly keys: Map<string, Uint8Array>;
}

export class ZooKeeperStore extends BaseStore implements ZkLockHost {
  readonly settings: ZooKeeperSettings;
  /** Reads, writes, watches. */
  readonly main: ZkSession;
  /** The shortest session the server grants: lock waiters queue in it, so a dead waiter's place goes soon. */
  readonly waiters: ZkSession;
  private readonly ttlSessions = new Map<number, Promise<EphemeralSession>>();
  private readonly reapTimers = new Map<string, NodeJS.Timeout>();
  private readonly stop: AbortController;
  /** Server clock minus ours, learned from the mtime of our writes (ms). */
  private clockOffset = 0;
  /** Where the lock queues of every store whose prefix starts with the same segment live. */
  readonly lockRoot: string;

  private constructor(
    settings: ZooKeeperSettings,
    main: ZkSession,
    waiters: ZkSession,
    stop: AbortController,
    capabilities: Capabilities,
  ) {
    super({
      backend: 'zookeeper',
      capabilities,
      prefix: settings.prefix,
      requestTimeout: settings.requestTimeout,
      minTtlSetting: 'minSessionTimeout (2 × tickTime by default)',
    });
    this.settings = settings;
    this.main = main;
    this.waiters = waiters;
    this.stop = stop;
    this.lockRoot = `/${encodeSegment(settings.prefix.split('/')[0] as string)}/%!locks`;
  }

  /** Opens the main session and the waiter session, and makes sure the prefix node exists. */
  static async open(config: ResolvedConfig & ZooKeeperOptions): Promise<ZooKeeperStore> {
    const settings = zooKeeperSettings(config);
    const stop = new AbortController();
    const session = (timeout: number) =>
      new ZkSession({
        connect: settings.connect,
        timeout,
        auth: settings.auth,
        connectTimeout: settings.connectTimeout,
        closing: stop.signal,
      });
    const main = session(settings.sessionTimeout);
    // The server clamps what we ask to its minSessionTimeout (2 × tickTime by default, 4 s): asking for
    // 1 s gets that minimum on most servers, and it is this store's minTtl. Not less: until the server
    // answers, the C client gives a connection attempt 2/3 of the asked timeout, and asking 100 ms left
    // it 66 ms, which a loaded machine (or a proxy in between) misses over and over.
    const waiters = session(WAITER_SESSION_ASK);
    try {
      await Promise.all([main.open(), waiters.open()]);
      const min = waiters.granted;
      const capabilities: Capabilities = {
        ...ZOOKEEPER_CAPABILITIES,
        minTtl: min,
        // Sessions expire in buckets of tickTime (min / 2 by default), then the news travels.
        ttlGranularity: Math.max(500, Math.ceil(min / 2)) + 500,
      };
      const store = new ZooKeeperStore(settings, main, waiters, stop, capabilities);
      const bound = AbortSignal.timeout(settings.connectTimeout);
      await store.ensureNode(main, pathOf(store.prefix), bound);
      return store;
    } catch (error) {
      stop.abort();
      main.close();
      waiters.close();
      throw mapZkError(error, 'connect');
    }
  }

  protected override _mapError(error: unknown, operation: string): KVError {
    return mapZkError(error, operation);
  }

  // ---- clock ----

  /** The server's wall clock now, as well as we know it. */
  serverNow(): number {
    return Date.now() + this.clockOffset;
  }

  private learnClock(stat: NativeStat, sentAt: number): void {
    const mid = (sentAt + Date.now()) / 2;
    this.clockOffset = stat.mtime.getTime() - mid;
  }

  // ---- nodes ----

  /** Creates `path` (an implicit parent) and its missing ancestors. */
  async ensureNode(session: ZkSession, path: string, signal: AbortSignal): Promise<void> {
    if (path === '/') return;
    try {
      await session.create(signal, path, implicitData(), PERSISTENT);
    } catch (error) {
      if (isRc(error, ZK.NODEEXISTS)) return;
      if (!isRc(error, ZK.NONODE)) throw error;
      await this.ensureNode(session, parentOf(path), signal);
      try {
        await session.create(signal, path, implicitData(), PERSISTENT);
      } catch (again) {
        if (!isRc(again, ZK.NODEEXISTS)) throw again;
      }
    }
  }

  /** Creates a node, creating missing parents; NODEEXISTS is the caller's. Returns the created path. */
  async createNode(
    session: ZkSession,
    path: string,
    data: Uint8Array,
    flags: number,
    signal: AbortSignal,
  ): Promise<string> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await session.create(signal, path, data, flags);
      } catch (error) {
        // A parent deleted between our two calls (a concurrent deleteTree) is made again.
        if (!isRc(error, ZK.NONODE) || attempt > 20) throw error;
        await this.ensureNode(this.main, parentOf(path), signal);
      }
    }
  }

  /** The node's pair, or null for an absent key (no node, an implicit parent, an expired ttl). */
  private pairOf(
    fullKey: string,
    path: string,
    stat: NativeStat,
    data: Buffer | null,
  ): { pair: RawPair | null; expiresAt?: number } {
    const decoded = decodeNode(data, stat.mtime.getTime());
    if (decoded.kind === 'implicit') return { pair: null };
    if (decoded.expiresAt !== undefined) {
      if (decoded.expiresAt <= this.serverNow()) {
        this.reapSoon(path, 0);
        return { pair: null };
      }
      return {
        pair: { key: fullKey, value: decoded.value, lastIndex: stat.mzxid },
        expiresAt: decoded.expiresAt,
      };
    }
    return { pair: { key: fullKey, value: decoded.value, lastIndex: stat.mzxid } };
  }

  /** Reads a node: null when there is none. */
  private async read(
    path: string,
    signal: AbortSignal,
  ): Promise<{ stat: NativeStat; data: Buffer | null } | null> {
    try {
      return await this.main.get(signal, path);
    } catch (error) {
      if (isRc(error, ZK.NONODE)) return null;
      throw error;
    }
  }

  /** Reads a node for a watch and arms a one-shot watch on it (a data watch, or an exists watch if absent). */
  async readWatched(
    fullKey: string,
    path: string,
    fire: () => void,
    signal: AbortSignal,
  ): Promise<{ pair: RawPair | null; expiresAt?: number }> {
    for (;;) {
      try {
        const { stat, data } = await this.main.get(signal, path, fire);
        return this.pairOf(fullKey, path, stat, data);
      } catch (error) {
        if (!isRc(error, ZK.NONODE)) throw error;
      }
      const stat = await this.main.exists(signal, path, fire);
      if (!stat) return { pair: null };
      // Created between the two calls: read it (its exists watch is armed too; one extra wake at most).
    }
  }

  // ---- ttl keys: expiry we enforce ourselves ----

  /** Deletes an expired ttl key (keeping its children) in `ms`, if it is still the same expired write. */
  private reapSoon(path: string, ms: number): void {
    if (this.closed || this.reapTimers.has(path)) return;
    const timer = setTimeout(() => {
      this.reapTimers.delete(path);
      void this.reap(path).catch(() => {});
    }, ms);
    timer.unref?.();
    this.reapTimers.set(path, timer);
  }

  private async reap(path: string): Promise<void> {
    const signal = timeoutSignal(this.requestTimeout, this.stop.signal);
    for (let attempt = 0; attempt < 3; attempt++) {
      const node = await this.read(path, signal);
      if (!node) return;
      const decoded = decodeNode(node.data, node.stat.mtime.getTime());
      if (decoded.kind !== 'value' || decoded.expiresAt === undefined) return;
      const left = decoded.expiresAt - this.serverNow();
      if (left > 0) {
        this.reapSoon(path, left);
        return;
      }
      try {
        if (node.stat.numChildren > 0) await this.main.set(signal, path, implicitData(), node.stat.version);
        else await this.main.remove(signal, path, node.stat.version);
        return;
      } catch (error) {
        if (isRc(error, ZK.BADVERSION) || isRc(error, ZK.NONODE)) return;
        if (!isRc(error, ZK.NOTEMPTY)) throw error;
      }
    }
  }

  // ---- sessions of keepAlive keys and locks ----

  /** The session whose timeout is `ttl`: its ephemeral nodes go `ttl` after this process stops renewing it. */
  ttlSession(ttl: number): Promise<EphemeralSession> {
    let entry = this.ttlSessions.get(ttl);
    if (!entry) {
      entry = (async () => {
        const session = new ZkSession({
          connect: this.settings.connect,
          timeout: ttl,
          auth: this.settings.auth,
          connectTimeout: this.settings.connectTimeout,
          closing: this.stop.signal,
        });
        await session.open();
        if (this.closed) {
          session.close();
          throw new InvalidArgumentError('closed');
        }
        const keys = new Map<string, Uint8Array>();
        // A replaced session lost its ephemeral nodes: the keepAlive keys come back in the new one.
        session.on('session', () => void this.recreateKeys(session, keys));
        return { session, keys };
      })();
      this.ttlSessions.set(ttl, entry);
      entry.catch(() => this.ttlSessions.delete(ttl));
    }
    return entry;
  }

  private async recreateKeys(session: ZkSession, keys: Map<string, Uint8Array>): Promise<void> {
    for (const [path, data] of [...keys]) {
      for (let attempt = 0; !this.closed; attempt++) {
        try {
          await this.createNode(
            session,
            path,
            data,
            EPHEMERAL,
            timeoutSignal(this.requestTimeout, this.stop.signal),
          );
          break;
        } catch (error) {
          // Someone else wrote the key meanwhile: theirs wins, and it is no longer ours to keep.
          if (isRc(error, ZK.NODEEXISTS)) {
            keys.delete(path);
            break;
          }
          if (this.closed || attempt > 20) break;
          await delay(backoff(attempt), this.stop.signal).catch(() => {});
        }
      }
    }
  }

  /** Forgets that `path` is a keepAlive key of ours (a later write replaced it). */
  private async untrack(path: string, below = false): Promise<void> {
    for (const entry of this.ttlSessions.values()) {
      const es = await entry.catch(() => undefined);
      if (!es) continue;
      if (below) {
        for (const key of es.keys.keys()) if (key === path || key.startsWith(`${path}/`)) es.keys.delete(key);
      } else {
        es.keys.delete(path);
      }
    }
  }

  private async ephemeralFor(ttl: number): Promise<EphemeralSession> {
    const es = await this.ttlSession(ttl);
    if (es.session.granted > ttl) {
      throw new InvalidArgumentError(
        `ttl ${ttl} ms is under the server's minSessionTimeout (${es.session.granted} ms)`,
      );
    }
    return es;
  }

  // ---- primitives ----

  protected async _get(key: string, options: PrimitiveReadOptions): Promise<RawPair | null> {
    const path = pathOf(key);
    if (options.consistent) await this.main.sync(options.signal, path);
    const node = await this.read(path, options.signal);
    return node ? this.pairOf(key, path, node.stat, node.data).pair : null;
  }

  /** A ttl key's deadline is its mtime (the server's clock) plus the ttl in its data; an ephemeral (keepAlive) node has none. */
  protected override async _remainingTtl(key: string, signal: AbortSignal): Promise<number | undefined> {
    const path = pathOf(key);
    const node = await this.read(path, signal);
    const at = node ? this.pairOf(key, path, node.stat, node.data).expiresAt : undefined;
    return at === undefined ? undefined : Math.max(1, Math.ceil(at - this.serverNow()));
  }

  protected async _put(key: string, value: Uint8Array, options: PrimitiveWriteOptions): Promise<void> {
    const path = pathOf(key);
    const { signal, ttl } = options;
    if (options.keepAlive && ttl !== undefined) {
      await this.putEphemeral(key, path, encodeValue(value), ttl, signal);
      return;
    }
    await this.untrack(path);
    const data = encodeValue(value, ttl);
    for (let attempt = 0; ; attempt++) {
      const sentAt = Date.now();
      try {
        const stat = await this.main.set(signal, path, data, -1);
        this.learnClock(stat, sentAt);
        if (stat.ephemeralOwner !== '0') {
          // A keepAlive key (an ephemeral node) made permanent: a node cannot change its kind, so it is made anew.
          await this.main.remove(signal, path, stat.version);
          await this.createNode(this.main, path, data, PERSISTENT, signal);
        }
        break;
      } catch (error) {
        if (isRc(error, ZK.BADVERSION) || isRc(error, ZK.NODEEXISTS)) continue;
        if (!isRc(error, ZK.NONODE) || attempt > 20) throw error;
      }
      try {
        await this.createNode(this.main, path, data, PERSISTENT, signal);
        break;
      } catch (error) {
        if (!isRc(error, ZK.NODEEXISTS) || attempt > 20) throw error;
      }
    }
    if (ttl !== undefined) this.reapSoon(path, ttl);
  }

  private async putEphemeral(
    key: string,
    path: string,
    data: Uint8Array,
    ttl: number,
    signal: AbortSignal,
  ): Promise<void> {
    const es = await this.ephemeralFor(ttl);
    await this.untrack(path);
    for (let attempt = 0; ; attempt++) {
      try {
        await this.createNode(es.session, path, data, EPHEMERAL, signal);
        es.keys.set(path, data);
        return;
      } catch (error) {
        if (!isRc(error, ZK.NODEEXISTS) || attempt > 20) throw error;
      }
      const stat = await this.main.exists(signal, path);
      if (!stat) continue;
      if (stat.ephemeralOwner === es.session.sessionId) {
        try {
          await this.main.set(signal, path, data, stat.version);
          es.keys.set(path, data);
          return;
        } catch (error) {
          if (isRc(error, ZK.BADVERSION) || isRc(error, ZK.NONODE)) continue;
          throw error;
        }
      }
      if (stat.numChildren > 0) {
        throw new InvalidArgumentError(
          `${JSON.stringify(stripPrefix(this.prefix, key))} has children, so it cannot be a keepAlive key: a ZooKeeper ephemeral node cannot have children`,
        );
      }
      try {
        await this.main.remove(signal, path, stat.version);
      } catch (error) {
        if (!isRc(error, ZK.BADVERSION) && !isRc(error, ZK.NONODE)) throw error;
      }
    }
  }

  protected async _delete(key: string, signal: AbortSignal): Promise<void> {
    const path = pathOf(key);
    await this.untrack(path);
    for (let attempt = 0; attempt < 50; attempt++) {
      try {
        await this.main.remove(signal, path, -1);
        return;
      } catch (error) {
        if (isRc(error, ZK.NONODE)) return;
        if (!isRc(error, ZK.NOTEMPTY)) throw error;
      }
      // It has children: it stays, as an implicit parent.
      const node = await this.read(path, signal);
      if (!node || decodeNode(node.data, 0).kind === 'implicit') return;
      try {
        await this.main.set(signal, path, implicitData(), node.stat.version);
        return;
      } catch (error) {
        if (isRc(error, ZK.NONODE)) return;
        if (!isRc(error, ZK.BADVERSION)) throw error;
      }
    }
    throw new Error(`delete ${path}: the node kept changing`);
  }

  protected async _list(dir: string, options: PrimitiveReadOptions): Promise<RawPair[]> {
    const { signal } = options;
    const root = pathOf(dir);
    if (options.consistent) await this.main.sync(signal, root);
    const pairs: RawPair[] = [];
    const limit = new Limiter(PIPELINE);
    const visit = async (path: string): Promise<void> => {
      let names: string[];
      try {
        names = await limit.run(() => this.main.children(signal, path));
      } catch (error) {
        if (isRc(error, ZK.NONODE)) return;
        throw error;
      }
      await Promise.all(
        names.map(async (name) => {
          if (isHelperName(name)) return;
          const child = childPath(path, name);
          const node = await limit.run(() => this.read(child, signal));
          if (!node) return;
          const { pair } = this.pairOf(keyOf(child), child, node.stat, node.data);
          if (pair) pairs.push(pair);
          if (node.stat.numChildren > 0) await visit(child);
        }),
      );
    };
    await visit(root);
    return pairs;
  }

  /** Every node below `path` (helpers included), by depth: deepest last. */
  private async scan(path: string, signal: AbortSignal): Promise<string[][]> {
    const levels: string[][] = [];
    const limit = new Limiter(PIPELINE);
    const visit = async (p: string, depth: number): Promise<void> => {
      let names: string[];
      try {
        names = await limit.run(() => this.main.children(signal, p));
      } catch (error) {
        if (isRc(error, ZK.NONODE)) return;
        throw error;
      }
      if (names.length === 0) return;
      levels[depth] ??= [];
      const level = levels[depth] as string[];
      await Promise.all(
        names.map((name) => {
          const child = childPath(p, name);
          level.push(child);
          return visit(child, depth + 1);
        }),
      );
    };
    await visit(path, 0);
    return levels;
  }

  protected async _deleteTree(dir: string, signal: AbortSignal): Promise<void> {
    const root = pathOf(dir);
    await this.untrack(root, true);
    const limit = new Limiter(PIPELINE);
    for (let round = 0; round < 50; round++) {
      const levels = await this.scan(root, signal);
      let again = false;
      // Deepest first, each level in parallel (the client pipelines them on one connection).
      for (let depth = levels.length - 1; depth >= 0; depth--) {
        await Promise.all(
          (levels[depth] as string[]).map((path) =>
            limit
              .run(() => this.main.remove(signal, path, -1))
              .catch((error) => {
                if (isRc(error, ZK.NONODE)) return;
                if (isRc(error, ZK.NOTEMPTY)) {
                  again = true;
                  return;
                }
                throw error;
              }),
          ),
        );
      }
      try {
        await this.main.remove(signal, root, -1);
        return;
      } catch (error) {
        if (isRc(error, ZK.NONODE) && !again) return;
        if (!isRc(error, ZK.NOTEMPTY) && !isRc(error, ZK.NONODE)) throw error;
      }
    }
    throw new Error(`deleteTree ${root}: nodes kept appearing below it`);
  }

  protected async _atomicPut(
    key: string,
    value: Uint8Array,
    previousIndex: number | null,
    options: PrimitiveWriteOptions,
  ): Promise<RawPair> {
    const path = pathOf(key);
    const { signal, ttl } = options;
    const user = stripPrefix(this.prefix, key);
    if (options.keepAlive && ttl !== undefined) {
      return this.atomicEphemeral(key, path, value, previousIndex, ttl, signal);
    }
    await this.untrack(path);
    const data = encodeValue(value, ttl);
    const done = (stat: NativeStat): RawPair => {
      if (ttl !== undefined) this.reapSoon(path, ttl);
      return { key, value, lastIndex: stat.mzxid };
    };
    for (let attempt = 0; attempt < 50; attempt++) {
      if (previousIndex === null) {
        // Create-only: an implicit node first (created, or already there), then the value on the version
        // seen. Of two creators, one conditional write wins; the key is absent until it lands.
        let version = 0;
        try {
          await this.createNode(this.main, path, implicitData(), PERSISTENT, signal);
        } catch (error) {
          if (!isRc(error, ZK.NODEEXISTS)) throw error;
          const node = await this.read(path, signal);
          if (!node) continue;
          if (this.pairOf(key, path, node.stat, node.data).pair) throw new KeyExistsError(user);
          if (node.stat.ephemeralOwner !== '0') {
            // An expired-looking ephemeral cannot be turned into a permanent key in place.
            await this.main.remove(signal, path, node.stat.version).catch(() => {});
            continue;
          }
          version = node.stat.version;
        }
        try {
          const sentAt = Date.now();
          const stat = await this.main.set(signal, path, data, version);
          this.learnClock(stat, sentAt);
          return done(stat);
        } catch (error) {
          if (isRc(error, ZK.NONODE)) continue;
          if (isRc(error, ZK.BADVERSION)) {
            const node = await this.read(path, signal);
            if (node && this.pairOf(key, path, node.stat, node.data).pair) throw new KeyExistsError(user);
            continue;
          }
          throw error;
        }
      }
      const node = await this.read(path, signal);
      if (!node || !this.pairOf(key, path, node.stat, node.data).pair) throw new KeyNotFoundError(user);
      if (node.stat.mzxid !== previousIndex) throw new KeyModifiedError(user);
      try {
        if (node.stat.ephemeralOwner !== '0') {
          // A keepAlive key made permanent: made anew (the delete is conditional on the version read).
          await this.main.remove(signal, path, node.stat.version);
          await this.createNode(this.main, path, implicitData(), PERSISTENT, signal);
          const stat = await this.main.set(signal, path, data, 0);
          return done(stat);
        }
        const sentAt = Date.now();
        const stat = await this.main.set(signal, path, data, node.stat.version);
        this.learnClock(stat, sentAt);
        return done(stat);
      } catch (error) {
        if (isRc(error, ZK.BADVERSION) || isRc(error, ZK.NODEEXISTS)) throw new KeyModifiedError(user);
        if (isRc(error, ZK.NONODE)) throw new KeyNotFoundError(user);
        throw error;
      }
    }
    throw new KeyModifiedError(user);
  }

  private async atomicEphemeral(
    key: string,
    path: string,
    value: Uint8Array,
    previousIndex: number | null,
    ttl: number,
    signal: AbortSignal,
  ): Promise<RawPair> {
    const user = stripPrefix(this.prefix, key);
    const es = await this.ephemeralFor(ttl);
    const data = encodeValue(value);
    await this.untrack(path);
    for (let attempt = 0; attempt < 50; attempt++) {
      const node = await this.read(path, signal);
      const current = node ? this.pairOf(key, path, node.stat, node.data).pair : null;
      if (previousIndex === null && current) throw new KeyExistsError(user);
      if (previousIndex !== null) {
        if (!current || !node) throw new KeyNotFoundError(user);
        if (node.stat.mzxid !== previousIndex) throw new KeyModifiedError(user);
      }
      if (node && node.stat.ephemeralOwner === es.session.sessionId) {
        try {
          const stat = await this.main.set(signal, path, data, node.stat.version);
          es.keys.set(path, data);
          return { key, value, lastIndex: stat.mzxid };
        } catch (error) {
          if (isRc(error, ZK.BADVERSION)) {
            if (previousIndex !== null) throw new KeyModifiedError(user);
            continue;
          }
          if (isRc(error, ZK.NONODE)) {
            if (previousIndex !== null) throw new KeyNotFoundError(user);
            continue;
          }
          throw error;
        }
      }
      if (node) {
        if (node.stat.numChildren > 0) {
          throw new InvalidArgumentError(
            `${JSON.stringify(user)} has children, so it cannot be a keepAlive key: a ZooKeeper ephemeral node cannot have children`,
          );
        }
        try {
          await this.main.remove(signal, path, node.stat.version);
        } catch (error) {
          if (isRc(error, ZK.BADVERSION) || isRc(error, ZK.NONODE)) {
            if (previousIndex !== null) throw new KeyModifiedError(user);
            continue;
          }
          throw error;
        }
      }
      try {
        await this.createNode(es.session, path, data, EPHEMERAL, signal);
      } catch (error) {
        if (isRc(error, ZK.NODEEXISTS)) {
          if (previousIndex !== null) throw new KeyModifiedError(user);
          throw new KeyExistsError(user);
        }
        throw error;
      }
      es.keys.set(path, data);
      const stat = await this.main.exists(signal, path);
      // Its creation is its first version: czxid is the index of our write even if another came after.
      return { key, value, lastIndex: stat ? stat.czxid : 0 };
    }
    throw new KeyModifiedError(user);
  }

  protected async _atomicDelete(key: string, previousIndex: number, signal: AbortSignal): Promise<void> {
    const path = pathOf(key);
    const user = stripPrefix(this.prefix, key);
    await this.untrack(path);
    for (let attempt = 0; attempt < 50; attempt++) {
      const node = await this.read(path, signal);
      if (!node || !this.pairOf(key, path, node.stat, node.data).pair) throw new KeyNotFoundError(user);
      if (node.stat.mzxid !== previousIndex) throw new KeyModifiedError(user);
      try {
        if (node.stat.numChildren > 0) await this.main.set(signal, path, implicitData(), node.stat.version);
        else await this.main.remove(signal, path, node.stat.version);
        return;
      } catch (error) {
        if (isRc(error, ZK.BADVERSION)) throw new KeyModifiedError(user);
        if (isRc(error, ZK.NONODE)) throw new KeyNotFoundError(user);
        // A child appeared between the read and the delete: the node stays, as an implicit parent.
        if (!isRc(error, ZK.NOTEMPTY)) throw error;
      }
    }
    throw new KeyModifiedError(user);
  }

  protected override async *_watch(key: string, signal: AbortSignal): AsyncIterable<RawPair | null> {
    const path = pathOf(key);
    for (let attempt = 0; !signal.aborted; ) {
      const wake = new Wake();
      // A replaced session lost its watches: read again in the new one.
      this.main.on('session', wake.fire);
      try {
        let read: { pair: RawPair | null; expiresAt?: number };
        try {
          read = await this.readWatched(key, path, wake.fire, signal);
          attempt = 0;
        } catch (error) {
          if (signal.aborted) return;
          if (isRc(error, ZK.NOAUTH)) throw error;
          await delay(backoff(attempt++), signal).catch(() => {});
          continue;
        }
        yield read.pair;
        const left = read.expiresAt === undefined ? undefined : read.expiresAt - this.serverNow() + 1;
        await wake.wait(signal, left);
      } finally {
        this.main.off('session', wake.fire);
      }
    }
  }

  protected override async *_watchTree(dir: string, signal: AbortSignal): AsyncIterable<RawPair[]> {
    const tree = new ZkTreeWatch(this.main, pathOf(dir), signal, {
      pair: (path, stat, data) => this.pairOf(keyOf(path), path, stat, data),
      now: () => this.serverNow(),
    });
    try {
      yield* tree.listings();
    } finally {
      tree.stop();
    }
  }

  protected override _acquireLock(key: string, request: AcquireRequest): Promise<AcquiredLock | null> {
    return acquireZkLock(this, key, request);
  }

  /** For the lock module: deletes a key the way `delete` does (its children stay). */
  deleteKey(fullKey: string, signal: AbortSignal): Promise<void> {
    return this._delete(fullKey, signal);
  }

  userKey(fullKey: string): string {
    return stripPrefix(this.prefix, fullKey);
  }

  get stopping(): AbortSignal {
    return this.stop.signal;
  }

  protected async _close(): Promise<void> {
    this.stop.abort();
    for (const timer of this.reapTimers.values()) clearTimeout(timer);
    this.reapTimers.clear();
    const sessions = await Promise.all([...this.ttlSessions.values()].map((e) => e.catch(() => undefined)));
    this.ttlSessions.clear();
    for (const es of sessions) es?.session.close();
    this.waiters.close();
    this.main.close();
  }
}

/** At most `n` calls in flight; the rest wait their turn. */
class Limiter {
  private active = 0;
  private readonly queue: (() => void)[] = [];
  constructor(private readonly n: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.n) await new Promise<void>((resolve) => this.queue.push(resolve));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.queue.shift()?.();
    }
  }
}
