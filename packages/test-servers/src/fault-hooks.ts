import { type FaultProxy, startFaultProxy } from './fault-proxy.js';
import { startRemoteFaultProxy } from './fault-proxy-remote.js';
import type { ClusterHandle, ServerHandle } from './launch.js';
import { httpRequest, zkMode } from './probes.js';

/** A store a test can cut off from its server (structurally the kit's `PartitionableStore`). */
export interface PartitionedStore<S> {
  readonly store: S;
  readonly proxy: FaultProxy;
  partition(): void | Promise<void>;
  heal(): void | Promise<void>;
}

export interface ServerFaultHooksOptions {
  /**
   * Where the proxies run: `'inline'` (default) in this process, `'process'`
   * in a child process (`startRemoteFaultProxy`), for clients that can block
   * the event loop (the ZooKeeper C client's close does).
   */
  readonly proxies?: 'inline' | 'process';
}

/** The conformance kit's `faults` hooks on a private server (structurally `FaultHooks`). */
export interface ServerFaultHooks<S> {
  open(prefix: string): Promise<S>;
  openPartitionable(prefix: string): Promise<PartitionedStore<S>>;
  /** Restarts the server with its data kept, and waits until it serves. */
  restart(): Promise<void>;
  /** Closes every proxy (stores are the caller's to close). */
  dispose(): Promise<void>;
}

/**
 * Fault hooks for the conformance kit on a private server: each
 * partitionable store gets a fault proxy of its own in front of the first
 * endpoint, so cutting it leaves every other client and the server alone.
 */
export function serverFaultHooks<S>(
  server: ServerHandle,
  open: (endpoints: string[], prefix: string) => Promise<S>,
  options: ServerFaultHooksOptions = {},
): ServerFaultHooks<S> {
  const proxies: FaultProxy[] = [];
  const start = options.proxies === 'process' ? startRemoteFaultProxy : startFaultProxy;
  return {
    open: (prefix) => open([...server.endpoints], prefix),
    async openPartitionable(prefix) {
      const target = server.endpoints[0];
      if (!target) throw new Error(`${server.name}: no endpoint to proxy`);
      const proxy = await start(target);
      proxies.push(proxy);
      const store = await open([proxy.endpoint], prefix);
      return { store, proxy, partition: () => proxy.blackhole(), heal: () => proxy.pass() };
    },
    async restart() {
      await server.restart();
    },
    async dispose() {
      await Promise.allSettled(proxies.splice(0).map((p) => p.close()));
    },
  };
}

/** The conformance kit's `faults.cluster` hooks on a private cluster (structurally `ClusterFaultHooks`). */
export interface ClusterFaultHooksFor<S> {
  readonly members: number;
  readonly requestTimeout: number;
  open(prefix: string): Promise<S>;
  kill(member: number): Promise<void>;
  start(member: number): Promise<void>;
  freeze(member: number): Promise<void>;
  thaw(member: number): Promise<void>;
  /** With an isolated cluster (`handle.net`): a store on one member's endpoint only. */
  openOn?(member: number, prefix: string): Promise<S>;
  /** Cuts the member from every other member (its clients still reach it). */
  isolate?(member: number): Promise<void>;
  /** Cuts the clients (this process) from the member (it still reaches the others). */
  partitionClients?(member: number): Promise<void>;
  /** Heals every link cut. */
  healAll?(): Promise<void>;
  /** The index of the member every member agrees leads (etcd, ZooKeeper); waits (bounded) for one. */
  leader?(): Promise<number>;
}

/**
 * Cluster hooks for the kit: members by index; `open` gets every member's
 * endpoint. A cluster launched with `isolated: true` also gives the link
 * hooks (`openOn`, `isolate`, `partitionClients`, `healAll`).
 */
