import { inspect } from 'node:util';
import { AuthenticationError, createStore, PermissionDeniedError, type Store } from '@kv/core';
import { Reader } from '@kv/core/conformance';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openEtcdV2 } from '../src/index.js';
import { privateEtcd, text, v2Auth } from './helpers.js';

// A private etcd whose v2 auth the tests set up through the v2 auth API (v2 users and roles are
// not v3's: the launcher's `auth` option would only make v3 ones).
const { server, skip } = await privateEtcd('v2 auth tests');

const ROOT = 'root:R00t-pw';
const APP_PW = 'app-S3cret-pw';
const READER_PW = 'reader-S3cret-pw';
const WRONG_PW = 'wr0ng-S3cret-pw';

describe.skipIf(skip !== false)('etcd v2 auth: users, passwords and roles', () => {
  const endpoint = server?.endpoints[0] as string;
  const base = server?.urls[0] as string;
  const stores: Store[] = [];
  const keep = <S extends Store>(store: S): S => {
    stores.push(store);
    return store;
  };
  /** Every secret a message must not show: the passwords, and the basic-auth header's base64. */
  const secrets = [APP_PW, READER_PW, WRONG_PW, 'R00t-pw'].flatMap((pw) => [
    pw,
    ...['app', 'reader', 'root', 'nobody'].map((user) => Buffer.from(`${user}:${pw}`).toString('base64')),
  ]);
  const expectNoSecret = (error: unknown) => {
    const shown = `${String(error)}\n${inspect(error, { depth: 10 })}`;
    for (const secret of secrets) expect(shown, 'an error message shows a secret').not.toContain(secret);
  };

  beforeAll(async () => {
    await v2Auth(base, 'PUT', '/users/root', { user: 'root', password: 'R00t-pw' });
    await v2Auth(base, 'PUT', '/enable');
    // Without credentials a request is the guest's, which may do everything until revoked.
    await v2Auth(
      base,
      'PUT',
      '/roles/guest',
      { role: 'guest', revoke: { kv: { read: ['/*'], write: ['/*'] } } },
      ROOT,
    );
    const role = (name: string, read: string[], write: string[]) =>
      v2Auth(base, 'PUT', `/roles/${name}`, { role: name, permissions: { kv: { read, write } } }, ROOT);
    // app: everything under app/. reader: reads under app/, writes only under app/public/.
    await role('app-rw', ['/app/*'], ['/app/*']);
    await role('app-ro', ['/app/*'], ['/app/public/*']);
    await role('other-rw', ['/other/*'], ['/other/*']);
    const user = (name: string, password: string, roles: string[]) =>
      v2Auth(base, 'PUT', `/users/${name}`, { user: name, password, roles }, ROOT);
    await user('app', APP_PW, ['app-rw']);
    await user('reader', READER_PW, ['app-ro']);
    await user('outsider', 'outsider-pw', ['other-rw']);
    const seeder = keep(
      await openEtcdV2({ endpoints: [endpoint], prefix: 'app', username: 'app', password: APP_PW }),
    );
    await seeder.put('seed', 'x');
  });

  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await server?.dispose();
  });

  it('etcdv2://user:password@127.0.0.1:PORT/prefix works for a user confined to the prefix: values, CAS, lists, watches, locks, ttls', async () => {
    const app = keep(await createStore(`etcdv2://app:${encodeURIComponent(APP_PW)}@${endpoint}/app`));
    const watch = new Reader(() => app.watch('w'), 'watch(w)', 15_000);
    const tree = new Reader(() => app.watchTree(''), 'watchTree', 15_000);
    try {
      expect(await watch.next()).toBeNull();
      expect((await tree.next()).pairs.map((p) => p.key)).toEqual(['seed']);
      await app.put('w', '1');
      expect(text((await watch.next())?.value)).toBe('1');
      expect((await tree.next()).pairs.map((p) => p.key)).toEqual(['seed', 'w']);
      const created = await app.atomicPut('dir/k', 'a', null);
      await app.atomicPut('dir/k', 'b', created);
      expect((await app.list('')).map((p) => p.key)).toEqual(['dir/k', 'seed', 'w']);
      const lock = app.newLock('job', { ttl: 3_000 });
      expect((await lock.lock()).fencingToken).toBeGreaterThan(0);
      await lock.unlock();
      await app.put('ttl', 'x', { ttl: 60_000 });
      // Renewals under auth cost a bcrypt on the server each: 6 s leaves room on a loaded machine.
      await app.put('kept', 'x', { ttl: 6_000, keepAlive: true });
      await app.delete('w');
      expect(await watch.next()).toBeNull();
      await app.deleteTree('dir');
      expect((await app.list('')).map((p) => p.key).sort()).toEqual(['kept', 'seed', 'ttl']);
    } finally {
      await watch.close();
      await tree.close();
    }
  });

  it('a wrong password, an unknown user or no credentials: AuthenticationError when opening, without the password in the error', async () => {
    const attempts: (() => Promise<Store>)[] = [
      () => createStore(`etcdv2://app:${WRONG_PW}@${endpoint}/app`),
      () => openEtcdV2({ endpoints: [endpoint], prefix: 'app', username: 'app', password: WRONG_PW }),
      () => openEtcdV2({ endpoints: [endpoint], prefix: 'app', username: 'nobody', password: WRONG_PW }),
      () => openEtcdV2({ endpoints: [endpoint], prefix: 'app' }),
    ];
    for (const attempt of attempts) {
      const error = await attempt().then(keep, (e: unknown) => e);
      expect(AuthenticationError.isInstance(error), String(error)).toBe(true);
      expect(String(error)).toMatch(/401/);
      expectNoSecret(error);
    }
  });

  it('a user whose roles do not allow a call: PermissionDeniedError, and its other calls still work', async () => {
    const reader = keep(
      await openEtcdV2({ endpoints: [endpoint], prefix: 'app', username: 'reader', password: READER_PW }),
    );
    expect(text((await reader.get('seed')).value)).toBe('x');
    await reader.put('public/note', 'allowed');
    for (const call of [
      () => reader.put('seed', 'refused'),
      () => reader.atomicPut('fresh', 'refused', null),
      () => reader.delete('seed'),
      () => reader.newLock('job', { ttl: 2_000 }).tryLock(),
    ]) {
      const error = await call().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(PermissionDeniedError.isInstance(error), String(error)).toBe(true);
      expectNoSecret(error);
    }
    expect(text((await reader.get('seed')).value)).toBe('x');
    expect(text((await reader.get('public/note')).value)).toBe('allowed');
  });

  it('a user with no role on the prefix cannot open it: AuthenticationError that names the roles as a cause (v2 answers 401 to both)', async () => {
    // outsider's password is right, but etcd's v2 API answers exactly as to a wrong one.
    const error = await openEtcdV2({
      endpoints: [endpoint],
      prefix: 'app',
      username: 'outsider',
      password: 'outsider-pw',
    }).then(keep, (e: unknown) => e);
    expect(AuthenticationError.isInstance(error), String(error)).toBe(true);
    expect(String(error)).toMatch(/roles/);
    const own = keep(
      await openEtcdV2({
        endpoints: [endpoint],
        prefix: 'other',
        username: 'outsider',
        password: 'outsider-pw',
      }),
    );
    await own.put('k', 'v');
    expect(text((await own.get('k')).value)).toBe('v');
  });

  it('a read permission revoked under a running watch ends it with PermissionDeniedError, once, instead of retrying', async () => {
    const reader = keep(
      await openEtcdV2({ endpoints: [endpoint], prefix: 'app', username: 'reader', password: READER_PW }),
    );
    const app = keep(
      await openEtcdV2({ endpoints: [endpoint], prefix: 'app', username: 'app', password: APP_PW }),
    );
    const watch = new Reader(() => reader.watch('seed'), 'watch(seed)', 15_000);
    try {
      expect(text((await watch.next())?.value)).toBe('x');
      await v2Auth(
        base,
        'PUT',
        '/roles/app-ro',
        { role: 'app-ro', revoke: { kv: { read: ['/app/*'] } } },
        ROOT,
      );
      // The long poll in flight was allowed; the next one is not.
      await app.put('seed', 'y');
      let error: unknown;
      for (;;) {
        const result = await watch.result().catch((e: unknown) => e);
        if (result instanceof Error || !(result as IteratorResult<unknown>).value) {
          error = result;
          break;
        }
      }
      expect(PermissionDeniedError.isInstance(error), String(error)).toBe(true);
      expectNoSecret(error);
    } finally {
      await watch.close();
      await v2Auth(
        base,
        'PUT',
        '/roles/app-ro',
        { role: 'app-ro', grant: { kv: { read: ['/app/*'] } } },
        ROOT,
      );
    }
  });
});
