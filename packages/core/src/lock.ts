import { abortError, InvalidArgumentError, KVError, LockLostError } from './errors.js';
import type { Lock, LockCallOptions, LockLease } from './types.js';

/**
 * Every duration and deadline of a lock is measured on this monotonic clock:
 * a wall-clock step (NTP, a VM resumed, an operator) must not stretch a
 * loss deadline.
 */
export const monotonicNow = (): number => performance.now();

/** A hold is safe for 3/4 of its ttl after the last confirmed renewal was sent. */
export const lossDeadline = (confirmedSentAt: number, ttl: number): number =>
  confirmedSentAt + Math.floor((ttl * 3) / 4);

/** What a backend hands back once it holds a lock. */
export interface AcquiredLock {
  /** Strictly greater than every token handed out before for this key. */
  readonly fencingToken: number;
  /**
   * `performance.now()` (a monotonic clock, never `Date.now()`) just before
   * the request that won the lock was sent. The server's ttl started after
   * it, so the loss deadline counts from it. Without it the deadline counts
   * from when the grant arrived, which is late by the round trip.
   */
  readonly sentAt?: number;
  /**
   * Extends the hold by the lock's ttl. Rejects with `LockLostError` when the
   * server says this holder no longer holds it; any other rejection counts
   * as "could not reach the server" and is retried until the loss deadline.
   */
  renew(signal: AbortSignal): Promise<void>;
  /** Frees the lock at once, if this holder still holds it. */
  release(signal: AbortSignal): Promise<void>;
}

export interface AcquireRequest {
  readonly value: Uint8Array;
  /** ms */
  readonly ttl: number;
  /** false: `tryLock`, resolve `null` at once if held by another. */
  readonly wait: boolean;
  readonly signal: AbortSignal;
  /** The backend calls this when it learns by itself that the lock is gone (session expired, key deleted). */
  readonly onLost: (reason: string, cause?: unknown) => void;
}

export interface LockHost {
  readonly requestTimeout: number;
  acquire(key: string, request: AcquireRequest): Promise<AcquiredLock | null>;
  /** Throws `ClosedError` when the store is closed. */
  assertOpen(): void;
  readonly closing: AbortSignal;
  track(lock: StoreLock): void;
  untrack(lock: StoreLock): void;
  mapError(error: unknown, operation: string): KVError;
}

/**
 * The `Lock` every backend returns. It owns the parts that are the same
 * everywhere: one hold at a time per object, background renewal every
 * ttl/3, and the loss deadline. When renewal cannot reach the server, `lost`
 * aborts at 3/4 of the ttl after the last renewal that was sent and
 * confirmed, so it always fires before the server can free the lock.
 */
export class StoreLock implements Lock {
  readonly key: string;
  private readonly fullKey: string;
  private readonly value: Uint8Array;
  private readonly ttl: number;
  private readonly host: LockHost;
  private held: Hold | undefined;
  private busy = false;
  private pending: Promise<unknown> | undefined;

  constructor(host: LockHost, key: string, fullKey: string, value: Uint8Array, ttl: number) {
    this.host = host;
    this.key = key;
    this.fullKey = fullKey;
    this.value = value;
    this.ttl = ttl;
  }

  lock(options?: LockCallOptions): Promise<LockLease> {
    return this.take(true, options) as Promise<LockLease>;
  }

  tryLock(options?: LockCallOptions): Promise<LockLease | null> {
    return this.take(false, options);
  }

  private take(wait: boolean, options?: LockCallOptions): Promise<LockLease | null> {
    const unknown =
      options && typeof options === 'object' ? Object.keys(options).filter((n) => n !== 'signal') : [];
    if (unknown.length > 0) {
      return Promise.reject(
        new InvalidArgumentError(`unknown lock call option(s): ${unknown.join(', ')} (accepted: signal)`),
      );
    }
    // Refused here, before `pending` is replaced, so close() still waits for the attempt in flight.
    if (this.held || this.busy) {
      return Promise.reject(
        new InvalidArgumentError(
          `lock ${JSON.stringify(this.key)} is already held or being acquired by this Lock object; unlock() it first or use another newLock()`,
        ),
      );
    }
    const taking = this.acquire(wait, options);
    this.pending = taking;
    return taking;
  }

