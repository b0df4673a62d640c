// Prints throughput and latency of the common calls on one store.
//   node scripts/bench.mjs [url] [n]
// Default: a throwaway SQLite file. For a network backend run it from that
// backend's package so @kv/backend-<name> resolves, e.g.
//   (cd packages/backend-redis && node ../../scripts/bench.mjs redis://127.0.0.1:6379/bench)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createStore } from '@kv/core';

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

const rss = process.memoryUsage().rss / 1024 / 1024;
console.log(`\nrss ${rss.toFixed(0)} MiB`);
await store.deleteTree('bench');
await store.close();
await other.close();
rmSync(dir, { recursive: true, force: true });
