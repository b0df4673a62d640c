// Encrypted config on the embedded SQLite store: `node examples/encrypted-config.mjs`
// (after `pnpm build`). Values are AES-256-GCM ciphertext at rest; keys stay
// plaintext so listings and watches work. Shows a passphrase key (scrypt, salt
// stored in the store), key rotation, and what a tampered value does.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import '@kv/backend-sqlite';
import { createStore, EncryptedStore, encrypted, json, passphraseKey, typed } from '@kv/core';

const dir = mkdtempSync(join(tmpdir(), 'kv-encrypted-'));
const url = `sqlite:${join(dir, 'config.db')}?prefix=app`;
const text = (bytes) => new TextDecoder().decode(bytes);

try {
  const raw = await createStore(url);
  // In production the passphrase comes from a secret manager, never from code.
  const v1 = await passphraseKey(raw, 'first passphrase', 'crypto/salt');
  const store = encrypted(raw, { keys: { v1 }, current: 'v1' });
  const config = typed(store, json());

  await config.put('config/db', { url: 'postgres://db-1:5432/app', pool: 10 });
  await config.put('config/cache', { url: 'redis://cache-1:6379' });
  console.log('read back:', await config.get('config/db'));
  const stored = (await raw.get('config/db')).value;
  console.log(
    `at rest: ${stored.byteLength} bytes under key id "${EncryptedStore.keyIdOf(stored)}":`,
    Buffer.from(stored).subarray(0, 24).toString('hex'),
    '...',
  );
  console.log(
    'listing (keys are plaintext):',
    (await store.list('config')).map((p) => p.key),
  );

  // Rotation: add a new key, make it current, rewrite everything under it.
  const v2 = crypto.getRandomValues(new Uint8Array(32));
  const rotated = encrypted(await createStore(url), { keys: { v1, v2 }, current: 'v2' });
  console.log('rotate:', await rotated.rotate('config'));
  console.log('key id now:', EncryptedStore.keyIdOf((await raw.get('config/db')).value));

  // A value copied to another key (or any changed byte) fails its integrity check.
  await raw.put('config/stolen', (await raw.get('config/db')).value);
  try {
    await rotated.get('config/stolen');
  } catch (error) {
    console.log(`copied value: ${error.code}: ${error.message}`);
  }
  console.log('db config via the rotated store:', JSON.parse(text((await rotated.get('config/db')).value)));
  await rotated.close();
  await store.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
