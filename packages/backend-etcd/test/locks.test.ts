import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { LockLostError } from '@kv/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EtcdStore } from '../src/index.js';
import { openTestStore, privateEtcd, sharedEtcd, text, untilWaiters, waiters, within } from './helpers.js';

const etcd = await sharedEtcd();

/** The lock's helper keys, raw: `<prefix>/<key>\u0001lock/<lease hex>`. */

function lostReason(signal: AbortSignal): Promise<unknown> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve(signal.reason);
    else signal.addEventListener('abort', () => resolve(signal.reason), { once: true });
  });
}

describe.skipIf(etcd.skip !== false)('etcd locks: the concurrency recipe', () => {
  let a: EtcdStore;
  let b: EtcdStore;
  beforeAll(async () => {
    a = await openTestStore(etcd.endpoints, 'locks');
    b = await openTestStore(etcd.endpoints, 'locks-b', { prefix: a.prefix } as Record<string, unknown>);
  });
  afterAll(async () => {
    await Promise.allSettled([a?.close(), b?.close()]);
  });

  it("the holder writes its value at the key and one waiter key on its lease; the token is that key's create revision", async () => {
    const lock = a.newLock('recipe', { value: 'holder-a', ttl: 5_000 });
    const lease = await lock.lock();
    const [waiter, ...others] = await waiters(a, 'recipe');
    expect(others).toEqual([]);
    expect(waiter?.createRevision).toBe(lease.fencingToken);
    const held = await a.getKeyValue('recipe');
    expect(text(held.value)).toBe('holder-a');
    expect(held.lease).toBe(waiter?.lease);
    expect(waiter?.key).toBe(`${a.prefix}/recipe\u0001lock/${BigInt(held.lease).toString(16)}`);
    await lock.unlock();
    expect(await waiters(a, 'recipe')).toEqual([]);
    expect(await a.exists('recipe')).toBe(false);
  });

  it('waiters queue in order of arrival, tryLock never joins the queue, tokens grow', async () => {
    const holder = a.newLock('queue', { ttl: 5_000 });
    const first = await holder.lock();
    const order: string[] = [];
    const lockB = b.newLock('queue', { value: 'b', ttl: 5_000 });
    const waitB = lockB.lock().then((l) => {
      order.push('b');
      return l;
    });
    while ((await waiters(a, 'queue')).length < 2) await new Promise((resolve) => setImmediate(resolve));
    const lockA2 = a.newLock('queue', { value: 'a2', ttl: 5_000 });
    const waitA2 = lockA2.lock().then((l) => {
      order.push('a2');
      return l;
    });
    while ((await waiters(a, 'queue')).length < 3) await new Promise((resolve) => setImmediate(resolve));
    expect(await b.newLock('queue', { ttl: 5_000 }).tryLock()).toBeNull();
    expect(await waiters(a, 'queue')).toHaveLength(3);

    await holder.unlock();
    const leaseB = await within(waitB, 10_000, 'b taking the lock');
    expect(text((await a.get('queue')).value)).toBe('b');
    await lockB.unlock();
    const leaseA2 = await within(waitA2, 10_000, 'a2 taking the lock');
    expect(order).toEqual(['b', 'a2']);
    expect(leaseB.fencingToken).toBeGreaterThan(first.fencingToken);
    expect(leaseA2.fencingToken).toBeGreaterThan(leaseB.fencingToken);
    await lockA2.unlock();
  });

  it('a waiter whose key is deleted behind its back queues again; the waiter behind it still waits for the holder', async () => {
    const holder = a.newLock('gap', { ttl: 5_000 });
    const first = await holder.lock();
    const lock1 = b.newLock('gap', { value: 'one', ttl: 5_000 });
    const order: string[] = [];
    const wait1 = lock1.lock().then((lease) => {
      order.push('1');
      return lease;
    });
    await untilWaiters(a, 'gap', 2);
    const lock2 = a.newLock('gap', { value: 'two', ttl: 5_000 });
    const wait2 = lock2.lock().then((lease) => {
      order.push('2');
      return lease;
    });
    await untilWaiters(a, 'gap', 3);
    // The key of the waiter between the holder and the last one goes away: the last one must not
    // take it for a hand-over while the holder still holds.
    const queued = (await waiters(a, 'gap')).sort((x, y) => x.createRevision - y.createRevision);
    await a.client.delete().key(queued[1]?.key as string);
    // The first waiter queues again, behind the second.
    await untilWaiters(a, 'gap', 3);
    expect(order).toEqual([]);
    expect(first.lost.aborted).toBe(false);
    expect(text((await a.get('gap')).value)).toBe('');
    await holder.unlock();
    const lease2 = await within(wait2, 5_000, 'the second waiter taking the lock');
    expect(order).toEqual(['2']);
    expect(text((await a.get('gap')).value)).toBe('two');
    await lock2.unlock();
    const lease1 = await within(wait1, 5_000, 'the first waiter, queued again, taking the lock');
    expect(lease2.fencingToken).toBeGreaterThan(first.fencingToken);
    expect(lease1.fencingToken).toBeGreaterThan(lease2.fencingToken);
    await lock1.unlock();
  });

  it('hands the lock over promptly (measured)', async () => {
    const times: number[] = [];
    for (let i = 0; i < 20; i++) {
      const holder = (i % 2 === 0 ? a : b).newLock('handover', { ttl: 5_000 });
      const waiter = (i % 2 === 0 ? b : a).newLock('handover', { ttl: 5_000 });
      await holder.lock();
      const waiting = waiter.lock();
      while ((await waiters(a, 'handover')).length < 2) await new Promise((resolve) => setImmediate(resolve));
      const started = performance.now();
      await holder.unlock();
      await waiting;
      times.push(performance.now() - started);
      await waiter.unlock();
    }
    times.sort((x, y) => x - y);
    const median = times[Math.floor(times.length / 2)] as number;
    console.info(
      `lock handover (unlock() called -> waiter holds): median ${median.toFixed(1)} ms, max ${(times.at(-1) as number).toFixed(1)} ms`,
    );
    expect(median).toBeLessThan(500);
  });

  it('a holder whose waiter key is deleted behind its back learns at once (lost, LockLostError)', async () => {
    const lock = a.newLock('stolen', { ttl: 10_000 });
    const lease = await lock.lock();
    const [waiter] = await waiters(a, 'stolen');
    const started = Date.now();
    await a.client.delete().key(waiter?.key as string);
    const reason = await within(lostReason(lease.lost), 5_000, 'lost');
    expect(LockLostError.isInstance(reason)).toBe(true);
    expect(Date.now() - started).toBeLessThan(2_000);
    // The lock is free again and this Lock object can take it anew.
    const again = await lock.lock();
    expect(again.fencingToken).toBeGreaterThan(lease.fencingToken);
    await lock.unlock();
  });

  it('a lock released in the turn it was acquired in opens no watch stream; a lock held longer watches its key from its acquisition on', async () => {
    // Watch streams this store opens, counted where etcd3 hands a call its connection (as `pnpm bench` counts requests).
    const pool = (a.client as unknown as { pool: { withConnection: (...args: unknown[]) => unknown } }).pool;
    expect(typeof pool.withConnection).toBe('function');
    const original = pool.withConnection;
    let watches = 0;
    pool.withConnection = function (this: unknown, ...args: unknown[]) {
      if (args[0] === 'Watch') watches++;
      return original.apply(this, args);
    };
    try {
      const lock = a.newLock('short-section', { ttl: 10_000 });
      for (let i = 0; i < 5; i++) {
        await lock.lock();
        await lock.unlock();
      }
      expect(watches).toBe(0);
      // Held across turns: its watch opens (one stream), and a delete of its waiter key is heard.
      const lease = await lock.lock();
      const deleting = waiters(a, 'short-section').then(([waiter]) =>
        a.client.delete().key(waiter?.key as string),
      );
      const reason = await within(lostReason(lease.lost), 5_000, 'lost');
      expect(LockLostError.isInstance(reason)).toBe(true);
      await deleting;
      expect(watches).toBe(1);
      await lock.unlock();
    } finally {
      pool.withConnection = original;
    }
  });

  it('a holder whose lease is revoked by someone else learns at once', async () => {
    const lock = a.newLock('revoked', { ttl: 10_000 });
    const lease = await lock.lock();
    const { lease: id } = await a.getKeyValue('revoked');
    await b.revokeLease(id);
    expect(LockLostError.isInstance(await within(lostReason(lease.lost), 5_000, 'lost'))).toBe(true);
    expect(await b.newLock('revoked', { ttl: 5_000 }).tryLock()).not.toBeNull();
  });

  it('an aborted waiter leaves the queue at once', async () => {
    const holder = a.newLock('abort', { ttl: 5_000 });
    await holder.lock();
    const controller = new AbortController();
    const waiting = b.newLock('abort', { ttl: 5_000 }).lock({ signal: controller.signal });
    while ((await waiters(a, 'abort')).length < 2) await new Promise((resolve) => setImmediate(resolve));
    controller.abort();
    await expect(waiting).rejects.toMatchObject({ name: 'AbortError' });
    for (let i = 0; i < 500 && (await waiters(a, 'abort')).length > 1; i++) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(await waiters(a, 'abort')).toHaveLength(1);
    await holder.unlock();
  });
});

