import { AuthenticationError, createStore, PermissionDeniedError, type Store } from '@kv/core';
import { afterAll, describe, expect, it } from 'vitest';
import '../src/index.js';
import { privateRedis, text, within } from './helpers.js';

// A private server with a password on the default user and ACL users made with ACL SETUSER.
const { server, skip } = await privateRedis('ACL tests', { password: 'admin-pw' });

describe.skipIf(skip !== false)('redis ACL users and passwords', () => {
  const endpoint = server?.endpoints[0] as string;
  const stores: Store[] = [];
  const open = async (config: Record<string, unknown>) => {
    const store = await createStore({ backend: 'redis', endpoints: [endpoint], ...config });
    stores.push(store);
    return store;
  };

  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await server?.dispose();
  });

  it('sets up users', async () => {
    const replies = await (server as NonNullable<typeof server>).command(
      ['AUTH', 'admin-pw'],
      // Everything the backend needs: its keys, its channel and the keyevent channels, scripts, pub/sub.
      ['ACL', 'SETUSER', 'app', 'on', '>app-pw', '~{kv}:*', '&{kv}:*', '&__keyevent@*', '+@all'],
      [
        'ACL',
        'SETUSER',
        'reader',
        'on',
        '>reader-pw',
        '~*',
        '&*',
        '+@read',
        '+@connection',
        '+evalsha',
        '+eval',
      ],
    );
    expect(replies).toEqual(['+OK', '+OK', '+OK']);
  });

  it('an ACL user with the right password works, by config and by URL, watches included', async () => {
    const byConfig = await open({ username: 'app', password: 'app-pw', prefix: 'acl' });
    await byConfig.put('k', 'v');
    const url = await createStore(`redis://app:app-pw@${endpoint}/acl`);
    stores.push(url);
    expect(text((await url.get('k')).value)).toBe('v');
    const watch = url.watch('k')[Symbol.asyncIterator]();
    // The first event is the current state; then the put.
    const first = await within(watch.next(), 10_000, 'first watch event');
    await byConfig.put('k', 'w');
    const second = await within(watch.next(), 10_000, 'watch event of the put');
    await watch.return?.();
    expect([first.value, second.value].map((p) => p && text(p.value))).toEqual(['v', 'w']);
  });

  it('redis://:password@host (password only, empty user name) authenticates with the password alone', async () => {
    const url = await createStore(`redis://:admin-pw@${endpoint}/acl-pw`);
    stores.push(url);
    await url.put('k', 'v');
    expect(text((await url.get('k')).value)).toBe('v');
    // The same in config form: an empty user name means no user name.
    const byConfig = await open({ username: '', password: 'admin-pw', prefix: 'acl-pw' });
    expect(text((await byConfig.get('k')).value)).toBe('v');
    // Watches use a second connection with the same credentials.
    const watch = url.watch('k')[Symbol.asyncIterator]();
    const first = await within(watch.next(), 10_000, 'first watch event');
    await watch.return?.();
    expect(first.value && text(first.value.value)).toBe('v');
    // A wrong password in that form is still refused.
    await expect(createStore(`redis://:nope@${endpoint}/x`)).rejects.toSatisfy(
      AuthenticationError.isInstance,
    );
  });

  it('a wrong password is AuthenticationError, for an ACL user and for the default user', async () => {
    await expect(open({ username: 'app', password: 'nope' })).rejects.toSatisfy(
      AuthenticationError.isInstance,
    );
    await expect(open({ password: 'nope' })).rejects.toSatisfy(AuthenticationError.isInstance);
    await expect(createStore(`redis://app:nope@${endpoint}/x`)).rejects.toSatisfy(
      AuthenticationError.isInstance,
    );
  });

  it('no password where one is required is AuthenticationError (NOAUTH)', async () => {
    const error = await open({}).catch((e: unknown) => e);
    expect(AuthenticationError.isInstance(error), String(error)).toBe(true);
  });

  it('a user whose ACL refuses writes gets PermissionDeniedError (NOPERM), reads still work', async () => {
    const reader = await open({ username: 'reader', password: 'reader-pw', prefix: 'acl' });
    expect(text((await reader.get('k')).value)).toBe('w');
    const error = await reader.put('k', 'x').catch((e: unknown) => e);
    expect(PermissionDeniedError.isInstance(error), String(error)).toBe(true);
    expect(text((await reader.get('k')).value)).toBe('w');
  });
});
