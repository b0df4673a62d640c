import {
  createCipheriv,
  createDecipheriv,
  createSecretKey,
  type KeyObject,
  randomBytes,
  scrypt,
} from 'node:crypto';
import { uint8View } from './bytes.js';
import {
  IntegrityError,
  InvalidArgumentError,
  KeyExistsError,
  KeyModifiedError,
  KeyNotFoundError,
} from './errors.js';
import { joinKey } from './keys.js';
import type { CallOptions, KVPair, Store } from './types.js';
import { WrappedStore } from './wrapped-store.js';

/**
 * Stored format of an encrypted value:
 *
 *   'k' (0x6b) | version (1) | id length n (1..255) | key id (n bytes, UTF-8) | nonce (12) | ciphertext | tag (16)
 *
 * AES-256-GCM; the additional authenticated data is the header (so the key id
 * cannot be swapped) followed by the full storage key (prefix included), so a
 * value copied to another key does not decrypt.
 */
const MAGIC = 0x6b;
const VERSION = 1;
const NONCE = 12;
const TAG = 16;
const KEY_BYTES = 32;
const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

export interface EncryptionOptions {
  /** Key id -> 32-byte key. Old ids stay here so values written under them still decrypt. */
  keys: Readonly<Record<string, Uint8Array>>;
  /** The id every write uses. */
  current: string;
}

export interface RotateResult {
  /** Values rewritten under the current key. */
  readonly rewritten: number;
  /** Values that already used it. */
  readonly current: number;
}

/** The bytes one encrypted value adds for a key id: header, nonce and tag. */
export function encryptionOverhead(keyId: string): number {
  return 3 + encoder.encode(keyId).byteLength + NONCE + TAG;
}

/**
 * A store that encrypts every value with AES-256-GCM (a fresh random nonce
 * per write) and authenticates it together with its key: a changed byte, a
 * value copied to another key, a wrong key or an unknown key id fail with an
 * `IntegrityError` naming the key, never the secret. Keys stay plaintext, so
 * `list`, `watchTree` and prefixes work as before. CAS compares `lastIndex`,
 * never ciphertexts; locks, TTLs, keep-alive and watches work through it.
 * `capabilities.maxValueSize` is the inner store's minus the overhead.
 */
export class EncryptedStore extends WrappedStore {
  /** The id new writes use. */
  readonly currentKeyId: string;
  private readonly secrets: ReadonlyMap<string, KeyObject>;
  private readonly currentHeader: Uint8Array;

  constructor(inner: Store, options: EncryptionOptions) {
    const { secrets, current } = checkKeys(options);
    const overhead = Math.max(...[...secrets.keys()].map(encryptionOverhead));
    super(inner, { maxValueSize: Math.max(0, inner.capabilities.maxValueSize - overhead) });
    this.secrets = secrets;
    this.currentKeyId = current;
    this.currentHeader = header(current);
  }

  /** The key id a stored (encrypted) value was written under, or `undefined` if it is not an encrypted value. */
  static keyIdOf(stored: Uint8Array): string | undefined {
    return parse(stored)?.id;
  }

  protected encodeValue(key: string, value: Uint8Array): Uint8Array {
    const secret = this.secrets.get(this.currentKeyId) as KeyObject;
    const nonce = randomBytes(NONCE);
    const cipher = createCipheriv('aes-256-gcm', secret, nonce);
    cipher.setAAD(aad(this.currentHeader, joinKey(this.prefix, key)));
    const body = cipher.update(value);
    const final = cipher.final();
    const out = new Uint8Array(
      this.currentHeader.byteLength + NONCE + body.byteLength + final.byteLength + TAG,
    );
    let at = 0;
    for (const part of [this.currentHeader, nonce, body, final, cipher.getAuthTag()]) {
      out.set(part, at);
      at += part.byteLength;
    }
    return out;
  }

