import { createStore, InvalidArgumentError } from '@kv/core';
import { serverFor } from '@kv/test-servers';
import { describe, expect, it } from 'vitest';
import { EtcdV2Store, parseEtcdV2Url } from '../src/index.js';
import { text } from './helpers.js';

const etcd = await serverFor('etcd');

describe('etcdv2:// URLs', () => {
  it('parse into endpoints, prefix, credentials and options', () => {
    expect(parseEtcdV2Url('etcdv2://127.0.0.1:2379/app/x')).toEqual({
      backend: 'etcdv2',
      endpoints: ['127.0.0.1:2379'],
      prefix: '/app/x',
    });
    expect(parseEtcdV2Url('etcdv2s://u:p%40ss@a:1,b:2/p?pollTimeout=500')).toEqual({
      backend: 'etcdv2s',
      endpoints: ['a:1', 'b:2'],
      prefix: '/p',
      username: 'u',
      password: 'p@ss',
      pollTimeout: 500,
      tls: true,
    });
    expect(() => parseEtcdV2Url('etcd://127.0.0.1:2379/app')).toThrow(InvalidArgumentError);
  });

  it.skipIf(!etcd.available)(
    'etcdv2://127.0.0.1:PORT/prefix opens the server there, under the prefix, in the documented layout',
    async () => {
      const endpoint = etcd.endpoints[0] as string;
      expect(endpoint).toMatch(/^127\.0\.0\.1:\d+$/);
      const prefix = `kvtest-etcdv2/url-${Date.now().toString(36)}-${process.pid}`;
      const store = await createStore(`etcdv2://${endpoint}/${prefix}`);
      try {
        expect(store).toBeInstanceOf(EtcdV2Store);
        await store.put('a/b', 'value');
        await store.put('a', 'parent value');
        expect(text((await store.get('a/b')).value)).toBe('value');
        expect((await store.list('')).map((p) => [p.key, text(p.value)])).toEqual([
          ['a', 'parent value'],
          ['a/b', 'value'],
        ]);
        // The layout of the README: a key's value in the leaf `\u0001v` of a directory of its own.
        const leaf = await fetch(`http://${endpoint}/v2/keys/${prefix}/a/b/%01v`);
        expect(((await leaf.json()) as { node: { value: string } }).node.value).toBe('value');
        const parent = await fetch(`http://${endpoint}/v2/keys/${prefix}/a/%01v`);
        expect(((await parent.json()) as { node: { value: string } }).node.value).toBe('parent value');
        await store.deleteTree('a');
        await store.delete('a');
        expect(await store.list('')).toEqual([]);
      } finally {
        await store.close();
      }
    },
  );
});
