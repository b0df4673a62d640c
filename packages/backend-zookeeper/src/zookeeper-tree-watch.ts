import { backoff, type RawPair } from '@kv/core';
import { Wake } from './wake.js';
import { isRc, ZK } from './zookeeper-errors.js';
import { childPath, isHelperName } from './zookeeper-nodes.js';
import type { NativeStat, ZkSession } from './zookeeper-session.js';

interface NodeState {
  children: Set<string>;
  stat?: NativeStat;
  data?: Buffer | null;
}

export interface TreeDecoder {
  pair(path: string, stat: NativeStat, data: Buffer | null): { pair: RawPair | null; expiresAt?: number };
  now(): number;
}

/**
 * A tree watch from one-shot watches (the `zookeeper` client does not
 * expose ZooKeeper 3.6's persistent recursive watches): every node below
 * the directory carries a data watch (value changes, deletes) and a child
 * watch (children added or removed); each watch that fires is re-armed by
 * the read that follows it, so no change at any depth goes unseen (libkv
 * #109 missed value changes of existing children). A directory that does
 * not exist yet carries an exists watch. Within a session the C client
 * restores the watches after a reconnect; a replaced session starts over
 * with a full read.
 */
export class ZkTreeWatch {
  private nodes = new Map<string, NodeState>();
  private epoch = 0;
  private pending = 0;
  private changed = false;
  private wake = new Wake();
  private failure: unknown;
  private readonly onSession = () => this.resync();

  constructor(
    private readonly session: ZkSession,
    private readonly root: string,
    private readonly signal: AbortSignal,
    private readonly decoder: TreeDecoder,
  ) {
    session.on('session', this.onSession);
  }

  stop(): void {
    this.session.off('session', this.onSession);
    this.wake.fire();
  }

  /** The listing after every settled batch of changes, the first one at once. */
  async *listings(): AsyncIterable<RawPair[]> {
    this.resync();
    let first = true;
    while (!this.signal.aborted) {
      while (this.pending > 0 && !this.signal.aborted && this.failure === undefined) {
        await this.next();
      }
      if (this.failure !== undefined) throw this.failure;
      if (this.signal.aborted) return;
      const { pairs, expiresAt } = this.listing();
      if (first || this.changed) {
        first = false;
        this.changed = false;
        yield pairs;
      }
      if (this.pending === 0 && !this.changed) {
        await this.next(expiresAt === undefined ? undefined : expiresAt - this.decoder.now() + 1);
        // A ttl that ran out changes the listing without any event.
        if (expiresAt !== undefined && expiresAt <= this.decoder.now()) this.changed = true;
      }
    }
  }

  private next(ms?: number): Promise<void> {
    const wake = this.wake;
    return wake.wait(this.signal, ms).then(() => {
      if (this.wake === wake) this.wake = new Wake();
    });
  }

  private notify(): void {
    this.wake.fire();
  }

  private listing(): { pairs: RawPair[]; expiresAt?: number } {
    const pairs: RawPair[] = [];
    let expiresAt: number | undefined;
    for (const [path, node] of this.nodes) {
      if (path === this.root || !node.stat) continue;
      const read = this.decoder.pair(path, node.stat, node.data ?? null);
      if (read.pair) pairs.push(read.pair);
      if (read.expiresAt !== undefined) expiresAt = Math.min(expiresAt ?? read.expiresAt, read.expiresAt);
    }
    return { pairs, ...(expiresAt === undefined ? {} : { expiresAt }) };
  }

  private resync(): void {
    this.epoch++;
    this.nodes = new Map([[this.root, { children: new Set() }]]);
    this.changed = true;
    this.readChildren(this.root, this.epoch, 0);
    this.notify();
  }

  /** Runs one read of this epoch; failures other than "no node" retry with backoff. */
  private track(epoch: number, attempt: number, read: () => Promise<void>, retry: (attempt: number) => void) {
    this.pending++;
    read()
      .catch((error) => {
        if (epoch !== this.epoch || this.signal.aborted) return;
        if (isRc(error, ZK.NOAUTH)) {
          this.failure = error;
          return;
        }
        this.pending++;
        const timer = setTimeout(
          () => {
            this.pending--;
            if (epoch === this.epoch) retry(attempt + 1);
            this.notify();
          },
          backoff(attempt, 50, 2_000),
        );
        timer.unref?.();
      })
      .finally(() => {
        this.pending--;
        this.notify();
      });
  }

  private readChildren(path: string, epoch: number, attempt: number): void {
    this.track(
      epoch,
      attempt,
      async () => {
        let names: string[];
        try {
          names = await this.session.children(this.signal, path, () => this.fired(path, epoch, 'children'));
        } catch (error) {
          if (!isRc(error, ZK.NONODE)) throw error;
          if (epoch !== this.epoch) return;
          this.remove(path);
          if (path === this.root) {
            this.nodes.set(this.root, { children: new Set() });
            await this.armExists(epoch);
          }
          return;
        }
        if (epoch !== this.epoch) return;
        const node = this.nodes.get(path);
        if (!node) return;
        const next = new Set(names.filter((name) => !isHelperName(name)));
        for (const name of node.children) if (!next.has(name)) this.remove(childPath(path, name));
        for (const name of next) {
          if (node.children.has(name)) continue;
          const child = childPath(path, name);
          this.nodes.set(child, { children: new Set() });
          this.readData(child, epoch, 0);
          this.readChildren(child, epoch, 0);
        }
        node.children = next;
      },
      (a) => this.readChildren(path, epoch, a),
    );
  }

  private async armExists(epoch: number): Promise<void> {
    const stat = await this.session.exists(this.signal, this.root, () =>
      this.fired(this.root, epoch, 'exists'),
    );
    if (stat && epoch === this.epoch) this.readChildren(this.root, epoch, 0);
  }

  private readData(path: string, epoch: number, attempt: number): void {
    this.track(
      epoch,
      attempt,
      async () => {
        try {
          const { stat, data } = await this.session.get(this.signal, path, () =>
            this.fired(path, epoch, 'data'),
          );
          if (epoch !== this.epoch) return;
          const node = this.nodes.get(path);
          if (!node) return;
          node.stat = stat;
          node.data = data;
          this.changed = true;
        } catch (error) {
          if (!isRc(error, ZK.NONODE)) throw error;
          if (epoch === this.epoch) this.remove(path);
        }
      },
      (a) => this.readData(path, epoch, a),
    );
  }

  private fired(path: string, epoch: number, kind: 'data' | 'children' | 'exists'): void {
    if (epoch !== this.epoch || this.signal.aborted) return;
    if (kind === 'exists') {
      if (!this.nodes.get(this.root)?.stat) this.readChildren(this.root, epoch, 0);
      return;
    }
    if (!this.nodes.has(path)) return;
    if (kind === 'data') this.readData(path, epoch, 0);
    else this.readChildren(path, epoch, 0);
  }

  /** Forgets a node and everything below it. */
  private remove(path: string): void {
    const node = this.nodes.get(path);
    if (!node) return;
    for (const name of node.children) this.remove(childPath(path, name));
    this.nodes.delete(path);
    this.changed = true;
    if (path !== this.root) {
      const parent = this.nodes.get(path.slice(0, path.lastIndexOf('/')) || '/');
      parent?.children.delete(path.slice(path.lastIndexOf('/') + 1));
    }
  }
}
