import { abortError, monotonicNow } from '@kv/core';
import { castGrpcError, type Etcd3, EtcdInvalidAuthTokenError } from 'etcd3';
import { invalidateAuth } from './etcd-client.js';
import { num } from './etcd-keys.js';
import { closeStream } from './watch-cursor.js';

/**
 * One keep-alive of a lease over a short LeaseKeepAlive stream, closed right
 * after the answer: no long-lived stream keeps the process alive between
 * renewals. Resolves to the lease's remaining TTL in seconds; 0 means the
 * lease is gone (expired or revoked).
 */
export async function keepAliveOnce(client: Etcd3, id: string, signal: AbortSignal): Promise<number> {
  if (signal.aborted) throw abortError(signal);
  const stream = await client.leaseClient.leaseKeepAlive();
  return new Promise<number>((resolve, reject) => {
    let settled = false;
    const finish = (outcome: () => void) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      closeStream(stream);
      outcome();
    };
    const onAbort = () => finish(() => reject(abortError(signal)));
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    stream.on('data', (response) => finish(() => resolve(num(response.TTL))));
    stream.on('error', (error) =>
      finish(() => {
        const typed = castGrpcError(error);
        // An expired auth token: the next try fetches a new one.
        if (typed instanceof EtcdInvalidAuthTokenError) invalidateAuth(client);
        reject(typed);
      }),
    );
    stream.on('end', () => finish(() => reject(new Error('the lease keep-alive stream ended'))));
    stream.write({ ID: id });
  });
}

interface Kept {
  readonly ttlSeconds: number;
  /** ms between keep-alives. */
  readonly interval: number;
  readonly onLost: ((why: string) => void) | undefined;
  /**
   * `monotonicNow()` (monotonic) when the last keep-alive the server
   * confirmed was sent: the lease runs at least ttl from it.
   */
  confirmedSentAt: number;
  timer: NodeJS.Timeout | undefined;
  renewing: AbortController | undefined;
}

/**
 * Keeps leases alive in the background: a keep-alive every ttl/3, retried
 * every half second while the server cannot be reached. A lease the server
 * says is gone is dropped and its `onLost` called. Timers never keep the
 * process alive.
 */
export class LeaseKeeper {
  private readonly kept = new Map<string, Kept>();
  private stopped = false;

  constructor(
    private readonly client: Etcd3,
    private readonly requestTimeout: number,
  ) {}

  /**
   * `since`: when the lease was granted or last renewed (`monotonicNow()`
   * before that request was sent). `interval`: ms between keep-alives
   * (default a third of the ttl).
   */
  add(
    id: string,
    ttlSeconds: number,
    onLost?: (why: string) => void,
    since = monotonicNow(),
    interval = (ttlSeconds * 1000) / 3,
  ): void {
    if (this.stopped) return;
    this.remove(id);
    const entry: Kept = {
      ttlSeconds,
      interval,
      onLost,
      confirmedSentAt: since,
      timer: undefined,
      renewing: undefined,
    };
    this.kept.set(id, entry);
    this.schedule(id, entry, Math.max(0, since + interval - monotonicNow()));
  }

  /** When (`monotonicNow()`) the last confirmed renewal of `id` was sent, if it is kept. */
  confirmedSentAt(id: string): number | undefined {
    return this.kept.get(id)?.confirmedSentAt;
  }

  has(id: string): boolean {
    return this.kept.has(id);
  }

  remove(id: string): void {
    const entry = this.kept.get(id);
    if (!entry) return;
    this.kept.delete(id);
    if (entry.timer) clearTimeout(entry.timer);
    entry.renewing?.abort();
  }

  ids(): string[] {
    return [...this.kept.keys()];
  }

  stop(): void {
    this.stopped = true;
    for (const id of [...this.kept.keys()]) this.remove(id);
  }

  private schedule(id: string, entry: Kept, ms: number): void {
    entry.timer = setTimeout(() => void this.renew(id, entry), Math.max(1, Math.floor(ms)));
    entry.timer.unref();
  }

  private async renew(id: string, entry: Kept): Promise<void> {
    if (this.kept.get(id) !== entry) return;
    const attempt = new AbortController();
    entry.renewing = attempt;
    const timer = setTimeout(() => attempt.abort(), Math.min(this.requestTimeout, entry.ttlSeconds * 500));
    timer.unref();
    try {
      const sentAt = monotonicNow();
      const ttl = await keepAliveOnce(this.client, id, attempt.signal);
      if (this.kept.get(id) !== entry) return;
      if (ttl <= 0) {
        this.kept.delete(id);
        entry.onLost?.('the lease expired or was revoked');
        return;
      }
      entry.confirmedSentAt = sentAt;
      this.schedule(id, entry, entry.interval);
    } catch {
      if (this.kept.get(id) !== entry) return;
      this.schedule(id, entry, Math.min(500, (entry.ttlSeconds * 1000) / 10));
    } finally {
      clearTimeout(timer);
      if (entry.renewing === attempt) entry.renewing = undefined;
    }
  }
}
