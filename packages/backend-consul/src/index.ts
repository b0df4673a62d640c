import { type CommonConfig, createStore, InvalidArgumentError, redactUrl, registerBackend } from '@kv/core';
import {
  CONSUL_OPTIONS,
  type ConsulOptions,
  type ConsulSettings,
  parseConsulUrl,
  parseGoDuration,
} from './consul-config.js';
import { ConsulHttp } from './consul-http.js';
import { CONSUL_CAPABILITIES, type ConsulEntry, ConsulStore } from './consul-store.js';

export {
  ConsulTransaction,
  type ConsulTxnResult,
  MAX_TXN_OPS,
  type TxnOp,
  type TxnResult,
} from './transaction.js';
export {
  CONSUL_CAPABILITIES,
  type ConsulEntry,
  ConsulHttp,
  type ConsulOptions,
  type ConsulSettings,
  ConsulStore,
  parseConsulUrl,
  parseGoDuration,
};

const open = (config: Parameters<typeof ConsulStore.open>[0]) => ConsulStore.open(config);

registerBackend({
  name: 'consul',
  capabilities: CONSUL_CAPABILITIES,
  options: CONSUL_OPTIONS,
  parseUrl: parseConsulUrl,
  create: (config) => open(config as Parameters<typeof ConsulStore.open>[0]),
});

/** `consuls://host:8501/prefix`: Consul's HTTPS API (system CAs unless `caFile` / `tls.ca` is given). */
registerBackend({
  name: 'consuls',
  capabilities: CONSUL_CAPABILITIES,
  options: CONSUL_OPTIONS,
  parseUrl: parseConsulUrl,
  create: (config) => open({ ...config, tls: config.tls ?? true } as Parameters<typeof ConsulStore.open>[0]),
});

/** Opens a Consul store, typed as `ConsulStore` (with the toolkit), from a `consul://` / `consuls://` URL or a config. */
export async function openConsul(config: string | (CommonConfig & ConsulOptions)): Promise<ConsulStore> {
  if (typeof config === 'string' && !/^consuls?:\/\//i.test(config)) {
    throw new InvalidArgumentError(
      `openConsul needs a consul:// or consuls:// URL, got ${JSON.stringify(redactUrl(config, { secretUser: true }))}`,
    );
  }
  const store = await createStore(typeof config === 'string' ? config : { ...config, backend: 'consul' });
  return store as ConsulStore;
}