const waiterProcess = fileURLToPath(new URL('./fixtures/waiter.mjs', import.meta.url));

/** A contender in another process, queued for `key`; resolves once it has started waiting. */
async function queueInChild(store: EtcdStore, key: string, ttl: number) {
  const child = spawn(
    process.execPath,
    [waiterProcess, etcd.endpoints[0] as string, store.prefix, key, String(ttl)],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  await within(
    new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('"waiting"')) resolve();
      });
      child.on('exit', () => reject(new Error(`the waiter process exited: ${stderr}`)));
    }),
    15_000,
    'the waiter process starting',
  );
  return { child, exited };
}

describe.skipIf(etcd.skip !== false)('etcd locks: a waiter that dies in the queue', () => {
  let a: EtcdStore;
  let b: EtcdStore;
  const killed: { kill(signal: NodeJS.Signals): boolean }[] = [];
  beforeAll(async () => {
    a = await openTestStore(etcd.endpoints, 'dead-waiter');
    b = await openTestStore(etcd.endpoints, 'dead-waiter-b', { prefix: a.prefix } as Record<string, unknown>);
  });
  afterAll(async () => {
    for (const child of killed) child.kill('SIGKILL');
    await Promise.allSettled([a?.close(), b?.close()]);
  });

  it('does not hold up the hand-over: a live waiter behind it holds within 2 s of unlock()', async () => {
    const ttl = 8_000;
    const holder = a.newLock('queue', { ttl });
    const first = await holder.lock();
    const dead = await queueInChild(a, 'queue', ttl);
    killed.push(dead.child);
    await untilWaiters(a, 'queue', 2);
    const live = b.newLock('queue', { ttl });
    const waiting = live.lock({ signal: AbortSignal.timeout(20_000) });
    await untilWaiters(a, 'queue', 3);
    dead.child.kill('SIGKILL');
    await dead.exited;
    const unlockedAt = performance.now();
    await holder.unlock();
    const lease = await waiting;
    const handover = performance.now() - unlockedAt;
    console.info(
      `etcd hand-over past a dead waiter (ttl ${ttl} ms): ${handover.toFixed(0)} ms after unlock()`,
    );
    expect(handover).toBeLessThan(2_000);
    expect(lease.fencingToken).toBeGreaterThan(first.fencingToken);
    expect(await waiters(a, 'queue')).toHaveLength(1);
    await live.unlock();
  });

  it('live waiters keep their place (and their order) while the holder holds for longer than a queue lease', async () => {
    const holder = a.newLock('live', { ttl: 5_000 });
    const first = await holder.lock();
    const order: string[] = [];
    const lock1 = b.newLock('live', { ttl: 5_000 });
    const wait1 = lock1.lock().then((lease) => {
      order.push('1');
      return lease;
    });
    await untilWaiters(a, 'live', 2);
    const lock2 = a.newLock('live', { ttl: 5_000 });
    const wait2 = lock2.lock().then((lease) => {
      order.push('2');
      return lease;
    });
    await untilWaiters(a, 'live', 3);
    const revisions = async () =>
      (await waiters(a, 'live')).map((w) => w.createRevision).sort((x, y) => x - y);
    const queued = await revisions();
    // Longer than the 2 s queue leases and the 1 s the dead-waiter probe allows.
    await new Promise((resolve) => setTimeout(resolve, 3_500));
    expect(await revisions()).toEqual(queued);
    expect(await b.newLock('live', { ttl: 5_000 }).tryLock()).toBeNull();
    await holder.unlock();
    const lease1 = await within(wait1, 5_000, 'the first waiter taking the lock');
    expect(order).toEqual(['1']);
    await lock1.unlock();
    const lease2 = await within(wait2, 5_000, 'the second waiter taking the lock');
    expect(order).toEqual(['1', '2']);
    expect(lease1.fencingToken).toBe(queued[1]);
    expect(lease2.fencingToken).toBe(queued[2]);
    expect(lease1.fencingToken).toBeGreaterThan(first.fencingToken);
    await lock2.unlock();
  });

  it('tryLock() on a lock that is free but for a dead waiter succeeds promptly', async () => {
    const ttl = 8_000;
    const holder = a.newLock('try', { ttl });
    const first = await holder.lock();
    const dead = await queueInChild(a, 'try', ttl);
    killed.push(dead.child);
    await untilWaiters(a, 'try', 2);
    dead.child.kill('SIGKILL');
    await dead.exited;
    await holder.unlock();
    const freedAt = performance.now();
    const lock = b.newLock('try', { ttl });
    let lease = await lock.tryLock();
    while (lease === null && performance.now() - freedAt < 15_000) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      lease = await lock.tryLock();
    }
    const after = performance.now() - freedAt;
    console.info(
      `etcd tryLock() past a dead waiter (ttl ${ttl} ms): held ${after.toFixed(0)} ms after unlock()`,
    );
    expect(lease).not.toBeNull();
    expect(after).toBeLessThan(2_000);
    expect(lease?.fencingToken).toBeGreaterThan(first.fencingToken);
    await lock.unlock();
  });
});

