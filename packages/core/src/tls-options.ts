import { readFileSync } from 'node:fs';
import { bufferView } from './bytes.js';
import { InvalidArgumentError } from './errors.js';
import type { TlsOptions } from './types.js';

/** The TLS material a backend hands to its client: PEM buffers, validated. */
export interface TlsMaterial {
  /** The `tls` option as given: `undefined`, a boolean, or an object. */
  readonly option: TlsOptions | boolean | undefined;
  readonly ca: Buffer | undefined;
  readonly cert: Buffer | undefined;
  readonly key: Buffer | undefined;
  readonly servername: string | undefined;
  readonly rejectUnauthorized: boolean | undefined;
}

const TLS_KEYS = ['ca', 'cert', 'key', 'servername', 'rejectUnauthorized'];

function pem(value: unknown, what: string): Buffer | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (value instanceof Uint8Array) return bufferView(value);
  throw new InvalidArgumentError(`tls.${what} must be PEM text or bytes`);
}

function pemFile(value: unknown, name: string): Buffer | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value === '')
    throw new InvalidArgumentError(`${name} must be a file path`);
  try {
    return readFileSync(value);
  } catch (error) {
    throw new InvalidArgumentError(`${name}: cannot read ${value}: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/**
 * Validates the common `tls` option (`true`, `false` or `{ ca, cert, key, servername,
 * rejectUnauthorized }`) and, when `files` is given, the `caFile`/`certFile`/`keyFile` options a
 * URL can carry (read at once; `tls.*` wins). Bad input is an `InvalidArgumentError`.
 */
export function tlsMaterial(option: unknown, files?: Record<string, unknown>): TlsMaterial {
  if (
    option !== undefined &&
    typeof option !== 'boolean' &&
    (typeof option !== 'object' || option === null)
  ) {
    throw new InvalidArgumentError(
      'tls must be true, false or { ca, cert, key, servername, rejectUnauthorized }',
    );
  }
  const object = (typeof option === 'object' ? option : {}) as Record<string, unknown>;
  const unknown = Object.keys(object).filter((k) => !TLS_KEYS.includes(k));
  if (unknown.length > 0) throw new InvalidArgumentError(`unknown tls option(s): ${unknown.join(', ')}`);
  const ca = pem(object.ca, 'ca') ?? pemFile(files?.caFile, 'caFile');
  const cert = pem(object.cert, 'cert') ?? pemFile(files?.certFile, 'certFile');
  const key = pem(object.key, 'key') ?? pemFile(files?.keyFile, 'keyFile');
  if ((cert === undefined) !== (key === undefined)) {
    throw new InvalidArgumentError('a TLS client certificate needs both cert and key');
  }
  const { servername, rejectUnauthorized } = object;
  if (servername !== undefined && (typeof servername !== 'string' || servername === '')) {
    throw new InvalidArgumentError('tls.servername must be a non-empty string');
  }
  if (rejectUnauthorized !== undefined && typeof rejectUnauthorized !== 'boolean') {
    throw new InvalidArgumentError('tls.rejectUnauthorized must be a boolean');
  }
  return {
    option: option as TlsOptions | boolean | undefined,
    ca,
    cert,
    key,
    servername: servername as string | undefined,
    rejectUnauthorized: rejectUnauthorized as boolean | undefined,
  };
}
