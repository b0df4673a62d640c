import { afterEach, describe, expect, it, vi } from 'vitest';
import { within } from '../src/conformance/harness.js';
import { LockLostError, UnavailableError } from '../src/errors.js';
import { type AcquiredLock, type AcquireRequest, type LockHost, StoreLock } from '../src/lock.js';
import type { LockLease } from '../src/types.js';

/** Blocks the event loop, as a long synchronous task or a GC pause would. */
function stall(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // spin
  }
}

interface Grant {
  /** Runs between taking `sentAt` and handing the grant back (a stall goes here). */
  readonly beforeReply?: () => void;
  /** ms the acquire waits (a waiter in a queue) before it gets the lock. */
  readonly waits?: number;
  /** ms before the grant that its `sentAt` says the hold was last confirmed (default 0). */
  readonly confirmedAgo?: number;
  readonly renew?: (n: number) => Promise<void>;
}

/** A LockHost whose n-th acquire behaves as `grants[n]` says; it records what was released. */
function host(grants: Grant[]) {
  const closing = new AbortController();
  const state = { acquires: 0, released: [] as number[], renewals: 0 };
  const lockHost: LockHost = {
    requestTimeout: 2_000,
    closing: closing.signal,
    assertOpen: () => {},
    track: () => {},
    untrack: () => {},
    mapError: (error) => new UnavailableError(String(error)),
    acquire: async (_key: string, _request: AcquireRequest): Promise<AcquiredLock | null> => {
      const n = state.acquires++;
      const grant = grants[Math.min(n, grants.length - 1)] ?? {};
      if (grant.waits) await new Promise((resolve) => setTimeout(resolve, grant.waits));
      const sentAt = performance.now() - (grant.confirmedAgo ?? 0);
      await Promise.resolve();
      grant.beforeReply?.();
      return {
        fencingToken: n + 1,
        sentAt,
        renew: async () => {
          state.renewals++;
          await (grant.renew?.(state.renewals) ?? Promise.resolve());
        },
        release: async () => {
          state.released.push(n + 1);
        },
      };
    },
  };
  return { lockHost, state, close: () => closing.abort() };
}

function lostAt(lease: LockLease): Promise<number> {
  return new Promise((resolve) => {
    if (lease.lost.aborted) resolve(performance.now());
    else lease.lost.addEventListener('abort', () => resolve(performance.now()), { once: true });
  });
}

const TTL = 1_000;
const value = new Uint8Array();

afterEach(() => {
  vi.restoreAllMocks();
});

describe('a grant processed after its loss deadline is never handed out', () => {
  it('tryLock() gives it back and returns null', async () => {
    const { lockHost, state } = host([{ beforeReply: () => stall(1_600) }]);
    const lock = new StoreLock(lockHost, 'k', 'k', value, TTL);
    expect(await lock.tryLock()).toBeNull();
    expect(state.released, 'the late grant is released on the server').toEqual([1]);
  });

  it('lock() gives it back and goes on waiting for a grant in time', async () => {
    const { lockHost, state } = host([{ beforeReply: () => stall(1_600) }, {}]);
    const lock = new StoreLock(lockHost, 'k', 'k', value, TTL);
    const lease = await lock.lock();
    expect(lease.lost.aborted).toBe(false);
    expect(lease.fencingToken, 'the lease is the second grant').toBe(2);
    expect(state.acquires).toBe(2);
    expect(state.released).toEqual([1]);
    await lock.unlock();
  });

  it('a grant in time is handed out with lost not aborted', async () => {
    const { lockHost } = host([{ beforeReply: () => stall(200) }]);
    const lock = new StoreLock(lockHost, 'k', 'k', value, TTL);
    const lease = await lock.tryLock();
    expect(lease?.lost.aborted).toBe(false);
    await lock.unlock();
  });
});

describe('renewals count from the confirmation the loss deadline counts from', () => {
  it('a grant confirmed well before the acquisition (an etcd waiter that queued) is renewed in time and stays held', async () => {
    // It waited 500 ms in the queue; its lock lease was last confirmed 400 ms of a 1 s ttl before the
    // grant, so the loss deadline is 350 ms after the grant. Each renewal takes 50 ms to come back:
    // renewing a third of the ttl after the grant (at 333 ms, back at 383 ms) would be too late.
    let third: () => void = () => {};
    const renewedThrice = new Promise<void>((resolve) => {
      third = resolve;
    });
    const { lockHost } = host([
      {
        waits: 500,
        confirmedAgo: 400,
        renew: async (n) => {
          await new Promise((resolve) => setTimeout(resolve, 50));
          if (n >= 3) third();
        },
      },
    ]);
    const lock = new StoreLock(lockHost, 'k', 'k', value, TTL);
    const lease = await lock.lock();
    const lost = lostAt(lease);
    await within(
      Promise.race([
        renewedThrice,
        lost.then(() => Promise.reject(new Error('lost before its third renewal'))),
      ]),
      5_000,
      'three renewals',
    );
    expect(lease.lost.aborted).toBe(false);
    await lock.unlock();
  });
});

describe('loss deadlines run on a monotonic clock', () => {
  it('a wall-clock step back during a renewal does not delay lost', async () => {
    const realNow = Date.now.bind(Date);
    const { lockHost } = host([
      {
        renew: async (n) => {
          if (n === 1) {
            // The wall clock steps back 10 s while the first renewal is in flight; it then succeeds.
            vi.spyOn(Date, 'now').mockImplementation(() => realNow() - 10_000);
            return;
          }
          throw new Error('server unreachable');
        },
      },
    ]);
    const lock = new StoreLock(lockHost, 'k', 'k', value, TTL);
    const lease = await lock.lock();
    const granted = performance.now();
    const at = await within(lostAt(lease), 6_000, 'lost did not abort');
    // Last confirmed renewal sent at ~ttl/3: lost is due at ~ttl/3 + 3/4 ttl, not 10 s later.
    expect(at - granted, 'not before the confirmed renewal ran out').toBeGreaterThanOrEqual(TTL);
    expect(at - granted).toBeLessThan(TTL * 2);
    expect(LockLostError.isInstance(lease.lost.reason)).toBe(true);
  });

  it('a renewal due after the deadline passed (event-loop stall) loses the lock instead of renewing', async () => {
    const { lockHost, state } = host([{}]);
    const lock = new StoreLock(lockHost, 'k', 'k', value, TTL);
    const lease = await lock.lock();
    stall(1_200); // both the renewal (ttl/3) and the deadline (3/4 ttl) are overdue now
    await within(lostAt(lease), 2_000, 'lost did not abort');
    expect(state.renewals, 'no renewal was sent past the deadline').toBe(0);
  });
});

describe('LockLostError', () => {
  it('a loss the backend reports does not repeat the key in the message', async () => {
    const { lockHost } = host([
      {
        renew: async () => {
          throw new LockLostError('k', 'its key was deleted');
        },
      },
    ]);
    const lock = new StoreLock(lockHost, 'k', 'k', value, TTL);
    const lease = await lock.lock();
    await within(lostAt(lease), 2_000, 'lost did not abort');
    const reason = lease.lost.reason as LockLostError;
    expect(reason.message).toBe('lock "k" lost: its key was deleted');
    expect(reason.reason).toBe('its key was deleted');
  });
});
