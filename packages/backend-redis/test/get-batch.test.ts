import { createStore, KVError, type Store } from '@kv/core';
import { afterAll, describe, expect, it } from 'vitest';
import '../src/index.js';
import { privateRedis, text } from './helpers.js';

// A private server: the test counts the commands it ran, and kills it at the end.
const { server, skip } = await privateRedis('the get batching tests');

/** How many times the server ran GET and MGET so far (INFO commandstats). */
async function calls(): Promise<{ get: number; mget: number }> {
  const [info] = await (server as NonNullable<typeof server>).command(['INFO', 'commandstats']);
  const count = (command: string) => {
    const match = new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(info ?? '');
    return match ? Number(match[1]) : 0;
  };
  return { get: count('get'), mget: count('mget') };
}

describe.skipIf(skip !== false)('redis: gets in flight together are read by one MGET', () => {
  const stores: Store[] = [];
  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await server?.dispose();
  });

  it('2 500 gets called in one turn (present, missing, repeated keys) each get their own answer from 3 MGETs and no GET; a lone get is a GET', async () => {
    const store = await createStore({ backend: 'redis', endpoints: server?.endpoints as string[] });
    stores.push(store);
    for (let i = 0; i < 1_500; i += 500) {
      await Promise.all(Array.from({ length: 500 }, (_, j) => store.put(`b/${i + j}`, `value ${i + j}`)));
    }
    const versions = new Map((await store.list('b')).map((pair) => [pair.key, pair.lastIndex]));
    // Keys 0..1999: 1 500 present, 500 missing; then 500 repeats of present keys.
    const keys = [
      ...Array.from({ length: 2_000 }, (_, i) => `b/${i}`),
      ...Array.from({ length: 500 }, (_, i) => `b/${(i * 7) % 1_500}`),
    ];
    const before = await calls();
    const pairs = await Promise.all(keys.map((key) => store.tryGet(key)));
    const after = await calls();
    pairs.forEach((pair, i) => {
      const key = keys[i] as string;
      const n = Number(key.slice(2));
      if (n >= 1_500) {
        expect(pair, key).toBeNull();
        return;
      }
      expect(pair?.key, key).toBe(key);
      expect(text(pair?.value ?? new Uint8Array()), key).toBe(`value ${n}`);
      expect(pair?.lastIndex, key).toBe(versions.get(key));
    });
    // At most 1 000 keys to an MGET: 1 000, 1 000 and 500.
    expect(after.mget - before.mget).toBe(3);
    expect(after.get - before.get).toBe(0);

    const lone = (await calls()).get;
    expect(text((await store.get('b/42'))?.value ?? new Uint8Array())).toBe('value 42');
    expect(await store.tryGet('b/1999')).toBeNull();
    const loneAfter = (await calls()).get;
    expect(loneAfter - lone).toBe(2);
  });

  it('a server that dies with an MGET unanswered fails every get of it with a KVError, long before the deadline', async () => {
    const store = await createStore({
      backend: 'redis',
      endpoints: server?.endpoints as string[],
      requestTimeout: 20_000,
    });
    stores.push(store);
    const handle = server as NonNullable<typeof server>;
    handle.freeze();
    const started = performance.now();
    const gets = Array.from({ length: 50 }, (_, i) =>
      store.get(`b/${i}`).then(
        () => 'answered',
        (error: unknown) => error,
      ),
    );
    // The MGET goes out once this turn's callbacks have run; the frozen server never answers it.
    await new Promise((resolve) => setImmediate(resolve));
    await handle.kill();
    const outcomes = await Promise.all(gets);
    const elapsed = performance.now() - started;
    for (const outcome of outcomes) {
      expect(outcome).toBeInstanceOf(KVError);
      expect((outcome as KVError).code).toBe('UNAVAILABLE');
    }
    expect(elapsed).toBeLessThan(10_000);
  });
});
