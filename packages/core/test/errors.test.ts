import { describe, expect, it } from 'vitest';
import {
  abortError,
  ClosedError,
  InvalidKeyError,
  isAbortError,
  KeyExistsError,
  KeyNotFoundError,
  KVError,
  NotSupportedError,
  UnknownBackendError,
  ValueTooLargeError,
} from '../src/index.js';

describe('KVError', () => {
  it('carries a stable code, its class name and the cause', () => {
    const cause = new Error('driver said no');
    const error = new KeyNotFoundError('a/b', { cause });
    expect(error).toBeInstanceOf(KVError);
    expect(error.code).toBe('KEY_NOT_FOUND');
    expect(error.name).toBe('KeyNotFoundError');
    expect(error.key).toBe('a/b');
    expect(error.cause).toBe(cause);
    expect(new ClosedError().cause).toBeUndefined();
    expect(new ValueTooLargeError(11, 10).message).toContain('11');
    const limited = new ValueTooLargeError(11, 10, { limit: 'the setting max_size', cause });
    expect(limited.message).toMatch(/maxValueSize of 10 \(the setting max_size\)$/);
    expect(limited.cause).toBe(cause);
    expect(new NotSupportedError('x', 'watchTree').feature).toBe('watchTree');
  });

  it('isInstance works across duplicated package copies (the Symbol.for marker)', () => {
    // What a KeyNotFoundError from another copy of @kv/core looks like to this one.
    const foreign = new Error('key not found');
    Object.defineProperty(foreign, Symbol.for('@kv/core.KVError'), { value: 'KEY_NOT_FOUND' });
    expect(foreign instanceof KVError).toBe(false);
    expect(KVError.isInstance(foreign)).toBe(true);
    expect(KeyNotFoundError.isInstance(foreign)).toBe(true);
    expect(KeyExistsError.isInstance(foreign)).toBe(false);
    const plain = { [Symbol.for('@kv/core.KVError')]: 'CLOSED' };
    expect(ClosedError.isInstance(plain)).toBe(true);
  });

  it('isInstance is false for anything else', () => {
    for (const value of [new Error('x'), null, undefined, 'KEY_NOT_FOUND', 42, { code: 'KEY_NOT_FOUND' }]) {
      expect(KVError.isInstance(value)).toBe(false);
      expect(KeyNotFoundError.isInstance(value)).toBe(false);
    }
    expect(InvalidKeyError.isInstance(new KeyNotFoundError('k'))).toBe(false);
    expect(KVError.isInstance(new KeyNotFoundError('k'))).toBe(true);
  });

  it('UnknownBackendError names the package to install and the registered backends', () => {
    const error = new UnknownBackendError('consul', ['etcd', 'sqlite']);
    expect(error.packageName).toBe('@kv/backend-consul');
    expect(error.message).toContain('@kv/backend-consul');
    expect(error.message).toContain('etcd, sqlite');
  });
});

describe('abortError', () => {
  it('is named AbortError with the signal reason as cause, like timers/promises', async () => {
    const controller = new AbortController();
    const reason = new Error('stop');
    controller.abort(reason);
    const error = abortError(controller.signal);
    expect(error.name).toBe('AbortError');
    expect(error.cause).toBe(reason);
    expect(isAbortError(error)).toBe(true);
    expect(isAbortError(new Error('x'))).toBe(false);
    const { setTimeout: sleep } = await import('node:timers/promises');
    const native = await sleep(1, undefined, { signal: controller.signal }).catch((e: unknown) => e);
    expect((native as Error).name).toBe(error.name);
    expect((native as Error).cause).toBe(error.cause);
  });
});
