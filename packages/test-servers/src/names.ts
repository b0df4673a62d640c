export type ServerKind = 'etcd' | 'consul' | 'zookeeper' | 'redis';
export type ServerName = ServerKind | 'etcd-cluster' | 'zookeeper-ensemble';

export const SERVER_NAMES: readonly ServerName[] = [
  'etcd',
  'consul',
  'zookeeper',
  'redis',
  'etcd-cluster',
  'zookeeper-ensemble',
];

/** What `cli up` and scripts/test-all.mjs start when no names are given. */
export const DEFAULT_SERVERS: readonly ServerName[] = ['etcd', 'consul', 'zookeeper', 'redis'];

/** The environment variable holding each server's endpoints (comma-separated host:port). */
export const ENV_VARS: Readonly<Record<ServerName, string>> = {
  etcd: 'KV_ETCD_ENDPOINTS',
  'etcd-cluster': 'KV_ETCD_CLUSTER_ENDPOINTS',
  consul: 'KV_CONSUL_ENDPOINTS',
  zookeeper: 'KV_ZOOKEEPER_ENDPOINTS',
  'zookeeper-ensemble': 'KV_ZOOKEEPER_ENSEMBLE_ENDPOINTS',
  redis: 'KV_REDIS_ENDPOINTS',
};

export const KIND_OF: Readonly<Record<ServerName, ServerKind>> = {
  etcd: 'etcd',
  'etcd-cluster': 'etcd',
  consul: 'consul',
  zookeeper: 'zookeeper',
  'zookeeper-ensemble': 'zookeeper',
  redis: 'redis',
};

export function isServerName(s: string): s is ServerName {
  return (SERVER_NAMES as readonly string[]).includes(s);
}
