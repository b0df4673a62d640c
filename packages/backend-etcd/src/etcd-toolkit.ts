import {
  bufferView,
  type CallOptions,
  describeValue,
  InvalidArgumentError,
  isBelow,
  KeyExistsError,
  KeyModifiedError,
  KeyNotFoundError,
  type KVPair,
  type ReadOptions,
  type ResolvedConfig,
  type Value,
  type WriteOptions,
} from '@kv/core';
import type { ICompare, IKeyValue, IRequestOp, IResponseOp } from 'etcd3';
import { type EtcdOptions, settingsOf } from './etcd-config.js';
import { mapEtcdError } from './etcd-errors.js';
import { absent, bytesOf, decodeKey, dirRange, isStoreKey, keyBytes, NO_BYTES, num } from './etcd-keys.js';
import { EtcdContractStore } from './etcd-store.js';
import { keepAliveOnce } from './leases.js';
import {
  type CompareOperator,
  type EtcdCompare,
  type EtcdKeyValue,
  type EtcdOp,
  type EtcdOpResult,
  EtcdTransaction,
  type EtcdTxnResult,
  type TxnSpec,
} from './transaction.js';

export { ETCD_CAPABILITIES } from './etcd-store.js';

/** A lease granted with `grantLease`. */
export interface EtcdLease {
  /** The lease ID, a decimal string (etcd lease IDs are 64-bit). */
  readonly id: string;
  /** ms, as granted: the ttl asked for, rounded up to whole seconds (or the server's minimum). */
  readonly ttl: number;
}

export interface EtcdLeaseInfo {
  readonly id: string;
  /** ms left. */
  readonly ttl: number;
  /** ms, as granted. */
  readonly grantedTtl: number;
  /** Store keys attached to it (only those inside this store's prefix), with `keys: true`. */
  readonly keys: string[];
}

export interface EtcdStatus {
  /** Server version, e.g. `3.4.23`. */
  readonly version: string;
  /** bytes of the backend database file. */
  readonly dbSize: number;
  /** bytes of it in use. */
  readonly dbSizeInUse: number;
  /** Member ID of the leader (decimal string); `'0'` when there is none. */
  readonly leader: string;
  /** Member ID of the member that answered. */
  readonly memberId: string;
  readonly isLearner: boolean;
  readonly raftIndex: number;
  readonly raftTerm: number;
  /** The store's current revision as that member sees it. */
  readonly revision: number;
  readonly errors: string[];
}

export interface EtcdMember {
  readonly id: string;
  readonly name: string;
  readonly peerURLs: string[];
  readonly clientURLs: string[];
  readonly isLearner: boolean;
}

export interface RangeOptions extends ReadOptions {
  /** At most this many pairs. */
  limit?: number;
  /** Read the range as it was at this revision (must not be compacted). */
  revision?: number;
}

const OPERATORS: Record<CompareOperator, ICompare['result']> = {
  '==': 'Equal',
  '!=': 'NotEqual',
  '<': 'Less',
  '>': 'Greater',
};

/**
 * The etcd v3 store: the Store contract (`EtcdContractStore`, in
 * `etcd-store.ts`) plus the etcd toolkit: transactions, bulk and conditional
 * writes, an atomic move, ranges and past revisions, leases, cluster status.
 * Every toolkit call takes store keys (prefix applied, validated like the
 * Store's), is bounded by `requestTimeout` and throws `KVError`s.
 */
export class EtcdStore extends EtcdContractStore {
  /** Opens a store and makes one round trip; rejects with a `KVError` within `connectTimeout`. */
  static async open(config: ResolvedConfig & EtcdOptions): Promise<EtcdStore> {
    const settings = settingsOf(config);
    const store = new EtcdStore(config.prefix, settings);
    try {
      await store.ping();
      return store;
    } catch (error) {
      await store.close().catch(() => {});
      throw mapEtcdError(error, `connect to ${settings.hosts.join(',')}`);
    }
  }

  // ---- helpers ----

  /** A server pair as a toolkit pair, or undefined for a key outside the store or a helper key. */
  private keyValue(kv: IKeyValue): EtcdKeyValue | undefined {
    const full = decodeKey(kv.key);
    if (!isStoreKey(full) || (this.prefix !== '' && !isBelow(this.prefix, full))) return undefined;
    const modRevision = num(kv.mod_revision);
    return {
      key: this.userKey(full),
      value: bytesOf(kv.value),
      lastIndex: modRevision,
      createRevision: num(kv.create_revision),
      modRevision,
      version: num(kv.version),
      lease: kv.lease ? String(kv.lease) : '0',
    };
  }

