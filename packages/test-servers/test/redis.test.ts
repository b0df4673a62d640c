import { randomUUID } from 'node:crypto';
import { createClient } from 'redis';
import { afterAll, describe, expect, it } from 'vitest';
import { serverFor } from '../src/index.js';
import { deferred, within } from './helpers.js';

const redis = await serverFor('redis');

describe.skipIf(!redis.available)('redis smoke', () => {
  const url = `redis://${redis.endpoints[0]}`;
  const client = createClient({ url, socket: { connectTimeout: 5000, reconnectStrategy: false } });
  const sub = client.duplicate();
  afterAll(async () => {
    await Promise.allSettled([client.close(), sub.close()]);
  });

  it('set then get', async () => {
    await client.connect();
    const key = `smoke:${randomUUID()}`;
    await client.set(key, 'hello');
    expect(await client.get(key)).toBe('hello');
    await client.del(key);
  });

  it('a subscriber receives the keyspace event of a SET (notify-keyspace-events KEA)', async () => {
    await sub.connect();
    const key = `smoke:${randomUUID()}`;
    const event = deferred<string>();
    // subscribe() resolves once the server confirmed the subscription.
    await sub.subscribe(`__keyspace@0__:${key}`, (message) => event.resolve(message));
    await client.set(key, 'v');
    expect(await within(5000, 'keyspace event', event.promise)).toBe('set');
    await client.del(key);
  });
});
