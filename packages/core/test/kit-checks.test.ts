import { describe, expect, it } from 'vitest';
import { checkSharedDataSet, unimplementedCapability } from '../src/conformance/kit-checks.js';
import {
  BaseStore,
  type Capabilities,
  MEMORY_CAPABILITIES,
  MemoryServer,
  MemoryStore,
  NotSupportedError,
  type RawPair,
} from '../src/index.js';

/** A store that declares watch, watchTree and lock but implements none of them. */
class Overclaiming extends BaseStore {
  constructor() {
    super({ backend: 'overclaiming', capabilities: MEMORY_CAPABILITIES, prefix: '', requestTimeout: 1_000 });
  }
  protected async _get(): Promise<RawPair | null> {
    return null;
  }
  protected async _put(): Promise<void> {}
  protected async _delete(): Promise<void> {}
  protected async _list(): Promise<RawPair[]> {
    return [];
  }
  protected async _deleteTree(): Promise<void> {}
  protected async _atomicPut(): Promise<RawPair> {
    throw new Error('unused');
  }
  protected async _atomicDelete(): Promise<void> {}
  protected async _close(): Promise<void> {}
}

describe('the kit: a capability declared true but not implemented', () => {
  it('BaseStore says "declared true but not implemented"; the kit blames only that capability', async () => {
    const store = new Overclaiming();
    const watch = await store
      .watch('k')
      [Symbol.asyncIterator]()
      .next()
      .catch((e: unknown) => e);
    expect(NotSupportedError.isInstance(watch)).toBe(true);
    expect((watch as Error).message).toContain('capabilities.watch is declared true but not implemented');
    const lock = await store
      .newLock('l')
      .lock()
      .catch((e: unknown) => e);
    expect((lock as Error).message).toContain('capabilities.lock is declared true but not implemented');
    // As a test failure wraps it (an assertion with a cause).
    const wrapped = new Error('close ends the watch: expected ...', { cause: watch });
    expect(unimplementedCapability(wrapped, MEMORY_CAPABILITIES)).toBe('watch');
    expect(unimplementedCapability(lock, MEMORY_CAPABILITIES)).toBe('lock');
    const declaredFalse: Capabilities = { ...MEMORY_CAPABILITIES, watch: false };
    expect(unimplementedCapability(watch, declaredFalse)).toBeUndefined();
    expect(unimplementedCapability(new Error('x'), MEMORY_CAPABILITIES)).toBeUndefined();
    await store.close();
  });
});

describe('the kit: stores that do not share one data set', () => {
  it('passes when every store opened is a client of one data set', async () => {
    const server = new MemoryServer();
    const admin = new MemoryStore({ server, prefix: 'kit' });
    await checkSharedDataSet(
      async (prefix) => new MemoryStore({ server, prefix }),
      admin,
      'kit',
      'shared',
      100,
    );
    expect(await admin.list('')).toEqual([]);
    await admin.close();
  });

  it('fails with one message naming the problem when each store has its own data', async () => {
    const admin = new MemoryStore({ prefix: 'kit' });
    const error = await checkSharedDataSet(
      async (prefix) => new MemoryStore({ prefix }),
      admin,
      'kit',
      'private',
      100,
    ).catch((e: unknown) => e);
    expect((error as Error).message).toContain('private: the stores open() gives do not share one data set');
    await admin.close();
  });
});
