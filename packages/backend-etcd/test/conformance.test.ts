import { createStore } from '@kv/core';
import { describeConformance } from '@kv/core/conformance';
import { serverFor } from '@kv/test-servers';
import { EtcdStore } from '../src/index.js';

const etcd = await serverFor('etcd');

describeConformance({
  name: 'etcd',
  skip: etcd.available ? false : `no etcd server: ${etcd.reason}`,
  open: (prefix) => createStore({ backend: 'etcd', endpoints: etcd.endpoints, prefix }),
  // A dead process sends nothing more: no keep-alives, no revokes.
  crash: (store) => {
    if (store instanceof EtcdStore) store.client.close();
  },
});
