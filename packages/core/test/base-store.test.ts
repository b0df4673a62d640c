import { describe, expect, it } from 'vitest';
import type { Store } from '../src/index.js';
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
