import { AuthenticationError, createStore, PermissionDeniedError } from '@kv/core';
import '../src/index.js';
import { afterAll, describe, expect, it } from 'vitest';
import { agentCall, privateConsul, text } from './helpers.js';

const ROOT = 'b1e2c3d4-0000-4000-8000-00000000root';
// ACLs on, deny by default. The agent's default token is the root token, so that the launcher's
// readiness probe (which sends none) can read; every store here sends a token of its own.
const acl = await privateConsul('ACL tests', {
  hcl: [
    `acl { enabled = true, default_policy = "deny", tokens { master = "${ROOT}", default = "${ROOT}", agent = "${ROOT}" } }`,
  ],
});

afterAll(async () => {
  await acl.server?.dispose();
});

describe.skipIf(acl.skip !== false)('consul ACLs', () => {
  it('an unknown token is AuthenticationError; a narrow policy is PermissionDeniedError outside it', async () => {
    const server = acl.server as NonNullable<typeof acl.server>;
    const endpoint = server.endpoints[0] as string;
    await expect(createStore(`consul://not-a-token@${endpoint}/app`)).rejects.toBeInstanceOf(
      AuthenticationError,
    );

    await agentCall(server, 'PUT', '/acl/policy', ROOT, {
      Name: 'app-only',
      Rules:
        'key_prefix "app/" { policy = "write" }\nkey_prefix "kv-lock" { policy = "write" }\nsession_prefix "" { policy = "write" }',
    });
    const token = (await agentCall(server, 'PUT', '/acl/token', ROOT, {
      Policies: [{ Name: 'app-only' }],
    })) as {
      SecretID: string;
    };
    // No agent:read: the store falls back to Consul's default session_ttl_min (10 s), unless told.
    await using app = await createStore(`consul://${token.SecretID}@${endpoint}/app?sessionTtlMin=1000`);
    expect(app.capabilities.minTtl).toBe(2_000);
    await app.put('x', 'allowed');
    expect(text((await app.get('x')).value)).toBe('allowed');
    await app.put('t', 'ttl', { ttl: 2_000 });
    const lock = app.newLock('jobs/l', { ttl: 2_000 });
    const lease = await lock.lock();
    expect(lease.fencingToken).toBeGreaterThan(0);
    await lock.unlock();

    await using other = await createStore(`consul://${token.SecretID}@${endpoint}/other`);
    await expect(other.get('x')).rejects.toBeInstanceOf(PermissionDeniedError);
    const putError = await other.put('x', 'denied').catch((e: unknown) => e);
    expect(putError, String((putError as Error).message)).toBeInstanceOf(PermissionDeniedError);
    // A watch on a refused key fails from the iterator; it does not retry forever.
    const watch = other.watch('x')[Symbol.asyncIterator]();
    await expect(watch.next()).rejects.toBeInstanceOf(PermissionDeniedError);
    // Nothing was written outside the policy.
    await using root = await createStore(`consul://${ROOT}@${endpoint}/other`);
    expect(await root.exists('x')).toBe(false);
  });
});
