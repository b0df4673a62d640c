import { describe, expect, it } from 'vitest';
import { runBounded } from '../src/call.js';
import { backoff, ClosedError, delay, KeyNotFoundError, UnavailableError } from '../src/index.js';

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
  const scope = (extra: Partial<Parameters<typeof runBounded>[0]> = {}) => ({
    user: undefined,
    closing: new AbortController().signal,
    timeout: 1_000,
    operation: 'get',
    ...extra,
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
