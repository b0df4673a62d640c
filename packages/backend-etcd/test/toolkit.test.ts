import {
  InvalidArgumentError,
  InvalidKeyError,
  KeyExistsError,
  KeyNotFoundError,
  ValueTooLargeError,
} from '@kv/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compare, type EtcdStore, op } from '../src/index.js';
import { openTestStore, sharedEtcd, text } from './helpers.js';

const etcd = await sharedEtcd();

describe.skipIf(etcd.skip !== false)('the etcd toolkit', () => {
  let store: EtcdStore;
  const raw = (key: string) => `${store.prefix}/${key}`;
  const rawGet = async (key: string) => store.client.get(raw(key)).string();

  beforeAll(async () => {
    store = await openTestStore(etcd.endpoints, 'toolkit');
  });
  afterAll(async () => {
    await store?.close();
  });

  describe('transaction()', () => {
    it('runs the then branch when every compare holds, with a result per operation', async () => {
      await store.put('tx/a', 'blue');
      await store.put('tx/dir/x', '1');
      await store.put('tx/dir/y/z', '2');
      await store.put('tx/gone', 'g');
      const a = await store.getKeyValue('tx/a');
      const result = await store
        .transaction()
        .if(
          compare.value('tx/a', '==', 'blue'),
          compare.version('tx/a', '==', 1),
          compare.modRevision('tx/a', '==', a.modRevision),
          compare.createRevision('tx/new', '==', 0),
          compare.lease('tx/a', '==', '0'),
        )
        .then(
          op.put('tx/a', 'green'),
          op.put('tx/new', 'n'),
          op.get('tx/a'),
          op.list('tx/dir'),
          op.delete('tx/gone'),
          op.deleteTree('tx/dir'),
        )
        .else(op.get('tx/a'))
        .commit();
      expect(result.succeeded).toBe(true);
      expect(result.results.map((r) => r.type)).toEqual([
        'put',
        'put',
        'get',
        'list',
        'delete',
        'deleteTree',
      ]);
      const [put, , get, list, del, tree] = result.results;
      expect(put).toEqual({ type: 'put', key: 'tx/a', revision: result.revision });
      // Reads in a transaction see its own earlier writes.
      expect(get?.type === 'get' && get.pair && text(get.pair.value)).toBe('green');
      expect(list?.type === 'list' && list.pairs.map((p) => p.key)).toEqual(['tx/dir/x', 'tx/dir/y/z']);
      expect(del).toEqual({ type: 'delete', key: 'tx/gone', deleted: 1 });
      expect(tree).toEqual({ type: 'deleteTree', directory: 'tx/dir', deleted: 2 });
      expect(await rawGet('tx/a')).toBe('green');
      expect(await rawGet('tx/new')).toBe('n');
      expect(await store.list('tx')).toHaveLength(2);
      const after = await store.getKeyValue('tx/a');
      expect(after).toMatchObject({
        modRevision: result.revision,
        version: 2,
        createRevision: a.createRevision,
      });
    });

    it('runs the else branch when a compare fails, and writes nothing of the then branch', async () => {
      await store.put('tx2/a', 'blue');
      const result = await store
        .transaction()
        .if(compare.value('tx2/a', '==', 'red'))
        .then(op.put('tx2/a', 'never'), op.put('tx2/b', 'never'))
        .else(op.get('tx2/a'), op.get('tx2/missing'))
        .commit();
      expect(result.succeeded).toBe(false);
      expect(result.results).toHaveLength(2);
      const [a, missing] = result.results;
      expect(a?.type === 'get' && a.pair && text(a.pair.value)).toBe('blue');
      expect(missing).toEqual({ type: 'get', key: 'tx2/missing', pair: null });
      expect(await store.exists('tx2/b')).toBe(false);
    });

    it('compares with <, >, != and on a missing key', async () => {
      await store.put('tx3/a', 'v');
      const { modRevision } = await store.getKeyValue('tx3/a');
      const ok = async (...c: Parameters<ReturnType<EtcdStore['transaction']>['if']>) =>
        (
          await store
            .transaction()
            .if(...c)
            .commit()
        ).succeeded;
      expect(await ok(compare.modRevision('tx3/a', '<', modRevision + 1))).toBe(true);
      expect(await ok(compare.modRevision('tx3/a', '>', modRevision))).toBe(false);
      expect(await ok(compare.value('tx3/a', '!=', 'w'))).toBe(true);
      expect(await ok(compare.version('tx3/missing', '==', 0))).toBe(true);
      // etcd's rule: a value compare on a missing key is false, whatever the operator.
      expect(await ok(compare.value('tx3/missing', '!=', 'x'))).toBe(false);
    });

    it('validates keys and operations before sending anything', async () => {
      await expect(
        store.transaction().then(op.put('ok', '1'), op.put('bad//key', '2')).commit(),
      ).rejects.toSatisfy(InvalidKeyError.isInstance);
      expect(await store.exists('ok')).toBe(false);
      await expect(store.transaction().then(op.deleteTree('')).commit()).rejects.toSatisfy(
        InvalidArgumentError.isInstance,
      );
      const big = new Uint8Array(store.capabilities.maxValueSize + 1);
      await expect(store.transaction().then(op.put('big', big)).commit()).rejects.toSatisfy(
        ValueTooLargeError.isInstance,
      );
    });

    it('is not a promise: awaiting the builder fails loudly instead of hanging', async () => {
      const builder = store.transaction().if(compare.version('x', '==', 0));
      await expect(Promise.resolve().then(() => builder as unknown as Promise<unknown>)).rejects.toThrow(
        /not a promise/,
      );
    });
  });

  it('bulkPut writes every entry in one revision, all or nothing', async () => {
    const revision = await store.bulkPut({ 'bulk/a': '1', 'bulk/b': '2', 'bulk/c/d': '3' });
    const pairs = await store.list('bulk');
    expect(pairs.map((p) => [p.key, text(p.value), p.lastIndex])).toEqual([
      ['bulk/a', '1', revision],
      ['bulk/b', '2', revision],
      ['bulk/c/d', '3', revision],
    ]);
    // Also from an iterable of pairs.
    await store.bulkPut([['bulk/e', 'e']]);
    expect(await rawGet('bulk/e')).toBe('e');
    // More operations than the server takes in one transaction (--max-txn-ops, 128): nothing is written.
    const many = Array.from({ length: 200 }, (_, i) => [`many/${i}`, 'x'] as const);
    await expect(store.bulkPut(many)).rejects.toSatisfy(InvalidArgumentError.isInstance);
    expect(await store.count('many')).toBe(0);
  });

  it('bulkPut with a ttl puts every key on one lease', async () => {
    await store.bulkPut({ 'bulkttl/a': '1', 'bulkttl/b': '2' }, { ttl: 5_000 });
    const [a, b] = await Promise.all([store.getKeyValue('bulkttl/a'), store.getKeyValue('bulkttl/b')]);
    expect(a.lease).not.toBe('0');
    expect(b.lease).toBe(a.lease);
    const info = await store.leaseTimeToLive(a.lease, { keys: true });
    expect(info?.keys.sort()).toEqual(['bulkttl/a', 'bulkttl/b']);
    expect(info?.grantedTtl).toBe(5_000);
    await store.revokeLease(a.lease);
    expect(await store.count('bulkttl')).toBe(0);
  });

  it('bulkDelete removes the keys (not their children) in one step and counts them', async () => {
    await store.bulkPut({ 'bd/a': '1', 'bd/b': '2', 'bd/a/child': 'c' });
    expect(await store.bulkDelete(['bd/a', 'bd/b', 'bd/missing'])).toBe(2);
    expect((await store.list('bd')).map((p) => p.key)).toEqual(['bd/a/child']);
    expect(await store.bulkDelete([])).toBe(0);
  });

  it('putIfAbsent creates only', async () => {
    expect(await store.putIfAbsent('pia', 'first')).toBe(true);
    expect(await store.putIfAbsent('pia', 'second')).toBe(false);
    expect(await rawGet('pia')).toBe('first');
    // A refused write with a ttl leaves no lease behind on the key.
    expect(await store.putIfAbsent('pia', 'third', { ttl: 3_000 })).toBe(false);
    expect((await store.getKeyValue('pia')).lease).toBe('0');
  });

  it('compareAndSwap swaps by value', async () => {
    await store.put('cas', 'v1');
    expect(await store.compareAndSwap('cas', 'v1', 'v2')).toBe(true);
    expect(await store.compareAndSwap('cas', 'v1', 'v3')).toBe(false);
    expect(await rawGet('cas')).toBe('v2');
    expect(await store.compareAndSwap('cas-missing', '', 'x')).toBe(false);
    expect(await store.exists('cas-missing')).toBe(false);
    // Bytes compare exactly.
    await store.put('casb', new Uint8Array([0, 255]));
    expect(await store.compareAndSwap('casb', new Uint8Array([0, 255]), 'ok')).toBe(true);
  });

  it('move is one transaction: the target appears and the source vanishes at the same revision', async () => {
    await store.put('mv/from', 'payload');
    const before = await store.getKeyValue('mv/from');
    const moved = await store.move('mv/from', 'mv/to');
    expect(moved.key).toBe('mv/to');
    expect(text(moved.value)).toBe('payload');
    expect(await store.exists('mv/from')).toBe(false);
    expect(text((await store.get('mv/to')).value)).toBe('payload');
    // One revision: just before it, the source existed and the target did not.
    expect(text((await store.getAt('mv/from', moved.modRevision - 1)).value)).toBe('payload');
    await expect(store.getAt('mv/to', moved.modRevision - 1)).rejects.toSatisfy(KeyNotFoundError.isInstance);
    await expect(store.getAt('mv/from', moved.modRevision)).rejects.toSatisfy(KeyNotFoundError.isInstance);
    expect(before.modRevision).toBeLessThan(moved.modRevision);
  });

  it('move refuses a missing source, an existing target with overwrite: false, and keeps the lease', async () => {
    await expect(store.move('mv2/missing', 'mv2/to')).rejects.toSatisfy(KeyNotFoundError.isInstance);
    await store.put('mv2/a', 'a');
    await store.put('mv2/b', 'b');
    await expect(store.move('mv2/a', 'mv2/b', { overwrite: false })).rejects.toSatisfy(
      KeyExistsError.isInstance,
    );
    expect(await rawGet('mv2/a')).toBe('a');
    await store.move('mv2/a', 'mv2/b');
    expect(await rawGet('mv2/b')).toBe('a');
    await store.put('mv2/ttl', 't', { ttl: 5_000 });
    const { lease } = await store.getKeyValue('mv2/ttl');
    const moved = await store.move('mv2/ttl', 'mv2/ttl2');
    expect(moved.lease).toBe(lease);
    expect((await store.getKeyValue('mv2/ttl2')).lease).toBe(lease);
  });

  it('count, keys with a limit, and helper keys stay hidden', async () => {
    await store.bulkPut({ 'cnt/a': '', 'cnt/b/c': '', 'cnt/d': '', cntx: 'not below cnt' });
    const lock = store.newLock('cnt/a', { ttl: 5_000 });
    await lock.lock();
    try {
      expect(await store.count('cnt')).toBe(3);
      expect(await store.keys('cnt')).toEqual(['cnt/a', 'cnt/b/c', 'cnt/d']);
      expect(await store.keys('cnt', { limit: 2 })).toEqual(['cnt/a', 'cnt/b/c']);
      expect(await store.keys('cnt', { limit: 1, consistent: true })).toEqual(['cnt/a']);
      expect(await store.count('nothing-here')).toBe(0);
    } finally {
      await lock.unlock();
    }
    await expect(store.keys('cnt', { limit: 0 })).rejects.toSatisfy(InvalidArgumentError.isInstance);
  });

  it('range [start, end) with a limit, and at a past revision', async () => {
    const first = await store.bulkPut({ 'rg/a': '1', 'rg/b': '1', 'rg/c': '1', 'rg/d': '1' });
    await store.put('rg/b', '2');
    expect((await store.range('rg/b', 'rg/d')).map((p) => [p.key, text(p.value)])).toEqual([
      ['rg/b', '2'],
      ['rg/c', '1'],
    ]);
    expect((await store.range('rg/a', 'rg/z', { limit: 3 })).map((p) => p.key)).toEqual([
      'rg/a',
      'rg/b',
      'rg/c',
    ]);
    const past = await store.range('rg/a', 'rg/z', { revision: first });
    expect(past.map((p) => text(p.value))).toEqual(['1', '1', '1', '1']);
    // From a key to the end of the store.
    expect((await store.range('rg/c')).map((p) => p.key).slice(0, 2)).toEqual(['rg/c', 'rg/d']);
  });

  it('getAt reads a past revision; a future one is InvalidArgumentError', async () => {
    await store.put('ga', 'one');
    const one = await store.getKeyValue('ga');
    await store.put('ga', 'two');
    expect(text((await store.getAt('ga', one.modRevision)).value)).toBe('one');
    expect(text((await store.getAt('ga', one.modRevision + 1)).value)).toBe('two');
    await expect(store.getAt('ga', one.modRevision - 1)).rejects.toSatisfy(KeyNotFoundError.isInstance);
    await expect(store.getAt('ga', one.modRevision + 1_000_000)).rejects.toSatisfy(
      InvalidArgumentError.isInstance,
    );
  });

  it('leases: grant, put with a lease, time to live, keep alive, revoke', async () => {
    const lease = await store.grantLease(5_000);
    expect(lease.ttl).toBe(5_000);
    expect(await store.leases()).toContain(lease.id);
    const pair = await store.putWithLease('ls/a', 'x', lease.id);
    expect(pair.key).toBe('ls/a');
    expect((await store.getKeyValue('ls/a')).lease).toBe(lease.id);
    const info = await store.leaseTimeToLive(lease.id, { keys: true });
    expect(info?.keys).toEqual(['ls/a']);
    expect(info?.ttl).toBeGreaterThan(0);
    expect(info?.ttl).toBeLessThanOrEqual(5_000);
    expect(await store.keepAliveLease(lease.id)).toBe(5_000);
    await store.revokeLease(lease.id);
    expect(await store.exists('ls/a')).toBe(false);
    expect(await store.leaseTimeToLive(lease.id)).toBeNull();
    await expect(store.keepAliveLease(lease.id)).rejects.toSatisfy(InvalidArgumentError.isInstance);
    await expect(store.putWithLease('ls/b', 'x', lease.id)).rejects.toSatisfy(
      InvalidArgumentError.isInstance,
    );
    // Revoking twice is fine.
    await store.revokeLease(lease.id);
    await expect(store.grantLease(500)).rejects.toSatisfy(InvalidArgumentError.isInstance);
    await expect(store.putWithLease('ls/c', 'x', 'not-a-lease')).rejects.toSatisfy(
      InvalidArgumentError.isInstance,
    );
  });

  it('a lease granted with keepAlive lives past its ttl and is revoked when the store closes', async () => {
    const other = await openTestStore(etcd.endpoints, 'kept');
    const lease = await other.grantLease(2_000, { keepAlive: true });
    await other.putWithLease('k', 'v', lease.id);
    await new Promise((resolve) => setTimeout(resolve, 3_500));
    expect(await other.exists('k')).toBe(true);
    await other.close();
    expect(await store.leaseTimeToLive(lease.id)).toBeNull();
  });

  it('status, members and the raw client', async () => {
    const status = await store.status();
    expect(status.version).toMatch(/^3\.\d+\.\d+/);
    expect(status.dbSize).toBeGreaterThan(0);
    expect(status.leader).not.toBe('0');
    expect(status.revision).toBeGreaterThan(0);
    const members = await store.members();
    expect(members.length).toBeGreaterThanOrEqual(1);
    expect(members.some((m) => m.id === status.leader)).toBe(true);
    expect(members.flatMap((m) => m.clientURLs).some((u) => etcd.endpoints.some((e) => u.endsWith(e)))).toBe(
      true,
    );
    await store.client.put(raw('via-client')).value('raw');
    expect(text((await store.get('via-client')).value)).toBe('raw');
  });

  it('toolkit calls validate their keys and are closed with the store', async () => {
    await expect(store.count('a/../b')).rejects.toSatisfy(InvalidKeyError.isInstance);
    await expect(store.getAt('k', 0)).rejects.toSatisfy(InvalidArgumentError.isInstance);
    const other = await openTestStore(etcd.endpoints, 'closing');
    await other.close();
    await expect(other.status()).rejects.toMatchObject({ code: 'CLOSED' });
    await expect(other.transaction().commit()).rejects.toMatchObject({ code: 'CLOSED' });
  });
});