  private keyValues(kvs: IKeyValue[]): EtcdKeyValue[] {
    const out: EtcdKeyValue[] = [];
    for (const kv of kvs) {
      const pair = this.keyValue(kv);
      if (pair) out.push(pair);
    }
    return out;
  }

  private bytes(value: Value): Buffer {
    return bufferView(this.checkValue(value));
  }

  private leaseId(lease: unknown): string {
    if (typeof lease === 'number' && Number.isSafeInteger(lease) && lease > 0) return String(lease);
    if (typeof lease !== 'string' || !/^[1-9]\d{0,18}$/.test(lease) || BigInt(lease) >= 2n ** 63n) {
      throw new InvalidArgumentError(
        `a lease ID is a positive 64-bit integer as a decimal string, got ${JSON.stringify(lease)}`,
      );
    }
    return lease;
  }

  private ttlSeconds(ttl: unknown): number {
    this.checkTtl(ttl as number, 'ttl');
    return Math.ceil((ttl as number) / 1000);
  }

  private limitOf(limit: unknown): number {
    if (limit === undefined) return 0;
    if (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit <= 0) {
      throw new InvalidArgumentError(`limit must be a positive integer, got ${describeValue(limit)}`);
    }
    return limit;
  }

  private revisionOf(revision: unknown): number {
    if (typeof revision !== 'number' || !Number.isSafeInteger(revision) || revision <= 0) {
      throw new InvalidArgumentError(`a revision is a positive integer, got ${describeValue(revision)}`);
    }
    return revision;
  }

  // ---- the toolkit ----

  /**
   * A transaction: `.if(...compares).then(...ops).else(...ops).commit()`, one
   * atomic step. Build conditions with `compare.*` and operations with `op.*`.
   */
  transaction(): EtcdTransaction {
    return new EtcdTransaction((spec, options) => this.run('transaction', options, () => this.commit(spec)));
  }

  private async commit(spec: TxnSpec): Promise<EtcdTxnResult> {
    const compare = spec.compares.map((c) => this.toCompare(c));
    const success = spec.success.map((o) => this.toOps(o));
    const failure = spec.failure.map((o) => this.toOps(o));
    const response = await this.client.kv.txn({
      compare,
      success: success.flatMap((o) => o.requests),
      failure: failure.flatMap((o) => o.requests),
    });
    const ran = response.succeeded ? success : failure;
    const results: EtcdOpResult[] = [];
    let index = 0;
    for (const o of ran) {
      const responses = response.responses.slice(index, index + o.requests.length);
      index += o.requests.length;
      results.push(o.result(responses, num(response.header.revision)));
    }
    return { succeeded: response.succeeded, revision: num(response.header.revision), results };
  }

  private toCompare(c: EtcdCompare): ICompare {
    if (typeof c !== 'object' || c === null)
      throw new InvalidArgumentError('a compare must come from compare.*');
    const key = keyBytes(this.fullKey(c.key));
    const result = OPERATORS[c.operator];
    if (!result) throw new InvalidArgumentError(`unknown compare operator ${JSON.stringify(c.operator)}`);
    switch (c.target) {
      case 'value':
        return { key, result, target: 'Value', value: this.bytes(c.value) };
      case 'version':
        return { key, result, target: 'Version', version: countOf(c.value, 'version') };
      case 'createRevision':
        return { key, result, target: 'Create', create_revision: countOf(c.value, 'createRevision') };
      case 'modRevision':
        return { key, result, target: 'Mod', mod_revision: countOf(c.value, 'modRevision') };
      case 'lease':
        return { key, result, target: 'Lease', lease: c.value === '0' ? '0' : this.leaseId(c.value) };
      default:
        throw new InvalidArgumentError(
          `unknown compare target ${JSON.stringify((c as { target: unknown }).target)}`,
        );
    }
  }

