import { setMaxListeners } from 'node:events';
import { abortError, ClosedError, KVError, UnavailableError } from './errors.js';

/** The longest delay `setTimeout` honours; a longer one fires at once. */
export const MAX_TIMER_MS = 2_147_483_647;

export interface CallScope {
  /** The caller's signal, if any. */
  readonly user: AbortSignal | undefined;
  /** The store's deadlines: its close, its timeout. */
  readonly deadlines: Deadlines;
  readonly operation: string;
  /**
   * false for writes: once `fn` has started, its request may reach the
   * server, so the caller's abort no longer cuts the call short; it settles
   * with the real outcome (still bounded by the timeout and by a close). An
   * `AbortError` then always means nothing was applied. Default true.
   */
  readonly abortsInFlight?: boolean;
}

/** A call in flight, in the bucket of its deadline until it settles. */
interface Pending {
  readonly operation: string;
  readonly reject: (error: Error) => void;
}

/**
 * The calls that started within one slice of time: they share a deadline and
 * a signal, which aborts only if one of them is still pending when the
 * deadline passes or the store closes. The deadline is set when the slice
 * ends (the timeout after the latest start a call of the bucket can have), so
 * no call times out early, however late the slice's timer fires.
 */
class Bucket {
  readonly controller = new AbortController();
  readonly pending = new Set<Pending>();
  /** Its calls time out then (monotonic ms); unknown while the bucket is open. */
  due = Number.POSITIVE_INFINITY;
  constructor() {
    // Backends listen on the signal once per call: many calls share it.
    setMaxListeners(0, this.controller.signal);
  }
}

/**
 * Bounds the calls of one store without a timer, a controller or a listener
 * per call. Calls join the open bucket; a timer per slice (not per call)
 * closes it and sets its deadline; a bucket whose calls all settled is
 * dropped then, the others wait in a queue (in deadline order: every call of
 * a store has the same timeout) watched by one more timer. One listener on
 * the store's close ends them all. A caller's signal that may abort a call in
 * flight costs that call one listener on it.
 */
export class Deadlines {
  /** ms a bucket stays open: calls time out at most this late. */
  readonly slice: number;
  private readonly queue: Bucket[] = [];
  private current: Bucket | undefined;
  private sliceTimer: ReturnType<typeof setTimeout> | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private armedFor = Number.POSITIVE_INFINITY;

  constructor(
    /** Aborts when the store closes. */
    readonly closing: AbortSignal,
    /** ms */
    readonly timeout: number,
  ) {
    this.slice = Math.max(1, Math.min(50, Math.floor(timeout / 20)));
    closing.addEventListener('abort', () => this.close(), { once: true });
  }

  /** Runs `fn` as described at `runBounded`. */
  run<T>(
    operation: string,
    user: AbortSignal | undefined,
    fn: (signal: AbortSignal) => Promise<T>,
    mapError: (error: unknown) => KVError,
  ): Promise<T> {
    const bucket = this.bucket();
    return new Promise<T>((resolve, reject) => {
      const call: Pending = { operation, reject };
      bucket.pending.add(call);
      const signal = bucket.controller.signal;
      let detach: (() => void) | undefined;
      if (user) {
        // The caller's abort settles the call at once; the work itself runs on to its end or the
        // deadline (a read: nothing to undo), so no controller of its own is needed.
        const onUser = () => {
          if (bucket.pending.delete(call)) reject(abortError(user));
        };
        user.addEventListener('abort', onUser, { once: true });
        detach = () => user.removeEventListener('abort', onUser);
      }
      let result: Promise<T>;
      try {
        result = fn(signal);
      } catch (error) {
        result = Promise.reject(error);
      }
      result.then(
        (value) => {
          detach?.();
          if (bucket.pending.delete(call)) resolve(value);
        },
        (error: unknown) => {
          detach?.();
          if (bucket.pending.delete(call)) reject(KVError.isInstance(error) ? error : mapError(error));
        },
      );
    });
  }

  /** The open bucket, or a new one with its slice's timer. */
  private bucket(): Bucket {
    const open = this.current;
    if (open !== undefined) return open;
    const bucket = new Bucket();
    this.current = bucket;
    this.sliceTimer = setTimeout(() => this.closeSlice(bucket), this.slice);
    this.sliceTimer.unref?.();
    return bucket;
  }

  /** The slice ended: no call joins the bucket any more, its deadline is known. */
  private closeSlice(bucket: Bucket): void {
    this.sliceTimer = undefined;
    if (this.current === bucket) this.current = undefined;
    if (bucket.pending.size === 0) return;
    const now = performance.now();
    bucket.due = now + this.timeout;
    this.queue.push(bucket);
    if (this.timer === undefined) this.arm(now);
  }