/** Waits until the kernel has stopped the process (state T), after SIGSTOP. */
async function stopped(pid: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (/^\d+ \(.*\) [Tt] /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
}

const frozen = await privateEtcd('lock loss tests');

describe.skipIf(frozen.skip !== false)('etcd locks when the server stops answering', () => {
  afterAll(async () => {
    frozen.server?.thaw();
    await frozen.server?.dispose();
  });

  it('the holder gives the lock up (lost) before its ttl can expire; after that another client gets it', async () => {
    const server = frozen.server as NonNullable<typeof frozen.server>;
    const holder = await openTestStore(server.endpoints, 'frozen', { requestTimeout: 1_000 });
    const other = await openTestStore(server.endpoints, 'frozen', {
      prefix: holder.prefix,
      requestTimeout: 1_000,
    } as Record<string, unknown>);
    try {
      const ttl = 4_000;
      const lease = await holder.newLock('job', { ttl }).lock();
      server.freeze();
      await stopped(server.pid as number);
      const frozenAt = Date.now();
      const reason = await within(lostReason(lease.lost), ttl, 'lost');
      const lostAfter = Date.now() - frozenAt;
      expect(LockLostError.isInstance(reason)).toBe(true);
      expect(lostAfter).toBeLessThan(ttl);
      server.thaw();
      const taken = await within(
        other.newLock('job', { ttl }).lock(),
        15_000,
        'the other client taking the lock',
      );
      expect(taken.fencingToken).toBeGreaterThan(lease.fencingToken);
      console.info(`lock with a ${ttl} ms ttl reported lost ${lostAfter} ms after the server froze`);
    } finally {
      server.thaw();
      await Promise.allSettled([holder.close(), other.close()]);
    }
  });
});
