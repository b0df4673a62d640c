import { createStore } from '@kv/core';
import { describeConformance } from '@kv/core/conformance';
import { launchRedis, privateServer, serverFaultHooks, serverFor } from '@kv/test-servers';
import { afterAll } from 'vitest';
import { RedisStore } from '../src/index.js';

const redis = await serverFor('redis');
// The kit's fault cases break a server of their own: partitions go through a proxy per client.
const faultServer = redis.available ? await privateServer('the fault cases', () => launchRedis()) : undefined;
const faults = faultServer?.server
  ? serverFaultHooks(faultServer.server, (endpoints, prefix) =>
      createStore({ backend: 'redis', endpoints, prefix, requestTimeout: 1_000 }),
    )
  : undefined;
afterAll(async () => {
  await faults?.dispose();
  await faultServer?.server?.dispose();
});

describeConformance({
  name: 'redis',
  skip: redis.available ? false : `no Redis server: ${redis.reason}`,
  open: (prefix) => createStore({ backend: 'redis', endpoints: redis.endpoints, prefix }),
  // A dead process sends nothing more: no renewals, no releases.
  crash: (store) => {
    if (store instanceof RedisStore) store.client.destroy();
  },
  // The multi-process recipe cases: child processes open the same server by URL.
  processes: {
    url: (prefix) => `redis://${redis.endpoints.join(',')}/${prefix}`,
    imports: ['@kv/backend-redis'],
  },
  ...(faults ? { faults } : {}),
});