  private arm(now: number): void {
    const head = this.queue[0];
    if (head === undefined || this.closing.aborted) return;
    this.armedFor = head.due;
    this.timer = setTimeout(
      () => this.expire(),
      Math.min(MAX_TIMER_MS, Math.max(0, Math.ceil(head.due - now))),
    );
    this.timer.unref?.();
  }

  /** Times out the calls of every bucket due, drops the settled ones, re-arms for the next. */
  private expire(): void {
    this.timer = undefined;
    this.armedFor = Number.POSITIVE_INFINITY;
    const now = performance.now();
    const queue = this.queue;
    let drop = 0;
    while (drop < queue.length) {
      const bucket = queue[drop] as Bucket;
      if (bucket.due <= now) {
        if (bucket.pending.size > 0) this.abort(bucket, 'timeout');
      } else if (bucket.pending.size > 0) {
        break;
      }
      drop++;
    }
    if (drop > 0) queue.splice(0, drop);
    this.arm(now);
  }

  private abort(bucket: Bucket, why: 'timeout' | 'closing'): void {
    const calls = [...bucket.pending];
    bucket.pending.clear();
    for (const call of calls) {
      call.reject(
        why === 'closing'
          ? new ClosedError(`the store was closed during ${call.operation}`)
          : new UnavailableError(`${call.operation} timed out after ${this.timeout} ms`),
      );
    }
    bucket.controller.abort(
      why === 'closing' ? new ClosedError() : new UnavailableError(`timed out after ${this.timeout} ms`),
    );
  }

  private close(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (this.sliceTimer !== undefined) clearTimeout(this.sliceTimer);
    this.timer = undefined;
    this.sliceTimer = undefined;
    const buckets = this.queue.splice(0);
    if (this.current !== undefined) buckets.push(this.current);
    this.current = undefined;
    for (const bucket of buckets) if (bucket.pending.size > 0) this.abort(bucket, 'closing');
  }

  /** Calls in flight (for tests). */
  get pending(): number {
    let n = this.current?.pending.size ?? 0;
    for (const bucket of this.queue) n += bucket.pending.size;
    return n;
  }

  /** The monotonic ms the timer is set for (for tests). */
  get nextDeadline(): number {
    return this.armedFor;
  }
}

/**
 * Runs `fn` with a signal that aborts on the caller's abort, on the store's
 * close and after the store's timeout. The returned promise settles as soon
 * as one of those happens, even if `fn` ignores the signal, so no call can
 * hang. With `abortsInFlight: false` the caller's signal is only checked
 * before `fn` starts. The signal `fn` gets aborts on the timeout and the
 * close, not on the caller's abort (after which the call has settled: the
 * work runs on to its end, bounded by the timeout); it is shared with other
 * calls of the store and may abort after the call settled.
 */
export function runBounded<T>(
  scope: CallScope,
  fn: (signal: AbortSignal) => Promise<T>,
  mapError: (error: unknown) => KVError,
): Promise<T> {
  const { user, deadlines } = scope;
  if (user?.aborted) return Promise.reject(abortError(user));
  if (deadlines.closing.aborted) return Promise.reject(new ClosedError());
  return deadlines.run(scope.operation, scope.abortsInFlight === false ? undefined : user, fn, mapError);
}

/** Resolves after `ms`, or rejects with the signal's `AbortError`. The timer never keeps the process alive. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal));
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError(signal as AbortSignal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    timer.unref?.();
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * A signal that aborts when any of `signals` does, or after `ms` with a
 * `TimeoutError` (a `DOMException`, as `AbortSignal.timeout`'s): what
 * `AbortSignal.any([...signals, AbortSignal.timeout(ms)])` means, without the
 * Node bug that makes that one hang (nodejs/node#57736: a timeout signal that
 * only a composite refers to can be garbage collected, and then never fires;
 * Node 20.20 loses every one of them to a GC). Here the timer holds its
 * controller until it fires, so the timeout always comes. The timer never
 * keeps the process alive.
 */
export function timeoutSignal(ms: number, ...signals: readonly AbortSignal[]): AbortSignal {
  const controller = new AbortController();
  const timer = setTimeout(
    () => controller.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError')),
    Math.min(Math.max(0, ms), MAX_TIMER_MS),
  );
  timer.unref?.();
  return signals.length === 0 ? controller.signal : AbortSignal.any([...signals, controller.signal]);
}

/** Exponential backoff with jitter, for reconnect loops. */
export function backoff(attempt: number, base = 100, max = 5_000): number {
  const ceiling = Math.min(max, base * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}
