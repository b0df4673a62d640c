import { startServers } from './group.js';
import { ENV_VARS, type ServerName } from './names.js';
import { tcpOpen } from './probes.js';
import { findEndpointsFile, readEndpointsFile } from './state.js';

async function alreadyProvided(name: ServerName): Promise<boolean> {
  const v = ENV_VARS[name];
  if (process.env[v]) return true;
  const file = findEndpointsFile();
  const endpoints = (file ? readEndpointsFile(file)?.env[v] : undefined)?.split(',').filter(Boolean) ?? [];
  if (endpoints.length === 0) return false;
  const ok = await Promise.all(endpoints.map((e) => tcpOpen(e, 1000)));
  return ok.every(Boolean);
}

/**
 * For vitest's `globalSetup`: starts the named servers once for the whole test run (unless the
 * environment or `cli up` already provides them) and puts their endpoints in process.env, which the
 * test workers inherit; the returned teardown stops them. Usage, in test/global-setup.ts:
 *
 *   import { serversGlobalSetup } from '@kv/test-servers';
 *   export default serversGlobalSetup(['etcd']);
 *
 * A server that cannot start is left out: serverFor() in the tests then reports why (and throws
 * under CI=true).
 */
export function serversGlobalSetup(names: ServerName[]): () => Promise<() => Promise<void>> {
  return async () => {
    const missing: ServerName[] = [];
    for (const n of names) if (!(await alreadyProvided(n))) missing.push(n);
    if (missing.length === 0) return async () => {};
    const started = await startServers(missing, {
      log: (m) => process.stderr.write(`[kv test-servers] ${m}\n`),
    });
    Object.assign(process.env, started.env);
    for (const [n, err] of Object.entries(started.errors)) {
      process.stderr.write(`[kv test-servers] could not start ${n}: ${err.message}\n`);
    }
    return async () => {
      await started.stop();
      for (const k of Object.keys(started.env)) delete process.env[k];
    };
  };
}
