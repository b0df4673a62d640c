import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { launchRedis, privateServer, type RedisHandle, type RedisOptions } from '@kv/test-servers';

/**
 * A private Redis for tests that change server settings, users or restart it.
 * Outside CI a server that cannot be launched skips the test loudly; with
 * CI=true it fails.
 */
export function privateRedis(
  what: string,
  options: RedisOptions = {},
): Promise<{ server: RedisHandle; skip: false } | { server: undefined; skip: string }> {
  return privateServer(what, () => launchRedis(options));
}

/** Rejects if `promise` does not settle within `ms`. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export const text = (value: Uint8Array): string => new TextDecoder().decode(value);

/**
 * A user-space TCP proxy in front of a server, so a test can cut one connection at a chosen moment:
 * `cutOnce('SUBSCRIBE')` drops (without forwarding) the next client chunk holding that text and
 * closes that connection both ways, as a network drop would.
 */
export class CuttingProxy {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private cut: { text: string; done: () => void } | undefined;
  port = 0;

  private constructor(upstreamHost: string, upstreamPort: number) {
    this.server = createServer((client) => {
      const upstream = connect(upstreamPort, upstreamHost);
      this.sockets.add(client);
      this.sockets.add(upstream);
      const close = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on('data', (chunk: Buffer) => {
        const cut = this.cut;
        if (cut && chunk.includes(cut.text)) {
          this.cut = undefined;
          close();
          cut.done();
          return;
        }
        upstream.write(chunk);
      });
      upstream.on('data', (chunk: Buffer) => client.write(chunk));
      client.on('error', close);
      upstream.on('error', close);
      client.on('close', close);
      upstream.on('close', close);
    });
  }

  static async start(endpoint: string): Promise<CuttingProxy> {
    const [host, port] = endpoint.split(':') as [string, string];
    const proxy = new CuttingProxy(host, Number(port));
    await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
    proxy.port = (proxy.server.address() as AddressInfo).port;
    return proxy;
  }

  get endpoint(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Resolves when a chunk holding `text` was dropped and its connection closed. */
  cutOnce(text: string): Promise<void> {
    return new Promise((resolve) => {
      this.cut = { text, done: resolve };
    });
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