  protected decodeValue(key: string, stored: Uint8Array): Uint8Array {
    const parsed = parse(stored);
    if (!parsed) throw new IntegrityError(key, 'it is not an encrypted value (no kv encryption header)');
    const secret = this.secrets.get(parsed.id);
    if (!secret) {
      throw new IntegrityError(
        key,
        `it was written under key id ${JSON.stringify(parsed.id)}, which is not among the keys given (${[...this.secrets.keys()].map((id) => JSON.stringify(id)).join(', ')})`,
      );
    }
    const { headerEnd } = parsed;
    const nonce = stored.subarray(headerEnd, headerEnd + NONCE);
    const body = stored.subarray(headerEnd + NONCE, stored.byteLength - TAG);
    const tag = stored.subarray(stored.byteLength - TAG);
    try {
      const decipher = createDecipheriv('aes-256-gcm', secret, nonce);
      decipher.setAAD(aad(stored.subarray(0, headerEnd), joinKey(this.prefix, key)));
      decipher.setAuthTag(tag);
      const head = decipher.update(body);
      const final = decipher.final();
      if (final.byteLength === 0) return uint8View(head);
      return new Uint8Array(Buffer.concat([head, final]));
    } catch (error) {
      throw new IntegrityError(
        key,
        `authentication failed under key id ${JSON.stringify(parsed.id)}: a wrong key, a changed byte, or a value copied from another key`,
        { cause: error },
      );
    }
  }

  /**
   * Rewrites every value below `directory` ('' for the whole store) that is
   * not under the current key id, each with a compare-and-swap on the pair it
   * read: a concurrent write wins and is re-read (it already uses the current
   * key when it came through a store with the same `current`), so nothing
   * written meanwhile is lost. A value that does not decrypt stops the
   * rotation with its `IntegrityError`.
   *
   * The rewrite is a plain write: a key written with a ttl becomes permanent,
   * so leave ttl and keep-alive keys (and lock keys) out of the directories
   * you rotate; they are short-lived and get the current key on their next write.
   */
  async rotate(directory: string, options: CallOptions = {}): Promise<RotateResult> {
    let rewritten = 0;
    let current = 0;
    for (const listed of await this.inner.list(directory, options)) {
      let pair: KVPair | null = listed;
      while (pair) {
        if (parse(pair.value)?.id === this.currentKeyId) {
          current++;
          break;
        }
        const value = this.encodeValue(pair.key, this.decodeValue(pair.key, pair.value));
        try {
          await this.inner.atomicPut(pair.key, value, pair, options);
          rewritten++;
          break;
        } catch (error) {
          if (KeyNotFoundError.isInstance(error)) break;
          if (!KeyModifiedError.isInstance(error)) throw error;
          pair = await this.inner.get(pair.key, options).catch((e: unknown) => {
            if (KeyNotFoundError.isInstance(e)) return null;
            throw e;
          });
        }
      }
    }
    return { rewritten, current };
  }
}

/** `encrypted(store, { keys, current })`: see `EncryptedStore`. */
export function encrypted(store: Store, options: EncryptionOptions): EncryptedStore {
  return new EncryptedStore(store, options);
}

/** scrypt cost parameters for passphrase keys (N = 2^15: about 100 ms and 32 MiB). */
const SCRYPT = { N: 2 ** 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 } as const;

/** A 32-byte key from a passphrase and a salt (scrypt). */
export function keyFromPassphrase(passphrase: string, salt: Uint8Array): Promise<Uint8Array> {
  if (typeof passphrase !== 'string' || passphrase.length === 0) {
    return Promise.reject(new InvalidArgumentError('the passphrase must be a non-empty string'));
  }
  if (!(salt instanceof Uint8Array) || salt.byteLength < 16) {
    return Promise.reject(new InvalidArgumentError('the salt must be at least 16 bytes'));
  }
  return new Promise((resolve, reject) => {
    scrypt(passphrase.normalize('NFC'), salt, KEY_BYTES, SCRYPT, (error, key) =>
      error
        ? reject(new InvalidArgumentError(`scrypt failed: ${error.message}`, { cause: error }))
        : resolve(key),
    );
  });
}