  private toOps(o: EtcdOp): {
    requests: IRequestOp[];
    result: (responses: IResponseOp[], revision: number) => EtcdOpResult;
  } {
    if (typeof o !== 'object' || o === null)
      throw new InvalidArgumentError('an operation must come from op.*');
    switch (o.type) {
      case 'put': {
        const full = this.fullKey(o.key);
        const lease = o.lease === undefined ? undefined : this.leaseId(o.lease);
        return {
          requests: [
            { request_put: { key: keyBytes(full), value: this.bytes(o.value), ...(lease ? { lease } : {}) } },
          ],
          result: (_, revision) => ({ type: 'put', key: this.userKey(full), revision }),
        };
      }
      case 'get': {
        const full = this.fullKey(o.key);
        return {
          requests: [{ request_range: { key: keyBytes(full) } }],
          result: ([response]) => {
            const kv = response?.response_range?.kvs?.[0];
            return { type: 'get', key: this.userKey(full), pair: kv ? (this.keyValue(kv) ?? null) : null };
          },
        };
      }
      case 'list': {
        const dir = this.fullDir(o.directory);
        return {
          requests: [{ request_range: dirRange(dir) }],
          result: ([response]) => ({
            type: 'list',
            directory: this.userKey(dir),
            pairs: this.keyValues(response?.response_range?.kvs ?? []),
          }),
        };
      }
      case 'delete': {
        const full = this.fullKey(o.key);
        return {
          requests: [{ request_delete_range: { key: keyBytes(full) } }],
          result: ([response]) => ({
            type: 'delete',
            key: this.userKey(full),
            deleted: num(response?.response_delete_range?.deleted),
          }),
        };
      }
      case 'deleteTree': {
        const dir = this.fullDir(o.directory);
        if (dir === this.prefix) {
          throw new InvalidArgumentError(
            'deleteTree of the whole store is refused; delete its directories one by one',
          );
        }
        return {
          requests: [
            { request_delete_range: { key: keyBytes(dir) } },
            { request_delete_range: dirRange(dir) },
          ],
          result: (responses) => ({
            type: 'deleteTree',
            directory: this.userKey(dir),
            deleted: responses.reduce((sum, r) => sum + num(r.response_delete_range?.deleted), 0),
          }),
        };
      }
      default:
        throw new InvalidArgumentError(`unknown operation ${JSON.stringify((o as { type: unknown }).type)}`);
    }
  }

  /**
   * Writes every entry in one transaction: all or nothing. With a ttl they
   * share one lease. Resolves to the revision of the write.
   */
  bulkPut(
    entries: Iterable<readonly [string, Value]> | Readonly<Record<string, Value>>,
    options?: WriteOptions,
  ): Promise<number> {
    return this.run('bulkPut', options, async (signal) => {
      const list =
        Symbol.iterator in Object(entries)
          ? [...(entries as Iterable<readonly [string, Value]>)]
          : Object.entries(entries as Record<string, Value>);
      const requests = list.map(([key, value]) => ({
        key: keyBytes(this.fullKey(key)),
        value: this.bytes(value),
      }));
      if (requests.length === 0) return 0;
      return this.withWriteLease(this.writeOptions(options, signal), async (lease) => {
        const response = await this.client.kv.txn({
          success: requests.map((r) => ({ request_put: { ...r, ...(lease ? { lease } : {}) } })),
        });
        return num(response.header.revision);
      });
    });
  }

  /** Deletes the keys (not their children) in one transaction. Resolves to how many existed. */
  bulkDelete(keys: Iterable<string>, options?: CallOptions): Promise<number> {
    return this.run('bulkDelete', options, async () => {
      const requests = [...keys].map((key) => ({
        request_delete_range: { key: keyBytes(this.fullKey(key)) },
      }));
      if (requests.length === 0) return 0;
      const response = await this.client.kv.txn({ success: requests });
      return response.responses.reduce((sum, r) => sum + num(r.response_delete_range?.deleted), 0);
    });
  }

  /** Creates the key if it does not exist. Resolves to true if it was created. */
  putIfAbsent(key: string, value: Value, options?: WriteOptions): Promise<boolean> {
    return this.run('putIfAbsent', options, async (signal) => {
      const k = keyBytes(this.fullKey(key));
      const bytes = this.bytes(value);
      return this.withWriteLease(this.writeOptions(options, signal), async (lease) => {
        const response = await this.client.kv.txn({
          compare: [absent(k)],
          success: [{ request_put: { key: k, value: bytes, ...(lease ? { lease } : {}) } }],
        });
        if (!response.succeeded && lease) throw new LeaseUnused();
        return response.succeeded;
      }).catch((error: unknown) => {
        if (error instanceof LeaseUnused) return false;
        throw error;
      });
    });
  }

