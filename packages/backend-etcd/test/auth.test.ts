import { AuthenticationError, createStore, PermissionDeniedError, type Store } from '@kv/core';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type EtcdStore, openEtcd } from '../src/index.js';
import { Pull, privateEtcd, text, within } from './helpers.js';

// A private etcd with auth on: user root (password root-pw) made and `auth enable`d by the launcher.
const { server, skip } = await privateEtcd('auth tests', { auth: { rootPassword: 'root-pw' } });

describe.skipIf(skip !== false)('etcd users, passwords, tokens and roles', () => {
  const endpoint = server?.endpoints[0] as string;
  const stores: Store[] = [];
  const open = async (config: Record<string, unknown>) => {
    const store = await openEtcd({ endpoints: [endpoint], connectTimeout: 5_000, ...config });
    stores.push(store);
    return store;
  };

  beforeAll(async () => {
    const ctl = (args: string[]) => (server as NonNullable<typeof server>).etcdctl(args);
    // app: read-write under app/; reader: read-only under app/.
    await ctl(['role', 'add', 'app-rw']);
    await ctl(['role', 'grant-permission', 'app-rw', 'readwrite', 'app/', '--prefix=true']);
    await ctl(['role', 'add', 'app-ro']);
    await ctl(['role', 'grant-permission', 'app-ro', 'read', 'app/', '--prefix=true']);
    await ctl(['user', 'add', 'app:app-pw']);
    await ctl(['user', 'grant-role', 'app', 'app-rw']);
    await ctl(['user', 'add', 'reader:reader-pw']);
    await ctl(['user', 'grant-role', 'reader', 'app-ro']);
  });

  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await server?.dispose();
  });

  it('good credentials work, by config and by URL', async () => {
    const root = await open({ username: 'root', password: 'root-pw', prefix: 'app' });
    await root.put('k', 'v');
    const byUrl = await createStore(`etcd://root:root-pw@${endpoint}/app`);
    stores.push(byUrl);
    expect(text((await byUrl.get('k')).value)).toBe('v');
  });

  it('a wrong password, an unknown user or no credentials at all are AuthenticationError when opening', async () => {
    for (const config of [
      { username: 'root', password: 'wrong' },
      { username: 'nobody', password: 'x' },
      {},
    ]) {
      const error = await open(config).catch((e: unknown) => e);
      expect(AuthenticationError.isInstance(error), String(error)).toBe(true);
    }
    await expect(createStore(`etcd://root:wrong@${endpoint}/app`)).rejects.toSatisfy(
      AuthenticationError.isInstance,
    );
  });

  it('a token works; a bad token is AuthenticationError', async () => {
    const raw = new Etcd3({ hosts: [`http://${endpoint}`] });
    try {
      const { token } = await raw.auth.authenticate({ name: 'root', password: 'root-pw' });
      const store = await open({ token, prefix: 'app' });
      await store.put('t', 'by token');
      expect(text((await store.get('t')).value)).toBe('by token');
    } finally {
      raw.close();
    }
    const error = await open({ token: 'not-a-token' }).catch((e: unknown) => e);
    expect(AuthenticationError.isInstance(error), String(error)).toBe(true);
  });

  it('a user confined to a prefix can use everything under it: values, watches, locks, ttls', async () => {
    const app = (await open({ username: 'app', password: 'app-pw', prefix: 'app/scoped' })) as EtcdStore;
    const watch = new Pull(app.watch('w'));
    expect(await watch.next()).toBeNull();
    await app.put('w', '1');
    expect(text((await watch.next())?.value ?? new Uint8Array())).toBe('1');
    await watch.stop();
    const lock = app.newLock('job', { ttl: 5_000 });
    await lock.lock();
    expect(await app.list('')).toHaveLength(2);
    await lock.unlock();
    await app.put('ttl', 'x', { ttl: 3_000 });
    await app.put('kept', 'x', { keepAlive: true, ttl: 3_000 });
    expect(await app.count('')).toBe(3);
  });

  it('a role that refuses writes gives PermissionDeniedError; its reads still work', async () => {
    const reader = await open({ username: 'reader', password: 'reader-pw', prefix: 'app' });
    expect(text((await reader.get('k')).value)).toBe('v');
    await expect(reader.put('k', 'no')).rejects.toSatisfy(PermissionDeniedError.isInstance);
    // Outside its range, even reads are refused.
    const outside = await open({ username: 'reader', password: 'reader-pw', prefix: 'elsewhere' });
    await expect(outside.get('k')).rejects.toSatisfy(PermissionDeniedError.isInstance);
    // A watch it may not make throws from the iterator, once, instead of retrying forever.
    const watch = outside.watch('k')[Symbol.asyncIterator]();
    const error = await within(
      watch.next().then(
        () => watch.next(),
        (e: unknown) => Promise.reject(e),
      ),
      10_000,
      'the refused watch',
    ).catch((e: unknown) => e);
    expect(PermissionDeniedError.isInstance(error), String(error)).toBe(true);
  });
});

// Simple auth tokens that expire after 2 s without use.
const shortTokens = await privateEtcd('auth token expiry tests', {
  auth: { rootPassword: 'root-pw' },
  args: ['--auth-token-ttl=2'],
});

describe.skipIf(shortTokens.skip !== false)('expired auth tokens are renewed', () => {
  afterAll(async () => {
    await shortTokens.server?.dispose();
  });

  it('calls, watches and lock renewals go on after the token expired', async () => {
    const endpoints = shortTokens.server?.endpoints as string[];
    const store = await openEtcd({ endpoints, username: 'root', password: 'root-pw', prefix: 'short' });
    const other = await openEtcd({ endpoints, username: 'root', password: 'root-pw', prefix: 'short' });
    try {
      await store.put('k', 'v1');
      const raw = new Etcd3({ hosts: endpoints.map((e) => `http://${e}`) });
      const { token } = await raw.auth
        .authenticate({ name: 'root', password: 'root-pw' })
        .finally(() => raw.close());
      const lease = await store.newLock('lock', { ttl: 3_000 }).lock();
      // Idle for longer than the token's ttl (renewals use keep-alive streams meanwhile).
      await new Promise((resolve) => setTimeout(resolve, 3_500));
      // Tokens do expire here: an unused one is refused now.
      await expect(openEtcd({ endpoints, token, prefix: 'short' })).rejects.toSatisfy(
        AuthenticationError.isInstance,
      );
      expect(text((await store.get('k')).value)).toBe('v1');
      const watch = new Pull(store.watch('k'));
      expect(text((await watch.next())?.value ?? new Uint8Array())).toBe('v1');
      await new Promise((resolve) => setTimeout(resolve, 3_500));
      await other.put('k', 'v2');
      expect(text((await watch.next())?.value ?? new Uint8Array())).toBe('v2');
      await watch.stop();
      expect(lease.lost.aborted).toBe(false);
    } finally {
      await Promise.allSettled([store.close(), other.close()]);
    }
  });
});
