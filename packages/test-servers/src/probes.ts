import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';

export interface TlsFiles {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

function ephemeralLow(): number {
  try {
    const [lo] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/);
    const n = Number(lo);
    return Number.isInteger(n) && n > 1024 ? n : 32768;
  } catch {
    return 32768;
  }
}

function bindPort(port: number): Promise<net.Server | undefined> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(undefined));
    s.listen({ port, host: '127.0.0.1', exclusive: true }, () => resolve(s));
  });
}

/**
 * Reserves `n` distinct free TCP ports on 127.0.0.1, checked by binding them, then releases them
 * together. They are picked at random BELOW the kernel's ephemeral range (10000..32767 here), so
 * that outgoing connections of other processes cannot grab a stopped server's port before it
 * restarts; falls back to port 0 (the kernel's choice) if that range is too small.
 */
export async function freePorts(n: number): Promise<number[]> {
  const held: net.Server[] = [];
  const ports: number[] = [];
  const min = 10_000;
  const max = ephemeralLow() - 1;
  try {
    for (let tries = 0; ports.length < n && tries < n * 50 && max - min > 1000; tries++) {
      const port = min + Math.floor(Math.random() * (max - min + 1));
      if (ports.includes(port)) continue;
      const s = await bindPort(port);
      if (!s) continue;
      held.push(s);
      ports.push(port);
    }
    while (ports.length < n) {
      const s = await bindPort(0);
      const addr = s?.address();
      if (!s || !addr || typeof addr === 'string') throw new Error('cannot find a free port on 127.0.0.1');
      held.push(s);
      ports.push(addr.port);
    }
    return ports;
  } finally {
    await Promise.all(held.map((s) => new Promise<void>((res) => s.close(() => res()))));
  }
}

