import { describe, expect, it } from 'vitest';
import { createStore, UnknownBackendError } from '../src/index.js';

describe('backend packages', () => {
  it('a TLS scheme names the package of its plain backend', async () => {
    const error = await createStore('rediss-nothere://127.0.0.1:1').catch((e: unknown) => e);
    expect(UnknownBackendError.isInstance(error)).toBe(true);
    expect((error as UnknownBackendError).packageName).toBe('@kv/backend-rediss-nothere');
    expect(new UnknownBackendError('rediss', []).packageName).toBe('@kv/backend-redis');
    expect(new UnknownBackendError('etcds', []).message).toContain('npm install @kv/backend-etcd`');
  });
});