  private async acquire(wait: boolean, options?: LockCallOptions): Promise<LockLease | null> {
    this.host.assertOpen();
    const user = options?.signal;
    if (user?.aborted) throw abortError(user);
    this.busy = true;
    // Tracked while acquiring too, so close() waits for this attempt to settle.
    this.host.track(this);
    const controller = new AbortController();
    const onUser = () => controller.abort(user?.reason);
    const onClose = () => controller.abort(this.host.closing.reason);
    user?.addEventListener('abort', onUser, { once: true });
    this.host.closing.addEventListener('abort', onClose, { once: true });
    // tryLock is one round trip and gets the request timeout; lock() waits as long as it takes.
    const timer = wait ? undefined : setTimeout(() => controller.abort(), this.host.requestTimeout);
    timer?.unref?.();
    let lostEarly: { reason: string; cause?: unknown } | undefined;
    let hold: Hold | undefined;
    let attempt = 0;
    const started = monotonicNow();
    try {
      for (;;) {
        const current = ++attempt;
        lostEarly = undefined;
        const acquired = await this.host.acquire(this.fullKey, {
          value: this.value,
          ttl: this.ttl,
          wait,
          signal: controller.signal,
          onLost: (reason, cause) => {
            if (current !== attempt) return; // a grant given back below
            if (hold) hold.lose(reason, cause);
            else lostEarly = { reason, cause };
          },
        });
        if (!acquired) return null;
        if (controller.signal.aborted) {
          // Won the race against an abort, a close or the timeout: give it straight back.
          await this.giveBack(acquired);
          throw new Error('aborted after acquiring');
        }
        // Without a valid `sentAt` (on the monotonic clock, after this call began), a tryLock counts
        // from the call (one round trip), a waiting lock() from now.
        const given = acquired.sentAt;
        const valid = typeof given === 'number' && given >= started && given <= monotonicNow();
        const sentAt = valid ? given : wait ? monotonicNow() : started;
        if (monotonicNow() >= lossDeadline(sentAt, this.ttl)) {
          // The grant was processed after its loss deadline (an event-loop stall, a slow reply): the
          // server may already have freed it for someone else. Never hand out such a lease.
          await this.giveBack(acquired);
          if (!wait) return null;
          continue;
        }
        hold = new Hold(this, acquired, this.ttl, this.host, sentAt);
        this.held = hold;
        hold.start();
        // Set by onLost, which TypeScript cannot see run during the await.
        const early = lostEarly as { reason: string; cause?: unknown } | undefined;
        if (early) hold.lose(early.reason, early.cause);
        return hold.lease;
      }
    } catch (error) {
      if (user?.aborted) throw abortError(user);
      this.host.assertOpen();
      if (controller.signal.aborted && !wait) {
        throw this.host.mapError(
          new Error(`tryLock timed out after ${this.host.requestTimeout} ms`),
          'tryLock',
        );
      }
      throw KVError.isInstance(error) ? error : this.host.mapError(error, wait ? 'lock' : 'tryLock');
    } finally {
      this.busy = false;
      if (!this.held) this.host.untrack(this);
      if (timer) clearTimeout(timer);
      user?.removeEventListener('abort', onUser);
      this.host.closing.removeEventListener('abort', onClose);
    }
  }

  private async giveBack(acquired: AcquiredLock): Promise<void> {
    const giveBack = new AbortController();
    const bound = setTimeout(() => giveBack.abort(), this.host.requestTimeout);
    bound.unref?.();
    await acquired.release(giveBack.signal).catch(() => {});
    clearTimeout(bound);
  }

  /** For close(): lets an acquisition in flight settle (it is aborted by the close), then releases. */
  async settle(): Promise<void> {
    await this.pending?.catch(() => {});
    await this.unlock();
  }

  async unlock(): Promise<void> {
    const hold = this.held;
    if (!hold) return;
    this.held = undefined;
    this.host.untrack(this);
    await hold.release();
  }

  /** Called by a Hold that was lost, so the object can lock again. */
  forget(hold: Hold): void {
    if (this.held === hold) {
      this.held = undefined;
      this.host.untrack(this);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.unlock();
  }
}

class Hold {
  readonly lease: LockLease;
  private readonly controller = new AbortController();
  private readonly owner: StoreLock;
  private readonly acquired: AcquiredLock;
  private readonly ttl: number;
  private readonly host: LockHost;
  private renewTimer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private renewing: AbortController | undefined;
  private readonly acquiredSentAt: number;
  /** Monotonic time after which this hold may no longer be held on the server. */
  private deadline = 0;