export function splitHostPort(endpoint: string): { host: string; port: number } {
  const hostPort = endpoint.replace(/^[a-z]+:\/\//, '').replace(/\/.*$/, '');
  const i = hostPort.lastIndexOf(':');
  return { host: hostPort.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(hostPort.slice(i + 1)) };
}

/** Whether a TCP connection to `endpoint` (host:port) opens within `timeoutMs`. */
export function tcpOpen(endpoint: string, timeoutMs = 1000): Promise<boolean> {
  const { host, port } = splitHostPort(endpoint);
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const done = (ok: boolean): void => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

export function httpRequest(
  url: string,
  opts: { method?: string; body?: string; timeoutMs?: number; tls?: TlsFiles } = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const isHttps = u.protocol === 'https:';
    const tls = opts.tls ?? {};
    const reqOpts: https.RequestOptions = {
      method: opts.method ?? 'GET',
      timeout: opts.timeoutMs ?? 2000,
      ...(opts.body !== undefined
        ? { headers: { 'content-type': 'application/x-www-form-urlencoded' } }
        : {}),
      ...(isHttps && tls.caFile ? { ca: readFileSync(tls.caFile) } : {}),
      ...(isHttps && tls.certFile ? { cert: readFileSync(tls.certFile) } : {}),
      ...(isHttps && tls.keyFile ? { key: readFileSync(tls.keyFile) } : {}),
    };
    const req = (isHttps ? https : http).request(u, reqOpts, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timeout after ${opts.timeoutMs ?? 2000} ms: ${url}`)));
    req.on('error', reject);
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

/** etcd serves when GET /health says {"health":"true"}. */
export async function etcdHealthy(baseUrl: string, tls?: TlsFiles): Promise<boolean> {
  const r = await httpRequest(`${baseUrl}/health`, tls ? { tls } : {});
  if (r.status !== 200) throw new Error(`/health: HTTP ${r.status} ${r.body.trim()}`);
  const health = (JSON.parse(r.body) as { health?: string }).health;
  if (health !== 'true') throw new Error(`/health: ${r.body.trim()}`);
  return true;
}

/** Consul serves when it has a leader and a KV read of a missing key answers 404. */
export async function consulReady(baseUrl: string): Promise<boolean> {
  const leader = await httpRequest(`${baseUrl}/v1/status/leader`);
  const l = leader.body.trim();
  if (leader.status !== 200 || l === '' || l === '""')
    throw new Error(`no leader yet (${leader.status} ${l})`);
  const kv = await httpRequest(`${baseUrl}/v1/kv/kv-test-servers-probe-missing`);
  if (kv.status !== 404) throw new Error(`GET /v1/kv: HTTP ${kv.status} ${kv.body.trim()}`);
  return true;
}

/** Sends a ZooKeeper four-letter word and returns the answer. */
export function zkFourLetter(endpoint: string, word: string, timeoutMs = 2000): Promise<string> {
  const { host, port } = splitHostPort(endpoint);
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port }, () => sock.end(word));
    let data = '';
    sock.setTimeout(timeoutMs, () => sock.destroy(new Error(`${word}: timeout`)));
    sock.on('data', (d: Buffer) => {
      data += d.toString();
    });
    sock.on('error', reject);
    sock.on('close', () => resolve(data));
  });
}

/** The `Mode:` that `srvr` reports (standalone, leader, follower), or undefined. `ruok` answers
 * `imok` before the server serves, so it is not used. */
export async function zkMode(endpoint: string): Promise<string | undefined> {
  const out = await zkFourLetter(endpoint, 'srvr');
  return /^Mode: (\w+)/m.exec(out)?.[1];
}

function respCommand(args: string[]): string {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
}

/** Reads whole RESP replies (simple types and bulk strings only). */
function parseReplies(buf: string): string[] | undefined {
  const out: string[] = [];
  let i = 0;
  while (i < buf.length) {
    const eol = buf.indexOf('\r\n', i);
    if (eol < 0) return out;
    const head = buf.slice(i, eol);
    if (head[0] === '$') {
      const len = Number(head.slice(1));
      if (len < 0) {
        out.push('(nil)');
        i = eol + 2;
        continue;
      }
      if (buf.length < eol + 2 + len + 2) return out;
      out.push(buf.slice(eol + 2, eol + 2 + len));
      i = eol + 2 + len + 2;
    } else {
      out.push(head);
      i = eol + 2;
    }
  }
  return out;
}

/** Sends Redis commands over one connection and returns the replies ("+OK", "-ERR ...", bulk text). */
export function redisCommands(endpoint: string, commands: string[][], timeoutMs = 2000): Promise<string[]> {
  const { host, port } = splitHostPort(endpoint);
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port }, () => sock.write(commands.map(respCommand).join('')));
    let data = '';
    sock.setTimeout(timeoutMs, () => sock.destroy(new Error('redis: timeout')));
    sock.on('data', (d: Buffer) => {
      data += d.toString('latin1');
      const replies = parseReplies(data);
      if (replies && replies.length >= commands.length) {
        sock.destroy();
        resolve(replies);
      }
    });
    sock.on('error', reject);
    sock.on('close', () => reject(new Error(`redis: connection closed (${JSON.stringify(data)})`)));
  });
}

/** Redis serves when PING answers and a SET/GET round trip works (with AUTH when given). A server
 * that demands a password we do not have counts as serving once it answers NOAUTH. */
export async function redisReady(
  endpoint: string,
  auth?: { username?: string; password: string },
): Promise<boolean> {
  const key = `kv-test-servers:probe:${process.pid}`;
  const cmds: string[][] = [];
  if (auth) cmds.push(auth.username ? ['AUTH', auth.username, auth.password] : ['AUTH', auth.password]);
  cmds.push(['PING'], ['SET', key, 'ok', 'PX', '5000'], ['GET', key]);
  const replies = await redisCommands(endpoint, cmds);
  const r = auth ? replies.slice(1) : replies;
  if (auth && replies[0] !== '+OK') throw new Error(`AUTH: ${replies[0]}`);
  if (r[0]?.startsWith('-NOAUTH')) return true;
  if (r[0] !== '+PONG') throw new Error(`PING: ${r[0]}`);
  if (r[1] !== '+OK') throw new Error(`SET: ${r[1]}`);
  if (r[2] !== 'ok') throw new Error(`GET: ${r[2]}`);
  return true;
}
