import { type EtcdHandle, type EtcdOptions, launchEtcd, serverFor } from '@kv/test-servers';
import { EtcdStore, openEtcd, type EtcdOptions as StoreOptions } from '../src/index.js';

/** The shared etcd of the run, or the reason it is missing (throws under CI=true). */
export async function sharedEtcd(): Promise<
  { endpoints: string[]; skip: false } | { endpoints: []; skip: string }
> {
  const etcd = await serverFor('etcd');
  return etcd.available ? { endpoints: etcd.endpoints, skip: false } : { endpoints: [], skip: etcd.reason };
}

/**
 * A private etcd for tests that change server settings (auth, TLS) or stop
 * and start it. Outside CI a server that cannot be launched skips the tests
 * loudly; with CI=true it fails.
 */
export async function privateEtcd(
  what: string,
  options: EtcdOptions = {},
): Promise<{ server: EtcdHandle; skip: false } | { server: undefined; skip: string }> {
  try {
    return { server: await launchEtcd(options), skip: false };
  } catch (error) {
    const reason = `could not launch a private etcd for ${what}: ${(error as Error).message}`;
    if (process.env.CI === 'true') throw new Error(reason, { cause: error });
    process.stderr.write(`\n${'!'.repeat(78)}\n${reason}\nTHESE TESTS ARE SKIPPED\n${'!'.repeat(78)}\n`);
    return { server: undefined, skip: reason };
  }
}

let counter = 0;
/** A store under a prefix of its own. */
export function openTestStore(
  endpoints: string[],
  name: string,
  options: StoreOptions & Record<string, unknown> = {},
): Promise<EtcdStore> {
  const prefix = `kvtest-etcd/${Date.now().toString(36)}-${process.pid}-${++counter}/${name}`;
  return openEtcd({ endpoints, prefix, ...options });
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

export { EtcdStore };
