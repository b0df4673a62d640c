import { describe, expect, it } from 'vitest';
import { backendPackages, createStore, UnknownBackendError } from '../src/index.js';

describe('backend packages', () => {
  it('a TLS scheme names the package of its plain backend', async () => {
    expect(new UnknownBackendError('rediss', []).packageName).toBe('@kv/backend-redis');
    expect(new UnknownBackendError('etcds', []).message).toContain('npm install @kv/backend-etcd`');
    expect(new UnknownBackendError('consuls', []).packageName).toBe('@kv/backend-consul');
    expect(new UnknownBackendError('etcdv2s', []).packageName).toBe('@kv/backend-etcdv2');
    expect(backendPackages('rediss')).toEqual(['@kv/backend-redis']);
  });

  it('a name that is not ours: both conventions are tried, and the advice says how to register', async () => {
    expect(backendPackages('mongo')).toEqual(['@kv/backend-mongo', 'kv-backend-mongo']);
    const error = await createStore('mongo://127.0.0.1:1').catch((e: unknown) => e);
    expect(UnknownBackendError.isInstance(error)).toBe(true);
    const unknown = error as UnknownBackendError;
    expect(unknown.packageName).toBe('kv-backend-mongo');
    expect(unknown.tried).toEqual(['@kv/backend-mongo', 'kv-backend-mongo']);
    expect(unknown.message).not.toContain('npm install @kv/backend-mongo');
    expect(unknown.message).toContain('tried @kv/backend-mongo and kv-backend-mongo');
    expect(unknown.message).toContain('import it before createStore');
    // memory is built in; the workspace's own backend packages are installed next to @kv/core's tests.
    expect(unknown.registered).toContain('memory');
    expect(unknown.message).toMatch(/Registered backends: [^.]*memory/);
  });
});
