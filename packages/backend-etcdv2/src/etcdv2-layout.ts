import { bufferView } from '@kv/core';
/**
 * How user keys map onto etcd v2 nodes. v2 separates directories (which have
 * children) from keys (which have a value), but a kv key may hold a value and
 * have children. So every user key `a/b` is a v2 directory `/a/b`, and its
 * value lives in a leaf below it with a reserved name, `/a/b/\u0001v`. A lock
 * keeps its queue in `/a/b/\u0001q/`. User keys never hold control
 * characters, so these names never collide with them. A segment starting
 * with `_` (a hidden node in v2, left out of listings) is stored with a
 * `\u0002` in front.
 */
export const VALUE_LEAF = '\u0001v';
export const LOCK_QUEUE = '\u0001q';
const UNHIDE = '\u0002';

function encodeSegment(segment: string): string {
  return encodeURIComponent(segment.startsWith('_') ? UNHIDE + segment : segment);
}

/** The URL path (below `/v2/keys`) of a full storage key as a v2 directory: `/a/b` ('' is `/`). */
export function dirPath(fullKey: string): string {
  if (fullKey === '') return '/';
  return `/${fullKey.split('/').map(encodeSegment).join('/')}`;
}

/**
 * The URL path of a directory for recursive calls (list, deleteTree,
 * watchTree): `/a/b/`. The trailing slash matters under v2 auth: a role's
 * `/a/b/*` grants recursive access to `/a/b/` but not to `/a/b`.
 */
export function treePath(fullKey: string): string {
  return fullKey === '' ? '/' : `${dirPath(fullKey)}/`;
}

export function leafPath(fullKey: string): string {
  return `${dirPath(fullKey).replace(/\/$/, '')}/${encodeURIComponent(VALUE_LEAF)}`;
}

export function queuePath(fullKey: string): string {
  return `${dirPath(fullKey).replace(/\/$/, '')}/${encodeURIComponent(LOCK_QUEUE)}`;
}

/** The URL path of a node key as etcd returns it (`/a/\u0001q/0001`). */
export function nodePath(nodeKey: string): string {
  return nodeKey
    .split('/')
    .map((s) => encodeURIComponent(s))
    .join('/');
}

/**
 * The full storage key whose value a v2 node key holds, or `undefined` when
 * the node is not a value leaf (a directory, a lock queue entry).
 */
export function keyOfLeaf(nodeKey: string): string | undefined {
  const segments = nodeKey.split('/').filter((s) => s !== '');
  if (segments.pop() !== VALUE_LEAF) return undefined;
  const out: string[] = [];
  for (const segment of segments) {
    if (segment.startsWith('\u0001')) return undefined;
    out.push(segment.startsWith(UNHIDE) ? segment.slice(1) : segment);
  }
  return out.join('/');
}

const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
/** A stored value that is not UTF-8 text starts with this, then base64. */
const BINARY = '\u0000';

/**
 * v2 values are strings in JSON, so bytes that are not UTF-8 would come back
 * mangled. Text is stored as it is (other v2 tools read it); anything else,
 * and text that starts with NUL, as NUL + base64.
 */
export function encodeValue(value: Uint8Array): string {
  try {
    const text = decoder.decode(value);
    if (!text.startsWith(BINARY)) return text;
  } catch {
    // not UTF-8
  }
  return BINARY + bufferView(value).toString('base64');
}

export function decodeValue(stored: string | undefined): Uint8Array {
  if (stored === undefined || stored === '') return new Uint8Array(0);
  if (stored.startsWith(BINARY)) return new Uint8Array(Buffer.from(stored.slice(1), 'base64'));
  return new TextEncoder().encode(stored);
}
