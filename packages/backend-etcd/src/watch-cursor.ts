import { abortError, backoff, delay, type KVError } from '@kv/core';
import {
  castGrpcErrorMessage,
  type Etcd3,
  EtcdInvalidAuthTokenError,
  type IDuplexStream,
  type IEvent,
  type IWatchRequest,
  type IWatchResponse,
} from 'etcd3';
import { invalidateAuth, openWatchStream } from './etcd-client.js';
import { isPermanent, typedError } from './etcd-errors.js';
import { num } from './etcd-keys.js';

/** The events of one revision (one write or one transaction), in order. */
export interface RevisionEvents {
  readonly type: 'events';
  readonly revision: number;
  readonly events: IEvent[];
}

/** The revision the watch wanted was compacted away: re-read, then `reset` past the read. */
export interface Compacted {
  readonly type: 'compacted';
  readonly compactRevision: number;
}

export type WatchItem = RevisionEvents | Compacted;

export interface WatchTarget {
  readonly key: Buffer;
  readonly range_end?: Buffer;
  /** Leave out puts (`Noput`) or deletes (`Nodelete`). */
  readonly filters?: ('Noput' | 'Nodelete')[];
}

export interface WatchHost {
  readonly client: Etcd3;
  mapError(error: unknown, operation: string): KVError;
  /** Every open cursor, so closing the store can end them. */
  readonly cursors: Set<WatchCursor>;
}

type Delivery = { response: IWatchResponse } | { lost: unknown };

/**
 * One etcd watch that owns its resume logic: it remembers the revision after
 * the last one it handed out and, when the stream breaks (server restarted,
 * connection dropped, member gone), reopens it from exactly there with
 * backoff, so no revision is skipped or repeated. etcd3's own Watcher resumes
 * from the revision of the last response header instead, which can skip
 * events after a reconnect, so the raw gRPC stream is used here.
 *
 * `next()` hands out one revision's events at a time, or `compacted` when the
 * server no longer has the revision to resume from.
 */
export class WatchCursor {
  private stream: IDuplexStream<IWatchRequest, IWatchResponse> | undefined;
  private readonly inbox: Delivery[] = [];
  private wake: (() => void) | undefined;
  private readonly ready: RevisionEvents[] = [];
  private nextRevision: number;
  private failures = 0;
  private closed = false;
  /** Set once the first stream was created on the server. */
  connectedOnce = false;

  constructor(
    private readonly host: WatchHost,
    private readonly target: WatchTarget,
    startRevision: number,
    private readonly signal: AbortSignal,
  ) {
    this.nextRevision = startRevision;
    host.cursors.add(this);
    signal.addEventListener('abort', this.onAbort, { once: true });
  }

  /** The revision the next event will have at least. */
  get revision(): number {
    return this.nextRevision;
  }

  async next(): Promise<WatchItem> {
    for (;;) {
      if (this.signal.aborted || this.closed) throw abortError(this.signal);
      const item = this.ready.shift();
      if (item) {
        this.nextRevision = item.revision + 1;
        return item;
      }
      if (!this.stream) {
        await this.open();
        continue;
      }
      const delivery = await this.receive();
      if ('lost' in delivery) {
        this.drop();
        await this.recover(delivery.lost);
        continue;
      }
      const outcome = this.handle(delivery.response);
      if (outcome) return outcome;
    }
  }

  /** Starts over at `revision` (after a compaction was handled by re-reading). */
  reset(revision: number): void {
    this.drop();
    this.ready.length = 0;
    this.nextRevision = revision;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.drop();
    this.signal.removeEventListener('abort', this.onAbort);
    this.host.cursors.delete(this);
    this.wake?.();
  }

  private readonly onAbort = () => this.close();

