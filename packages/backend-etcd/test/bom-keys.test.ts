import type { TreeEvent } from '@kv/core';
import { afterAll, describe, expect, it } from 'vitest';
import { type EtcdStore, openEtcd } from '../src/index.js';
import { sharedEtcd, text, within } from './helpers.js';

const etcd = await sharedEtcd();

// A store key may start with U+FEFF (it is no control character). In an unprefixed store the etcd
// key then starts with the bytes EF BB BF, which a TextDecoder drops by default as a byte-order
// mark: every read that decodes keys from the server must keep them.
describe.skipIf(etcd.skip !== false)('etcd keys that start with U+FEFF, in an unprefixed store', () => {
  let store: EtcdStore | undefined;
  const dir = `\uFEFFkvtest-bom-${Date.now().toString(36)}-${process.pid}`;
  afterAll(async () => {
    await store?.deleteTree(dir).catch(() => {});
    await store?.close();
  });

  it('keep it in get, list, keys, range and watchTree events', async () => {
    store = await openEtcd({ endpoints: etcd.endpoints, prefix: '' });
    const key = `${dir}/a`;
    const watch = store.watchTree(dir)[Symbol.asyncIterator]();
    const first = await within(watch.next(), 10_000, 'the watch of the directory');
    expect((first.value as TreeEvent).pairs).toEqual([]);

    await store.put(key, 'with a BOM');
    const event = await within(watch.next(), 10_000, 'the put in the watch of the directory');
    const tree = event.value as TreeEvent;
    expect(tree.pairs.map((p) => p.key)).toEqual([key]);
    expect(tree.changes.map((c) => (c.type === 'put' ? c.pair.key : c.key))).toEqual([key]);
    await watch.return?.();

    expect(text((await store.get(key)).value)).toBe('with a BOM');
    expect((await store.list(dir)).map((p) => p.key)).toEqual([key]);
    expect(await store.keys(dir)).toEqual([key]);
    expect((await store.range(`${dir}/`, `${dir}0`)).map((p) => p.key)).toEqual([key]);
  });
});
