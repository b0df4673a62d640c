import { createStore } from '@kv/core';
import { describeConformance } from '@kv/core/conformance';
import { launchEtcd, privateServer, serverFaultHooks, serverFor } from '@kv/test-servers';
import { afterAll } from 'vitest';
import { EtcdStore } from '../src/index.js';

const etcd = await serverFor('etcd');
// The kit's fault cases break a server of their own: partitions go through a proxy per client.
const faultServer = etcd.available ? await privateServer('the fault cases', () => launchEtcd()) : undefined;
const faults = faultServer?.server
  ? serverFaultHooks(faultServer.server, (endpoints, prefix) =>
      createStore({ backend: 'etcd', endpoints, prefix, requestTimeout: 3_000 }),
    )
  : undefined;
afterAll(async () => {
  await faults?.dispose();
  await faultServer?.server?.dispose();
});

describeConformance({
  name: 'etcd',
  skip: etcd.available ? false : `no etcd server: ${etcd.reason}`,
  open: (prefix) => createStore({ backend: 'etcd', endpoints: etcd.endpoints, prefix }),
  // A dead process sends nothing more: no keep-alives, no revokes.
  crash: (store) => {
    if (store instanceof EtcdStore) store.client.close();
  },
  ...(faults ? { faults } : {}),
});
