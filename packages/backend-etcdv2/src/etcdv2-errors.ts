import {
  AuthenticationError,
  InvalidArgumentError,
  KeyExistsError,
  KeyModifiedError,
  KeyNotFoundError,
  KVError,
  PermissionDeniedError,
  UnavailableError,
} from '@kv/core';

/** etcd's v2 error codes (the `errorCode` of an error body), those this backend looks at. */
export const V2 = {
  keyNotFound: 100,
  compareFailed: 101,
  notFile: 102,
  notDir: 104,
  nodeExist: 105,
  dirNotEmpty: 108,
  unauthorized: 110,
  raftInternal: 300,
  leaderElect: 301,
  watcherCleared: 400,
  eventIndexCleared: 401,
} as const;

/** An error answer of the v2 API: HTTP status plus etcd's `errorCode`. */
export class EtcdV2Error extends Error {
  constructor(
    readonly status: number,
    readonly errorCode: number | undefined,
    message: string,
    readonly index: number | undefined,
    /**
     * For a 401: the same credentials were accepted by the cluster before, so
     * this is a refused permission, not a wrong password (etcd's v2 API
     * answers both with 401 and error code 110).
     */
    readonly denied = false,
  ) {
    super(message);
    this.name = 'EtcdV2Error';
  }
}

export function isCode(error: unknown, code: number): boolean {
  return error instanceof EtcdV2Error && error.errorCode === code;
}

/** Maps an etcd v2 error (or a transport error) to a `KVError`. `key` is the user key, for key errors. */
export function mapEtcdV2Error(error: unknown, operation: string, key = ''): KVError {
  if (KVError.isInstance(error)) return error;
  const message = error instanceof Error ? error.message : String(error);
  const text = `etcdv2: ${operation} failed: ${message}`;
  const options = { cause: error };
  if (error instanceof EtcdV2Error) {
    switch (error.errorCode) {
      case V2.keyNotFound:
        return new KeyNotFoundError(key, options);
      case V2.nodeExist:
        return new KeyExistsError(key, options);
      case V2.compareFailed:
        return new KeyModifiedError(key, options);
      case V2.unauthorized:
        return error.denied
          ? new PermissionDeniedError(`${text} (the user's roles do not allow this here)`, options)
          : new AuthenticationError(
              `${text} (a wrong username or password, or no credentials; etcd's v2 API answers 401 too when the user's roles do not allow this path)`,
              options,
            );
      case V2.notFile:
      case V2.notDir:
        return new InvalidArgumentError(
          `${text} (a node there is not laid out as this backend stores keys: written by another v2 client?)`,
          options,
        );
    }
    if (error.status === 400 && /HTTP request to an HTTPS server/i.test(error.message)) {
      return new InvalidArgumentError(
        `${text} (the server speaks TLS on this port: use etcdv2s:// or tls: true)`,
        options,
      );
    }
    if (error.status === 401)
      return new AuthenticationError(`${text} (check username and password)`, options);
    if (error.status === 403) return new PermissionDeniedError(text, options);
    if (
      error.status === 400 &&
      error.errorCode !== undefined &&
      error.errorCode >= 200 &&
      error.errorCode < 300
    )
      return new InvalidArgumentError(text, options);
    if (error.status === 413)
      return new InvalidArgumentError(`${text} (over the server's request limit)`, options);
  }
  return new UnavailableError(text, options);
}

/** Errors a watch or a lock wait must not retry. */
export function isPermanent(error: KVError): boolean {
  return (
    error.code === 'UNAUTHENTICATED' ||
    error.code === 'PERMISSION_DENIED' ||
    error.code === 'CLOSED' ||
    error.code === 'INVALID_ARGUMENT' ||
    error.code === 'NOT_SUPPORTED'
  );
}
