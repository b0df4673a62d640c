import { expect } from 'vitest';
import { KVError, type KVPair, normalizeKey, parseStoreUrl, type Store } from '../index.js';
import { type Define, describeError, sameBytes, settle, text } from './harness.js';

/** Runs per property: bounded, so a remote backend stays within seconds. */
export const FUZZ_RUNS = 60;

type FastCheck = typeof import('fast-check');

/** fast-check is an optional peer dependency of the kit: loaded only here, with a clear error when missing. */
async function loadFastCheck(): Promise<FastCheck> {
  try {
    return (await import('fast-check')) as FastCheck;
  } catch (error) {
    throw new Error(
      'the fuzz cases need fast-check: add `fast-check` (4.x) to the devDependencies of the package that runs the kit',
      { cause: error },
    );
  }
}

/** Asserts `error` is a KVError with one of `codes`. */
function expectCode(error: unknown, codes: readonly string[], what: string): void {
  if (!KVError.isInstance(error) || !codes.includes(error.code)) {
    throw new Error(
      `${what}: expected a KVError with code ${codes.join(' or ')}, got ${describeError(error)}`,
      {
        cause: error,
      },
    );
  }
}

async function snapshotOf(store: Store): Promise<Map<string, KVPair>> {
  return new Map((await store.list('keep')).map((p) => [p.key, p]));
}

async function expectUnchanged(store: Store, before: Map<string, KVPair>, what: string): Promise<void> {
  const after = await snapshotOf(store);
  expect([...after.keys()], `${what}: the keys stored before`).toEqual([...before.keys()]);
  for (const [key, pair] of before) {
    const now = after.get(key) as KVPair;
    expect(sameBytes(now.value, pair.value), `${what}: ${key} changed`).toBe(true);
    expect(now.lastIndex, `${what}: ${key} was rewritten`).toBe(pair.lastIndex);
  }
}

