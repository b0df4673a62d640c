import { createStore, type Store } from '@kv/core';
import { describeConformance } from '@kv/core/conformance';
import {
  clusterFaultHooks,
  clusterNetProblem,
  launchZooKeeper,
  launchZooKeeperEnsemble,
  privateServer,
  type RemoteFaultProxy,
  serverFaultHooks,
  serverFor,
  startRemoteFaultProxy,
} from '@kv/test-servers';
import { afterAll } from 'vitest';
import '../src/index.js';

// Every proxy here runs in a child process: the C client's close blocks this process's event loop
// until the server answers (see the README), and an in-process proxy could not forward that answer.
const zookeeper = await serverFor('zookeeper');
// The kit's fault cases break a server of their own: partitions go through a proxy per client.
const faultServer = zookeeper.available
  ? await privateServer('the fault cases', () => launchZooKeeper())
  : undefined;
const faults = faultServer?.server
  ? serverFaultHooks(
      faultServer.server,
      (endpoints, prefix) => createStore({ backend: 'zookeeper', endpoints, prefix, requestTimeout: 1_000 }),
      { proxies: 'process' },
    )
  : undefined;
// And a 3-member ensemble of their own, one member killed or frozen at a time, each member in a
// network namespace of its own so links are cut one by one. In CI namespaces must work (root);
// elsewhere without them the link cases stay untested.
const netProblem = process.env.CI === 'true' ? undefined : await clusterNetProblem();
if (netProblem)
  console.warn(`!!! zookeeper: no isolated ensemble (${netProblem}): the cluster link cases are SKIPPED`);
const faultEnsemble = zookeeper.available
  ? await privateServer('the ensemble fault cases', () => launchZooKeeperEnsemble({ isolated: !netProblem }))
  : undefined;
// A member that has just rejoined serves no client until it has synced with the leader, and an
// isolated leader takes syncLimit (5 s here) to step down: a store on one member is opened again until
// the member serves (bounded).
const cluster = faultEnsemble?.server
  ? clusterFaultHooks(faultEnsemble.server, 3_000, async (endpoints, prefix) => {
      const until = performance.now() + 30_000;
      for (;;) {
        try {
          return await createStore({ backend: 'zookeeper', endpoints, prefix, requestTimeout: 3_000 });
        } catch (error) {
          if (endpoints.length > 1 || performance.now() > until) throw error;
        }
      }
    })
  : undefined;

// Every store of the kit reaches the server through a proxy of its own, so `crash` can cut it off as a
// killed process is: its sessions are not closed, the server expires them after their timeout.
const crashProxies = new Map<Store, RemoteFaultProxy>();
const opened: RemoteFaultProxy[] = [];
afterAll(async () => {
  await Promise.allSettled(opened.map((p) => p.close()));
  await faults?.dispose();
  await faultServer?.server?.dispose();
  await faultEnsemble?.server?.dispose();
});

describeConformance({
  name: 'zookeeper',
  skip: zookeeper.available ? false : `no ZooKeeper server: ${zookeeper.reason}`,
  open: async (prefix) => {
    const proxy = await startRemoteFaultProxy(zookeeper.endpoints[0] as string);
    opened.push(proxy);
    const store = await createStore({ backend: 'zookeeper', endpoints: [proxy.endpoint], prefix });
    crashProxies.set(store, proxy);
    return store;
  },
  // A dead process sends nothing more: its connections drop and it never reconnects.
  crash: async (store) => {
    await crashProxies.get(store)?.refuse();
  },
  ...(faults ? { faults: { ...faults, ...(cluster ? { cluster } : {}) } } : {}),
  processes: {
    url: (prefix) => `zookeeper://${zookeeper.endpoints.join(',')}/${prefix}`,
    imports: ['@kv/backend-zookeeper'],
  },
});
