import { type ChildProcess, fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FaultMode, FaultProxy, FaultProxyOptions } from './fault-proxy.js';
import { closingInheritedFds } from './inherited-fds.js';

/**
 * A fault proxy that runs in a child process: the same calls as
 * `startFaultProxy`'s, each resolving once the child has applied it.
 *
 * Use it when the client under test can block the event loop (the
 * ZooKeeper C client's `zookeeper_close` waits up to 4.5 s for the server's
 * answer on the calling thread): an in-process proxy cannot forward that
 * answer while the loop is blocked, so every close would wait out its
 * timeout and a black hole could never be healed in time.
 *
 * `mode`, `connections` and `accepted` are the child's figures as of the
 * last call answered; `refresh()` asks for fresh ones.
 */
export interface RemoteFaultProxy extends FaultProxy {
  pass(): Promise<void>;
  blackhole(): Promise<void>;
  reset(): Promise<void>;
  refuse(): Promise<void>;
  latency(ms: number): Promise<void>;
  /** Fetches the child's current `mode`, `connections` and `accepted`. */
  refresh(): Promise<void>;
}

/** @internal the IPC protocol between this module and fault-proxy-child. */
export type ProxyRequest =
  | { id: number; op: 'start'; target: string; port?: number }
  | { id: number; op: 'pass' | 'blackhole' | 'reset' | 'refuse' | 'state' | 'close'; port: number }
  | { id: number; op: 'latency'; port: number; ms: number };

/** @internal */
export interface ProxyReply {
  id: number;
  port?: number;
  error?: string;
  state?: { mode: FaultMode; connections: number; accepted: number };
}

type Pending = { resolve: (reply: ProxyReply) => void; reject: (error: Error) => void };

const CALL_TIMEOUT_MS = 10_000;

/** One child per test process, started on first use; it exits with its parent. */
class ProxyHost {
  private child: ChildProcess | undefined;
  private next = 0;
  private readonly pending = new Map<number, Pending>();

  private host(): ChildProcess {
    if (this.child?.connected) return this.child;
    // Through bash, which closes what this process would leak into it (see closingInheritedFds); the
    // IPC channel is descriptor 3.
    const [bash, script] = closingInheritedFds(process.execPath, [], ['3']);
    const child = fork(childScript(), [], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      ...(bash === process.execPath ? {} : { execPath: bash, execArgv: [...script, ...process.execArgv] }),
    });
    child.on('message', (reply: ProxyReply) => {
      const waiter = this.pending.get(reply.id);
      this.pending.delete(reply.id);
      waiter?.resolve(reply);
    });
    child.on('exit', (code, signal) => {
      if (this.child === child) this.child = undefined;
      const error = new Error(`fault proxy process exited (${signal ?? code})`);
      for (const waiter of this.pending.values()) waiter.reject(error);
      this.pending.clear();
    });
    // Neither the child nor its channel keeps the test process alive; a call in flight does (its timer).
    child.unref();
    child.channel?.unref();
    this.child = child;
    return child;
  }

  ask(request: Record<string, unknown> & { op: ProxyRequest['op'] }): Promise<ProxyReply> {
    const id = ++this.next;
    return new Promise<ProxyReply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`fault proxy process: no answer to ${request.op} within ${CALL_TIMEOUT_MS} ms`));
      }, CALL_TIMEOUT_MS);
      this.pending.set(id, {
        resolve: (reply) => {
          clearTimeout(timer);
          if (reply.error !== undefined) reject(new Error(`fault proxy: ${reply.error}`));
          else resolve(reply);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.host().send({ ...request, id });
    });
  }
}

/** The compiled child next to this module, or (when run from the sources by a test) the built one. */
function childScript(): string {
  const beside = fileURLToPath(new URL('./fault-proxy-child.js', import.meta.url));
  if (existsSync(beside)) return beside;
  const built = fileURLToPath(new URL('../dist/fault-proxy-child.js', import.meta.url));
  if (existsSync(built)) return built;
  throw new Error(`fault proxy: ${built} is missing (build @kv/test-servers first)`);
}

let shared: ProxyHost | undefined;

/**
 * Starts a fault proxy to `target` (127.0.0.0/8 only) in this process's
 * fault proxy child (one child serves every remote proxy of the process).
 */
export async function startRemoteFaultProxy(
  target: string,
  options: FaultProxyOptions = {},
): Promise<RemoteFaultProxy> {
  shared ??= new ProxyHost();
  const host = shared;
  const started = await host.ask({ op: 'start', target, ...(options.port ? { port: options.port } : {}) });
  const port = started.port as number;
  let state = started.state as NonNullable<ProxyReply['state']>;
  let closed: Promise<void> | undefined;
  const call = async (op: ProxyRequest['op'], extra: Record<string, unknown> = {}) => {
    const reply = await host.ask({ op, port, ...extra });
    if (reply.state) state = reply.state;
  };
  const close = () => {
    closed ??= call('close').catch(() => {});
    return closed;
  };
  return {
    endpoint: `127.0.0.1:${port}`,
    port,
    target,
    get mode() {
      return state.mode;
    },
    get connections() {
      return state.connections;
    },
    get accepted() {
      return state.accepted;
    },
    pass: () => call('pass'),
    blackhole: () => call('blackhole'),
    reset: () => call('reset'),
    refuse: () => call('refuse'),
    latency: async (ms: number) => {
      if (!Number.isFinite(ms) || ms < 0) throw new Error(`fault proxy: latency must be >= 0 ms, got ${ms}`);
      await call('latency', { ms });
    },
    refresh: () => call('state'),
    close,
    [Symbol.asyncDispose]: close,
  };
}
