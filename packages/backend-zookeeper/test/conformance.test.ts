import { createStore, type Store } from '@kv/core';
import { describeConformance } from '@kv/core/conformance';
import {
  clusterFaultHooks,
  launchZooKeeper,
  launchZooKeeperEnsemble,
  privateServer,
  serverFaultHooks,
  serverFor,
} from '@kv/test-servers';
import { afterAll } from 'vitest';
import '../src/index.js';
import { CrashProxies } from './helpers.js';

const zookeeper = await serverFor('zookeeper');
// The kit's fault cases break a server of their own: partitions go through a proxy per client.
const faultServer =
  zookeeper.available && process.env.KV_ZOOKEEPER_FAULTS === '1'
    ? await privateServer('the fault cases', () => launchZooKeeper())
    : undefined;
const faults = faultServer?.server
  ? serverFaultHooks(faultServer.server, (endpoints, prefix) =>
      createStore({ backend: 'zookeeper', endpoints, prefix, requestTimeout: 1_000 }),
    )
  : undefined;
// And a 3-member ensemble of their own, one member killed or frozen at a time.
const faultEnsemble =
  zookeeper.available && process.env.KV_ZOOKEEPER_FAULTS === '1'
    ? await privateServer('the ensemble fault cases', () => launchZooKeeperEnsemble())
    : undefined;
const cluster = faultEnsemble?.server
  ? clusterFaultHooks(faultEnsemble.server, 3_000, (endpoints, prefix) =>
      createStore({ backend: 'zookeeper', endpoints, prefix, requestTimeout: 3_000 }),
    )
  : undefined;

// Every store of the kit reaches the server through a proxy of its own, so `crash` can cut it off as a
// killed process is: its sessions are not closed, the server expires them after their timeout.
const crashProxies = new CrashProxies();
const proxied = new WeakMap<Store, string>();
afterAll(async () => {
  await crashProxies.close();
  await faults?.dispose();
  await faultServer?.server?.dispose();
  await faultEnsemble?.server?.dispose();
});

describeConformance({
  name: 'zookeeper',
  skip: zookeeper.available ? false : `no ZooKeeper server: ${zookeeper.reason}`,
  open: async (prefix) => {
    const endpoint = await crashProxies.open(zookeeper.endpoints[0] as string);
    const store = await createStore({ backend: 'zookeeper', endpoints: [endpoint], prefix });
    proxied.set(store, endpoint);
    return store;
  },
  // A dead process sends nothing more: its connections drop and it never reconnects.
  crash: async (store) => {
    const endpoint = proxied.get(store);
    if (endpoint) await crashProxies.refuse(endpoint);
  },
  // The fault hooks (faults, cluster above) are not given yet: the C client's close() blocks the
  // event loop, so an in-process fault proxy cannot forward while it runs and the kit's cleanup
  // stalls. Those rows stay untested (❔) until the proxies run in a child process.
  ...(process.env.KV_ZOOKEEPER_FAULTS === '1' && faults
    ? { faults: { ...faults, ...(cluster ? { cluster } : {}) } }
    : {}),
  processes: {
    url: (prefix) => `zookeeper://${zookeeper.endpoints.join(',')}/${prefix}`,
    imports: ['@kv/backend-zookeeper'],
  },
});