export function clusterFaultHooks<S>(
  cluster: ClusterHandle,
  requestTimeout: number,
  open: (endpoints: string[], prefix: string) => Promise<S>,
): ClusterFaultHooksFor<S> {
  const member = (i: number): ServerHandle => {
    const m = cluster.members[i];
    if (!m) throw new Error(`${cluster.name} has no member ${i}`);
    return m;
  };
  const { net } = cluster;
  return {
    members: cluster.members.length,
    requestTimeout,
    open: (prefix) => open([...cluster.endpoints], prefix),
    kill: async (i) => {
      await member(i).kill();
    },
    start: async (i) => {
      await member(i).start();
    },
    freeze: async (i) => {
      member(i).freeze();
    },
    thaw: async (i) => {
      member(i).thaw();
    },
    ...(net
      ? {
          openOn: (i: number, prefix: string) => open([...member(i).endpoints], prefix),
          isolate: (i: number) => net.isolate(i),
          partitionClients: (i: number) => net.cut('clients', i),
          healAll: async () => {
            await net.healAll();
            // A ZooKeeper member that was cut off serves no client until it has synced with the
            // leader again: healed means every member serves.
            if (cluster.kind === 'zookeeper') await allServing(cluster);
          },
        }
      : {}),
    ...(cluster.kind === 'etcd' || cluster.kind === 'zookeeper' || cluster.kind === 'consul'
      ? { leader: () => agreedLeader(cluster) }
      : {}),
  };
}

/** Waits (bounded) until every ZooKeeper member serves clients and exactly one leads. */
async function allServing(cluster: ClusterHandle): Promise<void> {
  const deadline = performance.now() + 30_000;
  for (;;) {
    const modes = await Promise.all(
      cluster.members.map((m) => zkMode(m.endpoints[0] as string).catch(() => undefined)),
    );
    if (modes.every((m) => m !== undefined) && modes.filter((m) => m === 'leader').length === 1) return;
    if (performance.now() > deadline)
      throw new Error(`${cluster.name}: not every member serves 30 s after the heal`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Who each member says leads: its own index when it leads, else the leader's index; undefined when it does not know. */
async function leaderSeenBy(cluster: ClusterHandle, i: number): Promise<number | undefined> {
  const m = cluster.members[i] as ServerHandle;
  if (cluster.kind === 'zookeeper')
    return (await zkMode(m.endpoints[0] as string)) === 'leader' ? i : undefined;
  if (cluster.kind === 'consul') {
    // The member's own view (`stale`: answered locally, not forwarded): the server it takes for the leader, by node name.
    const r = await httpRequest(`${m.urls[0]}/v1/operator/raft/configuration?stale`, { timeoutMs: 1_000 });
    const body = JSON.parse(r.body) as { Servers?: { Node: string; Leader: boolean }[] };
    const leader = body.Servers?.find((s) => s.Leader)?.Node;
    const index = cluster.members.findIndex((x) => x.name === leader);
    return index < 0 ? undefined : index;
  }
  const status = async (url: string) => {
    const r = await httpRequest(`${url}/v3/maintenance/status`, {
      method: 'POST',
      body: '{}',
      timeoutMs: 1_000,
    });
    const body = JSON.parse(r.body) as { header?: { member_id?: string }; leader?: string };
    return { self: body.header?.member_id, leader: body.leader };
  };
  const all = await Promise.all(
    cluster.members.map((x) => status(x.urls[0] as string).catch(() => undefined)),
  );
  const leader = all[i]?.leader;
  const index = all.findIndex((s) => s?.self !== undefined && s.self === leader);
  return index < 0 ? undefined : index;
}

async function agreedLeader(cluster: ClusterHandle): Promise<number> {
  const deadline = performance.now() + 30_000;
  for (;;) {
    const seen = await Promise.all(
      cluster.members.map((_, i) => leaderSeenBy(cluster, i).catch(() => undefined)),
    );
    if (cluster.kind === 'zookeeper') {
      const leaders = seen.filter((x) => x !== undefined);
      if (leaders.length === 1) return leaders[0] as number;
    } else if (seen[0] !== undefined && seen.every((x) => x === seen[0])) {
      return seen[0];
    }
    if (performance.now() > deadline)
      throw new Error(`${cluster.name}: the members do not agree on a leader`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
