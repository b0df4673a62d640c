import {
  AuthenticationError,
  InvalidArgumentError,
  KVError,
  PermissionDeniedError,
  UnavailableError,
} from '@kv/core';

/** An answer of the HTTP API with a status the caller did not expect. */
export class ConsulHttpError extends Error {
  readonly status: number;
  readonly body: string;

  constructor(status: number, body: string, where: string) {
    super(`${where}: HTTP ${status}${body ? `: ${body.trim().slice(0, 300)}` : ''}`);
    this.name = 'ConsulHttpError';
    this.status = status;
    this.body = body;
  }
}

/** The request never reached an agent: it is safe to send it to another one. */
export class ConsulConnectError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ConsulConnectError';
  }
}

/**
 * Maps what the HTTP layer throws to a `KVError`. Consul answers 403 for
 * both ACL failures and tells them apart only in the body: "ACL not found"
 * is a token the servers do not know (bad credentials), "Permission denied"
 * a known token whose policy does not allow the call.
 */
export function mapConsulError(error: unknown, operation: string): KVError {
  if (KVError.isInstance(error)) return error;
  const message = error instanceof Error ? error.message : String(error);
  const text = `consul: ${operation} failed: ${message}`;
  const options = { cause: error };
  if (error instanceof ConsulHttpError) {
    if (error.status === 403 || error.status === 401) {
      if (/acl not found|token not found|invalid token/i.test(error.body)) {
        return new AuthenticationError(`${text} (the ACL token is not known to the servers)`, options);
      }
      return new PermissionDeniedError(
        `${text} (the token's policy does not allow this; see the README)`,
        options,
      );
    }
    if (/HTTP request to an HTTPS server/i.test(error.body)) {
      return new InvalidArgumentError(
        `${text} (the agent serves HTTPS here: use consuls:// or tls: true)`,
        options,
      );
    }
    if (error.status === 400 || error.status === 405 || error.status === 413) {
      return new InvalidArgumentError(text, options);
    }
  }
  return new UnavailableError(text, options);
}

/** A permanent failure that retrying cannot fix (credentials, policy, a refused argument). */
export function isPermanent(error: unknown): boolean {
  return (
    AuthenticationError.isInstance(error) ||
    PermissionDeniedError.isInstance(error) ||
    InvalidArgumentError.isInstance(error) ||
    (error instanceof ConsulHttpError && [400, 401, 403, 405, 413].includes(error.status))
  );
}
