/**
 * Every error a store throws is a `KVError` with a stable `code`. The driver's
 * error, when there is one, is the `cause`.
 *
 * `instanceof` breaks when two copies of `@kv/core` end up in one process, so
 * each class also carries a `Symbol.for` marker and a static `isInstance`.
 */

export type KVErrorCode =
  | 'KEY_NOT_FOUND'
  | 'KEY_EXISTS'
  | 'KEY_MODIFIED'
  | 'INVALID_KEY'
  | 'INVALID_ARGUMENT'
  | 'VALUE_TOO_LARGE'
  | 'NOT_SUPPORTED'
  | 'UNAVAILABLE'
  | 'UNAUTHENTICATED'
  | 'PERMISSION_DENIED'
  | 'LOCK_LOST'
  | 'CLOSED'
  | 'UNKNOWN_BACKEND'
  | 'INTEGRITY'
  | 'INVALID_VALUE';

const MARKER = Symbol.for('@kv/core.KVError');

export interface KVErrorOptions {
  cause?: unknown;
}

export class KVError extends Error {
  readonly code: KVErrorCode;
  declare readonly [MARKER]: KVErrorCode;

  constructor(code: KVErrorCode, message: string, options?: KVErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    Object.defineProperty(this, MARKER, { value: code, enumerable: false });
  }

  override get name(): string {
    return this.constructor.name;
  }

  /** True for any `KVError`, including one thrown by another copy of `@kv/core`. */
  static isInstance(error: unknown): error is KVError {
    return typeof error === 'object' && error !== null && MARKER in error;
  }
}

/** Each subclass recognises its own code across package copies. */
function codeCheck<T extends KVError>(code: KVErrorCode) {
  return (error: unknown): error is T =>
    KVError.isInstance(error) && (error as unknown as Record<symbol, unknown>)[MARKER] === code;
}

export class KeyNotFoundError extends KVError {
  readonly key: string;
  constructor(key: string, options?: KVErrorOptions) {
    super('KEY_NOT_FOUND', `key not found: ${JSON.stringify(key)}`, options);
    this.key = key;
  }
  static override isInstance = codeCheck<KeyNotFoundError>('KEY_NOT_FOUND');
}

export class KeyExistsError extends KVError {
  readonly key: string;
  constructor(key: string, options?: KVErrorOptions) {
    super('KEY_EXISTS', `key already exists: ${JSON.stringify(key)}`, options);
    this.key = key;
  }
  static override isInstance = codeCheck<KeyExistsError>('KEY_EXISTS');
}

export class KeyModifiedError extends KVError {
  readonly key: string;
  constructor(key: string, options?: KVErrorOptions) {
    super('KEY_MODIFIED', `key was modified since the given lastIndex: ${JSON.stringify(key)}`, options);
    this.key = key;
  }
  static override isInstance = codeCheck<KeyModifiedError>('KEY_MODIFIED');
}

export class InvalidKeyError extends KVError {
  readonly key: string;
  constructor(key: string, reason: string, options?: KVErrorOptions) {
    super('INVALID_KEY', `invalid key ${JSON.stringify(key)}: ${reason}`, options);
    this.key = key;
  }
  static override isInstance = codeCheck<InvalidKeyError>('INVALID_KEY');
}

export class InvalidArgumentError extends KVError {
  constructor(message: string, options?: KVErrorOptions) {
    super('INVALID_ARGUMENT', message, options);
  }
  static override isInstance = codeCheck<InvalidArgumentError>('INVALID_ARGUMENT');
}

export class ValueTooLargeError extends KVError {
  readonly size: number;
  readonly maxValueSize: number;
  /** `options.limit` names what sets the limit, e.g. a server setting (it is added to the message). */
  constructor(size: number, maxValueSize: number, options?: KVErrorOptions & { limit?: string }) {
    const { limit, ...rest } = options ?? {};
    super(
      'VALUE_TOO_LARGE',
      `value of ${size} bytes is over this backend's maxValueSize of ${maxValueSize}${limit ? ` (${limit})` : ''}`,
      rest,
    );
    this.size = size;
    this.maxValueSize = maxValueSize;
  }
  static override isInstance = codeCheck<ValueTooLargeError>('VALUE_TOO_LARGE');
}

