import { randomUUID } from 'node:crypto';
import { abortError, delay, isBelow, type KVError, NotSupportedError } from '@kv/core';
import { type Change, parseChange, parseUnlock } from './redis-script.js';

/** What a watcher or lock waiter pulls from its feed. */
export type FeedItem =
  | { readonly kind: 'change'; readonly change: Change }
  /** Changes `from`..`to` happened and concern nobody here. */
  | { readonly kind: 'skip'; readonly from: number; to: number }
  /** A data key (`lock: false`) or lock key (`lock: true`) of `key` expired or was evicted. */
  | { readonly kind: 'expired'; readonly key: string; readonly lock: boolean }
  /** The subscription was re-established, or the feed overflowed: re-read the current state. */
  | { readonly kind: 'resync' }
  | { readonly kind: 'fail'; readonly error: KVError };

/** Which keys a feed is about: `tree` asks about a deleteTree of `key` (it and everything below). */
export type Interest = (key: string, tree: boolean) => boolean;

export function keyInterest(watched: string): Interest {
  return (key, tree) => key === watched || (tree && isBelow(key, watched));
}

export function treeInterest(dir: string): Interest {
  return (key, tree) => isBelow(dir, key) || (tree && (key === dir || isBelow(key, dir)));
}

const FEED_LIMIT = 10_000;

/**
 * The queue between the hub and one watcher or lock waiter. Changes that do
 * not concern it are merged into `skip` ranges, so it can still tell a gap in
 * the sequence numbers (a missed message) from changes elsewhere, and its
 * memory stays bounded by what concerns it; past FEED_LIMIT items it drops
 * everything for one `resync`.
 */
export class Feed {
  private items: FeedItem[] = [];
  private head = 0;
  private wake: (() => void) | undefined;
  closed = false;
  readonly interest: Interest;
  private readonly onClose: (feed: Feed) => void;

  constructor(interest: Interest, onClose: (feed: Feed) => void) {
    this.interest = interest;
    this.onClose = onClose;
  }

  get size(): number {
    return this.items.length - this.head;
  }

  private push(item: FeedItem): void {
    if (this.closed) return;
    if (this.size >= FEED_LIMIT) {
      this.items = item.kind === 'fail' ? [{ kind: 'resync' }, item] : [{ kind: 'resync' }];
      this.head = 0;
    } else {
      this.items.push(item);
    }
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  offerChange(change: Change): void {
    if (this.interest(change.key, change.type === 'tree')) {
      this.push({ kind: 'change', change });
      return;
    }
    const last = this.items[this.items.length - 1];
    if (this.size > 0 && last?.kind === 'skip' && last.to + 1 === change.seq) {
      last.to = change.seq;
      return;
    }
    this.push({ kind: 'skip', from: change.seq, to: change.seq });
  }

  offerExpired(key: string, lock: boolean): void {
    if (this.interest(key, false)) this.push({ kind: 'expired', key, lock });
  }

  resync(): void {
    this.push({ kind: 'resync' });
  }

  fail(error: KVError): void {
    this.push({ kind: 'fail', error });
  }

  /** Drops what is queued. */
  clear(): void {
    this.items = [];
    this.head = 0;
  }

  /** The next item; rejects with an AbortError when `signal` aborts, resolves undefined after `timeout` ms. */
  async next(signal: AbortSignal, timeout?: number): Promise<FeedItem | undefined> {
    if (this.size === 0) {
      if (signal.aborted) throw abortError(signal);
      await new Promise<void>((resolve, reject) => {
        const done = () => {
          signal.removeEventListener('abort', onAbort);
          if (timer) clearTimeout(timer);
          this.wake = undefined;
          resolve();
        };
        const onAbort = () => {
          if (timer) clearTimeout(timer);
          this.wake = undefined;
          reject(abortError(signal));
        };
        const timer = timeout === undefined ? undefined : setTimeout(done, Math.max(0, timeout));
        timer?.unref();
        this.wake = done;
        signal.addEventListener('abort', onAbort, { once: true });
      });
      if (this.size === 0) return undefined;
    }
    const item = this.items[this.head] as FeedItem;
    this.head++;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.clear();
    this.wake?.();
    this.onClose(this);
  }
}

/** A connected client the hub subscribes with. */
export interface Subscriber {
  connect(): Promise<unknown>;
  subscribe(
    channels: string[],
    listener: (message: Buffer, channel: Buffer) => void,
    bufferMode: true,
  ): Promise<void>;
  on(event: 'ready', listener: () => void): unknown;
  on(event: 'error', listener: (error: unknown) => void): unknown;
  destroy(): void;
}

export interface HubHost {
  readonly channel: string;
  readonly expiredChannel: string;
  readonly evictedChannel: string;
  /** `{ns}:d:` and `{ns}:l:` */
  readonly dataPrefix: string;
  readonly lockPrefix: string;
  readonly probePrefix: string;
  readonly configureNotifications: boolean;
  readonly closing: AbortSignal;
  /** A new subscriber client; `onPermanent` is called when it gives up for good. */
  newSubscriber(): Subscriber;
  /** Is this driver error permanent (credentials, permissions)? */
  isPermanent(error: unknown): boolean;
  mapError(error: unknown, operation: string): KVError;
  /** Removes an expired key from the index (and tells the watchers). */
  sweep(fullKey: string): void;
  command<T>(args: string[], signal: AbortSignal): Promise<T>;
  isReplyError(error: unknown): boolean;
  /** The number of open feeds (watches and lock waits) changed. */
  feedsChanged(count: number): void;
}

/**
 * One subscriber connection per store, shared by its watches and lock
 * waiters: the store's change channel (exact, in commit order) and the
 * keyspace events for expired and evicted keys. The client resubscribes by
 * itself after a reconnect; every feed then re-reads its state.
 */
export class Hub {
  private readonly host: HubHost;
  private sub: Subscriber | undefined;
  private started: Promise<void> | undefined;
  private readonly feeds = new Set<Feed>();
  private failure: KVError | undefined;
  private notifications: Promise<void> | undefined;
  private readonly probes = new Map<string, () => void>();