export function fuzzCases(define: Define): void {
  define(
    'fuzzed keys and values: every rejection is a KVError with the right code; whatever is accepted round-trips byte for byte; nothing stored before changes',
    { rows: ['fuzz', 'put', 'get', 'delete'], timeout: () => 120_000 },
    async (t) => {
      const fc = await loadFastCheck();
      const { store } = t;
      for (let i = 0; i < 3; i++) await store.put(`keep/k${i}`, `kept ${i}`);
      const before = await snapshotOf(store);
      const keyChars = fc.oneof(
        fc.constantFrom(
          '/',
          '.',
          '..',
          '\u0000',
          '\u001f',
          '\u007f',
          '\ud800',
          '%',
          '?',
          '#',
          ' ',
          '\\',
          '*',
        ),
        fc.string({ unit: 'grapheme', maxLength: 3 }),
        fc.string({ unit: 'binary', maxLength: 3 }),
      );
      const key = fc.array(keyChars, { minLength: 0, maxLength: 8 }).map((parts) => parts.join(''));
      const max = t.caps.maxValueSize;
      const value = fc.oneof(
        fc.uint8Array({ maxLength: 64 }),
        fc.string({ unit: 'grapheme', maxLength: 32 }),
        fc.integer({ min: 0, max: Math.min(max, 1 << 16) }).map((n) => new Uint8Array(n).fill(7)),
      );
      let accepted = 0;
      let refused = 0;
      await fc.assert(
        fc.asyncProperty(key, value, async (raw, v) => {
          const k = `f/${raw}`;
          let valid = true;
          try {
            normalizeKey(k);
          } catch {
            valid = false;
          }
          const put = await store.put(k, v).then(
            () => undefined,
            (error: unknown) => error,
          );
          if (!valid) {
            expectCode(put, ['INVALID_KEY'], `put(${JSON.stringify(k)})`);
            refused++;
            return;
          }
          if (put !== undefined)
            throw new Error(`put(${JSON.stringify(k)}) refused a valid key: ${describeError(put)}`);
          accepted++;
          const bytes = typeof v === 'string' ? new TextEncoder().encode(v) : v;
          const pair = await store.get(k);
          expect(pair.key).toBe(normalizeKey(k));
          expect(sameBytes(pair.value, bytes), `get(${JSON.stringify(k)}) round-trip`).toBe(true);
          expect(
            (await store.list('')).some((p) => p.key === pair.key),
            'listed',
          ).toBe(true);
          await store.delete(k);
          expect(await store.exists(k)).toBe(false);
        }),
        { numRuns: FUZZ_RUNS, endOnFailure: true },
      );
      await expectUnchanged(store, before, 'after fuzzed keys');
      expect(accepted, 'some fuzzed keys were valid').toBeGreaterThan(0);
      expect(refused, 'some fuzzed keys were invalid').toBeGreaterThan(0);
    },
  );

  define(
    'fuzzed write options: InvalidArgumentError or NotSupportedError, and nothing written',
    { rows: ['fuzz', 'put', 'atomicPut'], timeout: () => 120_000 },
    async (t) => {
      const fc = await loadFastCheck();
      const { store } = t;
      for (let i = 0; i < 3; i++) await store.put(`keep/k${i}`, `kept ${i}`);
      const before = await snapshotOf(store);
      const ttl = fc.oneof(
        fc.integer(),
        fc.double(),
        fc.string({ maxLength: 6 }),
        fc.boolean(),
        fc.constant(null),
        fc.constant(Number.NaN),
        fc.constant(2 ** 31),
      );
      const extra = fc.oneof(
        fc.constant({}),
        fc.constant({ keepAlive: 'yes' }),
        fc.constant({ signal: 'nope' }),
        fc.constant({ ttl1: 5 }),
      );
      await fc.assert(
        fc.asyncProperty(ttl, extra, fc.boolean(), async (ttlValue, more, cas) => {
          const options = { ttl: ttlValue, ...more } as never;
          const result = await settle(() =>
            cas
              ? store.atomicPut('opt/k', 'v', null, options).then(() => {})
              : store.put('opt/k', 'v', options),
          );
          if (result.ok) {
            // Accepted: only a whole number of ms within the limits, without bad extras.
            expect(Number.isSafeInteger(ttlValue) && (ttlValue as number) >= t.caps.minTtl).toBe(true);
            expect(Object.keys(more)).toEqual([]);
            await store.delete('opt/k');
            return;
          }
          expectCode(result.error, ['INVALID_ARGUMENT', 'NOT_SUPPORTED'], `put with ttl ${String(ttlValue)}`);
          expect(await store.exists('opt/k'), 'a refused write wrote nothing').toBe(false);
        }),
        { numRuns: FUZZ_RUNS, endOnFailure: true },
      );
      await expectUnchanged(store, before, 'after fuzzed options');
      expect(text((await store.get('keep/k0')).value)).toBe('kept 0');
    },
  );

  define(
    'fuzzed store URLs: parsed, or refused with InvalidArgumentError; never another error',
    { rows: ['fuzz'] },
    async () => {
      const fc = await loadFastCheck();
      const scheme = fc.constantFrom('etcd', 'redis', 'sqlite', 'consul', 'x-y', '9bad', '');
      const url = fc.oneof(
        fc.string({ unit: 'binary', maxLength: 40 }),
        fc.webUrl({ withQueryParameters: true, withFragments: true }),
        fc.tuple(scheme, fc.string({ unit: 'grapheme', maxLength: 30 })).map(([s, rest]) => `${s}://${rest}`),
        fc
          .tuple(
            scheme,
            fc.array(fc.constantFrom('a=1', 'a=2', 'b=%zz', 'prefix=x', '=', '&', 'db=0'), { maxLength: 4 }),
          )
          .map(([s, query]) => `${s}://127.0.0.1:1/p?${query.join('&')}`),
      );
      fc.assert(
        fc.property(url, (u) => {
          try {
            parseStoreUrl(u);
          } catch (error) {
            expectCode(error, ['INVALID_ARGUMENT'], `parseStoreUrl(${JSON.stringify(u)})`);
          }
        }),
        { numRuns: FUZZ_RUNS * 5 },
      );
    },
  );
}
