// testcontainers, imported lazily: only used when a container runtime answers.

import { type ProbeSpec, probe } from './launch.js';
import type { ServerName } from './names.js';
import { waitUntil } from './proc.js';

/** The same pinned images as compose/docker-compose.yml. */
export const IMAGES = {
  etcd: 'quay.io/coreos/etcd:v3.5.17',
  consul: 'hashicorp/consul:1.15.4',
  zookeeper: 'zookeeper:3.8.4',
  redis: 'redis:7.0.15',
} as const;

export interface ContainerServer {
  endpoints: string[];
  stop(): Promise<void>;
}

type TC = typeof import('testcontainers');

let runtimeCheck: Promise<{ tc: TC } | { problem: string }> | undefined;

/** Asks testcontainers for a container runtime, once per process (about 1-2 ms when there is none). */
export function containerRuntime(): Promise<{ tc: TC } | { problem: string }> {
  runtimeCheck ??= (async () => {
    try {
      const tc = await import('testcontainers');
      await tc.getContainerRuntimeClient();
      return { tc };
    } catch (err) {
      return { problem: err instanceof Error ? err.message : String(err) };
    }
  })();
  return runtimeCheck;
}

function hostOf(host: string): string {
  return host === 'localhost' ? '127.0.0.1' : host;
}

async function ready(name: string, p: ProbeSpec): Promise<void> {
  await waitUntil(`${name} in a container`, () => probe(p), { timeoutMs: 120_000, intervalMs: 250 });
}

function probeFor(
  kind: 'etcd' | 'consul' | 'zookeeper' | 'redis',
  endpoint: string,
  modes: string[],
): ProbeSpec {
  switch (kind) {
    case 'etcd':
      return { type: 'etcd', url: `http://${endpoint}` };
    case 'consul':
      return { type: 'consul', url: `http://${endpoint}` };
    case 'zookeeper':
      return { type: 'zookeeper', endpoint, modes };
    case 'redis':
      return { type: 'redis', endpoint };
  }
}

/** Starts `name` in containers (removed by testcontainers' reaper when this process ends). */
export async function startInContainers(name: ServerName): Promise<ContainerServer> {
  const rt = await containerRuntime();
  if ('problem' in rt) throw new Error(rt.problem);
  const { GenericContainer, Network } = rt.tc;

  if (name === 'etcd-cluster' || name === 'zookeeper-ensemble') {
    const network = await new Network().start();
    const ids = [1, 2, 3];
    const isEtcd = name === 'etcd-cluster';
    const containers = await Promise.all(
      ids.map((i) => {
        const alias = isEtcd ? `etcd${i}` : `zk${i}`;
        let c = new GenericContainer(isEtcd ? IMAGES.etcd : IMAGES.zookeeper)
          .withNetwork(network)
          .withNetworkAliases(alias)
          .withExposedPorts(isEtcd ? 2379 : 2181);
        if (isEtcd) {
          c = c.withCommand([
            'etcd',
            `--name=${alias}`,
            '--data-dir=/etcd-data',
            '--listen-client-urls=http://0.0.0.0:2379',
            `--advertise-client-urls=http://${alias}:2379`,
            '--listen-peer-urls=http://0.0.0.0:2380',
            `--initial-advertise-peer-urls=http://${alias}:2380`,
            `--initial-cluster=${ids.map((j) => `etcd${j}=http://etcd${j}:2380`).join(',')}`,
            '--initial-cluster-state=new',
            '--enable-v2=true',
          ]);
        } else {
          c = c.withEnvironment({
            ZOO_MY_ID: String(i),
            ZOO_SERVERS: ids.map((j) => `server.${j}=zk${j}:2888:3888;2181`).join(' '),
            ZOO_4LW_COMMANDS_WHITELIST: '*',
            ZOO_ADMINSERVER_ENABLED: 'false',
            ZOO_TICK_TIME: '500',
          });
        }
        return c.start();
      }),
    );
    const port = isEtcd ? 2379 : 2181;
    const endpoints = containers.map((c) => `${hostOf(c.getHost())}:${c.getMappedPort(port)}`);
    await Promise.all(
      endpoints.map((e) => ready(name, probeFor(isEtcd ? 'etcd' : 'zookeeper', e, ['leader', 'follower']))),
    );
    return {
      endpoints,
      async stop() {
        await Promise.all(containers.map((c) => c.stop()));
        await network.stop();
      },
    };
  }

  let c: InstanceType<TC['GenericContainer']>;
  let port: number;
  switch (name) {
    case 'etcd':
      port = 2379;
      c = new GenericContainer(IMAGES.etcd).withCommand([
        'etcd',
        '--name=etcd',
        '--data-dir=/etcd-data',
        '--listen-client-urls=http://0.0.0.0:2379',
        '--advertise-client-urls=http://127.0.0.1:2379',
        '--enable-v2=true',
      ]);
      break;
    case 'consul':
      port = 8500;
      c = new GenericContainer(IMAGES.consul).withCommand([
        'agent',
        '-dev',
        '-client=0.0.0.0',
        '-hcl',
        'session_ttl_min = "1s"',
      ]);
      break;
    case 'zookeeper':
      port = 2181;
      c = new GenericContainer(IMAGES.zookeeper).withEnvironment({
        ZOO_4LW_COMMANDS_WHITELIST: '*',
        ZOO_ADMINSERVER_ENABLED: 'false',
        ZOO_TICK_TIME: '500',
      });
      break;
    case 'redis':
      port = 6379;
      c = new GenericContainer(IMAGES.redis).withCommand([
        'redis-server',
        '--notify-keyspace-events',
        'KEA',
        '--save',
        '',
        '--appendonly',
        'no',
      ]);
      break;
  }
  const started = await c.withExposedPorts(port).start();
  const endpoint = `${hostOf(started.getHost())}:${started.getMappedPort(port)}`;
  await ready(name, probeFor(name, endpoint, ['standalone']));
  return {
    endpoints: [endpoint],
    async stop() {
      await started.stop();
    },
  };
}