  /**
   * Writes `value` only if the key holds exactly `expected` (byte for byte).
   * Resolves to true if it did. A missing key never matches.
   */
  compareAndSwap(key: string, expected: Value, value: Value, options?: WriteOptions): Promise<boolean> {
    return this.run('compareAndSwap', options, async (signal) => {
      const k = keyBytes(this.fullKey(key));
      const want = this.bytes(expected);
      const bytes = this.bytes(value);
      return this.withWriteLease(this.writeOptions(options, signal), async (lease) => {
        const response = await this.client.kv.txn({
          compare: [{ key: k, target: 'Value', result: 'Equal', value: want }],
          success: [{ request_put: { key: k, value: bytes, ...(lease ? { lease } : {}) } }],
        });
        if (!response.succeeded && lease) throw new LeaseUnused();
        return response.succeeded;
      }).catch((error: unknown) => {
        if (error instanceof LeaseUnused) return false;
        throw error;
      });
    });
  }

  /**
   * Moves a key: one transaction that writes `to` (same value, same lease)
   * and deletes `from`, on condition that `from` is unchanged since it was
   * read (re-read and retried if it changed meanwhile). `KeyNotFoundError` if
   * `from` is missing; with `overwrite: false`, `KeyExistsError` if `to`
   * exists. Resolves to the pair at `to`.
   */
  move(from: string, to: string, options?: CallOptions & { overwrite?: boolean }): Promise<EtcdKeyValue> {
    return this.run('move', options, async (signal) => {
      const source = this.fullKey(from);
      const target = this.fullKey(to);
      if (source === target) throw new InvalidArgumentError('move needs two different keys');
      const overwrite = options?.overwrite ?? true;
      const s = keyBytes(source);
      const t = keyBytes(target);
      for (let attempt = 0; ; attempt++) {
        const read = await this.client.kv.range({ key: s });
        const kv = read.kvs[0];
        if (!kv) throw new KeyNotFoundError(from);
        const lease = kv.lease && kv.lease !== '0' ? { lease: kv.lease } : {};
        const response = await this.client.kv.txn({
          compare: [
            { key: s, target: 'Mod', result: 'Equal', mod_revision: kv.mod_revision },
            ...(overwrite ? [] : [absent(t)]),
          ],
          success: [
            { request_put: { key: t, value: kv.value ?? NO_BYTES, ...lease } },
            { request_delete_range: { key: s } },
          ],
          failure: [
            { request_range: { key: s, count_only: true } },
            { request_range: { key: t, count_only: true } },
          ],
        });
        if (response.succeeded) {
          const revision = num(response.header.revision);
          return {
            key: this.userKey(target),
            value: bytesOf(kv.value),
            lastIndex: revision,
            createRevision: revision,
            modRevision: revision,
            version: 1,
            lease: kv.lease && kv.lease !== '0' ? String(kv.lease) : '0',
          };
        }
        const sourceNow = num(response.responses[0]?.response_range?.count);
        const targetNow = num(response.responses[1]?.response_range?.count);
        if (sourceNow === 0) throw new KeyNotFoundError(from);
        if (!overwrite && targetNow > 0) throw new KeyExistsError(to);
        if (signal.aborted || attempt >= 20) throw new KeyModifiedError(from);
      }
    });
  }

  /** How many keys are below `directory` (at any depth), without fetching values. */
  count(directory: string, options?: ReadOptions): Promise<number> {
    return this.run('count', options, async () => {
      const response = await this.client.kv.range({
        ...dirRange(this.fullDir(directory)),
        keys_only: true,
        ...this.readMode(options?.consistent === true),
      });
      return response.kvs.filter((kv) => isStoreKey(decodeKey(kv.key))).length;
    });
  }

