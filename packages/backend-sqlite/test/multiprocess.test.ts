import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createStore, type Store } from '@kv/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import '@kv/backend-sqlite';

const worker = fileURLToPath(new URL('./fixtures/worker.mjs', import.meta.url));
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

type Message = Record<string, unknown>;

/** A real second process on the same file; `messages` yields its JSON lines. */
function start(mode: string, path: string, ...args: string[]) {
  const child = spawn(process.execPath, [worker, mode, path, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async (timeout = 20_000): Promise<Message> => {
    let timer: NodeJS.Timeout | undefined;
    const result = await Promise.race([
      lines.next(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`worker ${mode} said nothing for ${timeout} ms; stderr: ${stderr}`)),
          timeout,
        );
      }),
    ]).finally(() => clearTimeout(timer));
    if (result.done) throw new Error(`worker ${mode} exited early; stderr: ${stderr}`);
    return JSON.parse(result.value) as Message;
  };
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, next, exited };
}

const children: ChildProcess[] = [];

describe('sqlite: two real processes on one file', () => {
  let dir: string;
  let path: string;
  let store: Store;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kv-sqlite-mp-'));
    path = join(dir, 'shared.db');
    store = await createStore({ backend: 'sqlite', path, prefix: 'mp' });
  });

  afterAll(async () => {
    for (const child of children) child.kill('SIGKILL');
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Both workers say they are ready; `go` starts them at the same moment. */
  async function go(...workers: Array<ReturnType<typeof start>>): Promise<void> {
    for (const worker of workers) expect((await worker.next()).ready).toBe(true);
    await store.put('go', 'now');
  }

  it('a lock excludes across processes: 2 processes x 30 unlocked increments end at exactly 60', async () => {
    await store.delete('go');
    const a = start('lock', path, '30');
    const b = start('lock', path, '30');
    children.push(a.child, b.child);
    await go(a, b);
    const [ra, rb] = await Promise.all([a.next(), b.next()]);
    expect(await a.exited).toBe(0);
    expect(await b.exited).toBe(0);
    expect(text((await store.get('counter')).value)).toBe('60');
    // Fencing tokens are unique across both processes and grow within each.
    const tokens = [...(ra.tokens as number[]), ...(rb.tokens as number[])];
    expect(new Set(tokens).size).toBe(60);
    for (const list of [ra.tokens as number[], rb.tokens as number[]]) {
      expect(list).toEqual([...list].sort((x, y) => x - y));
    }
    // No hold of one process overlaps a hold of the other: the lock really excluded.
    const holds = [...(ra.holds as [number, number][]), ...(rb.holds as [number, number][])].sort(
      (x, y) => x[0] - y[0],
    );
    for (let i = 1; i < holds.length; i++) {
      expect((holds[i] as [number, number])[0]).toBeGreaterThanOrEqual((holds[i - 1] as [number, number])[1]);
    }
    // And they did contend: each process held the lock between holds of the other.
    const firstB = (rb.holds as [number, number][])[0]?.[0] ?? 0;
    const lastA = (ra.holds as [number, number][]).at(-1)?.[0] ?? 0;
    const firstA = (ra.holds as [number, number][])[0]?.[0] ?? 0;
    const lastB = (rb.holds as [number, number][]).at(-1)?.[0] ?? 0;
    expect(firstB < lastA && firstA < lastB, 'the two workers ran at the same time').toBe(true);
  });

  it('CAS across processes loses nothing: 2 processes x 500 increments end at exactly 1000', async () => {
    await store.put('cas', '0');
    await store.delete('go');
    const a = start('cas', path, '500');
    const b = start('cas', path, '500');
    children.push(a.child, b.child);
    await go(a, b);
    const [ra, rb] = await Promise.all([a.next(), b.next()]);
    expect(await a.exited).toBe(0);
    expect(await b.exited).toBe(0);
    expect(text((await store.get('cas')).value)).toBe('1000');
    // Started together, they collided: the count is right because conflicts were refused and retried.
    expect((ra.retries as number) + (rb.retries as number)).toBeGreaterThan(0);
  });

  it('a watch in another process sees every change in commit order, same-value puts and deletes included', async () => {
    await store.put('watched', 'v0');
    const watcher = start('watch', path, '5');
    children.push(watcher.child);
    expect((await watcher.next()).event).toBe('v0');
    await store.put('watched', 'v1');
    await store.put('watched', 'v1');
    await store.delete('watched');
    await store.put('watched', 'v2');
    const events = [await watcher.next(), await watcher.next(), await watcher.next(), await watcher.next()];
    expect(events.map((e) => e.event)).toEqual(['v1', 'v1', null, 'v2']);
    const indexes = events.filter((e) => e.lastIndex !== null).map((e) => e.lastIndex as number);
    expect(indexes).toEqual([...indexes].sort((x, y) => x - y));
    expect(new Set(indexes).size).toBe(indexes.length);
    expect((await watcher.next()).done).toBe(true);
    expect(await watcher.exited).toBe(0);
  });

  it('a lock held by a killed process is free within its ttl', async () => {
    const holder = start('hold', path, '1500');
    children.push(holder.child);
    const held = await holder.next();
    expect(held.held).toBe(true);
    const lock = store.newLock('locks/held', { ttl: 1500 });
    expect(await lock.tryLock()).toBeNull();
    expect(text((await store.get('locks/held')).value)).toBe(`pid ${holder.child.pid}`);
    holder.child.kill('SIGKILL');
    await holder.exited;
    const killedAt = Date.now();
    const lease = await lock.lock({ signal: AbortSignal.timeout(10_000) });
    expect(Date.now() - killedAt).toBeLessThan(1500 + 1000);
    expect(lease.fencingToken).toBeGreaterThan(held.token as number);
    await lock.unlock();
  });

  /** Waiter rows of a lock key (the store's own connection; prefix `mp`). */
  const queued = (key: string) =>
    (
      (store as unknown as { db: import('better-sqlite3').Database }).db
        .prepare('SELECT COUNT(*) AS n FROM lock_waiters WHERE key = ?')
        .get(`mp/${key}`) as { n: number }
    ).n;
  const until = async (what: string, check: () => boolean) => {
    const end = performance.now() + 10_000;
    while (!check()) {
      if (performance.now() > end) throw new Error(`${what}: not within 10 s`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  };

  it('a waiter killed in the queue does not hold up the hand-over: a live waiter behind it holds within 2 s of unlock()', async () => {
    const ttl = 8_000;
    const holder = store.newLock('locks/queue', { ttl });
    const first = await holder.lock();
    const dead = start('wait', path, 'locks/queue', String(ttl));
    children.push(dead.child);
    expect((await dead.next()).waiting).toBe(true);
    await until('the doomed waiter queued', () => queued('locks/queue') === 1);
    const other = await createStore({ backend: 'sqlite', path, prefix: 'mp' });
    try {
      const live = other.newLock('locks/queue', { ttl });
      const waiting = live.lock({ signal: AbortSignal.timeout(20_000) });
      await until('the live waiter queued behind it', () => queued('locks/queue') === 2);
      dead.child.kill('SIGKILL');
      await dead.exited;
      const unlockedAt = performance.now();
      await holder.unlock();
      const lease = await waiting;
      const handover = performance.now() - unlockedAt;
      console.info(`hand-over past a dead waiter (ttl ${ttl} ms): ${handover.toFixed(0)} ms after unlock()`);
      expect(handover).toBeLessThan(2_000);
      expect(lease.fencingToken).toBeGreaterThan(first.fencingToken);
      await live.unlock();
    } finally {
      await other.close();
    }
  });

  it('tryLock() on a lock that is free but for a dead waiter succeeds promptly', async () => {
    const ttl = 8_000;
    const holder = store.newLock('locks/try', { ttl });
    await holder.lock();
    const dead = start('wait', path, 'locks/try', String(ttl));
    children.push(dead.child);
    expect((await dead.next()).waiting).toBe(true);
    await until('the doomed waiter queued', () => queued('locks/try') === 1);
    dead.child.kill('SIGKILL');
    await dead.exited;
    await holder.unlock();
    const freedAt = performance.now();
    const lock = store.newLock('locks/try', { ttl });
    let lease = await lock.tryLock();
    while (lease === null && performance.now() - freedAt < 15_000) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      lease = await lock.tryLock();
    }
    const after = performance.now() - freedAt;
    console.info(`tryLock() past a dead waiter (ttl ${ttl} ms): held ${after.toFixed(0)} ms after unlock()`);
    expect(lease).not.toBeNull();
    expect(after).toBeLessThan(2_000);
    await lock.unlock();
  });
});
