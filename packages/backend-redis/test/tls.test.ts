import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createStore, type Store, UnavailableError } from '@kv/core';
import { freePorts } from '@kv/test-servers';
import { afterAll, describe, expect, it } from 'vitest';
import '../src/index.js';
import { privateRedis, text } from './helpers.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'kv-redis-tls-'));
const file = (name: string) => join(dir, name);

/** A CA and a server certificate for 127.0.0.1, made with the openssl CLI. */
async function certificates(): Promise<void> {
  const ssl = (...args: string[]) => run('openssl', args, { cwd: dir });
  await ssl('genrsa', '-out', 'ca.key', '2048');
  await ssl(
    'req',
    '-x509',
    '-new',
    '-key',
    'ca.key',
    '-days',
    '1',
    '-subj',
    '/CN=kv test CA',
    '-out',
    'ca.pem',
  );
  await ssl('genrsa', '-out', 'server.key', '2048');
  await ssl('req', '-new', '-key', 'server.key', '-subj', '/CN=127.0.0.1', '-out', 'server.csr');
  await run(
    'sh',
    [
      '-c',
      'printf "subjectAltName=IP:127.0.0.1\\n" > ext.cnf && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext.cnf -out server.pem',
    ],
    { cwd: dir },
  );
}

async function launchTls() {
  try {
    await certificates();
  } catch (error) {
    const reason = `openssl could not make test certificates: ${(error as Error).message}`;
    if (process.env.CI === 'true') throw new Error(reason);
    return { server: undefined, skip: reason, tlsPort: 0 };
  }
  const [tlsPort] = (await freePorts(1)) as [number];
  const launched = await privateRedis('the TLS test', {
    args: [
      '--tls-port',
      String(tlsPort),
      '--tls-cert-file',
      file('server.pem'),
      '--tls-key-file',
      file('server.key'),
      '--tls-ca-cert-file',
      file('ca.pem'),
      '--tls-auth-clients',
      'no',
    ],
  });
  return { ...launched, tlsPort };
}

const { server, skip, tlsPort } = await launchTls();

describe.skipIf(skip !== false)('redis over TLS', () => {
  const endpoint = `127.0.0.1:${tlsPort}`;
  const stores: Store[] = [];
  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await server?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  it('connects with tls: { ca }, and with a rediss:// endpoint; watches work over TLS too', async () => {
    const ca = readFileSync(file('ca.pem'), 'utf8');
    const store = await createStore({ backend: 'redis', endpoints: [endpoint], tls: { ca }, prefix: 'tls' });
    stores.push(store);
    await store.put('k', 'over tls');
    const watch = store.watch('k')[Symbol.asyncIterator]();
    expect(text(((await watch.next()).value as { value: Uint8Array }).value)).toBe('over tls');
    await watch.return?.();
    const byEndpoint = await createStore({
      backend: 'redis',
      endpoints: [`rediss://${endpoint}`],
      tls: { ca: new TextEncoder().encode(ca), servername: '127.0.0.1' },
      prefix: 'tls',
    });
    stores.push(byEndpoint);
    expect(text((await byEndpoint.get('k')).value)).toBe('over tls');
  });

  it('verifies the server: an unknown CA is UnavailableError, unless rejectUnauthorized is false', async () => {
    await expect(createStore(`rediss://${endpoint}/tls`)).rejects.toSatisfy(UnavailableError.isInstance);
    const lax = await createStore({
      backend: 'redis',
      endpoints: [endpoint],
      tls: { rejectUnauthorized: false },
      prefix: 'tls',
    });
    stores.push(lax);
    expect(text((await lax.get('k')).value)).toBe('over tls');
  });

  it('plain TCP to the TLS port does not hang: UnavailableError within connectTimeout', async () => {
    const started = performance.now();
    await expect(
      createStore({ backend: 'redis', endpoints: [endpoint], connectTimeout: 500 }),
    ).rejects.toSatisfy(UnavailableError.isInstance);
    expect(performance.now() - started).toBeLessThan(1_500);
  });
});