  /** The keys below `directory` (at any depth) in etcd's byte order, at most `limit`, without values. */
  keys(directory: string, options?: ReadOptions & { limit?: number }): Promise<string[]> {
    return this.run('keys', options, async () => {
      const limit = this.limitOf(options?.limit);
      const range = dirRange(this.fullDir(directory));
      const out: string[] = [];
      let start = range.key;
      for (;;) {
        const page = limit === 0 ? 0 : Math.max(limit - out.length, 16);
        const response = await this.client.kv.range({
          key: start,
          range_end: range.range_end,
          keys_only: true,
          ...(page > 0 ? { limit: page } : {}),
          ...this.readMode(options?.consistent === true),
        });
        for (const kv of response.kvs) {
          const key = decodeKey(kv.key);
          if (isStoreKey(key)) out.push(this.userKey(key));
          if (limit > 0 && out.length >= limit) return out;
        }
        const last = response.kvs[response.kvs.length - 1];
        if (!response.more || !last) return out;
        start = Buffer.concat([last.key, Buffer.from([0])]);
      }
    });
  }

  /**
   * The pairs with keys in [`start`, `end`) in etcd's byte order (store keys;
   * `end` omitted: to the end of the store), optionally at a past revision.
   */
  range(start: string, end?: string, options?: RangeOptions): Promise<EtcdKeyValue[]> {
    return this.run('range', options, async () => {
      const limit = this.limitOf(options?.limit);
      const revision = options?.revision === undefined ? 0 : this.revisionOf(options.revision);
      const whole = dirRange(this.prefix);
      const from = start === '' || start === '/' ? whole.key : keyBytes(this.fullKey(start));
      const to = end === undefined ? whole.range_end : keyBytes(this.fullKey(end));
      const response = await this.client.kv.range({
        key: from,
        range_end: to,
        ...(limit > 0 ? { limit } : {}),
        ...(revision > 0 ? { revision } : {}),
        ...this.readMode(options?.consistent === true),
      });
      return this.keyValues(response.kvs);
    });
  }

  /** The key with etcd's revision data (create/mod revision, version, lease). `KeyNotFoundError` if missing. */
  getKeyValue(key: string, options?: ReadOptions): Promise<EtcdKeyValue> {
    return this.run('getKeyValue', options, async () => {
      const response = await this.client.kv.range({
        key: keyBytes(this.fullKey(key)),
        ...this.readMode(options?.consistent === true),
      });
      const pair = response.kvs[0] ? this.keyValue(response.kvs[0]) : undefined;
      if (!pair) throw new KeyNotFoundError(key);
      return pair;
    });
  }

  /**
   * The key as it was at `revision`. `KeyNotFoundError` if it did not exist
   * then; `InvalidArgumentError` if that revision was compacted or is in the future.
   */
  getAt(key: string, revision: number, options?: CallOptions): Promise<EtcdKeyValue> {
    return this.run('getAt', options, async () => {
      const response = await this.client.kv.range({
        key: keyBytes(this.fullKey(key)),
        revision: this.revisionOf(revision),
      });
      const pair = response.kvs[0] ? this.keyValue(response.kvs[0]) : undefined;
      if (!pair) throw new KeyNotFoundError(key);
      return pair;
    });
  }

  /**
   * Grants a lease of `ttl` ms (rounded up to whole seconds). With
   * `keepAlive: true` the store keeps it alive until `revokeLease` or
   * `close()`, which revokes it; otherwise it expires unless kept alive with
   * `keepAliveLease`.
   */
  grantLease(ttl: number, options?: CallOptions & { keepAlive?: boolean }): Promise<EtcdLease> {
    return this.run('grantLease', options, async () => {
      const seconds = this.ttlSeconds(ttl);
      const id = await this.grant(seconds);
      if (options?.keepAlive) {
        this.ownedLeases.add(id);
        this.keeper.add(id, seconds, () => this.ownedLeases.delete(id));
      }
      return { id, ttl: seconds * 1000 };
    });
  }

  /** One keep-alive: resolves to the ms the lease now has left. `InvalidArgumentError` if it is gone. */
  keepAliveLease(id: string, options?: CallOptions): Promise<number> {
    return this.run('keepAliveLease', options, async (signal) => {
      const seconds = await keepAliveOnce(this.client, this.leaseId(id), signal);
      if (seconds <= 0) throw new InvalidArgumentError(`lease ${id} is gone (expired or revoked)`);
      return seconds * 1000;
    });
  }

