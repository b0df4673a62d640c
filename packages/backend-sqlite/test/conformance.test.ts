import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createStore } from '@kv/core';
import { describeConformance } from '@kv/core/conformance';
import { afterAll } from 'vitest';
import type { SqliteStore } from '../src/index.js';
import '@kv/backend-sqlite';

// One file shared by every store the kit opens, as processes would share it.
const dir = mkdtempSync(join(tmpdir(), 'kv-sqlite-conformance-'));
const path = join(dir, 'kv.db');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describeConformance({
  name: 'sqlite',
  open: (prefix) => createStore({ backend: 'sqlite', path, prefix }),
  // Short lock ttl: the dead-holder test waits about one of them.
  lockTtl: 2_000,
  // A killed process just stops touching the file: closing the connection
  // underneath the store stops its renewals and releases, as death would.
  crash: (store) => {
    (store as SqliteStore).db.close();
  },
  // The multi-process recipe cases: child processes open the same file.
  processes: {
    url: (prefix) => `sqlite:${path}?prefix=${encodeURIComponent(prefix)}`,
    imports: ['@kv/backend-sqlite'],
  },
});
