import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createStore, type Store } from '@kv/core';
import { describeConformance } from '@kv/core/conformance';
import { afterAll } from 'vitest';
import '@kv/backend-sqlite';

// One file shared by every store the kit opens, as processes would share it.
const dir = mkdtempSync(join(tmpdir(), 'kv-sqlite-conformance-'));
const path = join(dir, 'kv.db');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// The fault cases' own file: a "restart" of an embedded store is every process on the file gone
// (every connection closed, so the WAL is checkpointed and removed), then new ones opened on it.
const faultPath = join(dir, 'faults.db');
const faultStores = new Set<Store>();
const faults = {
  open: async (prefix: string) => {
    const store = await createStore({ backend: 'sqlite', path: faultPath, prefix });
    faultStores.add(store);
    return store;
  },
  reopen: async () => {
    const open = [...faultStores];
    faultStores.clear();
    await Promise.all(open.map((store) => store.close()));
  },
};

describeConformance({
  name: 'sqlite',
  open: (prefix) => createStore({ backend: 'sqlite', path, prefix }),
  // Short lock ttl: the dead-holder test waits about one of them.
  lockTtl: 2_000,
  // A killed process just stops touching the file: closing the connection
  // underneath the store stops its renewals and releases, as death would.
  crash: (store) => {
    (store as unknown as { db: { close(): void } }).db.close();
  },
  // The multi-process recipe cases: child processes open the same file.
  processes: {
    url: (prefix) => `sqlite:${path}?prefix=${encodeURIComponent(prefix)}`,
    imports: ['@kv/backend-sqlite'],
  },
  faults,
});
