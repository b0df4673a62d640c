import {
  type CommonConfig,
  createStore,
  InvalidArgumentError,
  type ResolvedConfig,
  redactUrl,
  registerBackend,
} from '@kv/core';
import { ETCDV2_OPTIONS, type EtcdV2Options, parseEtcdV2Url } from './etcdv2-config.js';
import { ETCDV2_CAPABILITIES, EtcdV2Store } from './etcdv2-store.js';

export { ETCDV2_CAPABILITIES, type EtcdV2Options, EtcdV2Store, parseEtcdV2Url };

const open = (config: ResolvedConfig) => EtcdV2Store.open(config as ResolvedConfig & EtcdV2Options);

registerBackend({
  name: 'etcdv2',
  capabilities: ETCDV2_CAPABILITIES,
  options: ETCDV2_OPTIONS,
  parseUrl: parseEtcdV2Url,
  create: open,
});

/** `etcdv2s://host:port/prefix`: the v2 API over TLS. */
registerBackend({
  name: 'etcdv2s',
  capabilities: ETCDV2_CAPABILITIES,
  options: ETCDV2_OPTIONS,
  parseUrl: parseEtcdV2Url,
  create: (config) => open({ ...config, tls: config.tls ?? true }),
});

/** Opens an etcd v2 store, typed as `EtcdV2Store`, from an `etcdv2://` / `etcdv2s://` URL or a config. */
export async function openEtcdV2(config: string | (CommonConfig & EtcdV2Options)): Promise<EtcdV2Store> {
  if (typeof config === 'string' && !/^etcdv2s?:\/\//i.test(config)) {
    throw new InvalidArgumentError(
      `openEtcdV2 needs an etcdv2:// or etcdv2s:// URL, got ${JSON.stringify(redactUrl(config))}`,
    );
  }
  return (await createStore(
    typeof config === 'string' ? config : { ...config, backend: 'etcdv2' },
  )) as EtcdV2Store;
}
