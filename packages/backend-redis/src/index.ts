import { registerBackend } from '@kv/core';
import { parseRedisUrl, REDIS_OPTIONS, type RedisOptions, type RedisSettings } from './redis-config.js';
import { REDIS_CAPABILITIES, RedisStore } from './redis-store.js';

export { parseRedisUrl, REDIS_CAPABILITIES, type RedisOptions, type RedisSettings, RedisStore };

const create = (config: Parameters<typeof RedisStore.open>[0]) => RedisStore.open(config);

registerBackend({
  name: 'redis',
  capabilities: REDIS_CAPABILITIES,
  options: REDIS_OPTIONS,
  parseUrl: parseRedisUrl,
  create: (config) => create(config as Parameters<typeof RedisStore.open>[0]),
});

// `rediss://` URLs: the same backend with TLS on.
registerBackend({
  name: 'rediss',
  capabilities: REDIS_CAPABILITIES,
  options: REDIS_OPTIONS,
  parseUrl: parseRedisUrl,
  create: (config) => create({ ...config, tls: config.tls ?? true } as Parameters<typeof RedisStore.open>[0]),
});
