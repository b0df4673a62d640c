// Prints throughput and latency of the common calls on one store.
//   node scripts/bench.mjs [url] [n]
// The last figure, "watchTree lag", watches a 20k-key directory through a
// 6000-write burst (KV_BENCH_TREE_KEYS, KV_BENCH_TREE_WRITES to change them;
// KV_BENCH_TREE_SAME_PROCESS=0 skips the round with the writer in this process).
// Default: a throwaway SQLite file. For a network backend run it from that
// backend's package so @kv/backend-<name> resolves, e.g.
//   (cd packages/backend-redis && node ../../scripts/bench.mjs redis://127.0.0.1:6379/bench)
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createStore } from '@kv/core';

const treeKeys = Number(process.env.KV_BENCH_TREE_KEYS ?? 20_000);
const treeWrites = Number(process.env.KV_BENCH_TREE_WRITES ?? 6_000);
const burstKey = (i) => `lag/k${(i * 7919) % treeKeys}`;
const now = () => performance.timeOrigin + performance.now();

if (process.env.KV_BENCH_BURST_WRITER) {
  // The writer of the watchTree lag figure, started by the bench itself.
  const writer = await createStore(process.argv[2]);
  const start = now();
  for (let i = 0; i < treeWrites; i++) await writer.put(burstKey(i), `burst-${i}`);
  const last = now();
  await writer.close();
  process.stdout.write(JSON.stringify({ last, took: last - start }));
  process.exit(0);
}

const dir = mkdtempSync(join(tmpdir(), 'kv-bench-'));
const url = process.argv[2] ?? `sqlite:${join(dir, 'bench.db')}`;
const n = Number(process.argv[3] ?? 2000);
const store = await createStore(url);
const other = await createStore(url);
const value = 'x'.repeat(100);

async function time(name, count, fn) {
  const samples = [];
  const start = process.hrtime.bigint();
  for (let i = 0; i < count; i++) {
    const t = process.hrtime.bigint();
    await fn(i);
    samples.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  const total = Number(process.hrtime.bigint() - start) / 1e9;
  samples.sort((a, b) => a - b);
  const pct = (p) => samples[Math.min(samples.length - 1, Math.floor((samples.length * p) / 100))].toFixed(3);
  console.log(
    `${name.padEnd(28)} ${String(Math.round(count / total)).padStart(7)} ops/s   p50 ${pct(50)} ms   p99 ${pct(99)} ms`,
  );
}

console.log(`kv bench: ${store.backend}, ${n} operations each, 100-byte values\n`);
await time('put', n, (i) => store.put(`bench/k${i}`, value));
await time('get', n, (i) => store.get(`bench/k${i}`));
await time('atomicPut (CAS)', n, async (i) => {
  const pair = await store.get(`bench/k${i}`);
  await store.atomicPut(`bench/k${i}`, value, pair);
});
await time(`list (${n} keys)`, 20, () => store.list('bench'));
await time('lock + unlock', Math.min(n, 500), async () => {
  const lock = store.newLock('bench-lock');
  await lock.lock();
  await lock.unlock();
});

// Put in one store -> event in another store's watch.
{
  const iterator = other.watch('bench/watched')[Symbol.asyncIterator]();
  await iterator.next();
  await time('put -> watch event', Math.min(n, 500), async (i) => {
    await store.put('bench/watched', String(i));
    await iterator.next();
  });
  await iterator.return();
}

// watchTree lag: a big directory watched here, a burst of writes; how far
// behind the last write the watcher's last yielded listing is. The writer runs
// in another process (so the watcher's work cannot slow it down), then in this
// one (where a slow watcher shows as a slow burst instead).
{
  for (let i = 0; i < treeKeys; i += 500) {
    await Promise.all(
      Array.from({ length: Math.min(500, treeKeys - i) }, (_, j) => store.put(`lag/k${i + j}`, value)),
    );
  }
  const inProcess = async () => {
    const start = now();
    for (let i = 0; i < treeWrites; i++) await store.put(burstKey(i), `burst-${i}`);
    const last = now();
    return { last, took: last - start };
  };
  const fromChild = () =>
    new Promise((resolve, reject) => {
      execFile(
        process.execPath,
        [fileURLToPath(import.meta.url), url],
        { env: { ...process.env, KV_BENCH_BURST_WRITER: '1' } },
        (error, stdout) => (error ? reject(error) : resolve(JSON.parse(stdout))),
      );
    });
  await treeLag('another process', fromChild);
  if (process.env.KV_BENCH_TREE_SAME_PROCESS !== '0') await treeLag('this process', inProcess);
  await store.deleteTree('lag');
}

async function treeLag(where, burst) {
  const giveUp = Number(process.env.KV_BENCH_TREE_GIVE_UP_S ?? 180) * 1000;
  const controller = new AbortController();
  // The last write of the burst is unique: the watcher is caught up when it yields it.
  const lastKey = burstKey(treeWrites - 1);
  const lastValue = `burst-${treeWrites - 1}`;
  let first;
  const ready = new Promise((resolve) => {
    first = resolve;
  });
  const seen = (async () => {
    const decoder = new TextDecoder();
    let events = 0;
    for await (const { pairs, changes } of other.watchTree('lag', { signal: controller.signal })) {
      if (events++ === 0) {
        if (pairs.length !== treeKeys)
          throw new Error(`watchTree listed ${pairs.length} of ${treeKeys} keys`);
        first();
      }
      for (const change of changes) {
        const pair = change.type === 'put' ? change.pair : undefined;
        if (pair?.key === lastKey && decoder.decode(pair.value) === lastValue) return now();
      }
    }
  })();
  await Promise.race([
    ready,
    seen.then(() => Promise.reject(new Error('watchTree ended before its first event'))),
  ]);
  const writer = await burst();
  const timeout = new Promise((resolve) => setTimeout(() => resolve(undefined), giveUp).unref());
  const at = await Promise.race([seen, timeout]);
  controller.abort();
  await seen.catch(() => {});
  const lag =
    at === undefined ? `> ${(giveUp / 1000).toFixed(0)}` : (Math.max(0, at - writer.last) / 1000).toFixed(3);
  console.log(
    `${`watchTree lag (${treeKeys} keys)`.padEnd(28)} ${lag} s behind the last of ${treeWrites} writes from ${where} (the burst took ${(writer.took / 1000).toFixed(2)} s)`,
  );
  // Back to the state before the burst, so the next round's last write is new again.
  await store.put(lastKey, value);
}

const rss = process.memoryUsage().rss / 1024 / 1024;
console.log(`\nrss ${rss.toFixed(0)} MiB`);
await store.deleteTree('bench');
await store.close();
await other.close();
rmSync(dir, { recursive: true, force: true });
