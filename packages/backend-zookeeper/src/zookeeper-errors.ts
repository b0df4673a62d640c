import {
  AuthenticationError,
  InvalidArgumentError,
  KVError,
  PermissionDeniedError,
  UnavailableError,
} from '@kv/core';

/** Return codes of the C client (zookeeper.h). */
export const ZK = {
  OK: 0,
  SYSTEMERROR: -1,
  CONNECTIONLOSS: -4,
  MARSHALLINGERROR: -5,
  UNIMPLEMENTED: -6,
  OPERATIONTIMEOUT: -7,
  BADARGUMENTS: -8,
  INVALIDSTATE: -9,
  NONODE: -101,
  NOAUTH: -102,
  BADVERSION: -103,
  NOCHILDRENFOREPHEMERALS: -108,
  NODEEXISTS: -110,
  NOTEMPTY: -111,
  SESSIONEXPIRED: -112,
  INVALIDACL: -114,
  AUTHFAILED: -115,
  CLOSING: -116,
  SESSIONMOVED: -118,
} as const;

/** A non-zero return code of a C-client call. */
export class ZkError extends Error {
  constructor(
    readonly rc: number,
    readonly text: string,
    readonly operation: string,
    readonly path?: string,
  ) {
    super(`${operation}${path ? ` ${path}` : ''}: ${text} (${rc})`);
    this.name = 'ZkError';
  }
}

export const isRc = (error: unknown, rc: number): boolean => error instanceof ZkError && error.rc === rc;

/** Turns a C-client error into a `KVError`. */
export function mapZkError(error: unknown, operation: string): KVError {
  if (KVError.isInstance(error)) return error;
  if (error instanceof ZkError) {
    const message = `zookeeper: ${operation} failed: ${error.message}`;
    switch (error.rc) {
      case ZK.NOAUTH:
        return new PermissionDeniedError(`${message}: the node's ACL refuses this client`, { cause: error });
      case ZK.AUTHFAILED:
        return new AuthenticationError(`${message}: the server refused the credentials`, { cause: error });
      case ZK.BADARGUMENTS:
      case ZK.INVALIDACL:
        return new InvalidArgumentError(message, { cause: error });
      case ZK.NOCHILDRENFOREPHEMERALS:
        return new InvalidArgumentError(
          `${message}: its parent is a keepAlive key or a held lock (an ephemeral node), which cannot have children`,
          { cause: error },
        );
      default:
        return new UnavailableError(message, { cause: error });
    }
  }
  const text = error instanceof Error ? error.message : String(error);
  return new UnavailableError(`zookeeper: ${operation} failed: ${text}`, { cause: error });
}
