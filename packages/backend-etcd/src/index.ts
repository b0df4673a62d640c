import {
  type CommonConfig,
  createStore,
  InvalidArgumentError,
  type ResolvedConfig,
  redactUrl,
  registerBackend,
} from '@kv/core';
import { ETCD_OPTIONS, type EtcdOptions, parseEtcdsUrl } from './etcd-config.js';
import {
  ETCD_CAPABILITIES,
  type EtcdLease,
  type EtcdLeaseInfo,
  type EtcdMember,
  type EtcdStatus,
  EtcdStore,
  type RangeOptions,
} from './etcd-toolkit.js';

export {
  type CompareOperator,
  compare,
  type EtcdCompare,
  type EtcdKeyValue,
  type EtcdOp,
  type EtcdOpResult,
  EtcdTransaction,
  type EtcdTxnResult,
  op,
} from './transaction.js';
export {
  ETCD_CAPABILITIES,
  type EtcdLease,
  type EtcdLeaseInfo,
  type EtcdMember,
  type EtcdOptions,
  type EtcdStatus,
  EtcdStore,
  type RangeOptions,
};

const open = (config: ResolvedConfig) => EtcdStore.open(config as ResolvedConfig & EtcdOptions);

registerBackend({
  name: 'etcd',
  capabilities: ETCD_CAPABILITIES,
  options: ETCD_OPTIONS,
  create: open,
});

/** `etcds://host:port/prefix`: etcd over TLS (system CAs unless `caFile` / `tls.ca` is given). */
registerBackend({
  name: 'etcds',
  capabilities: ETCD_CAPABILITIES,
  options: ETCD_OPTIONS,
  parseUrl: parseEtcdsUrl,
  create: (config) => open({ ...config, tls: config.tls ?? true }),
});

/**
 * Opens an etcd store, typed as `EtcdStore` (with the toolkit), from an
 * `etcd://` / `etcds://` URL or a config object.
 *
 * ```ts
 * const store = await openEtcd('etcd://127.0.0.1:2379/myapp');
 * ```
 */
export async function openEtcd(config: string | (CommonConfig & EtcdOptions)): Promise<EtcdStore> {
  if (typeof config === 'string' && !/^etcds?:\/\//i.test(config)) {
    throw new InvalidArgumentError(
      `openEtcd needs an etcd:// or etcds:// URL, got ${JSON.stringify(redactUrl(config))}`,
    );
  }
  const store = await createStore(typeof config === 'string' ? config : { ...config, backend: 'etcd' });
  return store as EtcdStore;
}
