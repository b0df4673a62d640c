import { KeyModifiedError, type KVPair } from '@kv/core';
import { serverFor } from '@kv/test-servers';
import { afterAll, describe, expect, it } from 'vitest';
import { MAX_TXN_OPS, openConsul } from '../src/index.js';
import { text } from './helpers.js';

const consul = await serverFor('consul');
const prefix = `toolkit-${Date.now().toString(36)}`;

describe.skipIf(!consul.available)('the Consul toolkit', async () => {
  const store = consul.available ? await openConsul(`consul://${consul.endpoints[0]}/${prefix}`) : undefined;
  afterAll(async () => {
    await store?.deleteTree('t').catch(() => {});
    await store?.close();
  });

  it('transaction(): all or nothing, checks on lastIndex, deleteTree never takes dirx', async () => {
    const s = store as NonNullable<typeof store>;
    await s.put('t/a', '1');
    await s.put('t/old/x', 'x');
    await s.put('t/oldx', 'keep');
    const a = await s.get('t/a');
    const { written } = await s
      .transaction()
      .check('t/a', a.lastIndex)
      .put('t/a', '2')
      .put('t/b', 'b')
      .deleteTree('t/old')
      .commit();
    expect(text((await s.get('t/a')).value)).toBe('2');
    expect(written.get('t/a')).toBe((await s.get('t/a')).lastIndex);
    expect((await s.list('t')).map((p: KVPair) => p.key)).toEqual(['t/a', 't/b', 't/oldx']);

    // A stale check: nothing of the batch applies.
    await expect(s.transaction().check('t/a', a.lastIndex).put('t/c', 'c').commit()).rejects.toBeInstanceOf(
      KeyModifiedError,
    );
    expect(await s.exists('t/c')).toBe(false);
    // Create-only.
    await expect(s.transaction().cas('t/b', 'again', null).commit()).rejects.toBeInstanceOf(KeyModifiedError);
    const read = await s.transaction().get('t/b').commit();
    expect(text(read.read.get('t/b')?.value ?? new Uint8Array())).toBe('b');
  });

  it('refuses more than 64 operations before sending', () => {
    const s = store as NonNullable<typeof store>;
    const txn = s.transaction();
    for (let i = 0; i < MAX_TXN_OPS; i++) txn.delete(`t/n${i}`);
    expect(() => txn.delete('t/one-more')).toThrow(/at most 64/);
  });

  it('sessions and the raw client', async () => {
    const s = store as NonNullable<typeof store>;
    const signal = AbortSignal.timeout(5_000);
    const id = await s.createSession(10_000, 'toolkit test', signal);
    // No health checks: only the ttl (and destroy) ends it, never the agent's serfHealth.
    const res = await fetch(`http://${consul.endpoints[0]}/v1/session/info/${id}`, { signal });
    const [info] = (await res.json()) as { NodeChecks?: string[] | null; Checks?: string[] | null }[];
    expect(info?.NodeChecks ?? []).toEqual([]);
    expect(info?.Checks ?? []).toEqual([]);
    expect(await s.renewSession(id, signal)).toBe(true);
    await s.destroySession(id, signal);
    expect(await s.renewSession(id, signal)).toBe(false);
    const leader = await s.client.status.leader();
    expect(typeof leader).toBe('string');
  });
});