  /** Revokes a lease: every key attached to it is deleted at once. A lease already gone is fine. */
  revokeLease(id: string, options?: CallOptions): Promise<void> {
    return this.run('revokeLease', options, async () => {
      const lease = this.leaseId(id);
      this.keeper.remove(lease);
      this.ownedLeases.delete(lease);
      await this.revoke(lease);
    });
  }

  /** Writes a key attached to a lease: it is deleted when the lease expires or is revoked. */
  putWithLease(key: string, value: Value, lease: string, options?: CallOptions): Promise<KVPair> {
    return this.run('putWithLease', options, async () => {
      const full = this.fullKey(key);
      const bytes = this.bytes(value);
      const response = await this.client.kv.put({
        key: keyBytes(full),
        value: bytes,
        lease: this.leaseId(lease),
      });
      return { key: this.userKey(full), value: bytesOf(bytes), lastIndex: num(response.header.revision) };
    });
  }

  /** A lease's remaining and granted ttl (ms) and, with `keys: true`, its keys in this store; null if it is gone. */
  leaseTimeToLive(id: string, options?: CallOptions & { keys?: boolean }): Promise<EtcdLeaseInfo | null> {
    return this.run('leaseTimeToLive', options, async () => {
      const response = await this.client.leaseClient.leaseTimeToLive({
        ID: this.leaseId(id),
        keys: options?.keys === true,
      });
      const ttl = num(response.TTL);
      if (ttl < 0) return null;
      const keys: string[] = [];
      for (const raw of response.keys ?? []) {
        const full = decodeKey(raw);
        if (isStoreKey(full) && (this.prefix === '' || isBelow(this.prefix, full)))
          keys.push(this.userKey(full));
      }
      return { id: response.ID, ttl: ttl * 1000, grantedTtl: num(response.grantedTTL) * 1000, keys };
    });
  }

  /** A key's lease's time to live (whole seconds on etcd); a key without a lease has none. */
  protected override async _remainingTtl(full: string): Promise<number | undefined> {
    const response = await this.client.kv.range({ key: keyBytes(full) });
    const lease = response.kvs[0]?.lease;
    if (lease === undefined || String(lease) === '0') return undefined;
    const ttl = num((await this.client.leaseClient.leaseTimeToLive({ ID: String(lease) })).TTL);
    return ttl < 0 ? undefined : Math.max(1, ttl * 1000);
  }

  /** The IDs of every lease on the cluster. */
  leases(options?: CallOptions): Promise<string[]> {
    return this.run('leases', options, async () => {
      const response = await this.client.leaseClient.leaseLeases();
      return (response.leases ?? []).map((lease) => String(lease.ID));
    });
  }

  /** The status of the member that answers: version, database size, leader, revision. */
  status(options?: CallOptions): Promise<EtcdStatus> {
    return this.run('status', options, async () => {
      const s = await this.client.maintenance.status();
      return {
        version: s.version,
        dbSize: num(s.dbSize),
        dbSizeInUse: num(s.dbSizeInUse),
        leader: String(s.leader),
        memberId: String(s.header.member_id),
        isLearner: s.isLearner === true,
        raftIndex: num(s.raftIndex),
        raftTerm: num(s.raftTerm),
        revision: num(s.header.revision),
        errors: s.errors ?? [],
      };
    });
  }

  /** The cluster's members. */
  members(options?: CallOptions): Promise<EtcdMember[]> {
    return this.run('members', options, async () => {
      const response = await this.client.cluster.memberList({});
      return (response.members ?? []).map((m) => ({
        id: String(m.ID),
        name: m.name,
        peerURLs: m.peerURLs ?? [],
        clientURLs: m.clientURLs ?? [],
        isLearner: m.isLearner === true,
      }));
    });
  }

  /**
   * Compacts the history up to `revision`: older revisions can no longer be
   * read or watched from (watches on this store re-read and go on). With
   * `physical: true` it resolves once the space is reclaimed.
   */
  compact(revision: number, options?: CallOptions & { physical?: boolean }): Promise<void> {
    return this.run('compact', options, async () => {
      await this.client.kv.compact({
        revision: this.revisionOf(revision),
        physical: options?.physical === true,
      });
    });
  }
}

/** Internal: a conditional write that did not happen must not leave its lease behind. */
class LeaseUnused extends Error {}

function countOf(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new InvalidArgumentError(`${what} must be a non-negative integer, got ${describeValue(value)}`);
  }
  return value;
}
