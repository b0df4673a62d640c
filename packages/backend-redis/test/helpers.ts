import { launchRedis, privateServer, type RedisHandle, type RedisOptions } from '@kv/test-servers';

/**
 * A private Redis for tests that change server settings, users or restart it.
 * Outside CI a server that cannot be launched skips the test loudly; with
 * CI=true it fails.
 */
export function privateRedis(
  what: string,
  options: RedisOptions = {},
): Promise<{ server: RedisHandle; skip: false } | { server: undefined; skip: string }> {
  return privateServer(what, () => launchRedis(options));
}

/** Rejects if `promise` does not settle within `ms`. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export const text = (value: Uint8Array): string => new TextDecoder().decode(value);
