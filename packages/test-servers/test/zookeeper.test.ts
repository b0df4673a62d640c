import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { serverFor, zkMode } from '../src/index.js';
import { ZooKeeper, type ZooKeeperClient, zkConnect } from './helpers.js';

const zk = await serverFor('zookeeper');

describe.skipIf(!zk.available)('zookeeper smoke', () => {
  let client: ZooKeeperClient | undefined;
  afterAll(() => client?.close());

  it('srvr says standalone', async () => {
    expect(await zkMode(zk.endpoints[0] ?? '')).toBe('standalone');
  });

  it('create then get', async () => {
    client = await zkConnect(zk.endpoints.join(','));
    const path = `/smoke-${randomUUID()}`;
    await client.create(path, 'hello', ZooKeeper.constants.ZOO_PERSISTENT);
    const [, data] = await client.get(path, false);
    expect(String(data)).toBe('hello');
    await client.delete_(path, -1);
  });
});