  private handle(response: IWatchResponse): WatchItem | undefined {
    if (response.canceled) {
      const compactRevision = num(response.compact_revision);
      this.drop();
      if (compactRevision > 0) {
        this.ready.length = 0;
        return { type: 'compacted', compactRevision };
      }
      throw this.host.mapError(castGrpcErrorMessage(`watch canceled: ${response.cancel_reason}`), 'watch');
    }
    if (response.created) {
      this.connectedOnce = true;
      this.failures = 0;
      return undefined;
    }
    const events = response.events ?? [];
    if (events.length === 0) {
      // Progress notification: every later event has a higher revision than the header's.
      if (this.ready.length === 0) {
        this.nextRevision = Math.max(this.nextRevision, num(response.header?.revision) + 1);
      }
      return undefined;
    }
    this.failures = 0;
    // A response holds whole revisions (etcd never splits one without fragmenting, which is off).
    for (const event of events) {
      const revision = num(event.kv.mod_revision);
      const last = this.ready[this.ready.length - 1];
      if (last && last.revision === revision) last.events.push(event);
      else if (revision >= this.nextRevision) this.ready.push({ type: 'events', revision, events: [event] });
    }
    return undefined;
  }

  private async open(): Promise<void> {
    let stream: IDuplexStream<IWatchRequest, IWatchResponse>;
    try {
      stream = await this.bounded(openWatchStream(this.host.client));
    } catch (error) {
      if (this.signal.aborted || this.closed) throw abortError(this.signal);
      await this.recover(error);
      return;
    }
    if (this.signal.aborted || this.closed) {
      closeStream(stream);
      throw abortError(this.signal);
    }
    this.stream = stream;
    this.inbox.length = 0;
    const deliver = (delivery: Delivery) => {
      if (this.stream !== stream) return;
      this.inbox.push(delivery);
      this.wake?.();
    };
    stream.on('data', (response) => deliver({ response }));
    stream.on('error', (error) => deliver({ lost: error }));
    stream.on('end', () => deliver({ lost: new Error('the watch stream ended') }));
    stream.write({
      create_request: {
        key: this.target.key,
        ...(this.target.range_end ? { range_end: this.target.range_end } : {}),
        start_revision: this.nextRevision,
        progress_notify: true,
        ...(this.target.filters ? { filters: this.target.filters } : {}),
      },
    });
  }

  /** After a broken stream: throws what retrying cannot fix, else waits with backoff. */
  private async recover(error: unknown): Promise<void> {
    if (this.signal.aborted || this.closed) throw abortError(this.signal);
    const typed = typedError(error);
    if (typed instanceof EtcdInvalidAuthTokenError) {
      // An expired simple token: get a new one and go on.
      invalidateAuth(this.host.client);
    } else {
      const mapped = this.host.mapError(error, 'watch');
      if (isPermanent(mapped)) throw mapped;
    }
    await delay(backoff(this.failures++, 100, 2_000), this.signal);
  }

  private receive(): Promise<Delivery> {
    const next = this.inbox.shift();
    if (next) return Promise.resolve(next);
    return new Promise<Delivery>((resolve, reject) => {
      this.wake = () => {
        this.wake = undefined;
        const delivery = this.inbox.shift();
        if (delivery) resolve(delivery);
        else reject(abortError(this.signal));
      };
    });
  }

  private bounded<T>(promise: Promise<T>): Promise<T> {
    if (this.signal.aborted) return Promise.reject(abortError(this.signal));
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => reject(abortError(this.signal));
      this.signal.addEventListener('abort', onAbort, { once: true });
      promise.then(
        (value) => {
          this.signal.removeEventListener('abort', onAbort);
          if (this.signal.aborted || this.closed) {
            if (isStream(value)) closeStream(value);
          }
          resolve(value);
        },
        (error: unknown) => {
          this.signal.removeEventListener('abort', onAbort);
          reject(error);
        },
      );
    });
  }

  private drop(): void {
    const stream = this.stream;
    this.stream = undefined;
    this.inbox.length = 0;
    if (stream) closeStream(stream);
  }
}

function isStream(value: unknown): value is IDuplexStream<unknown, unknown> {
  return typeof value === 'object' && value !== null && 'cancel' in value && 'end' in value;
}

/**
 * Ends a client stream without making etcd3 think the host failed: etcd3
 * resets every channel of a host on a stream error while the stream is still
 * writable, so the stream is ended (not writable any more) before it is
 * cancelled.
 */
export function closeStream(stream: IDuplexStream<unknown, unknown>): void {
  stream.on('error', () => {});
  try {
    stream.end();
  } catch {
    // already ended
  }
  try {
    stream.cancel();
  } catch {
    // already gone
  }
}
