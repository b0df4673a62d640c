import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * TCP proxies in a child process, one per store, so a test can cut a store off as a killed process is
 * cut off: its connections drop and it never reaches the server again, but it sends no close, so its
 * sessions live on until the server expires them.
 */
export class CrashProxies {
  private child: ChildProcess | undefined;
  private next = 0;
  private readonly waiting = new Map<number, (reply: { port?: number }) => void>();

  private host(): ChildProcess {
    if (!this.child) {
      const child = fork(fileURLToPath(new URL('./fixtures/proxy-host.mjs', import.meta.url)), [], {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      child.on('message', (reply: { id: number; port?: number }) => {
        this.waiting.get(reply.id)?.(reply);
        this.waiting.delete(reply.id);
      });
      child.unref();
      child.channel?.unref();
      this.child = child;
    }
    return this.child;
  }

  private ask(message: Record<string, unknown>): Promise<{ port?: number }> {
    const id = ++this.next;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('proxy host did not answer')), 10_000);
      this.waiting.set(id, (reply) => {
        clearTimeout(timer);
        resolve(reply);
      });
      this.host().send({ ...message, id });
    });
  }

  /** A proxy to `target`: its `127.0.0.1:port`. */
  async open(target: string): Promise<string> {
    const { port } = await this.ask({ op: 'open', target });
    return `127.0.0.1:${port}`;
  }

  /** Drops the proxy's connections and refuses new ones, for good. */
  async refuse(endpoint: string): Promise<void> {
    await this.ask({ op: 'refuse', port: Number(endpoint.slice(endpoint.lastIndexOf(':') + 1)) });
  }

  async close(): Promise<void> {
    if (!this.child) return;
    await this.ask({ op: 'exit' }).catch(() => {});
    this.child.kill();
    this.child = undefined;
  }
}
