/**
 * A push-to-pull queue behind each watch. Producers `push` states as they
 * arrive; the consumer pulls with `for await`. A slow consumer never grows
 * memory without bound: past `limit` buffered items, the oldest ones are
 * merged away, and the newest state is always kept.
 */
export class Channel<T> implements AsyncIterableIterator<T> {
  private readonly buffer: T[] = [];
  /** `next()` calls waiting for an item, oldest first (a consumer may call next() again before one settles). */
  private readonly waiting: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void }[] = [];
  private done = false;
  private failure: { error: unknown } | undefined;
  private readonly limit: number;
  private readonly onReturn: (() => void) | undefined;

  constructor(options: { limit?: number; onReturn?: () => void } = {}) {
    this.limit = options.limit ?? 1024;
    this.onReturn = options.onReturn;
  }

  get closed(): boolean {
    return this.done;
  }

  push(item: T): void {
    if (this.done) return;
    const waiter = this.waiting.shift();
    if (waiter) {
      waiter.resolve({ value: item, done: false });
      return;
    }
    this.buffer.push(item);
    if (this.buffer.length > this.limit) this.buffer.splice(0, this.buffer.length - this.limit);
  }

  /** Replaces whatever is buffered with one item: for producers whose every item is a full state. */
  replace(item: T): void {
    if (this.done) return;
    this.buffer.length = 0;
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
    if (this.buffer.length > 0) return Promise.resolve({ value: this.buffer.shift() as T, done: false });
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
    this.buffer.length = 0;
    this.failure = undefined;
    this.end();
    this.onReturn?.();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}
