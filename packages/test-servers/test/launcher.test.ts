import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { createClient } from 'redis';
import { afterAll, describe, expect, it } from 'vitest';
import { type EtcdHandle, launchEtcd, launchRedis, tcpOpen } from '../src/index.js';

// Private servers: these tests break them. CI=true makes a launcher failure fail the test.

async function health(url: string, ca?: Buffer): Promise<string> {
  if (ca) {
    const https = await import('node:https');
    return new Promise((resolve, reject) => {
      const req = https.get(`${url}/health`, { ca, timeout: 2000 }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => {
          body += c.toString();
        });
        res.on('end', () => resolve(body));
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', reject);
    });
  }
  const r = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
  return r.text();
}

describe('launcher: private etcd', () => {
  const handles: EtcdHandle[] = [];
  afterAll(async () => {
    await Promise.allSettled(handles.map((h) => h.dispose()));
  });

  it('stop/start keeps the port and the data (revisions persist)', async () => {
    const etcd = await launchEtcd();
    handles.push(etcd);
    const [endpoint] = etcd.endpoints as [string];
    let client = new Etcd3({ hosts: etcd.urls, dialTimeout: 5000 });
    await client.put('persist').value('v1');
    const before = await client.get('persist').exec();
    client.close();

    const pid = etcd.pid;
    await etcd.stop();
    expect(etcd.running).toBe(false);
    expect(etcd.pid).toBeUndefined();
    expect(await tcpOpen(endpoint, 500)).toBe(false);

    await etcd.start();
    expect(etcd.endpoints).toEqual([endpoint]);
    expect(etcd.pid).not.toBe(pid);
    client = new Etcd3({ hosts: etcd.urls, dialTimeout: 5000 });
    const after = await client.get('persist').exec();
    client.close();
    expect(after.kvs[0]?.value.toString()).toBe('v1');
    expect(after.kvs[0]?.mod_revision).toBe(before.kvs[0]?.mod_revision);
  });

  it('freeze silences it, thaw brings it back', async () => {
    const etcd = handles[0] ?? (await launchEtcd());
    const [url] = etcd.urls as [string];
    expect(await health(url)).toContain('"health":"true"');
    etcd.freeze();
    try {
      expect(etcd.running).toBe(true);
      await expect(health(url)).rejects.toThrow();
    } finally {
      etcd.thaw();
    }
    await etcd.waitReady(10_000);
    expect(await health(url)).toContain('"health":"true"');
  });

  it('auth: root user, anonymous requests refused', async () => {
    const etcd = await launchEtcd({ auth: { rootPassword: 'rootpw' } });
    handles.push(etcd);
    const anon = new Etcd3({ hosts: etcd.urls, dialTimeout: 5000 });
    await expect(anon.put('a').value('b')).rejects.toThrow();
    anon.close();
    const root = new Etcd3({
      hosts: etcd.urls,
      dialTimeout: 5000,
      auth: { username: 'root', password: 'rootpw' },
    });
    await root.put('a').value('b');
    expect(await root.get('a').string()).toBe('b');
    root.close();
    expect(await etcd.etcdctl(['user', 'list'])).toMatch(/^root$/m);
  });

  it('TLS: a CA and a server cert for IP:127.0.0.1 made with openssl', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kv-tls-'));
    try {
      const f = (n: string): string => join(dir, n);
      const ossl = (...args: string[]): void => {
        execFileSync('openssl', args, { cwd: dir, stdio: 'pipe', timeout: 20_000 });
      };
      const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
      ossl(
        'req',
        '-x509',
        ...ec,
        '-keyout',
        f('ca.key'),
        '-out',
        f('ca.crt'),
        '-days',
        '1',
        '-subj',
        '/CN=kv-test-ca',
      );
      ossl('req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=127.0.0.1');
      writeFileSync(f('ext.cnf'), 'subjectAltName=IP:127.0.0.1\n');
      ossl(
        'x509',
        '-req',
        '-in',
        f('server.csr'),
        '-CA',
        f('ca.crt'),
        '-CAkey',
        f('ca.key'),
        '-CAcreateserial',
        '-out',
        f('server.crt'),
        '-days',
        '1',
        '-extfile',
        f('ext.cnf'),
      );
      const etcd = await launchEtcd({
        tls: { certFile: f('server.crt'), keyFile: f('server.key'), caFile: f('ca.crt') },
      });
      handles.push(etcd);
      expect(etcd.urls[0]).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const ca = readFileSync(f('ca.crt'));
      expect(await health(etcd.urls[0] as string, ca)).toContain('"health":"true"');
      const client = new Etcd3({ hosts: etcd.urls, dialTimeout: 5000, credentials: { rootCertificate: ca } });
      await client.put('tls').value('yes');
      expect(await client.get('tls').string()).toBe('yes');
      client.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('launcher: private redis', () => {
  it('restarts on the same port; an ACL user from args works', async () => {
    const redis = await launchRedis({ args: ['--user', 'alice', 'on', '>alicepw', '~app:*', '+@all'] });
    try {
      const [endpoint] = redis.endpoints as [string];
      expect(await redis.command(['PING'])).toEqual(['+PONG']);
      await redis.restart();
      expect(redis.endpoints).toEqual([endpoint]);
      const alice = createClient({
        url: `redis://${endpoint}`,
        username: 'alice',
        password: 'alicepw',
        socket: { connectTimeout: 5000, reconnectStrategy: false },
      });
      await alice.connect();
      try {
        await alice.set('app:x', '1');
        expect(await alice.get('app:x')).toBe('1');
        await expect(alice.set('other:x', '1')).rejects.toThrow(/NOPERM/);
      } finally {
        await alice.close();
      }
    } finally {
      await redis.dispose();
    }
  });
});
