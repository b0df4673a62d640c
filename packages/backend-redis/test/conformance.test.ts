import { createStore } from '@kv/core';
import { describeConformance } from '@kv/core/conformance';
import { serverFor } from '@kv/test-servers';
import { RedisStore } from '../src/index.js';

const redis = await serverFor('redis');

describeConformance({
  name: 'redis',
  skip: redis.available ? false : `no Redis server: ${redis.reason}`,
  open: (prefix) => createStore({ backend: 'redis', endpoints: redis.endpoints, prefix }),
  // A dead process sends nothing more: no renewals, no releases.
  crash: (store) => {
    if (store instanceof RedisStore) store.client.destroy();
  },
});
