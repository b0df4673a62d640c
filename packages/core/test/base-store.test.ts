import { describe, expect, it } from 'vitest';
import {
  KeyExistsError,
  KeyModifiedError,
  KeyNotFoundError,
  type PrimitiveWriteOptions,
  type RawPair,
  type Store,
} from '../src/index.js';
import { MemoryServer, MemoryStore } from '../src/memory-store.js';

function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  return Promise.race([
    promise,
    new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), ms)),
  ]);
}

/** return() with a next() pending must end the iteration at once, not at the next change. */
async function returnsAtOnce(open: (store: Store) => AsyncIterable<unknown>): Promise<void> {
  const store = new MemoryStore({ server: new MemoryServer() });
  try {
    const iterator = open(store)[Symbol.asyncIterator]();
    await iterator.next();
    const pending = iterator.next();
    expect(await within(Promise.resolve(iterator.return?.()), 1_000), 'return()').not.toBe('timeout');
    expect(await within(pending, 1_000), 'the pending next()').toEqual({ value: undefined, done: true });
  } finally {
    await store.close();
  }
}

describe('BaseStore iterators', () => {
  it('watch: return() ends it at once, even with a next() pending', () => returnsAtOnce((s) => s.watch('k')));

  // watchTree is a plain iterator on purpose: an async generator queues return() behind a pending next().
  it('watchTree: return() ends it at once, even with a next() pending', () =>
    returnsAtOnce((s) => s.watchTree('d')));
});

/** A backend that names the full storage key (prefix included) in its CAS errors: a common mistake. */
class FullKeyErrors extends MemoryStore {
  protected override async _atomicPut(
    key: string,
    _value: Uint8Array,
    previousIndex: number | null,
    _options: PrimitiveWriteOptions,
  ): Promise<RawPair> {
    throw previousIndex === null ? new KeyExistsError(key) : new KeyModifiedError(key);
  }
  protected override async _atomicDelete(key: string): Promise<void> {
    throw new KeyNotFoundError(key, { cause: new Error('driver') });
  }
}

describe('BaseStore CAS errors', () => {
  it('name the user key even when the backend names the prefixed storage key', async () => {
    const store = new FullKeyErrors({ prefix: 'app/tenant' });
    const pair = { key: 'a/b', value: new Uint8Array(), lastIndex: 1 };
    try {
      const exists = await store.atomicPut('a/b', 'v', null).catch((e: unknown) => e);
      expect(KeyExistsError.isInstance(exists)).toBe(true);
      expect((exists as KeyExistsError).key).toBe('a/b');
      expect((exists as Error).message).not.toContain('app/tenant');
      const modified = await store.atomicPut('a/b', 'v', pair).catch((e: unknown) => e);
      expect((modified as KeyModifiedError).key).toBe('a/b');
      expect(KeyModifiedError.isInstance(modified)).toBe(true);
      const missing = await store.atomicDelete('a/b', pair).catch((e: unknown) => e);
      expect(KeyNotFoundError.isInstance(missing)).toBe(true);
      expect((missing as KeyNotFoundError).key).toBe('a/b');
      expect(((missing as Error).cause as Error).message).toBe('driver');
    } finally {
      await store.close();
    }
  });
});

/** A backend whose listing source hands back whatever it holds near the directory, in any order. */
class LooseListing extends MemoryStore {
  raw: RawPair[] = [];
  protected override async _list(): Promise<RawPair[]> {
    return this.raw;
  }
}

describe('BaseStore listings', () => {
  const bytes = new Uint8Array([1]);
  // Full storage keys around directory `d` (prefix `p` where there is one): below it, beside it
  // (`dd`, `d0`), the directory itself, helper keys (a control character anywhere below it), and
  // keys whose UTF-16 order differs from their code point order (U+FFFD after a surrogate pair).
  const below = [
    'd/b',
    'd/a',
    'd/a/x',
    'd/\uFFFD',
    'd/\u{1F600}',
    'd/c/\u007Fz',
    'd/\u0001lock/1',
    'd/a\u0000',
  ];
  const around = ['d', 'dd/x', 'd0', 'c/d/x', 'e'];

  for (const prefix of ['', 'p', 'p/q']) {
    it(`keep what is strictly below the directory, hide helper keys, strip the prefix and sort (prefix "${prefix}")`, async () => {
      const store = new LooseListing({ prefix });
      const full = (key: string) => (prefix === '' ? key : `${prefix}/${key}`);
      let seq = 0;
      store.raw = [...below, ...around].map((key) => ({ key: full(key), value: bytes, lastIndex: ++seq }));
      const listing = await store.list('d');
      // UTF-16 order: the surrogate pair (U+D83D U+DE00) before U+FFFD.
      expect(listing.map((pair) => pair.key)).toEqual(['d/a', 'd/a/x', 'd/b', 'd/\u{1F600}', 'd/\uFFFD']);
      expect(listing.find((pair) => pair.key === 'd/a')?.lastIndex).toBe(2);
      // Already in order: handed back as is, with the helper keys still dropped.
      store.raw = ['d/a', 'd/\u0001x', 'd/b', 'd/c'].map((key, i) => ({
        key: full(key),
        value: bytes,
        lastIndex: i,
      }));
      expect((await store.list('d')).map((pair) => pair.key)).toEqual(['d/a', 'd/b', 'd/c']);
      // The root of the store: everything but helper keys.
      store.raw = ['b', 'a/\u0002', 'a'].map((key, i) => ({ key: full(key), value: bytes, lastIndex: i }));
      expect((await store.list('')).map((pair) => pair.key)).toEqual(['a', 'b']);
      await store.close();
    });
  }
});
