export {
  BaseStore,
  type BaseStoreOptions,
  DEFAULT_KEEPALIVE_TTL,
  DEFAULT_LOCK_TTL,
  DEFAULT_TIMEOUT,
  diffListings,
  isHelperKey,
  type PrimitiveReadOptions,
  type PrimitiveWriteOptions,
  type RawPair,
} from './base-store.js';
export { bufferView, uint8View } from './bytes.js';
export { backoff, delay, MAX_TIMER_MS, timeoutSignal } from './call.js';
export { Channel, type ChannelOptions, DEFAULT_CHANNEL_LIMIT, WATCH_BUFFER_BYTES } from './channel.js';
export { type Member, members, type RegisterOptions, type Registration, register } from './discovery.js';
export { type CampaignOptions, campaign, type Leader, type Leadership, observe } from './election.js';
export {
  EncryptedStore,
  type EncryptionOptions,
  encrypted,
  encryptionOverhead,
  keyFromPassphrase,
  passphraseKey,
  type RotateResult,
  storedSalt,
} from './encrypted.js';
export {
  AuthenticationError,
  abortError,
  backendPackages,
  ClosedError,
  describeValue,
  IntegrityError,
  InvalidArgumentError,
  InvalidKeyError,
  InvalidValueError,
  isAbortError,
  KeyExistsError,
  KeyModifiedError,
  KeyNotFoundError,
  KVError,
  type KVErrorCode,
  type KVErrorOptions,
  LockLostError,
  NotSupportedError,
  PermissionDeniedError,
  UnavailableError,
  UnknownBackendError,
  type UnknownBackendOptions,
  ValueTooLargeError,
} from './errors.js';
export { compareKeys, isBelow, joinKey, normalizeKey, stripPrefix, toBytes } from './keys.js';
export type { AcquiredLock, AcquireRequest } from './lock.js';
export { monotonicNow } from './lock.js';
export {
  MEMORY_CAPABILITIES,
  MemoryServer,
  MemoryStore,
  type MemoryStoreOptions,
  memoryBackend,
  memoryDataSet,
} from './memory-store.js';
export {
  createStore,
  installedBackendPackages,
  loadBackend,
  parseOptionValue,
  parseQueryOptions,
  parseStoreUrl,
  redactUrl,
  registerBackend,
  registeredBackends,
  resolveConfig,
} from './registry.js';
export { type TlsMaterial, tlsMaterial } from './tls-options.js';
export type { RawTreeChange, RawTreeUpdate } from './tree-state.js';
export {
  type Codec,
  CodecError,
  json,
  type Previous,
  type StandardSchemaV1,
  type TypedPair,
  TypedStore,
  type TypedTreeChange,
  type TypedTreeEvent,
  typed,
} from './typed.js';
export type {
  BackendDefinition,
  BackendOptions,
  CallOptions,
  Capabilities,
  CommonConfig,
  KVPair,
  Lock,
  LockCallOptions,
  LockLease,
  LockOptions,
  ReadOptions,
  ResolvedConfig,
  Store,
  StoreConfig,
  TlsOptions,
  TreeChange,
  TreeEvent,
  Value,
  WriteOptions,
} from './types.js';
export { WrappedStore } from './wrapped-store.js';