export class NotSupportedError extends KVError {
  /** The call or feature that is missing, e.g. `watchTree`. */
  readonly feature: string;
  readonly backend: string;
  constructor(backend: string, feature: string, reason?: string, options?: KVErrorOptions) {
    super(
      'NOT_SUPPORTED',
      `the ${backend} backend does not support ${feature}${reason ? `: ${reason}` : ''}`,
      options,
    );
    this.feature = feature;
    this.backend = backend;
  }
  static override isInstance = codeCheck<NotSupportedError>('NOT_SUPPORTED');
}

export class UnavailableError extends KVError {
  constructor(message: string, options?: KVErrorOptions) {
    super('UNAVAILABLE', message, options);
  }
  static override isInstance = codeCheck<UnavailableError>('UNAVAILABLE');
}

export class AuthenticationError extends KVError {
  constructor(message: string, options?: KVErrorOptions) {
    super('UNAUTHENTICATED', message, options);
  }
  static override isInstance = codeCheck<AuthenticationError>('UNAUTHENTICATED');
}

export class PermissionDeniedError extends KVError {
  constructor(message: string, options?: KVErrorOptions) {
    super('PERMISSION_DENIED', message, options);
  }
  static override isInstance = codeCheck<PermissionDeniedError>('PERMISSION_DENIED');
}

export class LockLostError extends KVError {
  readonly key: string;
  /** Why it was lost, without the key (the message is `lock "key" lost: <reason>`). */
  readonly reason: string;
  constructor(key: string, reason: string, options?: KVErrorOptions) {
    super('LOCK_LOST', `lock ${JSON.stringify(key)} lost: ${reason}`, options);
    this.key = key;
    this.reason = reason;
  }
  static override isInstance = codeCheck<LockLostError>('LOCK_LOST');
}

export class ClosedError extends KVError {
  constructor(message = 'the store is closed', options?: KVErrorOptions) {
    super('CLOSED', message, options);
  }
  static override isInstance = codeCheck<ClosedError>('CLOSED');
}

export interface UnknownBackendOptions extends KVErrorOptions {
  /** The package names `createStore` tried to import, in order. */
  readonly tried?: readonly string[];
  /** Backend packages found installed (in node_modules) but not loaded yet. */
  readonly installed?: readonly string[];
  /** A package that loaded but registered no backend of this name. */
  readonly loadedWithout?: string;
}

/**
 * No backend of this name is registered and no package that provides it
 * could be imported. For the kv project's own backends the message says
 * which `@kv/backend-*` package to install; for any other name it says which
 * package names were tried (`@kv/backend-<name>`, `kv-backend-<name>`) and
 * how a third-party package registers itself.
 */
export class UnknownBackendError extends KVError {
  readonly backend: string;
  /** The package to install: `@kv/backend-<name>` for the project's own backends, else `kv-backend-<name>`. */
  readonly packageName: string;
  readonly registered: readonly string[];
  readonly tried: readonly string[];
  readonly installed: readonly string[];
  constructor(backend: string, registered: readonly string[], options?: UnknownBackendOptions) {
    const ours = isOwnBackend(backend);
    const pkg = ours ? backendPackage(backend) : `kv-backend-${backend}`;
    const tried = options?.tried ?? [];
    const installed = options?.installed ?? [];
    const known = `Registered backends: ${registered.length > 0 ? registered.join(', ') : 'none'}${
      installed.length > 0
        ? `; installed backend packages (loaded on first use): ${installed.join(', ')}`
        : ''
    }`;
    let advice: string;
    if (options?.loadedWithout) {
      advice = `the package ${options.loadedWithout} loaded but registered no backend named "${backend}" (it must call registerBackend({ name: '${backend}', ... }) when imported)`;
    } else if (ours) {
      advice = `install it with \`npm install ${pkg}\` (or import it before createStore)`;
    } else {
      advice = `no package provides it${tried.length > 0 ? ` (tried ${tried.join(' and ')})` : ''}. A third-party backend named ${pkg} loads by itself once installed; a package with another name (such as @scope/kv-backend-${backend}) registers the backend when imported: import it before createStore`;
    }
    super('UNKNOWN_BACKEND', `unknown backend "${backend}": ${advice}. ${known}`, options);
    this.backend = backend;
    this.packageName = pkg;
    this.registered = registered;
    this.tried = tried;
    this.installed = installed;
  }
  static override isInstance = codeCheck<UnknownBackendError>('UNKNOWN_BACKEND');
}

