import { once } from 'node:events';
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FaultProxy, startFaultProxy, startRemoteFaultProxy } from '../src/index.js';

// The proxy itself, against a local echo server (what passes through is plain bytes).

let echo: Server;
let target: string;
const proxies: FaultProxy[] = [];
const sockets: Socket[] = [];

beforeAll(async () => {
  echo = createServer((socket) => socket.pipe(socket));
  echo.listen(0, '127.0.0.1');
  await once(echo, 'listening');
  const address = echo.address();
  target = `127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await Promise.all(proxies.map((p) => p.close()));
  await new Promise((resolve) => echo.close(resolve));
});

type Start = (target: string) => Promise<FaultProxy>;

async function client(
  p: FaultProxy,
): Promise<Socket & { received: () => string; next: (text: string) => Promise<void> }> {
  const [host, port] = p.endpoint.split(':') as [string, string];
  const socket = tcpConnect({ host, port: Number(port) });
  sockets.push(socket);
  await once(socket, 'connect');
  let buffer = '';
  const waiters: { text: string; resolve: () => void }[] = [];
  socket.on('data', (chunk: Buffer) => {
    buffer += chunk.toString();
    for (const w of [...waiters]) if (buffer.includes(w.text)) w.resolve();
  });
  return Object.assign(socket, {
    received: () => buffer,
    next: (text: string) =>
      new Promise<void>((resolve, reject) => {
        if (buffer.includes(text)) return resolve();
        const timer = setTimeout(() => reject(new Error(`no ${JSON.stringify(text)} within 5 s`)), 5_000);
        waiters.push({
          text,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        });
      }),
  });
}

/** The window in which a black hole must deliver nothing (an absence can only be watched for a while). */
const QUIET_MS = 300;
const quiet = () => new Promise((resolve) => setTimeout(resolve, QUIET_MS));

describe.each<[string, Start]>([
  ['in this process', startFaultProxy],
  ['in a child process', startRemoteFaultProxy],
])('fault proxy %s', (_where, start) => {
  const proxy = async (): Promise<FaultProxy> => {
    const p = await start(target);
    proxies.push(p);
    return p;
  };

  it('passes bytes both ways', async () => {
    const p = await proxy();
    const c = await client(p);
    c.write('hello');
    await c.next('hello');
    if ('refresh' in p) await (p as { refresh(): Promise<void> }).refresh();
    expect(p.connections).toBe(1);
    expect(p.accepted).toBe(1);
  });

  it('black hole: the socket stays open, nothing moves; after pass() the held bytes flow on', async () => {
    const p = await proxy();
    const c = await client(p);
    c.write('a');
    await c.next('a');
    await p.blackhole();
    c.write('b');
    let closed = false;
    c.on('close', () => {
      closed = true;
    });
    await quiet();
    expect(c.received()).toBe('a');
    expect(closed).toBe(false);
    await p.pass();
    await c.next('ab');
  });

  it('black hole: a new connection is accepted and hangs; it serves after pass()', async () => {
    const p = await proxy();
    await p.blackhole();
    const c = await client(p);
    c.write('x');
    await quiet();
    expect(c.received()).toBe('');
    await p.pass();
    await c.next('x');
  });

  it('reset() ends open connections; new ones work', async () => {
    const p = await proxy();
    const c = await client(p);
    // An echo proves the proxy has taken the connection (the client's connect only says the kernel
    // has: a reset that reached the proxy before its accept would have nothing to end).
    c.write('first');
    await c.next('first');
    let error: unknown;
    c.on('error', (e) => {
      error = e;
    });
    const closed = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error('the connection was still open 5 s after reset()')),
        5_000,
      );
      c.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    await p.reset();
    await closed;
    expect(String(error)).toMatch(/ECONNRESET/);
    const d = await client(p);
    d.write('again');
    await d.next('again');
  });

  it('refuse() ends new connections at once until pass()', async () => {
    const p = await proxy();
    await p.refuse();
    const [host, port] = p.endpoint.split(':') as [string, string];
    const s = tcpConnect({ host, port: Number(port) });
    s.on('error', () => {});
    await new Promise((resolve) => s.once('close', resolve));
    await p.pass();
    const c = await client(p);
    c.write('ok');
    await c.next('ok');
  });

  it('latency(ms) delays each direction, order kept', async () => {
    const p = await proxy();
    const c = await client(p);
    await p.latency(150);
    const started = performance.now();
    c.write('1');
    c.write('2');
    c.write('3');
    await c.next('123');
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
  });

  it('refuses targets off this machine', async () => {
    await expect(start('10.0.0.1:80')).rejects.toThrow(/127\.0\.0\.0\/8/);
  });
});
