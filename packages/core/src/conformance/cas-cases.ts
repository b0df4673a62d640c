import { expect } from 'vitest';
import {
  InvalidArgumentError,
  KeyExistsError,
  KeyModifiedError,
  KeyNotFoundError,
  type KVPair,
  type Store,
} from '../index.js';
import { type Define, expectKVError, expectPair, keys, text } from './harness.js';

export const CAS_CLIENTS = 8;
export const CAS_ROUNDS = 25;

export function casCases(define: Define): void {
  define(
    'atomicPut(k, v, null) creates only: KeyExistsError when the key exists',
    { rows: ['atomicPut'] },
    async ({ store }) => {
      const created = await store.atomicPut('new', 'first', null);
      expectPair(created, 'new', 'first');
      expect((await store.get('new')).lastIndex).toBe(created.lastIndex);
      const error = await expectKVError(
        () => store.atomicPut('new', 'second', null),
        KeyExistsError,
        'create twice',
      );
      expect(error.code).toBe('KEY_EXISTS');
      expect((error as KeyExistsError).key, 'the error names the key, without the store prefix').toBe('new');
      expectPair(await store.get('new'), 'new', 'first');
      await store.put('plain', 'x');
      await expectKVError(() => store.atomicPut('plain/', 'y', null), KeyExistsError, 'create over a put');
    },
  );

  define(
    'atomicPut with the current pair replaces; the returned lastIndex works for the next CAS; a stale one is KeyModifiedError',
    { rows: ['atomicPut'] },
    async ({ store }) => {
      const p1 = await store.atomicPut('cas', 'v1', null);
      const p2 = await store.atomicPut('cas', 'v2', p1);
      expectPair(p2, 'cas', 'v2');
      expect(p2.lastIndex).not.toBe(p1.lastIndex);
      const p3 = await store.atomicPut('cas', 'v3', p2);
      const error = await expectKVError(
        () => store.atomicPut('cas', 'stale', p1),
        KeyModifiedError,
        'stale CAS',
      );
      expect(error.code).toBe('KEY_MODIFIED');
      expectPair(await store.get('cas'), 'cas', 'v3');
      // Pairs from get and list work too.
      const fromGet = await store.get('cas');
      expect(fromGet.lastIndex).toBe(p3.lastIndex);
      const p4 = await store.atomicPut('cas', 'v4', fromGet);
      const fromList = (await store.list('')).find((p) => p.key === 'cas') as KVPair;
      expect(fromList.lastIndex).toBe(p4.lastIndex);
      const p5 = await store.atomicPut('/cas/', 'v5', fromList);
      // A plain write of the same value still moves lastIndex, so the old pair is stale.
      await store.put('cas', 'v5');
      await expectKVError(
        () => store.atomicPut('cas', 'v6', p5),
        KeyModifiedError,
        'CAS after a same-value put',
      );
      expectPair(await store.get('cas'), 'cas', 'v5');
    },
  );

  define(
    'atomicPut with a previous pair on a missing key is KeyNotFoundError and creates nothing',
    { rows: ['atomicPut'] },
    async ({ store }) => {
      const p = await store.atomicPut('gone', 'v', null);
      await store.delete('gone');
      const error = await expectKVError(
        () => store.atomicPut('gone', 'again', p),
        KeyNotFoundError,
        'CAS on a deleted key',
      );
      expect(error.code).toBe('KEY_NOT_FOUND');
      expect(await store.exists('gone')).toBe(false);
    },
  );

  define(
    'a made-up previous pair at lastIndex 0 or below is InvalidArgumentError: nothing is created, replaced or deleted',
    { rows: ['atomicPut', 'atomicDelete'] },
    async ({ store }) => {
      // Versions start at 1. Sent to a server, 0 can mean "no condition" (etcd v2's prevIndex) or "create"
      // (Consul's cas=0), and a negative index may not even parse.
      const madeUp = (key: string, lastIndex: number): KVPair => ({
        key,
        value: new Uint8Array(0),
        lastIndex,
      });
      await store.put('made-up/there', 'kept');
      for (const index of [0, -1]) {
        for (const key of ['made-up/missing', 'made-up/there']) {
          await expectKVError(
            () => store.atomicPut(key, 'v', madeUp(key, index)),
            InvalidArgumentError,
            `atomicPut of ${key} at lastIndex ${index}`,
          );
          await expectKVError(
            () => store.atomicDelete(key, madeUp(key, index)),
            InvalidArgumentError,
            `atomicDelete of ${key} at lastIndex ${index}`,
          );
        }
      }
      expect(await store.exists('made-up/missing')).toBe(false);
      const kept = await store.get('made-up/there');
      expectPair(kept, 'made-up/there', 'kept');
      expect(kept.lastIndex, 'a version is a positive integer').toBeGreaterThanOrEqual(1);
    },
  );

  define(
    'atomicPut creates under a missing parent; a trailing-slash key with an empty value works',
    { rows: ['atomicPut'] },
    async ({ store }) => {
      const deep = await store.atomicPut('no/such/parent/key', 'deep', null);
      expectPair(deep, 'no/such/parent/key', 'deep');
      expect(keys(await store.list('no'))).toEqual(['no/such/parent/key']);
      expect(await store.exists('no')).toBe(false);
      const empty = await store.atomicPut('dirlike/', '', null);
      expect(empty.key).toBe('dirlike');
      expect(empty.value.byteLength).toBe(0);
      expect((await store.get('dirlike')).value.byteLength).toBe(0);
      const again = await store.atomicPut('dirlike/', new Uint8Array(0), empty);
      expect(again.lastIndex).not.toBe(empty.lastIndex);
      await expectKVError(
        () => store.atomicPut('dirlike', 'x', null),
        KeyExistsError,
        'create over dirlike/',
      );
      // A child under a key that holds a value.
      await store.atomicPut('dirlike/child', 'c', null);
      expect(keys(await store.list('dirlike'))).toEqual(['dirlike/child']);
    },
  );

  define(
    'atomicDelete: a stale pair is KeyModifiedError, the current one deletes, a missing key is KeyNotFoundError',
    { rows: ['atomicDelete'] },
    async ({ store }) => {
      const p1 = await store.atomicPut('del', 'v1', null);
      const p2 = await store.atomicPut('del', 'v2', p1);
      await store.put('del/child', 'stays');
      const stale = await expectKVError(
        () => store.atomicDelete('del', p1),
        KeyModifiedError,
        'atomicDelete with a stale pair',
      );
      expect((stale as KeyModifiedError).key, 'the error names the key, without the store prefix').toBe(
        'del',
      );
      expectPair(await store.get('del'), 'del', 'v2');
      await store.atomicDelete('del/', p2);
      expect(await store.exists('del')).toBe(false);
      expect(await store.exists('del/child'), 'atomicDelete removes only the key').toBe(true);
      const missing = await expectKVError(
        () => store.atomicDelete('del', p2),
        KeyNotFoundError,
        'atomicDelete of a missing key',
      );
      expect((missing as KeyNotFoundError).key, 'the error names the key, without the store prefix').toBe(
        'del',
      );
      const fromGet = await store.get('del/child');
      await store.atomicDelete('del/child', fromGet);
      expect(await store.exists('del/child')).toBe(false);
    },
  );

  define(
    `${CAS_CLIENTS} clients x ${CAS_ROUNDS} read-modify-atomicPut retries on one counter end at exactly ${CAS_CLIENTS * CAS_ROUNDS}`,
    { rows: ['atomicPut'], timeout: () => 120_000 },
    async (t) => {
      const clients = await t.openMany(CAS_CLIENTS);
      await (clients[0] as Store).atomicPut('counter', '0', null);
      const read = { consistent: t.caps.consistentRead };
      await Promise.all(
        clients.map(async (client) => {
          for (let round = 0; round < CAS_ROUNDS; round++) {
            for (let attempt = 0; ; attempt++) {
              if (attempt > 1_000) throw new Error('1000 CAS attempts without success');
              const current = await client.get('counter', read);
              try {
                await client.atomicPut('counter', String(Number(text(current.value)) + 1), current);
                break;
              } catch (error) {
                if (!KeyModifiedError.isInstance(error)) throw error;
              }
            }
          }
        }),
      );
      expect(text((await t.store.get('counter', read)).value)).toBe(String(CAS_CLIENTS * CAS_ROUNDS));
    },
  );
}
