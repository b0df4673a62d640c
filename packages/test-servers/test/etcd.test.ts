import { randomUUID } from 'node:crypto';
import { Etcd3 } from 'etcd3';
import { afterAll, describe, expect, it } from 'vitest';
import { serverFor } from '../src/index.js';

const etcd = await serverFor('etcd');

describe.skipIf(!etcd.available)('etcd smoke', () => {
  const [endpoint] = etcd.endpoints;
  const client = new Etcd3({ hosts: `http://${endpoint}`, dialTimeout: 5000 });
  afterAll(() => client.close());

  it('v3: put then get', async () => {
    const key = `smoke/v3/${randomUUID()}`;
    await client.put(key).value('hello');
    expect(await client.get(key).string()).toBe('hello');
    await client.delete().key(key);
  });

  it('v2: PUT /v2/keys then GET (v2 API enabled)', async () => {
    const key = `smoke-v2-${randomUUID()}`;
    const put = await fetch(`http://${endpoint}/v2/keys/${key}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'value=world',
      signal: AbortSignal.timeout(5000),
    });
    expect(put.status).toBe(201);
    const get = await fetch(`http://${endpoint}/v2/keys/${key}`, { signal: AbortSignal.timeout(5000) });
    expect(get.status).toBe(200);
    const body = (await get.json()) as { node: { value: string } };
    expect(body.node.value).toBe('world');
    // v2 and v3 are separate key spaces.
    expect(await client.get(`/${key}`).string()).toBeNull();
  });
});
