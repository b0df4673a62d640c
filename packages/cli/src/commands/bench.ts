import { randomUUID } from 'node:crypto';
import { createStore, InvalidArgumentError, type Store } from '@kv/core';
import type { Context } from '../context.js';
import { parseIndex } from '../durations.js';
import { nextTick } from '../event-loop.js';
import { EXIT_CODES } from '../exit-codes.js';

export interface BenchOptions {
  ops?: string;
  lockOps?: string;
  valueSize?: string;
  dir?: string;
}

/** One measured call: how many per second (run one after another) and the latency percentiles. */
export interface Figure {
  name: string;
  ops: number;
  opsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
}

/** Runs `fn` `count` times in a row; durations on the monotonic clock. */
async function measure(
  name: string,
  count: number,
  signal: AbortSignal,
  fn: (i: number) => Promise<unknown>,
): Promise<Figure> {
  const samples: number[] = [];
  const start = performance.now();
  for (let i = 0; i < count && !signal.aborted; i++) {
    const t = performance.now();
    await fn(i);
    samples.push(performance.now() - t);
    // An embedded store (SQLite) answers in microtasks only: let signals (Ctrl-C) and timers in now and then.
    if (i % 64 === 63) await nextTick();
  }
  const total = (performance.now() - start) / 1000;
  samples.sort((a, b) => a - b);
  const pct = (p: number) =>
    samples[Math.min(samples.length - 1, Math.floor((samples.length * p) / 100))] ?? 0;
  const round = (x: number) => Math.round(x * 1000) / 1000;
  return {
    name,
    ops: samples.length,
    opsPerSecond: total > 0 ? Math.round(samples.length / total) : 0,
    p50Ms: round(pct(50)),
    p99Ms: round(pct(99)),
  };
}

function count(text: string | undefined, fallback: number, what: string): number {
  if (text === undefined) return fallback;
  const n = parseIndex(text, what);
  if (n < 1) throw new InvalidArgumentError(`${what} must be at least 1, got ${n}`);
  return n;
}

/**
 * `kv bench`: the figures of `scripts/bench.mjs` for the store at --url: put, get, CAS, list,
 * lock + unlock, put -> watch event. Writes only below its own directory (removed at the end).
 */
export async function benchCommand(ctx: Context, options: BenchOptions): Promise<number> {
  const ops = count(options.ops, 200, '--ops');
  const lockOps = count(options.lockOps, 50, '--lock-ops');
  const valueSize = options.valueSize === undefined ? 100 : parseIndex(options.valueSize, '--value-size');
  const dir = options.dir ?? `kv-bench-${randomUUID().slice(0, 8)}`;
  const value = 'x'.repeat(valueSize);
  const { out } = ctx;
  const signal = ctx.interrupted;
  const url = ctx.storeUrl();
  await ctx.withStore(async (store) => {
    if (store.capabilities.maxValueSize < valueSize) {
      throw new InvalidArgumentError(
        `--value-size ${valueSize} is over the ${store.backend} backend's maxValueSize (${store.capabilities.maxValueSize})`,
      );
    }
    if (!out.json) {
      out.line(`kv bench: ${store.backend}, ${ops} operations each, ${valueSize}-byte values, below ${dir}/`);
      out.line();
    }
    const report = (figure: Figure) => {
      if (out.json) {
        out.record(figure);
        return;
      }
      out.line(
        `${figure.name.padEnd(24)} ${String(figure.opsPerSecond).padStart(7)} ops/s   p50 ${figure.p50Ms.toFixed(3)} ms   p99 ${figure.p99Ms.toFixed(3)} ms`,
      );
    };
    const key = (i: number) => `${dir}/k${i}`;
    // Each figure in turn; Ctrl-C stops after the one being measured (the directory is still removed).
    const steps: (() => Promise<Figure | undefined>)[] = [
      () => measure('put', ops, signal, (i) => store.put(key(i), value)),
      () => measure('get', ops, signal, (i) => store.get(key(i))),
      () =>
        measure('atomicPut (CAS)', ops, signal, async (i) => {
          const pair = await store.get(key(i));
          await store.atomicPut(key(i), value, pair);
        }),
      () => measure(`list (${ops} keys)`, 20, signal, () => store.list(dir)),
      async () => {
        if (!store.capabilities.lock) return skipped(ctx, 'lock + unlock', store);
        return measure('lock + unlock', lockOps, signal, async () => {
          const lock = store.newLock(`${dir}-lock`);
          await lock.lock({ signal });
          await lock.unlock();
        });
      },
      async () => {
        if (!store.capabilities.watch) return skipped(ctx, 'put -> watch event', store);
        return watchLatency(store, url, `${dir}/watched`, Math.min(ops, 200), signal);
      },
    ];
    try {
      for (const step of steps) {
        const figure = await step();
        if (signal.aborted) break;
        if (figure) report(figure);
      }
    } finally {
      await store.deleteTree(dir);
    }
  }, url);
  return EXIT_CODES.OK;
}

function skipped(ctx: Context, name: string, store: Store): undefined {
  const reason = `not supported by the ${store.backend} backend`;
  if (ctx.out.json) ctx.out.record({ name, skipped: reason });
  else ctx.out.line(`${name.padEnd(24)} ${ctx.out.color.dim(`skipped: ${reason}`)}`);
}

/** A put in one store to the event in another store's watch (two connections, as two processes would). */
async function watchLatency(
  store: Store,
  url: string,
  key: string,
  count: number,
  signal: AbortSignal,
): Promise<Figure> {
  const other = await createStore(url);
  const stop = new AbortController();
  try {
    const events = other.watch(key, { signal: stop.signal })[Symbol.asyncIterator]();
    await events.next(); // the current state
    return await measure('put -> watch event', count, signal, async (i) => {
      await store.put(key, String(i));
      // A watch may merge states under load, but never loses the latest one: wait for this value.
      for (;;) {
        const next = await events.next();
        if (next.done || (next.value && Buffer.from(next.value.value).toString() === String(i))) break;
      }
    });
  } finally {
    stop.abort();
    await other.close();
  }
}
