/** Checks the kit makes before and after its tests, so a backend's mistake reads as one clear message. */
import { type Capabilities, KeyNotFoundError, NotSupportedError, type Store } from '../index.js';

/**
 * Every test opens several stores (one per client) and needs them to see one
 * data set, like connections to one server. A backend whose stores each keep
 * their own data would fail dozens of tests with symptoms; this says why once.
 */
export async function checkSharedDataSet(
  open: (prefix: string) => Promise<Store>,
  admin: Store,
  root: string,
  name: string,
  waitMs: number,
): Promise<void> {
  const key = 'kit-data-set-check';
  const value = `${root}:${Math.random().toString(36).slice(2)}`;
  await admin.put(key, value);
  const other = await open(root);
  try {
    const deadline = performance.now() + waitMs;
    for (;;) {
      const seen = await other.get(key).then(
        (pair) => new TextDecoder().decode(pair.value) === value,
        (error: unknown) => {
          if (KeyNotFoundError.isInstance(error)) return false;
          throw error;
        },
      );
      if (seen) break;
      if (performance.now() >= deadline) {
        throw new Error(
          `${name}: the stores open() gives do not share one data set: a key put through one store was not readable through another store opened with the same prefix within ${waitMs} ms. The kit opens several stores per test (one per client, as several processes would) and needs every one of them to see the same data, like connections to one server; an in-process backend must keep its data outside the store object (e.g. one data set per process, or per name). No test runs until this holds.`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    await other.close();
    await admin.delete(key).catch(() => {});
  }
}

type BooleanCapability = 'watch' | 'watchTree' | 'lock' | 'ttl' | 'keepAlive' | 'consistentRead';

/** `NotSupportedError.feature` values, by the capability that declares them. */
const FEATURE_CAPABILITY: Readonly<Record<string, BooleanCapability>> = {
  watch: 'watch',
  watchTree: 'watchTree',
  locks: 'lock',
  ttl: 'ttl',
  keepAlive: 'keepAlive',
  'consistent reads': 'consistentRead',
};

/** The `NotSupportedError` in a failure or its `cause` chain. */
export function findNotSupported(failure: unknown): unknown {
  for (let error = failure, depth = 0; error && depth < 8; depth++) {
    if (NotSupportedError.isInstance(error)) return error;
    error = (error as { cause?: unknown }).cause;
  }
  return undefined;
}

/** The capability a test failed on because the store declares it true but throws `NotSupportedError` for it. */
export function unimplementedCapability(failure: unknown, caps: Capabilities): BooleanCapability | undefined {
  const error = findNotSupported(failure) as NotSupportedError | undefined;
  const capability = error ? FEATURE_CAPABILITY[error.feature] : undefined;
  return capability && caps[capability] === true ? capability : undefined;
}
