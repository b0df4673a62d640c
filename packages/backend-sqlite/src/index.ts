import { registerBackend } from '@kv/core';
import { parseSqliteUrl, SQLITE_OPTIONS, type SqliteOptions } from './sqlite-config.js';
import { SQLITE_CAPABILITIES, SqliteStore } from './sqlite-store.js';

export { SQLITE_CAPABILITIES, type SqliteOptions, SqliteStore };

registerBackend({
  name: 'sqlite',
  capabilities: SQLITE_CAPABILITIES,
  options: SQLITE_OPTIONS,
  parseUrl: parseSqliteUrl,
  create: (config) => SqliteStore.open(config as Parameters<typeof SqliteStore.open>[0]),
});
