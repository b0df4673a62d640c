import { randomUUID } from 'node:crypto';
import { createStore, type TreeEvent } from '@kv/core';
import { serverFor } from '@kv/test-servers';
import { createClient } from 'redis';
import { afterAll, describe, expect, it } from 'vitest';
import { RedisStore } from '../src/index.js';
import { within } from './helpers.js';

const redis = await serverFor('redis');

describe.skipIf(!redis.available)('redis index and expiry', () => {
  const endpoint = redis.endpoints[0] as string;
  // A raw client to look at the index and hear expiries.
  const raw = createClient({ url: `redis://${endpoint}`, socket: { reconnectStrategy: false } });
  const sub = raw.duplicate();
  const stores: RedisStore[] = [];
  const open = async (namespace: string, prefix = 'exp') => {
    const store = await createStore({ backend: 'redis', endpoints: [endpoint], namespace, prefix });
    if (!(store instanceof RedisStore)) throw new Error('not a RedisStore');
    stores.push(store);
    return store;
  };
  /** Resolves once every one of `keys` (Redis key names) was reported expired. */
  const expiries = async (keys: string[]) => {
    if (!sub.isOpen) await sub.connect();
    const pending = new Set(keys);
    let done: () => void = () => {};
    const all = new Promise<void>((resolve) => {
      done = resolve;
    });
    const listener = (key: string) => {
      pending.delete(key);
      if (pending.size === 0) done();
    };
    await sub.subscribe('__keyevent@0__:expired', listener);
    return {
      all: () => within(all, 20_000, `expiry of ${pending.size} keys`),
      stop: () => sub.unsubscribe('__keyevent@0__:expired', listener),
    };
  };

  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    if (sub.isOpen) sub.destroy();
    if (raw.isOpen) raw.destroy();
  });

  it('expired keys leave the index while a watchTree runs: nothing stale is listed and the zset shrinks', async () => {
    await raw.connect();
    const ns = `t-${randomUUID()}`;
    const store = await open(ns);
    const index = `{${ns}}:idx`;
    const tree = store.watchTree('d')[Symbol.asyncIterator]();
    expect(((await within(tree.next(), 10_000, 'first event')).value as TreeEvent).pairs).toEqual([]);
    for (let i = 0; i < 20; i++) await store.put(`d/tmp${String(i).padStart(2, '0')}`, 'x', { ttl: 200 });
    await store.put('d/keep', 'k');
    await store.put('other', 'k');
    expect(await raw.zCard(index)).toBe(22);
    // Wait (on events, not sleeps) until the watch shows only the permanent key.
    for (;;) {
      const event = (await within(tree.next(), 20_000, 'watchTree event')).value as TreeEvent;
      if (event.pairs.length === 1) {
        expect(event.pairs.map((p) => p.key)).toEqual(['d/keep']);
        break;
      }
    }
    await tree.return?.();
    expect((await store.list('')).map((p) => p.key)).toEqual(['d/keep', 'other']);
    expect(await raw.zRange(index, 0, -1)).toEqual(['exp/d/keep', 'exp/other']);
  });

  it('with nobody watching, a listing never returns an expired key and sweeps it from the index', async () => {
    const ns = `t-${randomUUID()}`;
    const store = await open(ns);
    const index = `{${ns}}:idx`;
    const names = Array.from({ length: 10 }, (_, i) => `d/tmp${i}`);
    const heard = await expiries(names.map((k) => `{${ns}}:d:exp/${k}`));
    for (const key of names) await store.put(key, 'x', { ttl: 100 });
    await store.put('d/keep', 'k');
    await heard.all();
    await heard.stop();
    // Nobody swept: the index still has them; the listing hides them and removes them.
    expect(await raw.zCard(index)).toBe(11);
    expect((await store.list('d')).map((p) => p.key)).toEqual(['d/keep']);
    expect(await raw.zCard(index)).toBe(1);
  });

  it('a get of a key past its ttl is KeyNotFound even before Redis reports it (expiry on access)', async () => {
    const store = await open(`t-${randomUUID()}`);
    await store.put('k', 'v', { ttl: 60 });
    const until = performance.now() + 60;
    // This is the one place a test waits for time itself: the ttl.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, until - performance.now()) + 5));
    expect(await store.exists('k')).toBe(false);
    expect(await store.list('')).toEqual([]);
  });

  it('list walks a sorted index: 10 000 keys, directory boundaries respected', async () => {
    const store = await open(`t-${randomUUID()}`, 'big');
    const batch: Promise<void>[] = [];
    for (let i = 0; i < 10_000; i++) {
      batch.push(store.put(`a/${String(i).padStart(5, '0')}`, `v${i}`));
      if (batch.length === 500) await Promise.all(batch.splice(0));
    }
    await Promise.all(batch);
    await store.put('ab/x', 'not below a');
    await store.put('a', 'the directory itself');
    const started = performance.now();
    const listed = await store.list('a');
    const ms = performance.now() - started;
    process.stderr.write(`[backend-redis] list of 10 000 keys: ${ms.toFixed(1)} ms\n`);
    expect(listed.length).toBe(10_000);
    expect(listed[0]?.key).toBe('a/00000');
    expect(listed[9_999]?.key).toBe('a/09999');
    expect((await store.list('ab')).map((p) => p.key)).toEqual(['ab/x']);
    await store.deleteTree('a');
    expect((await store.list('')).map((p) => p.key)).toEqual(['ab/x']);
  });
});
