import { createStore, type Store, type TreeEvent } from '@kv/core';
import { createClient } from 'redis';
import { afterAll, describe, expect, it } from 'vitest';
import { REDIS_CAPABILITIES } from '../src/index.js';
import { privateRedis, within } from './helpers.js';

// A private server: the test fills it with keys that have long ttls.
const { server, skip } = await privateRedis('the expiry lateness test');

const FILLER_KEYS = 100_000;
const TTL = 400;
const KEYS = 8;

describe.skipIf(skip !== false)('redis: expiry events reach watchers in time on a busy server', () => {
  const stores: Store[] = [];
  const raw = createClient({
    url: `redis://${server?.endpoints[0] as string}`,
    socket: { reconnectStrategy: false },
  });
  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    if (raw.isOpen) raw.destroy();
    await server?.dispose();
  });

  it(`with ${FILLER_KEYS} unrelated keys with long ttls, a ttl key's delete reaches a watcher of another store within ttl + ttlGranularity`, async () => {
    const endpoints = (server as NonNullable<typeof server>).endpoints;
    await raw.connect();
    // Redis's active expiry samples the keys that have a ttl: among these, ours are rarely sampled.
    const fill =
      "for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do redis.call('SET', 'filler:' .. i, 'x', 'PX', 600000) end";
    for (let i = 0; i < FILLER_KEYS; i += 10_000) {
      await raw.eval(fill, { arguments: [String(i), String(i + 9_999)] });
    }
    expect(await raw.dbSize()).toBeGreaterThanOrEqual(FILLER_KEYS);

    const writer = await createStore({ backend: 'redis', endpoints, prefix: 'late' });
    const watcher = await createStore({ backend: 'redis', endpoints, prefix: 'late' });
    stores.push(writer, watcher);
    const tree = watcher.watchTree('d')[Symbol.asyncIterator]();
    expect(((await within(tree.next(), 10_000, 'first event')).value as TreeEvent).pairs).toEqual([]);

    const putAt = new Map<string, number>();
    for (let i = 0; i < KEYS; i++) {
      const key = `d/k${i}`;
      putAt.set(key, performance.now());
      await writer.put(key, 'x', { ttl: TTL });
    }
    // Bounded: the test gives up 10 s after the last ttl (before the fix, events came later still).
    const lateness: number[] = [];
    const giveUpAt = performance.now() + TTL + 10_000;
    while (lateness.length < KEYS) {
      const left = Math.max(1, giveUpAt - performance.now());
      const event = (await within(tree.next(), left, `expiry events (${lateness.length} of ${KEYS} so far)`))
        .value as TreeEvent;
      const now = performance.now();
      for (const change of event.changes) {
        if (change.type !== 'delete') continue;
        lateness.push(now - (putAt.get(change.key) as number) - TTL);
      }
    }
    await tree.return?.();
    const worst = Math.max(...lateness);
    process.stderr.write(
      `[backend-redis] expiry events on a server with ${FILLER_KEYS} ttl keys: ${lateness
        .map((ms) => ms.toFixed(0))
        .join(', ')} ms after the ttl (worst ${worst.toFixed(0)} ms)\n`,
    );
    expect(worst).toBeLessThanOrEqual(REDIS_CAPABILITIES.ttlGranularity);
    expect(Math.min(...lateness), 'a key was gone before its ttl').toBeGreaterThanOrEqual(0);
    // Gone for readers too, and the index is clean.
    expect(await writer.list('d')).toEqual([]);
  });
});
