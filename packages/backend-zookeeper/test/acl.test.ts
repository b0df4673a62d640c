import { createStore, PermissionDeniedError, type Store } from '@kv/core';
import { serverFor } from '@kv/test-servers';
import { afterAll, describe, expect, it } from 'vitest';
import '../src/index.js';

// Digest auth needs no server setting: any client may authenticate as any digest identity; the
// nodes' ACLs decide. A store with credentials restricts every node it creates to its identity.
const zookeeper = await serverFor('zookeeper');
const stores: Store[] = [];
afterAll(async () => {
  await Promise.allSettled(stores.map((s) => s.close()));
});

async function open(prefix: string, credentials?: string): Promise<Store> {
  const store = await createStore({
    backend: 'zookeeper',
    endpoints: zookeeper.endpoints,
    prefix,
    requestTimeout: 3_000,
    ...(credentials ? { auth: { scheme: 'digest' as const, credentials } } : {}),
  });
  stores.push(store);
  return store;
}

/** A store on `prefix` without the owner's identity: its open, or its first call, is refused. */
async function expectRefused(prefix: string, credentials?: string): Promise<void> {
  let store: Store;
  try {
    store = await open(prefix, credentials);
  } catch (error) {
    // Opening makes sure the prefix node exists: creating it under a node of alice's is refused.
    expect(PermissionDeniedError.isInstance(error), String(error)).toBe(true);
    return;
  }
  await expect(store.get('k')).rejects.toSatisfy((e: unknown) => PermissionDeniedError.isInstance(e));
  await expect(store.put('k', 'theirs')).rejects.toSatisfy((e: unknown) =>
    PermissionDeniedError.isInstance(e),
  );
  await expect(store.list('')).rejects.toSatisfy((e: unknown) => PermissionDeniedError.isInstance(e));
}

describe.skipIf(!zookeeper.available)(
  `zookeeper ACLs (${zookeeper.available ? 'server found' : zookeeper.reason})`,
  () => {
    const root = `acl${Date.now().toString(36)}`;

    it('nodes made with digest credentials are the identity’s only: another client gets PermissionDeniedError', async () => {
      const alice = await open(`${root}/a`, 'alice:secret');
      await alice.put('k', 'mine');
      await alice.put('dir/deep/x', 'nested');
      expect(new TextDecoder().decode((await alice.get('k')).value)).toBe('mine');
      // No credentials, and the right name with a wrong password (ZooKeeper's digest scheme accepts any
      // credentials at connect: only the ACL checks tell, so that too is PermissionDeniedError).
      await expectRefused(`${root}/a`);
      await expectRefused(`${root}/a`, 'alice:wrong');
      // A second store with the same identity reads and writes (the ACL names the identity, not a session).
      const again = await open(`${root}/a`, 'alice:secret');
      expect(new TextDecoder().decode((await again.get('dir/deep/x')).value)).toBe('nested');
      await again.put('k', 'still mine');
      // Locks and keepAlive keys, made in sessions of their own, carry the identity's ACL too.
      const lock = alice.newLock('l', { ttl: 2_000 });
      await lock.lock();
      await alice.put('live', 'x', { ttl: 2_000, keepAlive: true });
      await expectRefused(`${root}/a`);
      await lock.unlock();
    });

    it('a store without credentials still works on its own nodes', async () => {
      const open_ = await open(`${root}-open`);
      await open_.put('k', 'v');
      expect(new TextDecoder().decode((await open_.get('k')).value)).toBe('v');
    });
  },
);
