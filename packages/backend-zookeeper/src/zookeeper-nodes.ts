/**
 * How keys and values are laid out in znodes.
 *
 * Paths: each key segment is one znode name. ZooKeeper refuses some
 * characters in paths (C1 controls, surrogates and the private use area,
 * U+FFF0-U+FFFF) that kv keys allow, so those UTF-16 code units, and `%`
 * itself, are written as `%` and four hex digits. A name that starts with
 * `%!` can never come from a key: the backend's helper nodes (the lock
 * queues) use such names, and listings skip them.
 *
 * Data: one header byte, then the value.
 * - `0x00` (or no data at all): an implicit parent, a node that only exists
 *   for its children. It is not a key: `exists` is false.
 * - `0x01` + value: a key; an empty value is the single byte `0x01`.
 * - `0x02` + ttl (uint32, big-endian, ms) + value: a key that expires `ttl`
 *   ms after the node's `mtime` (the server's clock at the write).
 */

export const IMPLICIT = 0x00;
export const VALUE = 0x01;
export const TTL_VALUE = 0x02;

export const HELPER_PREFIX = '%!';

const IMPLICIT_DATA = new Uint8Array([IMPLICIT]);

export function implicitData(): Uint8Array {
  return IMPLICIT_DATA;
}

/** Node data for a value, with an optional ttl (ms). */
export function encodeValue(value: Uint8Array, ttl?: number): Uint8Array {
  if (ttl === undefined) {
    const out = new Uint8Array(value.byteLength + 1);
    out[0] = VALUE;
    out.set(value, 1);
    return out;
  }
  const out = new Uint8Array(value.byteLength + 5);
  out[0] = TTL_VALUE;
  new DataView(out.buffer).setUint32(1, ttl);
  out.set(value, 5);
  return out;
}

export type Decoded = { kind: 'implicit' } | { kind: 'value'; value: Uint8Array; expiresAt?: number };

/** What a node holds; `expiresAt` is on the server's wall clock (ms since the epoch). */
export function decodeNode(data: Uint8Array | null, mtime: number): Decoded {
  if (data === null || data.byteLength === 0 || data[0] === IMPLICIT) return { kind: 'implicit' };
  if (data[0] === VALUE) return { kind: 'value', value: copy(data.subarray(1)) };
  if (data[0] === TTL_VALUE && data.byteLength >= 5) {
    const ttl = new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(1);
    return { kind: 'value', value: copy(data.subarray(5)), expiresAt: mtime + ttl };
  }
  // Written by something else: its bytes are the value.
  return { kind: 'value', value: copy(data) };
}

function copy(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: the characters ZooKeeper refuses in a path
const REFUSED = /[%\u0000-\u001f\u007f-\u009f\ud800-\uf8ff\ufff0-\uffff]/g;

export function encodeSegment(segment: string): string {
  return segment.replace(REFUSED, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`);
}

export function decodeSegment(name: string): string {
  return name.replace(/%([0-9A-F]{4})/g, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
}

/** The znode path of a full storage key ('' is refused by the caller: a store always has a prefix). */
export function pathOf(fullKey: string): string {
  return `/${fullKey.split('/').map(encodeSegment).join('/')}`;
}

/** The full storage key of a znode path. */
export function keyOf(path: string): string {
  return path.slice(1).split('/').map(decodeSegment).join('/');
}

export function isHelperName(name: string): boolean {
  return name.startsWith(HELPER_PREFIX);
}

export function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

export function childPath(path: string, name: string): string {
  return path === '/' ? `/${name}` : `${path}/${name}`;
}