  constructor(host: HubHost) {
    this.host = host;
  }

  attach(interest: Interest): Feed {
    const feed = new Feed(interest, (f) => {
      if (this.feeds.delete(f)) this.host.feedsChanged(this.feeds.size);
    });
    if (this.failure) feed.fail(this.failure);
    this.feeds.add(feed);
    this.host.feedsChanged(this.feeds.size);
    return feed;
  }

  /**
   * Resolves once subscribed (after that the client retries a lost connection by itself). A
   * permanent error (credentials, ACL, store closed) fails the hub for good; a transient one
   * (a connection dropped during the first SUBSCRIBE, say) rejects this call only: the caller
   * retries with backoff, and the next call starts over with a fresh subscriber.
   */
  async ready(signal: AbortSignal): Promise<void> {
    if (this.failure) throw this.failure;
    this.started ??= this.start();
    await raceAbort(this.started, signal);
  }

  private async start(): Promise<void> {
    const sub = this.host.newSubscriber();
    this.sub = sub;
    let readyCount = 0;
    sub.on('error', (error) => {
      if (this.sub === sub && this.host.isPermanent(error)) this.fail(this.host.mapError(error, 'watch'));
    });
    sub.on('ready', () => {
      if (this.sub !== sub || ++readyCount === 1) return;
      // Reconnected: the server may have restarted (settings and data lost); everyone re-reads.
      this.notifications = undefined;
      for (const feed of this.feeds) feed.resync();
    });
    try {
      await sub.connect();
      await sub.subscribe(
        [this.host.channel, this.host.expiredChannel, this.host.evictedChannel],
        (message, channel) => this.onMessage(message, channel),
        true,
      );
    } catch (error) {
      const mapped = this.host.mapError(error, 'watch');
      if (this.host.isPermanent(error) || this.host.closing.aborted) {
        this.fail(mapped);
        throw mapped;
      }
      // Transient: forget this attempt, so the next ready() subscribes again on a new connection.
      if (this.sub === sub) this.sub = undefined;
      this.started = undefined;
      try {
        sub.destroy();
      } catch {
        // already gone
      }
      throw mapped;
    }
  }

  private fail(error: KVError): void {
    if (this.failure) return;
    this.failure = error;
    for (const feed of this.feeds) feed.fail(error);
    try {
      this.sub?.destroy();
    } catch {
      // already gone
    }
  }

  private onMessage(message: Buffer, channel: Buffer): void {
    const name = channel.toString('utf8');
    if (name === this.host.channel) {
      const change = parseChange(message);
      if (change) {
        for (const feed of this.feeds) feed.offerChange(change);
        return;
      }
      // A freed lock whose data was gone: lock waiters wake up (as for a lock key's expiry).
      const unlocked = parseUnlock(message);
      if (unlocked !== undefined) for (const feed of this.feeds) feed.offerExpired(unlocked, true);
      return;
    }
    const key = message.toString('utf8');
    if (key.startsWith(this.host.dataPrefix)) {
      const full = key.slice(this.host.dataPrefix.length);
      this.host.sweep(full);
      for (const feed of this.feeds) feed.offerExpired(full, false);
    } else if (key.startsWith(this.host.lockPrefix)) {
      const full = key.slice(this.host.lockPrefix.length);
      for (const feed of this.feeds) feed.offerExpired(full, true);
    } else {
      this.probes.get(key)?.();
    }
  }

