import { readFileSync } from 'node:fs';
import { createStore, type Store, UnavailableError } from '@kv/core';
import { mutualTls, type TestCertificates, testCertificates } from '@kv/test-servers';
import { afterAll, describe, expect, it } from 'vitest';
import { openEtcd } from '../src/index.js';
import { privateEtcd, text } from './helpers.js';

// Node warns once per process (DEP0123) when a TLS server name is an IP address: collect warnings from the start.
const warnings: Error[] = [];
process.on('warning', (warning) => warnings.push(warning));

const certs = testCertificates('etcd', ['etcd.test']);

// A private etcd serving clients over TLS only, and asking them for a certificate of the test CA.
const launched = certs.files
  ? await privateEtcd('TLS tests', { tls: mutualTls(certs.files) })
  : { server: undefined, skip: certs.skip };

describe.skipIf(launched.skip !== false)('etcd over TLS with a client certificate', () => {
  const f = certs.files as TestCertificates;
  const endpoint = launched.server?.endpoints[0] as string;
  const stores: Store[] = [];
  const pem = (path: string) => readFileSync(path, 'utf8');
  const keep = (store: Store) => {
    stores.push(store);
    return store;
  };

  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await launched.server?.dispose();
    certs.dispose();
  });

  it('connects with the CA and a client certificate given as PEM text', async () => {
    const store = keep(
      await openEtcd({
        endpoints: [endpoint],
        prefix: 'tls',
        tls: { ca: pem(f.ca), cert: pem(f.clientCert), key: pem(f.clientKey) },
      }),
    );
    await store.put('k', 'over tls');
    expect(text((await store.get('k')).value)).toBe('over tls');
    const watch = store.watch('k')[Symbol.asyncIterator]();
    expect(text(((await watch.next()).value as { value: Uint8Array }).value)).toBe('over tls');
    await watch.return?.();
  });

  it('connects by URL: etcds:// or ?tls=true, with the files as options', async () => {
    const query = `caFile=${encodeURIComponent(f.ca)}&certFile=${encodeURIComponent(f.clientCert)}&keyFile=${encodeURIComponent(f.clientKey)}`;
    const a = keep(await createStore(`etcds://${endpoint}/tls?${query}`));
    expect(text((await a.get('k')).value)).toBe('over tls');
    const b = keep(await createStore(`etcd://${endpoint}/tls?${query}&requestTimeout=3000`));
    expect(text((await b.get('k')).value)).toBe('over tls');
    const c = keep(
      await openEtcd({
        endpoints: [`https://${endpoint}`],
        prefix: 'tls',
        caFile: f.ca,
        certFile: f.clientCert,
        keyFile: f.clientKey,
      }),
    );
    expect(text((await c.get('k')).value)).toBe('over tls');
  });

  it('checks the server name, which servername can set', async () => {
    const base = {
      endpoints: [endpoint],
      prefix: 'tls',
      caFile: f.ca,
      certFile: f.clientCert,
      keyFile: f.clientKey,
    };
    const named = keep(await openEtcd({ ...base, tls: { servername: 'etcd.test' } }));
    expect(text((await named.get('k')).value)).toBe('over tls');
    await expect(
      openEtcd({ ...base, tls: { servername: 'wrong.test' }, connectTimeout: 2_000 }),
    ).rejects.toSatisfy(UnavailableError.isInstance);
  });

  it('refuses a server whose certificate is not from the given CA, unless rejectUnauthorized is false', async () => {
    const untrusted = {
      endpoints: [endpoint],
      certFile: f.clientCert,
      keyFile: f.clientKey,
      caFile: f.otherCa,
    };
    const started = Date.now();
    await expect(openEtcd({ ...untrusted, connectTimeout: 2_000 })).rejects.toSatisfy(
      UnavailableError.isInstance,
    );
    expect(Date.now() - started).toBeLessThan(3_000);
    const insecure = keep(
      await openEtcd({ ...untrusted, prefix: 'tls', tls: { rejectUnauthorized: false } }),
    );
    expect(text((await insecure.get('k')).value)).toBe('over tls');
  });

  it('fails to open without a client certificate, or in plain text, within connectTimeout', async () => {
    for (const config of [{ endpoints: [endpoint], caFile: f.ca }, { endpoints: [endpoint] }]) {
      const started = Date.now();
      const error = await openEtcd({ ...config, connectTimeout: 2_000 }).catch((e: unknown) => e);
      expect(UnavailableError.isInstance(error), String(error)).toBe(true);
      expect(Date.now() - started).toBeLessThan(3_000);
    }
  });

  it('connecting to an IP address sends no IP as TLS server name (no DEP0123 warning)', async () => {
    expect(endpoint).toMatch(/^127\.0\.0\.1:\d+$/);
    const store = keep(
      await openEtcd({ endpoints: [endpoint], caFile: f.ca, certFile: f.clientCert, keyFile: f.clientKey }),
    );
    await store.put('ip', 'checked against the IP');
    // Let a warning emitted during the handshake reach its listener.
    await new Promise<void>((resolve) => setImmediate(resolve));
    const dep0123 = warnings.filter((w) => (w as { code?: string }).code === 'DEP0123');
    expect(dep0123.map((w) => w.message)).toEqual([]);
  });
});