/**
 * A stored value failed its integrity check: an `encrypted()` store could not
 * authenticate it (wrong or unknown key, a changed byte, a value copied from
 * another key). The message names the key and the key id, never a secret.
 */
export class IntegrityError extends KVError {
  readonly key: string;
  constructor(key: string, reason: string, options?: KVErrorOptions) {
    super('INTEGRITY', `value of ${JSON.stringify(key)} failed its integrity check: ${reason}`, options);
    this.key = key;
  }
  static override isInstance = codeCheck<IntegrityError>('INTEGRITY');
}

/**
 * A value did not pass a `typed()` store's codec or schema: refused by a
 * write, or found stored by a read. `issues` are the schema's messages.
 */
export class InvalidValueError extends KVError {
  readonly key: string;
  readonly issues: readonly string[];
  constructor(key: string, issues: readonly string[], options?: KVErrorOptions) {
    super('INVALID_VALUE', `invalid value for ${JSON.stringify(key)}: ${issues.join('; ')}`, options);
    this.key = key;
    this.issues = issues;
  }
  static override isInstance = codeCheck<InvalidValueError>('INVALID_VALUE');
}

/**
 * Schemes served by another backend's package: `rediss://` is Redis over TLS,
 * `etcds://` etcd over TLS.
 */
const PACKAGE_OF: Readonly<Record<string, string>> = {
  rediss: 'redis',
  etcds: 'etcd',
  consuls: 'consul',
  etcdv2s: 'etcdv2',
};

/** The backends (URL schemes) of the kv project's own `@kv/backend-*` packages. */
const OWN_BACKENDS: ReadonlySet<string> = new Set([
  'consul',
  'etcd',
  'etcdv2',
  'redis',
  'sqlite',
  'zookeeper',
  ...Object.keys(PACKAGE_OF),
]);

function isOwnBackend(name: string): boolean {
  return OWN_BACKENDS.has(name);
}

/** The `@kv/backend-*` package that provides a backend (or URL scheme) of the kv project. */
export function backendPackage(name: string): string {
  return `@kv/backend-${PACKAGE_OF[name] ?? name}`;
}

/**
 * The packages `createStore` imports, in order, to find a backend that is
 * not registered yet: `@kv/backend-<name>`, then `kv-backend-<name>` (the
 * convention for third-party backends).
 */
export function backendPackages(name: string): string[] {
  const own = backendPackage(name);
  const thirdParty = `kv-backend-${name}`;
  return isOwnBackend(name) ? [own] : [own, thirdParty];
}

/**
 * The error an aborted call rejects with: named `AbortError`, with the
 * signal's reason as `cause`, as Node's `timers/promises` does.
 */
export function abortError(signal: AbortSignal): Error {
  const error = new Error('The operation was aborted', { cause: signal.reason });
  error.name = 'AbortError';
  return error;
}

/**
 * A value as an error message shows it: strings quoted (`"100"`), so a
 * string that looks like a number is told apart from the number; numbers,
 * booleans, `null`, `undefined` and `NaN` as written.
 */
export function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'object' && value !== null) {
    try {
      return JSON.stringify(value) ?? String(value);
    } catch {
      return String(value);
    }
  }
  return String(value);
}

/**
 * True for the error an aborted call rejects with (named `AbortError`, not a
 * `KVError`: it has no `code`). Its `cause` is the signal's `reason`.
 */
export function isAbortError(error: unknown): boolean {
  return error instanceof Error && error.name === 'AbortError';
}