  /**
   * Resolves when the server reports expired keys (notify-keyspace-events
   * with `E` and `x`): turns them on when it may and can, else rejects with a
   * NotSupportedError saying how to turn them on.
   */
  notificationsOn(signal: AbortSignal): Promise<void> {
    if (!this.notifications) {
      const check = this.checkNotifications(signal);
      this.notifications = check;
      check.catch(() => {
        if (this.notifications === check) this.notifications = undefined;
      });
    }
    return raceAbort(this.notifications, signal);
  }

  private async checkNotifications(signal: AbortSignal): Promise<void> {
    let flags: string | undefined;
    let refusal = '';
    try {
      flags = configValue(
        await this.host.command<unknown>(['CONFIG', 'GET', 'notify-keyspace-events'], signal),
      );
    } catch (error) {
      if (!this.host.isReplyError(error)) throw error;
      refusal = `CONFIG GET failed: ${(error as Error).message}`;
    }
    if (flags !== undefined) {
      if (covers(flags)) return;
      if (!this.host.configureNotifications) {
        throw this.notificationsError(
          `they are ${JSON.stringify(flags)} and configureNotifications is false`,
        );
      }
      try {
        await this.host.command(['CONFIG', 'SET', 'notify-keyspace-events', merge(flags)], signal);
        return;
      } catch (error) {
        if (!this.host.isReplyError(error)) throw error;
        refusal = `they are ${JSON.stringify(flags)} and CONFIG SET failed: ${(error as Error).message}`;
      }
    }
    // CONFIG is renamed or refused: see whether an expiry is reported anyway.
    if (await this.probe(signal)) return;
    throw this.notificationsError(refusal || 'no expired event arrived for a probe key');
  }

  private notificationsError(why: string): KVError {
    return new NotSupportedError(
      'redis',
      'watch',
      `this Redis server does not publish keyspace notifications for expired keys (${why}). ` +
        'Watches need them: enable them with `CONFIG SET notify-keyspace-events Ex` or ' +
        '`notify-keyspace-events Ex` in redis.conf (`KEA`, every event, works too)',
    );
  }

  /** Makes a key expire and waits for its `expired` event. */
  private async probe(signal: AbortSignal): Promise<boolean> {
    const key = `${this.host.probePrefix}${randomUUID()}`;
    let heard = false;
    let wake: () => void = () => {};
    const arrived = new Promise<void>((resolve) => {
      wake = resolve;
    });
    this.probes.set(key, () => {
      heard = true;
      wake();
    });
    try {
      await this.host.command(['SET', key, '1', 'PX', '1'], signal);
      // Touching it after its ttl expires it at once (and reports it, if notifications are on).
      for (let i = 0; i < 50; i++) {
        await delay(2, signal);
        if ((await this.host.command<number>(['EXISTS', key], signal)) === 0) break;
      }
      const timeout = delay(1_000, signal).catch(() => {});
      await Promise.race([arrived, timeout]);
      return heard;
    } finally {
      this.probes.delete(key);
    }
  }

  close(): void {
    for (const feed of [...this.feeds]) feed.close();
    try {
      this.sub?.destroy();
    } catch {
      // already gone
    }
    this.sub = undefined;
  }
}

/** The value of CONFIG GET's reply (a map in RESP3, a flat array in RESP2). */
function configValue(reply: unknown): string | undefined {
  let value: unknown;
  if (reply instanceof Map) value = [...reply.values()][0];
  else if (Array.isArray(reply)) value = reply[1];
  else if (typeof reply === 'object' && reply !== null) value = Object.values(reply)[0];
  if (value === undefined || value === null) return undefined;
  return Buffer.isBuffer(value) ? value.toString('utf8') : String(value);
}

/** `E` (keyevent channels) and `x` (expired), directly or through `A`. */
function covers(flags: string): boolean {
  return flags.includes('E') && (flags.includes('x') || flags.includes('A'));
}

/** The existing flags plus `E`, `x` (expired) and `e` (evicted). */
function merge(flags: string): string {
  let merged = flags;
  if (!merged.includes('E')) merged += 'E';
  if (!merged.includes('A')) {
    if (!merged.includes('x')) merged += 'x';
    if (!merged.includes('e')) merged += 'e';
  }
  return merged;
}

function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(abortError(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortError(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}
