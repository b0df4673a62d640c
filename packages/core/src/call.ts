import { abortError, ClosedError, KVError, UnavailableError } from './errors.js';

/** The longest delay `setTimeout` honours; a longer one fires at once. */
export const MAX_TIMER_MS = 2_147_483_647;

export interface CallScope {
  /** The caller's signal, if any. */
  readonly user: AbortSignal | undefined;
  /** Aborts when the store closes. */
  readonly closing: AbortSignal;
  /** ms */
  readonly timeout: number;
  readonly operation: string;
  /**
   * false for writes: once `fn` has started, its request may reach the
   * server, so the caller's abort no longer cuts the call short; it settles
   * with the real outcome (still bounded by `timeout` and by a close). An
   * `AbortError` then always means nothing was applied. Default true.
   */
  readonly abortsInFlight?: boolean;
}

/**
 * Runs `fn` with a signal that aborts on the caller's abort, on the store's
 * close and after `timeout`. The returned promise settles as soon as the
 * signal aborts, even if `fn` ignores it, so no call can hang. With
 * `abortsInFlight: false` the caller's signal is only checked before `fn`
 * starts.
 */
export async function runBounded<T>(
  scope: CallScope,
  fn: (signal: AbortSignal) => Promise<T>,
  mapError: (error: unknown) => KVError,
): Promise<T> {
  const { user, closing, timeout, operation } = scope;
  if (user?.aborted) throw abortError(user);
  if (closing.aborted) throw new ClosedError();
  const controller = new AbortController();
  let why: 'user' | 'closing' | 'timeout' | undefined;
  let rejectAbort: (error: unknown) => void = () => {};
  const aborted = new Promise<never>((_, reject) => {
    rejectAbort = reject;
  });
  const reasonError = (): Error => {
    if (why === 'user' && user) return abortError(user);
    if (why === 'closing') return new ClosedError(`the store was closed during ${operation}`);
    return new UnavailableError(`${operation} timed out after ${timeout} ms`);
  };
  const stop = (reason: 'user' | 'closing' | 'timeout') => {
    if (why) return;
    why = reason;
    const error = reasonError();
    controller.abort(error);
    rejectAbort(error);
  };
  const onUser = () => stop('user');
  const onClosing = () => stop('closing');
  const listensToUser = scope.abortsInFlight !== false;
  if (listensToUser) user?.addEventListener('abort', onUser, { once: true });
  closing.addEventListener('abort', onClosing, { once: true });
  const timer = setTimeout(() => stop('timeout'), timeout);
  timer.unref?.();
  aborted.catch(() => {});
  try {
    return await Promise.race([fn(controller.signal), aborted]);
  } catch (error) {
    if (why) throw reasonError();
    throw KVError.isInstance(error) ? error : mapError(error);
  } finally {
    clearTimeout(timer);
    user?.removeEventListener('abort', onUser);
    closing.removeEventListener('abort', onClosing);
  }
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

/** Exponential backoff with jitter, for reconnect loops. */
export function backoff(attempt: number, base = 100, max = 5_000): number {
  const ceiling = Math.min(max, base * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}