/**
 * The salt stored at `saltKey` in `store` (plaintext: a salt is not secret),
 * created with 16 random bytes on first use. Every process that opens the
 * store with the same passphrase derives the same key from it.
 */
export async function storedSalt(
  store: Store,
  saltKey: string,
  options: CallOptions = {},
): Promise<Uint8Array> {
  for (;;) {
    try {
      return (await store.get(saltKey, options)).value;
    } catch (error) {
      if (!KeyNotFoundError.isInstance(error)) throw error;
    }
    try {
      const salt = randomBytes(16);
      await store.atomicPut(saltKey, salt, null, options);
      return salt;
    } catch (error) {
      // Another process created it first: read theirs.
      if (!KeyExistsError.isInstance(error)) throw error;
    }
  }
}

/** `keyFromPassphrase` with the salt `storedSalt(store, saltKey)` gives. */
export async function passphraseKey(
  store: Store,
  passphrase: string,
  saltKey: string,
  options: CallOptions = {},
): Promise<Uint8Array> {
  return keyFromPassphrase(passphrase, await storedSalt(store, saltKey, options));
}

function checkKeys(options: EncryptionOptions): { secrets: Map<string, KeyObject>; current: string } {
  if (
    typeof options !== 'object' ||
    options === null ||
    typeof options.keys !== 'object' ||
    options.keys === null
  ) {
    throw new InvalidArgumentError('encrypted() needs { keys: { id: 32-byte key }, current: id }');
  }
  const secrets = new Map<string, KeyObject>();
  for (const [id, key] of Object.entries(options.keys)) {
    const length = encoder.encode(id).byteLength;
    if (length === 0 || length > 255) {
      throw new InvalidArgumentError(`key id ${JSON.stringify(id)} must be 1 to 255 bytes of UTF-8`);
    }
    if (!(key instanceof Uint8Array) || key.byteLength !== KEY_BYTES) {
      const got = key instanceof Uint8Array ? `${key.byteLength} bytes` : typeof key;
      throw new InvalidArgumentError(
        `key ${JSON.stringify(id)} must be a ${KEY_BYTES}-byte Uint8Array (got ${got}); derive one from a passphrase with passphraseKey()`,
      );
    }
    secrets.set(id, createSecretKey(Buffer.from(key)));
  }
  if (typeof options.current !== 'string' || !secrets.has(options.current)) {
    throw new InvalidArgumentError(
      `current must be one of the key ids given (${[...secrets.keys()].map((id) => JSON.stringify(id)).join(', ') || 'none'}), got ${JSON.stringify(options.current)}`,
    );
  }
  return { secrets, current: options.current };
}

function header(id: string): Uint8Array {
  const bytes = encoder.encode(id);
  const out = new Uint8Array(3 + bytes.byteLength);
  out[0] = MAGIC;
  out[1] = VERSION;
  out[2] = bytes.byteLength;
  out.set(bytes, 3);
  return out;
}

function parse(stored: Uint8Array): { id: string; headerEnd: number } | undefined {
  if (stored.byteLength < 3 || stored[0] !== MAGIC || stored[1] !== VERSION) return undefined;
  const length = stored[2] as number;
  const headerEnd = 3 + length;
  if (length === 0 || stored.byteLength < headerEnd + NONCE + TAG) return undefined;
  try {
    return { id: decoder.decode(stored.subarray(3, headerEnd)), headerEnd };
  } catch {
    return undefined;
  }
}

function aad(head: Uint8Array, fullKey: string): Uint8Array {
  const key = encoder.encode(fullKey);
  const out = new Uint8Array(head.byteLength + key.byteLength);
  out.set(head, 0);
  out.set(key, head.byteLength);
  return out;
}
