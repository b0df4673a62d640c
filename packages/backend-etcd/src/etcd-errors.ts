import {
  AuthenticationError,
  ClosedError,
  InvalidArgumentError,
  KVError,
  NotSupportedError,
  PermissionDeniedError,
  UnavailableError,
} from '@kv/core';
import {
  ClientClosedError,
  castGrpcError,
  EtcdAuthenticationFailedError,
  EtcdInvalidAuthTokenError,
  EtcdLeaseInvalidError,
  EtcdPermissionDeniedError,
  EtcdRoleNotFoundError,
  EtcdRoleNotGrantedError,
  EtcdUserNotFoundError,
  GRPCFailedPreconditionError,
  GRPCInvalidArgumentError,
  GRPCNotImplementedError,
  GRPCOutOfRangeError,
  GRPCResourceExhastedError,
  GRPCUnauthenticatedError,
} from 'etcd3';

/** A raw gRPC error (from a stream) as etcd3's typed error. */
export function typedError(error: unknown): unknown {
  if (error instanceof Error && error.constructor === Error) return castGrpcError(error);
  return error;
}

/**
 * Maps an etcd3 / gRPC error to a `KVError`, by gRPC status and etcd's own
 * messages (etcd sends most of its errors as a status code plus an
 * `etcdserver: ...` message).
 */
export function mapEtcdError(error: unknown, operation: string): KVError {
  if (KVError.isInstance(error)) return error;
  const typed = typedError(error);
  const message = typed instanceof Error ? typed.message : String(typed);
  const text = `etcd: ${operation} failed: ${message}`;
  const options = { cause: error };
  if (
    typed instanceof EtcdAuthenticationFailedError ||
    typed instanceof GRPCUnauthenticatedError ||
    typed instanceof EtcdInvalidAuthTokenError ||
    typed instanceof EtcdUserNotFoundError
  ) {
    return new AuthenticationError(text, options);
  }
  if (/user name is empty|authentication is not enabled/.test(message)) {
    const hint = message.includes('user name is empty')
      ? ' (the server has auth enabled: pass username and password, or a token)'
      : '';
    return new AuthenticationError(`${text}${hint}`, options);
  }
  if (
    typed instanceof EtcdPermissionDeniedError ||
    typed instanceof EtcdRoleNotGrantedError ||
    typed instanceof EtcdRoleNotFoundError ||
    /permission denied/.test(message)
  ) {
    return new PermissionDeniedError(text, options);
  }
  if (typed instanceof ClientClosedError) return new ClosedError(text, options);
  if (/request is too large/.test(message)) {
    return new InvalidArgumentError(`${text} (over the server's --max-request-bytes)`, options);
  }
  if (/required revision has been compacted/.test(message)) {
    return new InvalidArgumentError(`${text} (that revision is older than the last compaction)`, options);
  }
  if (typed instanceof EtcdLeaseInvalidError) {
    return new InvalidArgumentError(`${text} (the lease expired or was revoked)`, options);
  }
  if (typed instanceof GRPCResourceExhastedError && /larger than max/i.test(message)) {
    return new InvalidArgumentError(
      `${text} (raise maxCallRecvMessageSize / maxCallSendMessageSize)`,
      options,
    );
  }
  if (
    typed instanceof GRPCInvalidArgumentError ||
    typed instanceof GRPCOutOfRangeError ||
    typed instanceof GRPCFailedPreconditionError
  ) {
    return new InvalidArgumentError(text, options);
  }
  if (typed instanceof GRPCNotImplementedError) {
    return new NotSupportedError('etcd', operation, message, options);
  }
  return new UnavailableError(text, options);
}

/** Errors a watch or a lock wait must not retry: retrying cannot fix them. */
export function isPermanent(error: KVError): boolean {
  return (
    error.code === 'UNAUTHENTICATED' ||
    error.code === 'PERMISSION_DENIED' ||
    error.code === 'CLOSED' ||
    error.code === 'INVALID_ARGUMENT' ||
    error.code === 'NOT_SUPPORTED'
  );
}
