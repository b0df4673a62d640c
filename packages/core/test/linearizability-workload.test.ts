import { describe, expect, it } from 'vitest';
import {
  expectProgress,
  LINEARIZABLE_MIN_DURING_FAULTS,
  LINEARIZABLE_MIN_FINISHED,
  runWorkload,
} from '../src/conformance/fault-cases.js';
import { checkKVHistory, type KVOperation } from '../src/conformance/linearizability.js';
import { createStore, type Store, UnavailableError } from '../src/index.js';

const CALLS = new Set(['get', 'put', 'atomicPut', 'atomicDelete', 'delete']);

/** A memory store whose calls fail (after a short wait, as a timed-out call does) while `down()` says so. */
function faulty(store: Store, down: () => boolean): Store {
  return new Proxy(store, {
    get(target, name, receiver) {
      const member = Reflect.get(target, name, receiver);
      if (typeof name !== 'string' || !CALLS.has(name)) return member;
      return (...args: unknown[]) => {
        if (!down()) return (member as (...a: unknown[]) => Promise<unknown>).apply(target, args);
        return new Promise((_, reject) =>
          setTimeout(() => reject(new UnavailableError('cut off (test)')), 20),
        );
      };
    },
  });
}

const finished = (history: KVOperation[]) => history.filter((o) => o.ret !== Number.POSITIVE_INFINITY).length;

async function clients(name: string, down: () => boolean): Promise<Store[]> {
  const stores: Store[] = [];
  for (let i = 0; i < 5; i++) {
    stores.push(faulty(await createStore({ backend: 'memory', name, prefix: 'lin' }), down));
  }
  return stores;
}

// timeScale 0.1: the run after a heal lasts at most 800 ms.
const options = { timeScale: 0.1, consistent: true };

describe('the linearizability workload (runWorkload, expectProgress)', () => {
  it('a run whose faults left too few finished calls goes on after the heal until the history has enough', async () => {
    let cut = true;
    const stores = await clients('workload-topup', () => cut);
    const history: KVOperation[] = [];
    // Heals a little after the run's end: a call started just before the end fails too (at most one a client).
    const nemesis = new Promise<void>((resolve) =>
      setTimeout(() => {
        cut = false;
        resolve();
      }, 450),
    );
    const run = await runWorkload(stores, performance.now() + 300, history, nemesis, options);
    // The calls of the faulty part failed (a straggler may finish after the heal): too few; the clients went on, healed.
    expect(run.duringFaults).toBeLessThanOrEqual(LINEARIZABLE_MIN_DURING_FAULTS);
    expect(run.afterHeal).toBeGreaterThan(LINEARIZABLE_MIN_FINISHED);
    expect(finished(history)).toBe(run.duringFaults + run.afterHeal);
    expect(checkKVHistory(history).ok).toBe(true);
    // Still not progress: too few finished while the nemesis ran.
    expect(() => expectProgress(run, 'test')).toThrow(/while the nemesis ran/);
    await Promise.all(stores.map((s) => s.close()));
  });

  it('a store that never serves again fails, within the bounded run after the heal', async () => {
    const stores = await clients('workload-dead', () => true);
    const history: KVOperation[] = [];
    const began = performance.now();
    const run = await runWorkload(stores, began + 200, history, Promise.resolve(), options);
    expect(performance.now() - began).toBeLessThan(5_000);
    expect(run).toEqual({ duringFaults: 0, afterHeal: 0, unknown: history.length });
    expect(() => expectProgress(run, 'test')).toThrow();
    await Promise.all(stores.map((s) => s.close()));
  });

  it('a run with enough finished calls through its faults is not extended, and passes', async () => {
    const stores = await clients('workload-healthy', () => false);
    const history: KVOperation[] = [];
    const run = await runWorkload(stores, performance.now() + 600, history, Promise.resolve(), options);
    expect(run.duringFaults).toBeGreaterThan(LINEARIZABLE_MIN_FINISHED);
    expect(run.afterHeal).toBe(0);
    expect(run.duringFaults).toBeGreaterThan(LINEARIZABLE_MIN_DURING_FAULTS);
    expectProgress(run, 'test');
    expect(checkKVHistory(history).ok).toBe(true);
    await Promise.all(stores.map((s) => s.close()));
  });
});
