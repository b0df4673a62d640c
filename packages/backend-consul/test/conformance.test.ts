import { createStore } from '@kv/core';
import { describeConformance } from '@kv/core/conformance';
import {
  clusterFaultHooks,
  clusterNetProblem,
  launchConsul,
  launchConsulCluster,
  privateServer,
  serverFaultHooks,
  serverFor,
} from '@kv/test-servers';
import { afterAll } from 'vitest';
import { ConsulStore } from '../src/index.js';

const consul = await serverFor('consul');
// The kit's fault cases break an agent of their own (a server agent whose raft data survives a
// restart): partitions go through a proxy per client.
const faultServer = consul.available
  ? await privateServer('the fault cases', () => launchConsul({ persistent: true }))
  : undefined;
const faults = faultServer?.server
  ? serverFaultHooks(faultServer.server, (endpoints, prefix) =>
      createStore({ backend: 'consul', endpoints, prefix, requestTimeout: 1_000 }),
    )
  : undefined;
// And a 3-server cluster of their own, one server killed or frozen at a time, each server in a
// network namespace of its own so links are cut one by one (a server isolated, clients cut off).
// In CI namespaces must work (root); elsewhere without them the link cases stay untested.
const netProblem = process.env.CI === 'true' ? undefined : await clusterNetProblem();
if (netProblem)
  console.warn(`!!! consul: no isolated cluster (${netProblem}): the cluster link cases are SKIPPED`);
const faultCluster = consul.available
  ? await privateServer('the cluster fault cases', () => launchConsulCluster({ isolated: !netProblem }))
  : undefined;
const cluster = faultCluster?.server
  ? clusterFaultHooks(faultCluster.server, 2_000, (endpoints, prefix) =>
      createStore({ backend: 'consul', endpoints, prefix, requestTimeout: 2_000 }),
    )
  : undefined;
afterAll(async () => {
  await faults?.dispose();
  await faultServer?.server?.dispose();
  await faultCluster?.server?.dispose();
});

describeConformance({
  name: 'consul',
  skip: consul.available ? false : `no Consul agent: ${consul.reason}`,
  open: (prefix) => createStore(`consul://${consul.endpoints[0]}/${prefix}`),
  // A dead process sends nothing more: no session renewals, no destroys.
  crash: (store) => {
    if (store instanceof ConsulStore) store.http.close();
  },
  // The multi-process recipe cases: child processes open the same agent by URL.
  processes: {
    url: (prefix) => `consul://${consul.endpoints.join(',')}/${prefix}`,
    imports: ['@kv/backend-consul'],
  },
  ...(faults ? { faults: { ...faults, ...(cluster ? { cluster } : {}) } } : {}),
});
