import { once } from 'node:events';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { Deadlines, runBounded } from '../src/call.js';
import {
  backoff,
  ClosedError,
  delay,
  KeyNotFoundError,
  timeoutSignal,
  UnavailableError,
} from '../src/index.js';

const never = () => new Promise<never>(() => {});
const map = (error: unknown) => new UnavailableError(`mapped: ${String(error)}`, { cause: error });

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a rejection');
}

describe('runBounded', () => {
  interface ScopeOptions {
    user?: AbortSignal;
    closing?: AbortSignal;
    timeout?: number;
    abortsInFlight?: boolean;
  }
  const scope = (extra: ScopeOptions = {}) => ({
    user: extra.user,
    deadlines: new Deadlines(extra.closing ?? new AbortController().signal, extra.timeout ?? 1_000),
    operation: 'get',
    ...(extra.abortsInFlight === undefined ? {} : { abortsInFlight: extra.abortsInFlight }),
  });

  it('resolves with the call', async () => {
    expect(await runBounded(scope(), async () => 42, map)).toBe(42);
  });

  it('an aborted signal rejects with an AbortError carrying the reason, without calling', async () => {
    const controller = new AbortController();
    const reason = new Error('stop');
    controller.abort(reason);
    let called = false;
    const error = await rejection(
      runBounded(
        scope({ user: controller.signal }),
        async () => {
          called = true;
        },
        map,
      ),
    );
    expect(error.name).toBe('AbortError');
    expect(error.cause).toBe(reason);
    expect(called).toBe(false);
  });

  it('an abort during the call settles at once even if the call ignores it', async () => {
    const controller = new AbortController();
    const pending = runBounded(scope({ user: controller.signal, timeout: 60_000 }), never, map);
    controller.abort('late');
    const error = await rejection(pending);
    expect(error.name).toBe('AbortError');
    expect(error.cause).toBe('late');
  });

  it('a closed or closing store is ClosedError', async () => {
    const closed = new AbortController();
    closed.abort();
    expect(
      ClosedError.isInstance(await rejection(runBounded(scope({ closing: closed.signal }), never, map))),
    ).toBe(true);
    const closing = new AbortController();
    const pending = runBounded(scope({ closing: closing.signal, timeout: 60_000 }), never, map);
    closing.abort();
    expect(ClosedError.isInstance(await rejection(pending))).toBe(true);
  });

  it('a call that takes longer than the timeout is an UnavailableError naming the operation', async () => {
    const error = await rejection(runBounded(scope({ timeout: 20 }), never, map));
    expect(UnavailableError.isInstance(error)).toBe(true);
    expect(error.message).toContain('get');
  });

  it('a call that never settles rejects with the timeout error, not before its timeout, and aborts its signal', async () => {
    const deadlines = new Deadlines(new AbortController().signal, 40);
    let seen: AbortSignal | undefined;
    const start = performance.now();
    const error = await rejection(
      runBounded(
        { user: undefined, deadlines, operation: 'put' },
        (signal) => {
          seen = signal;
          return never();
        },
        map,
      ),
    );
    expect(performance.now() - start).toBeGreaterThanOrEqual(40);
    expect(UnavailableError.isInstance(error)).toBe(true);
    expect(error.message).toBe('put timed out after 40 ms');
    expect(seen?.aborted).toBe(true);
    expect(deadlines.pending).toBe(0);
  });

  it('calls started at different times on one store each time out, the settled ones do not', async () => {
    const deadlines = new Deadlines(new AbortController().signal, 30);
    const call = (fn: () => Promise<unknown>) =>
      runBounded({ user: undefined, deadlines, operation: 'get' }, fn, map);
    const first = rejection(call(never));
    const quick = call(async () => 'done');
    await delay(20);
    const second = rejection(call(never));
    expect(await quick).toBe('done');
    expect(UnavailableError.isInstance(await first)).toBe(true);
    expect(deadlines.pending).toBe(1);
    expect(UnavailableError.isInstance(await second)).toBe(true);
    expect(deadlines.pending).toBe(0);
  });

  it("a write does not stop at the caller's abort once started: it settles with the outcome", async () => {
    const controller = new AbortController();
    let finish: (value: string) => void = () => {};
    const pending = runBounded(
      scope({ user: controller.signal, abortsInFlight: false }),
      () =>
        new Promise<string>((resolve) => {
          finish = resolve;
        }),
      map,
    );
    controller.abort('late');
    finish('applied');
    expect(await pending).toBe('applied');
  });

  it("a read settles at once on the caller's abort; its signal still aborts at the deadline", async () => {
    const controller = new AbortController();
    let seen: AbortSignal | undefined;
    const deadlines = new Deadlines(new AbortController().signal, 30);
    const pending = runBounded(
      { user: controller.signal, deadlines, operation: 'get' },
      (signal) => {
        seen = signal;
        return never();
      },
      map,
    );
    controller.abort('stop');
    expect((await rejection(pending)).name).toBe('AbortError');
    expect(deadlines.pending).toBe(0);
    // Nothing is pending any more: the shared signal is never aborted for it.
    await delay(60);
    expect(seen?.aborted).toBe(false);
  });

  it('maps raw errors, passes KVErrors through', async () => {
    const raw = await rejection(
      runBounded(
        scope(),
        async () => {
          throw new TypeError('socket');
        },
        map,
      ),
    );
    expect(raw.message).toBe('mapped: TypeError: socket');
    const kv = new KeyNotFoundError('k');
    expect(
      await rejection(
        runBounded(
          scope(),
          async () => {
            throw kv;
          },
          map,
        ),
      ),
    ).toBe(kv);
  });
});

describe('delay and backoff', () => {
  it('delay resolves, or rejects with the AbortError of its signal', async () => {
    await delay(1);
    const controller = new AbortController();
    const pending = delay(60_000, controller.signal);
    controller.abort('x');
    const error = await rejection(pending);
    expect(error.name).toBe('AbortError');
    expect(error.cause).toBe('x');
  });

  it('backoff grows with the attempt, with jitter, and is capped', () => {
    for (let attempt = 0; attempt < 30; attempt++) {
      const ceiling = Math.min(5_000, 100 * 2 ** Math.min(attempt, 16));
      const value = backoff(attempt);
      expect(value).toBeGreaterThanOrEqual(ceiling / 2);
      expect(value).toBeLessThanOrEqual(ceiling);
    }
  });
});

describe('timeoutSignal', () => {
  // A real collection, as the process's own would run mid-call.
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;

  it('times out even when garbage collection runs before the timeout (AbortSignal.any + AbortSignal.timeout does not on Node 20)', async () => {
    const parent = new AbortController();
    // Only the composite is kept, as a pending request keeps its signal.
    const signals = Array.from({ length: 50 }, () => timeoutSignal(100, parent.signal));
    for (let i = 0; i < 5; i++) {
      gc();
      await delay(5);
    }
    await Promise.all(signals.map((signal) => (signal.aborted ? undefined : once(signal, 'abort'))));
    for (const signal of signals) expect((signal.reason as DOMException).name).toBe('TimeoutError');
    expect(parent.signal.aborted).toBe(false);
  });

  it("aborts with a parent's reason when a parent aborts first, and at once for one already aborted", () => {
    const parent = new AbortController();
    const other = new AbortController();
    const signal = timeoutSignal(60_000, parent.signal, other.signal);
    expect(signal.aborted).toBe(false);
    const reason = new Error('mine');
    other.abort(reason);
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBe(reason);
    expect(timeoutSignal(60_000, other.signal).reason).toBe(reason);
    expect(timeoutSignal(60_000).aborted).toBe(false);
  });
});
