import { KVError, type KVErrorCode } from '@kv/core';

/**
 * The exit status of `kv` for each outcome. A script can tell a missing key from an unreachable
 * server without parsing stderr. Documented in the README; changing one is a breaking change.
 */
export const EXIT_CODES = {
  OK: 0,
  /** `exists` on an absent key (like `test`), `copy`/`restore` with failed keys, `doctor` with a warning. */
  FALSE: 1,
  /** Bad flags or arguments (commander's usage errors). */
  USAGE: 2,
  /** An error that is not a KVError (a bug, or an I/O error outside the store). */
  INTERNAL: 3,
  KEY_NOT_FOUND: 10,
  KEY_EXISTS: 11,
  KEY_MODIFIED: 12,
  INVALID_KEY: 13,
  INVALID_ARGUMENT: 14,
  VALUE_TOO_LARGE: 15,
  NOT_SUPPORTED: 16,
  UNAVAILABLE: 17,
  UNAUTHENTICATED: 18,
  PERMISSION_DENIED: 19,
  LOCK_LOST: 20,
  CLOSED: 21,
  UNKNOWN_BACKEND: 22,
  /** A value failed to decrypt or authenticate (an `encrypted()` store). */
  INTEGRITY: 23,
  /** A value did not validate against its codec or schema (a `typed()` store). */
  INVALID_VALUE: 24,
  /** Stopped by Ctrl-C (SIGINT) before the work was done: 128 + SIGINT, as shells report it. */
  INTERRUPTED: 130,
} as const satisfies Record<'OK' | 'FALSE' | 'USAGE' | 'INTERNAL' | 'INTERRUPTED' | KVErrorCode, number>;

/** The exit status for an error thrown by a command. */
export function exitCodeFor(error: unknown): number {
  if (KVError.isInstance(error)) return EXIT_CODES[error.code] ?? EXIT_CODES.INTERNAL;
  return EXIT_CODES.INTERNAL;
}

/** The one line `kv` prints on stderr for an error: `kv: CODE: message`. */
export function errorLine(error: unknown): string {
  if (KVError.isInstance(error)) return `kv: ${error.code}: ${oneLine(error.message)}`;
  const message = error instanceof Error ? error.message : String(error);
  return `kv: INTERNAL: ${oneLine(message)}`;
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}
