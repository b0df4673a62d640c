import { randomUUID } from 'node:crypto';
import Consul from 'consul';
import { afterAll, describe, expect, it } from 'vitest';
import { serverFor } from '../src/index.js';
import { splitHostPort } from '../src/probes.js';

const consul = await serverFor('consul');

describe.skipIf(!consul.available)('consul smoke', () => {
  const { host, port } = splitHostPort(consul.endpoints[0] ?? '127.0.0.1:0');
  const client = new Consul({ host, port });
  const sessions: string[] = [];
  afterAll(async () => {
    await Promise.allSettled(sessions.map((id) => client.session.destroy(id)));
  });

  it('kv: set then get', async () => {
    const key = `smoke/${randomUUID()}`;
    expect(await client.kv.set(key, 'hello')).toBe(true);
    const got = (await client.kv.get(key)) as { Value: string } | undefined;
    expect(got?.Value).toBe('hello');
    await client.kv.del(key);
  });

  // 5 s is below Consul's default session_ttl_min (10 s), so the agent must have it lowered; it is
  // long enough that a loaded machine does not see the sessions invalidated mid-test (1 s did).
  it('a 5s-TTL session (session_ttl_min lowered) acquires a lock once', async () => {
    const a = await client.session.create({ ttl: '5s', behavior: 'delete', lockdelay: '0s' });
    const b = await client.session.create({ ttl: '5s', behavior: 'delete', lockdelay: '0s' });
    sessions.push(a.ID, b.ID);
    const key = `smoke/lock/${randomUUID()}`;
    // Plain HTTP: PUT /v1/kv/KEY?acquire=SESSION answers true or false.
    const put = async (query: string, value: string): Promise<boolean> => {
      const r = await fetch(`http://${consul.endpoints[0]}/v1/kv/${key}?${query}`, {
        method: 'PUT',
        body: value,
        signal: AbortSignal.timeout(5000),
      });
      expect(r.status).toBe(200);
      return JSON.parse(await r.text()) as boolean;
    };
    expect(await put(`acquire=${a.ID}`, 'a')).toBe(true);
    expect(await put(`acquire=${b.ID}`, 'b')).toBe(false);
    const held = (await client.kv.get(key)) as { Session?: string; Value: string };
    expect(held.Session).toBe(a.ID);
    expect(held.Value).toBe('a');
    expect(await put(`release=${a.ID}`, 'a')).toBe(true);
    expect(await put(`acquire=${b.ID}`, 'b')).toBe(true);
  });
});
