import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { createStore, InvalidArgumentError, type Store, UnavailableError } from '@kv/core';
import { Reader } from '@kv/core/conformance';
import { mutualTls, serverFor, type TestCertificates, testCertificates } from '@kv/test-servers';
import { afterAll, describe, expect, it } from 'vitest';
import { openEtcdV2 } from '../src/index.js';
import { privateEtcd, text } from './helpers.js';

const certs = testCertificates('etcdv2', ['etcd.test']);

// A private etcd serving clients (v2 API on) over TLS only, asking them for a certificate of the test CA.
const launched = certs.files
  ? await privateEtcd('TLS tests', { tls: mutualTls(certs.files) })
  : { server: undefined, skip: certs.skip };
const plainEtcd = await serverFor('etcd');

// Node warns (DEP0123) when an IP is given as the TLS server name: nothing here may cause that.
const warnings: Error[] = [];
const onWarning = (warning: Error) => warnings.push(warning);
process.on('warning', onWarning);

describe.skipIf(launched.skip !== false)('etcd v2 over TLS with a client certificate', () => {
  const f = certs.files as TestCertificates;
  const endpoint = launched.server?.endpoints[0] as string;
  const files_ = () =>
    `caFile=${encodeURIComponent(f.ca)}&certFile=${encodeURIComponent(f.clientCert)}&keyFile=${encodeURIComponent(f.clientKey)}`;
  const pem = (path: string) => readFileSync(path, 'utf8');
  const stores: Store[] = [];
  const keep = <S extends Store>(store: S): S => {
    stores.push(store);
    return store;
  };

  afterAll(async () => {
    process.off('warning', onWarning);
    await Promise.allSettled(stores.map((s) => s.close()));
    await launched.server?.dispose();
    certs.dispose();
    expect(warnings.map(String).filter((w) => /DEP0123|IP address/.test(w))).toEqual([]);
  });

  it('etcdv2s://127.0.0.1:PORT/prefix with the files as URL options: values, watches (long polls) and locks', async () => {
    const store = keep(await createStore(`etcdv2s://${endpoint}/tls?${files_()}`));
    const watch = new Reader(() => store.watch('k'), 'watch(k)', 15_000);
    try {
      expect(await watch.next()).toBeNull();
      await store.put('k', 'over tls');
      expect(text((await watch.next())?.value)).toBe('over tls');
    } finally {
      await watch.close();
    }
    const lock = store.newLock('l', { ttl: 2_000 });
    expect((await lock.lock()).fencingToken).toBeGreaterThan(0);
    await lock.unlock();
  });

  it('the tls option (PEM text), https:// endpoints, and ?tls on etcdv2://', async () => {
    const byOption = keep(
      await openEtcdV2({
        endpoints: [endpoint],
        prefix: 'tls',
        tls: { ca: pem(f.ca), cert: pem(f.clientCert), key: pem(f.clientKey) },
      }),
    );
    expect(text((await byOption.get('k')).value)).toBe('over tls');
    const byScheme = keep(
      await openEtcdV2({
        endpoints: [`https://${endpoint}`],
        prefix: 'tls',
        caFile: f.ca,
        certFile: f.clientCert,
        keyFile: f.clientKey,
      }),
    );
    expect(text((await byScheme.get('k')).value)).toBe('over tls');
    const byQuery = keep(await createStore(`etcdv2://${endpoint}/tls?tls&${files_()}`));
    expect(text((await byQuery.get('k')).value)).toBe('over tls');
  });

  it('checks the server name, which tls.servername sets (a DNS name or an IP, without a DEP0123 warning)', async () => {
    const base = {
      endpoints: [endpoint],
      prefix: 'tls',
      caFile: f.ca,
      certFile: f.clientCert,
      keyFile: f.clientKey,
    };
    for (const servername of ['etcd.test', '127.0.0.1']) {
      const named = keep(await openEtcdV2({ ...base, tls: { servername } }));
      expect(text((await named.get('k')).value), servername).toBe('over tls');
    }
    const wrong = await openEtcdV2({
      ...base,
      tls: { servername: 'wrong.test' },
      connectTimeout: 2_000,
    }).then(keep, (e: unknown) => e);
    expect(UnavailableError.isInstance(wrong), String(wrong)).toBe(true);
    expect(String(wrong)).toMatch(/servername/);
  });

  it('a server certificate from another CA fails at open with an error saying what to change, unless rejectUnauthorized is false', async () => {
    const untrusted = {
      endpoints: [endpoint],
      certFile: f.clientCert,
      keyFile: f.clientKey,
      caFile: f.otherCa,
    };
    const started = performance.now();
    const error = await openEtcdV2({ ...untrusted, connectTimeout: 2_000 }).then(keep, (e: unknown) => e);
    expect(UnavailableError.isInstance(error), String(error)).toBe(true);
    expect(String(error)).toMatch(/not trusted.*tls\.ca or caFile/);
    expect(performance.now() - started).toBeLessThan(3_000);
    const insecure = keep(
      await openEtcdV2({ ...untrusted, prefix: 'tls', tls: { rejectUnauthorized: false } }),
    );
    expect(text((await insecure.get('k')).value)).toBe('over tls');
  });

  it('plain http to the TLS port is InvalidArgumentError saying to use etcdv2s://; TLS to a plain port says so too', async () => {
    const plain = await createStore(`etcdv2://${endpoint}/tls?connectTimeout=2000`).then(
      keep,
      (e: unknown) => e,
    );
    expect(InvalidArgumentError.isInstance(plain), String(plain)).toBe(true);
    expect(String(plain)).toMatch(/etcdv2s:\/\//);
    if (!plainEtcd.available) return;
    const tlsToPlain = await createStore(
      `etcdv2s://${plainEtcd.endpoints[0]}/tls?caFile=${encodeURIComponent(f.ca)}&connectTimeout=2000`,
    ).then(keep, (e: unknown) => e);
    expect(UnavailableError.isInstance(tlsToPlain), String(tlsToPlain)).toBe(true);
    expect(String(tlsToPlain)).toMatch(/plain http port/);
  });

  it('without a client certificate the server refuses the handshake: UnavailableError within connectTimeout', async () => {
    const started = performance.now();
    const error = await openEtcdV2({ endpoints: [endpoint], caFile: f.ca, connectTimeout: 2_000 }).then(
      keep,
      (e: unknown) => e,
    );
    expect(UnavailableError.isInstance(error), String(error)).toBe(true);
    expect(performance.now() - started).toBeLessThan(3_000);
  });
});

describe('TLS to a port that resets the handshake', () => {
  it('says it may be a plain http port (a plain server that closes with the hello unread resets)', async () => {
    // What etcd's plain port sometimes does to a ClientHello: the connection is reset, not answered.
    const server = createServer((socket) => socket.once('data', () => socket.resetAndDestroy()));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    try {
      const error = await createStore(`etcdv2s://127.0.0.1:${port}/tls?connectTimeout=2000`).then(
        (store) => store.close(),
        (e: unknown) => e,
      );
      expect(UnavailableError.isInstance(error), String(error)).toBe(true);
      expect(String(error)).toMatch(/ECONNRESET.*plain http port/);
    } finally {
      server.close();
    }
  });
});
