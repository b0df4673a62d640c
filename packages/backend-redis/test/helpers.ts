import { launchRedis, type RedisHandle, type RedisOptions } from '@kv/test-servers';

/**
 * A private Redis for tests that change server settings, users or restart it.
 * Outside CI a server that cannot be launched skips the test loudly; with
 * CI=true it fails.
 */
export async function privateRedis(
  what: string,
  options: RedisOptions = {},
): Promise<{ server: RedisHandle; skip: false } | { server: undefined; skip: string }> {
  try {
    return { server: await launchRedis(options), skip: false };
  } catch (error) {
    const reason = `could not launch a private Redis for ${what}: ${(error as Error).message}`;
    if (process.env.CI === 'true') throw new Error(reason, { cause: error });
    process.stderr.write(`\n${'!'.repeat(78)}\n${reason}\nTHESE TESTS ARE SKIPPED\n${'!'.repeat(78)}\n`);
    return { server: undefined, skip: reason };
  }
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
