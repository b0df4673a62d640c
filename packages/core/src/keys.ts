import { InvalidKeyError } from './errors.js';

// C0 controls and DEL.
// biome-ignore lint/suspicious/noControlCharactersInRegex: these are exactly the characters we reject
const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * Normalises a key: leading and trailing `/` are dropped. Empty segments,
 * `.`/`..` segments, control characters and lone surrogates are rejected.
 * With `allowEmpty`, the empty key (a directory meaning "everything") is allowed.
 *
 * Every call of every store runs this, so a valid key is checked in one pass
 * over its code units, without allocating; anything that pass does not like
 * goes to `rejectKey`, which names what is wrong.
 */
export function normalizeKey(key: string, allowEmpty = false): string {
  if (typeof key !== 'string') {
    throw new InvalidKeyError(String(key), `a key must be a string, got ${typeof key}`);
  }
  let start = 0;
  let end = key.length;
  while (start < end && key.charCodeAt(start) === 47) start++;
  while (end > start && key.charCodeAt(end - 1) === 47) end--;
  if (start === end) {
    if (allowEmpty) return '';
    throw new InvalidKeyError(key, 'the key is empty');
  }
  let segment = start;
  for (let i = start; i <= end; i++) {
    const c = i === end ? 47 : key.charCodeAt(i);
    if (c === 47) {
      const length = i - segment;
      // An empty segment, `.` or `..`.
      if (length === 0 || (length <= 2 && key.charCodeAt(segment) === 46 && key.charCodeAt(i - 1) === 46)) {
        rejectKey(key, start, end);
      }
      segment = i + 1;
    } else if (c < 32 || c === 127) {
      rejectKey(key, start, end);
    } else if (c >= 0xd800 && c <= 0xdfff) {
      // A high surrogate followed by a low one is a pair; anything else is a lone surrogate.
      const next = i + 1 < end ? key.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) i++;
      else rejectKey(key, start, end);
    }
  }
  return start === 0 && end === key.length ? key : key.slice(start, end);
}

/** Throws the `InvalidKeyError` that says what is wrong with a key `normalizeKey`'s pass refused. */
function rejectKey(key: string, start: number, end: number): never {
  const normalised = key.slice(start, end);
  if (CONTROL.test(normalised)) {
    throw new InvalidKeyError(key, 'control characters (U+0000-U+001F, U+007F) are not allowed');
  }
  if (!normalised.isWellFormed()) {
    throw new InvalidKeyError(key, 'the key holds a lone UTF-16 surrogate');
  }
  for (const segment of normalised.split('/')) {
    if (segment === '') throw new InvalidKeyError(key, 'empty path segment (`//`)');
    if (segment === '.' || segment === '..')
      throw new InvalidKeyError(key, `\`${segment}\` segments are not allowed`);
  }
  throw new InvalidKeyError(key, 'the key is not valid');
}

/** Joins a normalised prefix and a normalised key ('' means none). */
export function joinKey(prefix: string, key: string): string {
  if (prefix === '') return key;
  if (key === '') return prefix;
  return `${prefix}/${key}`;
}

/** Strips a normalised prefix from a full key. The key must be inside the prefix. */
export function stripPrefix(prefix: string, fullKey: string): string {
  if (prefix === '') return fullKey;
  if (fullKey === prefix) return '';
  return fullKey.slice(prefix.length + 1);
}

/** True when `key` is strictly below directory `dir` ('' is the root). `a` never contains `ab/x`. */
export function isBelow(dir: string, key: string): boolean {
  if (dir === '') return key !== '';
  return key.length > dir.length + 1 && key.charCodeAt(dir.length) === 47 && key.startsWith(dir);
}

/** Compares keys the way listings are sorted: by UTF-16 code units, like `Array.prototype.sort`. */
export function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

const encoder = new TextEncoder();

/** Turns a `Value` into bytes (strings as UTF-8). */
export function toBytes(value: unknown): Uint8Array {
  if (typeof value === 'string') return encoder.encode(value);
  if (value instanceof Uint8Array) return value;
  throw new TypeError(
    `a value must be a string or a Uint8Array, got ${value === null ? 'null' : typeof value}`,
  );
}

/**
 * Whether two states of a key are the same for a watcher: the same
 * `lastIndex` and the same bytes. The index alone is not enough: after a
 * server is restored from a snapshot, an index can come back for another write.
 */
export function samePair(
  a: { readonly lastIndex: number; readonly value: Uint8Array },
  b: { readonly lastIndex: number; readonly value: Uint8Array },
): boolean {
  if (a.lastIndex !== b.lastIndex || a.value.length !== b.value.length) return false;
  for (let i = 0; i < a.value.length; i++) if (a.value[i] !== b.value[i]) return false;
  return true;
}
