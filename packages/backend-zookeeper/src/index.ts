import { registerBackend } from '@kv/core';
import {
  parseZooKeeperUrl,
  ZOOKEEPER_OPTIONS,
  type ZooKeeperOptions,
  type ZooKeeperSettings,
} from './zookeeper-config.js';
import { ZOOKEEPER_CAPABILITIES, ZOOKEEPER_MAX_VALUE, ZooKeeperStore } from './zookeeper-store.js';

export {
  parseZooKeeperUrl,
  ZOOKEEPER_CAPABILITIES,
  ZOOKEEPER_MAX_VALUE,
  type ZooKeeperOptions,
  type ZooKeeperSettings,
  ZooKeeperStore,
};

registerBackend({
  name: 'zookeeper',
  capabilities: ZOOKEEPER_CAPABILITIES,
  options: ZOOKEEPER_OPTIONS,
  parseUrl: parseZooKeeperUrl,
  create: (config) => ZooKeeperStore.open(config as Parameters<typeof ZooKeeperStore.open>[0]),
});
