/**
 * A slow `watch()` consumer holds at most this many bytes of states (and at
 * most 1024 states); past it, the oldest are merged away. The newest state
 * is always kept, even a single one larger than this.
 */
export const WATCH_BUFFER_BYTES = 8 * 1024 * 1024;

/** What a buffered watch state counts for: its value's bytes, plus its key and the pair object. */
export function weighWatchState(pair: { readonly key: string; readonly value: Uint8Array } | null): number {
  const overhead = 64;
  return pair === null ? overhead : overhead + 2 * pair.key.length + pair.value.byteLength;
}

/** How many items a channel buffers at most, by default. */
export const DEFAULT_CHANNEL_LIMIT = 1024;

export interface ChannelOptions<T> {
  /** Most items buffered; past it the oldest are merged away. Default 1024. */
  readonly limit?: number;
  /** Most bytes buffered, as `weigh` counts them; past it the oldest are merged away. Default: no bound. */
  readonly maxBytes?: number;
  /** The bytes an item holds (for `maxBytes`). */
  readonly weigh?: (item: T) => number;
  readonly onReturn?: () => void;
}

/**
 * A push-to-pull queue behind each watch. Producers `push` states as they
 * arrive; the consumer pulls with `for await`. A slow consumer never grows
 * memory without bound: past `limit` buffered items or `maxBytes` buffered
 * bytes, the oldest ones are merged away (dropped: each item is a full
 * state, so the newer ones stand for them), order is kept, and the newest
 * state is always kept, even if it alone is over `maxBytes`.
 */
export class Channel<T> implements AsyncIterableIterator<T> {
  private readonly buffer: T[] = [];
  /** `next()` calls waiting for an item, oldest first (a consumer may call next() again before one settles). */
  private readonly waiting: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void }[] = [];
  private done = false;
  private failure: { error: unknown } | undefined;
  private readonly limit: number;
  private readonly maxBytes: number;
  private readonly weigh: ((item: T) => number) | undefined;
  /** Parallel to `buffer`: each item's weight. */
  private readonly weights: number[] = [];
  private bytes = 0;
  private dropped = 0;
  private readonly onReturn: (() => void) | undefined;

  constructor(options: ChannelOptions<T> = {}) {
    this.limit = Math.max(1, options.limit ?? DEFAULT_CHANNEL_LIMIT);
    this.maxBytes = options.maxBytes ?? Number.POSITIVE_INFINITY;
    this.weigh = options.weigh;
    this.onReturn = options.onReturn;
  }

  get closed(): boolean {
    return this.done;
  }

  /** Items buffered now (internal measure). */
  get bufferedItems(): number {
    return this.buffer.length;
  }

  /** Bytes buffered now, as `weigh` counts them (internal measure; 0 without `weigh`). */
  get bufferedBytes(): number {
    return this.bytes;
  }

  /** Items merged away so far (internal measure). */
  get mergedItems(): number {
    return this.dropped;
  }

  push(item: T): void {
    if (this.done) return;
    const waiter = this.waiting.shift();
    if (waiter) {
      waiter.resolve({ value: item, done: false });
      return;
    }
    const weight = this.weigh ? this.weigh(item) : 0;
    this.buffer.push(item);
    this.weights.push(weight);
    this.bytes += weight;
    // The newest item always stays; older ones go first.
    let drop = 0;
    let bytes = this.bytes;
    while (
      this.buffer.length - drop > 1 &&
      (this.buffer.length - drop > this.limit || bytes > this.maxBytes)
    ) {
      bytes -= this.weights[drop] as number;
      drop++;
    }
    if (drop > 0) {
      this.buffer.splice(0, drop);
      this.weights.splice(0, drop);
      this.bytes = bytes;
      this.dropped += drop;
    }
  }

  private clear(): void {
    this.buffer.length = 0;
    this.weights.length = 0;
    this.bytes = 0;
  }

  /** Replaces whatever is buffered with one item: for producers whose every item is a full state. */
  replace(item: T): void {
    if (this.done) return;
    this.dropped += this.buffer.length;
    this.clear();
    this.push(item);
  }

  /** Ends iteration after the buffered items are consumed. */
  end(): void {
    if (this.done) return;
    this.done = true;
    for (const waiter of this.waiting.splice(0)) waiter.resolve({ value: undefined, done: true });
  }

  /** Ends iteration with an error, thrown after the buffered items are consumed. */
  fail(error: unknown): void {
    if (this.done) return;
    this.failure = { error };
    this.done = true;
    const [first, ...rest] = this.waiting.splice(0);
    if (first) {
      // The error goes to the oldest waiter; the rest see the end.
      this.failure = undefined;
      first.reject(error);
    }
    for (const waiter of rest) waiter.resolve({ value: undefined, done: true });
  }

  next(): Promise<IteratorResult<T>> {
    if (this.buffer.length > 0) {
      this.bytes -= this.weights.shift() as number;
      return Promise.resolve({ value: this.buffer.shift() as T, done: false });
    }
    if (this.failure) {
      const { error } = this.failure;
      this.failure = undefined;
      return Promise.reject(error);
    }
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
    });
  }

  return(): Promise<IteratorResult<T>> {
    this.clear();
    this.failure = undefined;
    this.end();
    this.onReturn?.();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}
