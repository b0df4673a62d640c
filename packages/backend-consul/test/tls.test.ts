import { readFileSync } from 'node:fs';
import { createStore, InvalidArgumentError, type Store, UnavailableError } from '@kv/core';
import { freePorts, type TestCertificates, testCertificates } from '@kv/test-servers';
import { afterAll, describe, expect, it } from 'vitest';
import { openConsul } from '../src/index.js';
import { privateConsul, text } from './helpers.js';

const made = testCertificates('consul', ['consul.test']);
const certs = made.files;
const [httpsPort] = await freePorts(1);

// A private agent that also serves its API over HTTPS with a certificate of the throwaway CA.
const launched = certs
  ? await privateConsul('TLS tests', {
      hcl: [
        `ports { https = ${httpsPort} }`,
        `cert_file = "${certs.serverCert}"`,
        `key_file = "${certs.serverKey}"`,
        `ca_file = "${certs.ca}"`,
        'verify_incoming = false',
      ],
    })
  : { server: undefined, skip: made.skip as string };

describe.skipIf(launched.skip !== false)('consul over HTTPS', () => {
  const c = certs as TestCertificates;
  const endpoint = `127.0.0.1:${httpsPort}`;
  const stores: Store[] = [];
  const keep = <S extends Store>(store: S): S => {
    stores.push(store);
    return store;
  };

  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await launched.server?.dispose();
    made.dispose();
  });

  it('connects with the CA as PEM text: writes, reads, watches and locks', async () => {
    const store = keep(
      await openConsul({ endpoints: [endpoint], prefix: 'tls', tls: { ca: readFileSync(c.ca, 'utf8') } }),
    );
    await store.put('k', 'over tls');
    expect(text((await store.get('k')).value)).toBe('over tls');
    const watch = store.watch('k')[Symbol.asyncIterator]();
    expect(text(((await watch.next()).value as { value: Uint8Array }).value)).toBe('over tls');
    await watch.return?.();
    const lock = store.newLock('l', { ttl: 2_000 });
    await lock.lock();
    await lock.unlock();
  });

  it('connects by URL: consuls:// with caFile, and a servername that the certificate names', async () => {
    const a = keep(await createStore(`consuls://${endpoint}/tls?caFile=${encodeURIComponent(c.ca)}`));
    expect(text((await a.get('k')).value)).toBe('over tls');
    const b = keep(
      await openConsul({
        endpoints: [`https://${endpoint}`],
        prefix: 'tls',
        tls: { ca: readFileSync(c.ca), servername: 'consul.test' },
      }),
    );
    expect(text((await b.get('k')).value)).toBe('over tls');
  });

  it('an unknown CA is UnavailableError; plain HTTP to the HTTPS port is InvalidArgumentError saying so', async () => {
    const unknown = await createStore(
      `consuls://${endpoint}/tls?caFile=${encodeURIComponent(c.otherCa)}&connectTimeout=2000`,
    ).catch((e: unknown) => e);
    expect(UnavailableError.isInstance(unknown), String(unknown)).toBe(true);
    // Plain HTTP to the HTTPS port: the agent says so, and the error says what to change.
    const plain = await createStore(`consul://${endpoint}/tls?connectTimeout=2000`).catch((e: unknown) => e);
    expect(InvalidArgumentError.isInstance(plain), String(plain)).toBe(true);
    expect(String(plain)).toMatch(/consuls:\/\//);
  });
});
