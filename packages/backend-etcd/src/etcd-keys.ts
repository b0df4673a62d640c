import { normalizeKey, type RawPair, uint8View } from '@kv/core';
import type { ICompare, IKeyValue } from 'etcd3';

/*
 * Key mapping: a store key is the etcd key, as UTF-8, with the store prefix
 * in front and no leading slash: prefix `app`, key `a/b` -> etcd key `app/a/b`.
 * A directory `d` is the etcd range [`d/`, `d0`) (`0` follows `/`), so `a`
 * never matches `ab/...`. The root of an unprefixed store is the whole
 * keyspace. Helper keys hold a control character (U+0001), which no store
 * key may hold: lock waiters live at `<lock key>\u0001lock/<lease id hex>`.
 */

// ignoreBOM: a key that starts with U+FEFF keeps it (by default a decoder drops a leading BOM).
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
/** The value of a key that holds nothing. */
export const NO_VALUE: Uint8Array = new Uint8Array(0);
const ZERO = Buffer.from([0]);
/** An empty value (lock waiter keys hold nothing). */
export const NO_BYTES = Buffer.alloc(0);

export function keyBytes(key: string): Buffer {
  return Buffer.from(key, 'utf8');
}

/** A key from the server as text, or undefined when it is not UTF-8. */
export function decodeKey(key: Buffer): string | undefined {
  try {
    return decoder.decode(key);
  } catch {
    return undefined;
  }
}

/** A plain Uint8Array view of a Buffer (no copy). */
export function bytesOf(buffer: Buffer | undefined | null): Uint8Array {
  if (!buffer || buffer.byteLength === 0) return NO_VALUE;
  return uint8View(buffer);
}

/** The etcd range of everything strictly below `dir` ('' = the whole keyspace). */
export function dirRange(dir: string): { key: Buffer; range_end: Buffer } {
  if (dir === '') return { key: ZERO, range_end: ZERO };
  return { key: keyBytes(`${dir}/`), range_end: keyBytes(`${dir}0`) };
}

/** The helper keys of a lock: its waiter queue. */
export function waiterRange(lockKey: string): { key: Buffer; range_end: Buffer } {
  return { key: keyBytes(`${lockKey}\u0001lock/`), range_end: keyBytes(`${lockKey}\u0001lock0`) };
}

export function waiterKey(lockKey: string, leaseId: string): string {
  return `${lockKey}\u0001lock/${BigInt(leaseId).toString(16)}`;
}

/** True for a key a store can show: valid UTF-8 already in normal form (not a helper key, not `a//b`). */
export function isStoreKey(key: string | undefined): key is string {
  if (key === undefined || key === '') return false;
  try {
    return normalizeKey(key) === key;
  } catch {
    return false;
  }
}

export function num(value: string | number | undefined | null): number {
  return value === undefined || value === null ? 0 : Number(value);
}

/** A server pair as the base class wants it, or undefined for a key no store may show. */
export function rawPair(kv: IKeyValue, key?: string): RawPair | undefined {
  const text = key ?? decodeKey(kv.key);
  if (text === undefined) return undefined;
  return { key: text, value: bytesOf(kv.value), lastIndex: num(kv.mod_revision) };
}
/** Compare: the key does not exist. */
export function absent(key: Buffer): ICompare {
  return { key, target: 'Create', result: 'Equal', create_revision: 0 };
}

/** The key exists and is at `index`. */
export function unchanged(key: Buffer, index: number): ICompare[] {
  return [
    { key, target: 'Mod', result: 'Equal', mod_revision: index },
    { key, target: 'Version', result: 'Greater', version: 0 },
  ];
}
