import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';

/**
 * A TCP proxy on 127.0.0.1 between one client and its server, so a test can
 * partition that client without touching the server:
 *
 * - `pass()`: bytes flow (after a black hole, what was held flows on, as TCP
 *   would retransmit it after a partition heals);
 * - `blackhole()`: sockets stay open and nothing moves either way; new
 *   connections are accepted and hang (no reply, no error), as when packets
 *   are dropped on the path;
 * - `reset()`: every open connection is destroyed (the client sees a reset or
 *   an EOF); new ones are accepted as the mode says;
 * - `refuse()`: like reset, and new connections are destroyed at once until
 *   `pass()`;
 * - `latency(ms)`: every chunk is delayed by `ms` each way, order kept.
 */
export interface FaultProxy {
  /** `127.0.0.1:port` to give the client instead of the server's endpoint. */
  readonly endpoint: string;
  readonly port: number;
  /** The server's `host:port`. */
  readonly target: string;
  readonly mode: FaultMode;
  /** Connections open now. */
  readonly connections: number;
  /** Connections accepted since the start. */
  readonly accepted: number;
  pass(): void;
  blackhole(): void;
  reset(): void;
  refuse(): void;
  latency(ms: number): void;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export type FaultMode = 'pass' | 'blackhole' | 'refuse';

export interface FaultProxyOptions {
  /** Port to listen on (default: a free one). Reusing a port lets a test restart a proxy in place. */
  readonly port?: number;
}

interface Link {
  readonly client: Socket;
  upstream: Socket | undefined;
  /** Chunks delayed by latency, per direction, delivered in order. */
  readonly queues: { up: Delayed[]; down: Delayed[] };
}

interface Delayed {
  readonly due: number;
  readonly chunk: Buffer;
}

export async function startFaultProxy(target: string, options: FaultProxyOptions = {}): Promise<FaultProxy> {
  const colon = target.lastIndexOf(':');
  const host = target.slice(0, colon);
  const targetPort = Number(target.slice(colon + 1));
  if (colon < 0 || !Number.isInteger(targetPort) || targetPort <= 0 || targetPort > 65_535) {
    throw new Error(`fault proxy: target must be host:port, got ${JSON.stringify(target)}`);
  }
  if (!/^127\.\d+\.\d+\.\d+$|^localhost$/.test(host)) {
    throw new Error(`fault proxy: only targets on this machine (127.0.0.0/8), got ${target}`);
  }
  const links = new Set<Link>();
  let mode: FaultMode = 'pass';
  let delayMs = 0;
  let accepted = 0;

  const destroy = (link: Link) => {
    link.client.destroy();
    link.upstream?.destroy();
    links.delete(link);
  };

  const flush = (link: Link, direction: 'up' | 'down') => {
    const queue = link.queues[direction];
    const to = direction === 'up' ? link.upstream : link.client;
    const now = performance.now();
    while (queue.length > 0 && (queue[0] as Delayed).due <= now && mode === 'pass' && to) {
      to.write((queue.shift() as Delayed).chunk);
    }
    if (queue.length > 0 && mode === 'pass') {
      const wait = Math.max(1, (queue[0] as Delayed).due - now);
      setTimeout(() => flush(link, direction), wait).unref();
    }
  };

  const forward = (link: Link, direction: 'up' | 'down', chunk: Buffer) => {
    const queue = link.queues[direction];
    queue.push({ due: performance.now() + delayMs, chunk });
    if (queue.length === 1) flush(link, direction);
  };

  const openUpstream = (link: Link) => {
    if (link.upstream) return;
    const upstream = tcpConnect({ host, port: targetPort });
    link.upstream = upstream;
    upstream.setNoDelay(true);
    upstream.on('data', (chunk: Buffer) => forward(link, 'down', chunk));
    upstream.on('connect', () => flush(link, 'up'));
    upstream.on('error', () => destroy(link));
    upstream.on('close', () => destroy(link));
  };

  /** Pauses or resumes reading on every socket: a black hole holds bytes in the kernel's buffers. */
  const apply = () => {
    for (const link of links) {
      if (mode === 'blackhole') {
        link.client.pause();
        link.upstream?.pause();
      } else if (mode === 'pass') {
        openUpstream(link);
        link.client.resume();
        link.upstream?.resume();
        flush(link, 'up');
        flush(link, 'down');
      }
    }
  };

  const server: Server = createServer({ pauseOnConnect: true }, (client) => {
    accepted++;
    if (mode === 'refuse') {
      client.destroy();
      return;
    }
    client.setNoDelay(true);
    const link: Link = { client, upstream: undefined, queues: { up: [], down: [] } };
    links.add(link);
    client.on('data', (chunk: Buffer) => forward(link, 'up', chunk));
    client.on('error', () => destroy(link));
    client.on('close', () => destroy(link));
    if (mode === 'pass') {
      openUpstream(link);
      client.resume();
    }
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.unref();
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;

  const resetAll = () => {
    for (const link of [...links]) {
      link.client.resetAndDestroy();
      link.upstream?.destroy();
      links.delete(link);
    }
  };

  const close = async () => {
    for (const link of [...links]) destroy(link);
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };

  return {
    endpoint: `127.0.0.1:${port}`,
    port,
    target,
    get mode() {
      return mode;
    },
    get connections() {
      return links.size;
    },
    get accepted() {
      return accepted;
    },
    pass() {
      mode = 'pass';
      apply();
    },
    blackhole() {
      mode = 'blackhole';
      apply();
    },
    reset: resetAll,
    refuse() {
      mode = 'refuse';
      resetAll();
    },
    latency(ms: number) {
      if (!Number.isFinite(ms) || ms < 0) throw new Error(`fault proxy: latency must be >= 0 ms, got ${ms}`);
      delayMs = ms;
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
