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

/**
 * The server's history went backwards: it answers with a revision older than
 * one this watch already handed out, or it is another cluster (its cluster id
 * changed). It was restored from a snapshot or rebuilt empty. The revisions
 * the watch would resume from mean something else now: re-read, then `reset`
 * past the read.
 */
export interface Rewound {
  readonly type: 'rewound';
  /** The server's revision when it was noticed. */
  readonly serverRevision: number;
  readonly why: string;
}

export type WatchItem = RevisionEvents | Compacted | Rewound;

/** What a response header says about the server: its revision and cluster. */
export interface ServerMark {
  readonly revision: number;
  readonly clusterId: string;
  /** The raft term: it never goes down in one cluster's history (0: unknown). */
  readonly raftTerm: number;
}

type Header = { revision?: unknown; cluster_id?: unknown; raft_term?: unknown } | null | undefined;

/** The mark of a response header (`header` may be missing on odd responses). */
export function markOf(header: Header): ServerMark {
  return {
    revision: num(header?.revision as string),
    clusterId: String(header?.cluster_id ?? ''),
    raftTerm: num(header?.raft_term as string),
  };
}

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
  /** The cluster this watch's revisions belong to ('' until known). */
  private clusterId: string;
  /** The highest raft term seen. */
  private raftTerm: number;
  /** A header said the server is behind the cursor: confirm with a linearizable read before acting on it. */
  private suspect: ServerMark | undefined;
  /** Set once the first stream was created on the server. */
  connectedOnce = false;

  constructor(
    private readonly host: WatchHost,
    private readonly target: WatchTarget,
    startRevision: number,
    private readonly signal: AbortSignal,
    /** The header of the read `startRevision` came from, when known. */
    from?: ServerMark,
  ) {
    this.nextRevision = startRevision;
    this.clusterId = known(from?.clusterId);
    this.raftTerm = from?.raftTerm ?? 0;
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
      if (this.suspect) {
        const rewound = await this.confirmRewound(this.suspect);
        if (rewound) return rewound;
        continue;
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

  /** Starts over at `revision` (after a compaction or a rewound server was handled by re-reading). */
  reset(revision: number, from?: ServerMark): void {
    this.drop();
    this.ready.length = 0;
    this.suspect = undefined;
    this.nextRevision = revision;
    if (from) {
      if (known(from.clusterId) !== '') this.clusterId = from.clusterId;
      if (from.raftTerm > 0) this.raftTerm = from.raftTerm;
    }
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

  /**
   * Every response header (the `created` one on each (re)connect above all)
   * is checked against the cursor: another cluster id, or a revision below
   * the last one handed out, means the server's history was replaced.
   */
  private check(mark: ServerMark): Rewound | undefined {
    const clusterId = known(mark.clusterId);
    if (clusterId !== '') {
      if (this.clusterId === '') this.clusterId = clusterId;
      else if (clusterId !== this.clusterId) {
        return this.rewound(mark, `the cluster id changed from ${this.clusterId} to ${clusterId}`);
      }
    }
    // The server has served revision nextRevision - 1 to this watch (or its read): it can never be
    // below it, nor can the raft term go down. A member that lags behind the leader can say so for a
    // moment, so it is confirmed with a linearizable read before acting on it.
    if (
      (mark.revision > 0 && mark.revision < this.nextRevision - 1) ||
      (mark.raftTerm > 0 && mark.raftTerm < this.raftTerm)
    ) {
      this.suspect = mark;
    } else if (mark.raftTerm > this.raftTerm) {
      this.raftTerm = mark.raftTerm;
    }
    return undefined;
  }

  private rewound(mark: ServerMark, why: string): Rewound {
    this.drop();
    this.ready.length = 0;
    this.suspect = undefined;
    return { type: 'rewound', serverRevision: mark.revision, why };
  }

  /** A linearizable read: is the cluster's revision really below the cursor (or another cluster's)? */
  private async confirmRewound(suspect: ServerMark): Promise<Rewound | undefined> {
    let mark: ServerMark;
    try {
      const response = await this.bounded(
        this.host.client.kv.range({ key: this.target.key, count_only: true }),
      );
      mark = markOf(response.header);
    } catch (error) {
      if (this.signal.aborted || this.closed) throw abortError(this.signal);
      this.drop();
      await this.recover(error);
      return undefined;
    }
    this.suspect = undefined;
    const clusterId = known(mark.clusterId);
    if (clusterId !== '' && this.clusterId !== '' && clusterId !== this.clusterId) {
      return this.rewound(mark, `the cluster id changed from ${this.clusterId} to ${clusterId}`);
    }
    if (mark.revision < this.nextRevision - 1) {
      return this.rewound(
        mark,
        `the server is at revision ${mark.revision}, this watch had seen ${this.nextRevision - 1} (a watch header said ${suspect.revision})`,
      );
    }
    if (mark.raftTerm > 0 && mark.raftTerm < this.raftTerm) {
      return this.rewound(mark, `the raft term went down from ${this.raftTerm} to ${mark.raftTerm}`);
    }
    if (mark.raftTerm > this.raftTerm) this.raftTerm = mark.raftTerm;
    return undefined;
  }

  private handle(response: IWatchResponse): WatchItem | undefined {
    const rewound = this.check(markOf(response.header));
    if (rewound) return rewound;
    if (this.suspect) {
      // Hold the events back until the read says whether they belong to this history.
      this.drop();
      this.ready.length = 0;
      return undefined;
    }
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

/** A cluster id, or '' when the header did not carry one. */
function known(clusterId: string | undefined): string {
  return clusterId === undefined || clusterId === '0' ? '' : clusterId;
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
