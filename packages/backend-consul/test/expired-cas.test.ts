import { KeyNotFoundError } from '@kv/core';
import { serverFor } from '@kv/test-servers';
import { afterAll, describe, expect, it } from 'vitest';
import { openConsul } from '../src/index.js';

const consul = await serverFor('consul');
const prefix = `expired-cas-${Date.now().toString(36)}`;

// How a ttl key's deadline is kept in its Flags (see deadlineOf in consul-store.ts).
const DEADLINE_MARK = 0x5a5 * 2 ** 42;

describe.skipIf(!consul.available)('consul: a CAS naming an expired ttl version', () => {
  const stores: Awaited<ReturnType<typeof openConsul>>[] = [];
  const open = async () => {
    const store = await openConsul(`consul://${consul.endpoints[0]}/${prefix}`);
    stores.push(store);
    return store;
  };
  afterAll(async () => {
    await stores[0]?.deleteTree('e').catch(() => {});
    await Promise.allSettled(stores.map((s) => s.close()));
  });

  // Consul deletes a ttl key when its session is invalidated: about ttl after the write, but a
  // leader change restarts every session timer (so the key lives up to ttl longer there), and a
  // ttl longer than any session (24 h x 2) has no session at all. In that window the entry is
  // still on the server after its deadline; a CAS naming it must fail as on a missing key.
  it('atomicPut and atomicDelete are KeyNotFoundError and write nothing, from a store that saw it or not', async () => {
    const seen = await open();
    const fresh = await open();
    const key = `${prefix}/e/k`;
    const deadline = Date.now() + 400;
    const res = await fetch(`http://${consul.endpoints[0]}/v1/kv/${key}?flags=${DEADLINE_MARK + deadline}`, {
      method: 'PUT',
      body: 'v',
      signal: AbortSignal.timeout(5_000),
    });
    expect(await res.json()).toBe(true);
    const pair = await seen.get('e/k');
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, deadline + 20 - Date.now())));
    await expect(seen.atomicPut('e/k', 'v2', pair)).rejects.toBeInstanceOf(KeyNotFoundError);
    await expect(fresh.atomicPut('e/k', 'v3', pair)).rejects.toBeInstanceOf(KeyNotFoundError);
    await expect(fresh.atomicDelete('e/k', pair)).rejects.toBeInstanceOf(KeyNotFoundError);
    // Nothing was written over it: the entry on the server is still the expired one, or gone.
    const raw = await fetch(`http://${consul.endpoints[0]}/v1/kv/${key}?raw`, {
      signal: AbortSignal.timeout(5_000),
    });
    if (raw.status !== 404) expect(await raw.text()).toBe('v');
    await expect(seen.get('e/k')).rejects.toBeInstanceOf(KeyNotFoundError);
  });
});
