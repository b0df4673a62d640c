import { createStore, NotSupportedError, type Store, type TreeEvent } from '@kv/core';
import { createClient } from 'redis';
import { afterAll, describe, expect, it } from 'vitest';
import '../src/index.js';
import { privateRedis, within } from './helpers.js';

// Notifications off, and CONFIG disabled: the store cannot turn them on.
const locked = await privateRedis('notifications off, CONFIG disabled', {
  args: ['--notify-keyspace-events', '', '--rename-command', 'CONFIG', ''],
});
// Notifications off, CONFIG allowed: the store turns them on.
const open = await privateRedis('notifications off, CONFIG allowed', {
  args: ['--notify-keyspace-events', ''],
});

const skip = locked.skip || open.skip;

describe.skipIf(skip !== false)('redis keyspace notifications', () => {
  const stores: Store[] = [];
  const connect = async (endpoints: string[], extra: Record<string, unknown> = {}) => {
    const store = await createStore({ backend: 'redis', endpoints, ...extra });
    stores.push(store);
    return store;
  };
  const flags = async (endpoint: string | undefined, set?: string) => {
    const client = createClient({ url: `redis://${endpoint}`, socket: { reconnectStrategy: false } });
    await client.connect();
    try {
      if (set !== undefined) await client.configSet('notify-keyspace-events', set);
      return (await client.configGet('notify-keyspace-events'))['notify-keyspace-events'];
    } finally {
      client.destroy();
    }
  };
  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await Promise.allSettled([locked.server?.dispose(), open.server?.dispose()]);
  });

  it('off, and CONFIG disabled: watch and watchTree fail with a NotSupportedError that says how to enable them', async () => {
    const store = await connect(locked.server?.endpoints ?? []);
    // Plain calls and locks do not need them.
    await store.put('k', 'v');
    const lease = await store.newLock('l').lock();
    await store.newLock('l').tryLock();
    expect(lease.lost.aborted).toBe(false);
    for (const iterate of [
      () => store.watch('k')[Symbol.asyncIterator]().next(),
      () => store.watchTree('')[Symbol.asyncIterator]().next(),
    ]) {
      const error = await within(
        iterate().then(
          () => undefined,
          (e: unknown) => e,
        ),
        20_000,
        'the watch error',
      );
      expect(NotSupportedError.isInstance(error), String(error)).toBe(true);
      expect(String((error as Error).message)).toMatch(/notify-keyspace-events Ex/);
    }
    const reply = await locked.server?.command(['CONFIG', 'GET', 'notify-keyspace-events']);
    expect(reply?.[0]).toMatch(/^-ERR unknown command/);
  });

  it('off, CONFIG allowed but configureNotifications: false: the same clear error, nothing changed', async () => {
    const endpoints = open.server?.endpoints ?? [];
    const store = await connect(endpoints, { configureNotifications: false });
    const error = await store
      .watch('k')
      [Symbol.asyncIterator]()
      .next()
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(NotSupportedError.isInstance(error), String(error)).toBe(true);
    expect(String((error as Error).message)).toMatch(/configureNotifications is false/);
    expect(await flags(endpoints[0])).toBe('');
  });

  it('off, CONFIG allowed: the first watch turns them on (merged flags) and sees expiries', async () => {
    const endpoints = open.server?.endpoints ?? [];
    // Someone else's flags (keyspace channel, generic commands) are kept.
    expect(await flags(endpoints[0], 'Kg')).toBe('gK');
    const store = await connect(endpoints, { prefix: 'n' });
    const tree = store.watchTree('d')[Symbol.asyncIterator]();
    expect(((await within(tree.next(), 10_000, 'first event')).value as TreeEvent).pairs).toEqual([]);
    const value = await flags(endpoints[0]);
    for (const flag of ['K', 'g', 'E', 'x']) expect(value).toContain(flag);
    await store.put('d/t', 'v', { ttl: 100 });
    expect(((await within(tree.next(), 10_000, 'put event')).value as TreeEvent).pairs.length).toBe(1);
    const gone = (await within(tree.next(), 10_000, 'expiry event')).value as TreeEvent;
    expect(gone.changes).toEqual([{ type: 'delete', key: 'd/t' }]);
    await tree.return?.();
  });
});