  constructor(owner: StoreLock, acquired: AcquiredLock, ttl: number, host: LockHost, sentAt: number) {
    this.owner = owner;
    this.acquired = acquired;
    this.ttl = ttl;
    this.host = host;
    this.acquiredSentAt = sentAt;
    this.lease = Object.freeze({ lost: this.controller.signal, fencingToken: acquired.fencingToken });
  }

  start(): void {
    // The acquisition counts as a confirmed renewal, sent at `sentAt`.
    this.armDeadline(this.acquiredSentAt);
    // The first renewal is due ttl/3 after that confirmation, not after now: a backend's `sentAt` can
    // be older than the acquisition (etcd: a queued waiter's lock lease was last renewed up to ttl/3
    // before it got the lock), and counting from now would leave the renewal only ttl/12 to land.
    this.scheduleRenew(Math.max(1, Math.floor(this.acquiredSentAt + this.ttl / 3 - monotonicNow())));
  }

  private armDeadline(confirmedSentAt: number): void {
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    const deadline = lossDeadline(confirmedSentAt, this.ttl);
    this.deadline = deadline;
    this.deadlineTimer = setTimeout(
      () =>
        this.lose(`could not renew it for ${Math.floor((this.ttl * 3) / 4)} ms of its ${this.ttl} ms ttl`),
      Math.max(0, deadline - monotonicNow()),
    );
    this.deadlineTimer.unref?.();
  }

  private scheduleRenew(delayMs = Math.max(1, Math.floor(this.ttl / 3))): void {
    if (this.controller.signal.aborted) return;
    this.renewTimer = setTimeout(() => void this.renew(), delayMs);
    this.renewTimer.unref?.();
  }

  private async renew(): Promise<void> {
    if (this.controller.signal.aborted) return;
    const sentAt = monotonicNow();
    if (sentAt >= this.deadline) {
      // The deadline passed while its timer could not run (an event-loop stall): lost, not renewable.
      this.lose(`could not renew it for ${Math.floor((this.ttl * 3) / 4)} ms of its ${this.ttl} ms ttl`);
      return;
    }
    const attempt = new AbortController();
    this.renewing = attempt;
    const timer = setTimeout(
      () => attempt.abort(),
      Math.max(1, Math.min(this.host.requestTimeout, this.ttl / 3)),
    );
    timer.unref?.();
    try {
      await this.acquired.renew(attempt.signal);
      if (this.controller.signal.aborted) return;
      this.armDeadline(sentAt);
      this.scheduleRenew();
    } catch (error) {
      if (this.controller.signal.aborted) return;
      if (LockLostError.isInstance(error)) {
        this.lose(error.reason, error);
        return;
      }
      // Unreachable for now: retry soon; the deadline decides when it is lost.
      this.scheduleRenew(Math.max(1, Math.min(250, Math.floor(this.ttl / 10))));
    } finally {
      clearTimeout(timer);
      if (this.renewing === attempt) this.renewing = undefined;
    }
  }

  private stopTimers(): void {
    if (this.renewTimer) clearTimeout(this.renewTimer);
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.renewing?.abort();
  }

  lose(reason: string, cause?: unknown): void {
    if (this.controller.signal.aborted) return;
    this.stopTimers();
    const key = this.owner.key;
    this.controller.abort(new LockLostError(key, reason, cause === undefined ? undefined : { cause }));
    this.owner.forget(this);
    // Free it on the server too if we still can, so a waiter need not wait for the ttl.
    void this.releaseOnServer().catch(() => {});
  }

  async release(): Promise<void> {
    if (this.controller.signal.aborted) return;
    this.stopTimers();
    const released = new Error(`lock ${JSON.stringify(this.owner.key)} was released`);
    released.name = 'LockReleased';
    this.controller.abort(released);
    await this.releaseOnServer();
  }

  private async releaseOnServer(): Promise<void> {
    const attempt = new AbortController();
    const timer = setTimeout(() => attempt.abort(), this.host.requestTimeout);
    timer.unref?.();
    try {
      await this.acquired.release(attempt.signal);
    } catch (error) {
      if (attempt.signal.aborted) {
        throw this.host.mapError(
          new Error(`unlock timed out after ${this.host.requestTimeout} ms`),
          'unlock',
        );
      }
      throw KVError.isInstance(error) ? error : this.host.mapError(error, 'unlock');
    } finally {
      clearTimeout(timer);
    }
  }
}
