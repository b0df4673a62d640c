export {
  type MadeCertificates,
  makeTestCertificates,
  mutualTls,
  type TestCertificates,
  testCertificates,
} from './certs.js';
export {
  type ClusterNet,
  type ClusterNetOptions,
  clusterNetProblem,
  createClusterNet,
  type LinkEnd,
  reapClusterNets,
} from './cluster-net.js';
export {
  type ClusterFaultHooksFor,
  clusterFaultHooks,
  type PartitionedStore,
  type ServerFaultHooks,
  type ServerFaultHooksOptions,
  serverFaultHooks,
} from './fault-hooks.js';
export { type FaultMode, type FaultProxy, type FaultProxyOptions, startFaultProxy } from './fault-proxy.js';
export { type RemoteFaultProxy, startRemoteFaultProxy } from './fault-proxy-remote.js';
export { type StartedServers, startServers } from './group.js';
export {
  type Bins,
  type Component,
  DEBIAN_PACKAGES,
  ensureInstalled,
  type Log,
} from './install.js';
export {
  type AnyHandle,
  type ClusterHandle,
  type ClusterOptions,
  type ConsulClusterOptions,
  type ConsulOptions,
  type EtcdHandle,
  type EtcdOptions,
  type InternalOptions,
  type LaunchOptions,
  launch,
  launchConsul,
  launchConsulCluster,
  launchEtcd,
  launchEtcdCluster,
  launchRedis,
  launchZooKeeper,
  launchZooKeeperEnsemble,
  type RedisHandle,
  type RedisOptions,
  type ServerHandle,
  type ZooKeeperOptions,
} from './launch.js';
export {
  DEFAULT_SERVERS,
  ENV_VARS,
  SERVER_NAMES,
  type ServerKind,
  type ServerName,
} from './names.js';
export { freePorts, redisCommands, tcpOpen, zkFourLetter, zkMode } from './probes.js';
export { type RegistryEntry, reapOrphanedServers } from './proc.js';
export {
  privateServer,
  type ServerAvailability,
  type ServerForOptions,
  type ServerSource,
  serverFor,
  stopStartedServers,
} from './resolve.js';
export { type EndpointsFile, findEndpointsFile, readEndpointsFile } from './state.js';
export { serversGlobalSetup } from './vitest.js';
