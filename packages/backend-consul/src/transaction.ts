import { describeValue, InvalidArgumentError, KeyModifiedError, type KVPair, type Value } from '@kv/core';

/** One operation of Consul's `/v1/txn`, as sent. */
export type TxnOp = {
  KV: {
    Verb:
      | 'set'
      | 'cas'
      | 'lock'
      | 'unlock'
      | 'get'
      | 'get-tree'
      | 'delete'
      | 'delete-tree'
      | 'delete-cas'
      | 'check-index'
      | 'check-session'
      | 'check-not-exists';
    Key: string;
    Value?: string;
    Flags?: number;
    Index?: number;
    Session?: string;
  };
};

/** One result of `/v1/txn`: the entry a write or get touched (a write's has no value). */
export interface TxnResult {
  KV?: {
    Key: string;
    Value: string | null;
    Flags: number;
    Session?: string;
    LockIndex: number;
    CreateIndex: number;
    ModifyIndex: number;
  };
}

/** Consul's limit on the operations of one transaction. */
export const MAX_TXN_OPS = 64;

export interface TransactionHost {
  fullKey(key: string): string;
  fullDir(dir: string): string;
  checkValue(value: Value): Uint8Array;
  userKey(fullKey: string): string;
  run(
    operation: string,
    ops: readonly TxnOp[],
  ): Promise<TxnResult[] | { failed: readonly { OpIndex: number; What: string }[] }>;
}

/** What a committed transaction wrote and read, by store key. */
export interface ConsulTxnResult {
  /** The new `lastIndex` of each key the transaction put. */
  readonly written: ReadonlyMap<string, number>;
  /** The pairs `get` operations read (absent keys fail the transaction, as in Consul). */
  readonly read: ReadonlyMap<string, KVPair>;
}

/**
 * An atomic batch on Consul's `/v1/txn`: every operation applies, or none
 * does. Keys are store keys (the prefix is applied). A failed check rejects
 * `commit()` with `KeyModifiedError`, whose message names the operation.
 *
 * ```ts
 * await store.transaction().check('a', pair.lastIndex).put('a', 'new').delete('b').commit();
 * ```
 */
export class ConsulTransaction {
  private readonly host: TransactionHost;
  private readonly ops: TxnOp[] = [];

  /** @internal Use `ConsulStore.transaction()`. */
  constructor(host: TransactionHost) {
    this.host = host;
  }

  private add(op: TxnOp): this {
    if (this.ops.length >= MAX_TXN_OPS) {
      throw new InvalidArgumentError(`a Consul transaction holds at most ${MAX_TXN_OPS} operations`);
    }
    this.ops.push(op);
    return this;
  }

  /** Writes `value` at `key` (replacing any ttl or session it had). */
  put(key: string, value: Value): this {
    const Key = this.host.fullKey(key);
    const Value = Buffer.from(this.host.checkValue(value)).toString('base64');
    this.add({ KV: { Verb: 'delete', Key } });
    return this.add({ KV: { Verb: 'set', Key, Value, Flags: 0 } });
  }

  /** Writes only if `key` is at `lastIndex` (`null`: only if absent). */
  cas(key: string, value: Value, lastIndex: number | null): this {
    const Key = this.host.fullKey(key);
    const Value = Buffer.from(this.host.checkValue(value)).toString('base64');
    if (lastIndex === null) return this.add({ KV: { Verb: 'cas', Key, Value, Index: 0, Flags: 0 } });
    this.checkIndex(lastIndex);
    return this.add({ KV: { Verb: 'cas', Key, Value, Index: lastIndex, Flags: 0 } });
  }

  /** Fails the transaction unless `key` is at `lastIndex`. */
  check(key: string, lastIndex: number): this {
    this.checkIndex(lastIndex);
    return this.add({ KV: { Verb: 'check-index', Key: this.host.fullKey(key), Index: lastIndex } });
  }

  /** Fails the transaction if `key` exists. */
  checkAbsent(key: string): this {
    return this.add({ KV: { Verb: 'check-not-exists', Key: this.host.fullKey(key) } });
  }

  /** Reads `key` inside the transaction (a missing key fails it). */
  get(key: string): this {
    return this.add({ KV: { Verb: 'get', Key: this.host.fullKey(key) } });
  }

  delete(key: string): this {
    return this.add({ KV: { Verb: 'delete', Key: this.host.fullKey(key) } });
  }

  /** Deletes `dir` and everything below `dir/` (never `dirx`). */
  deleteTree(dir: string): this {
    const Key = this.host.fullDir(dir);
    if (Key === '') throw new InvalidArgumentError('deleteTree of the whole store is refused');
    this.add({ KV: { Verb: 'delete', Key } });
    return this.add({ KV: { Verb: 'delete-tree', Key: `${Key}/` } });
  }

  /** Deletes `key` only if it is at `lastIndex`. */
  deleteIf(key: string, lastIndex: number): this {
    this.checkIndex(lastIndex);
    return this.add({ KV: { Verb: 'delete-cas', Key: this.host.fullKey(key), Index: lastIndex } });
  }

  get size(): number {
    return this.ops.length;
  }

  private checkIndex(lastIndex: number): void {
    if (!Number.isSafeInteger(lastIndex) || lastIndex <= 0) {
      throw new InvalidArgumentError(`lastIndex must be a positive integer, got ${describeValue(lastIndex)}`);
    }
  }

  async commit(): Promise<ConsulTxnResult> {
    if (this.ops.length === 0) return { written: new Map(), read: new Map() };
    const outcome = await this.host.run('transaction', this.ops);
    if (!Array.isArray(outcome)) {
      const first = outcome.failed[0];
      const op = first ? this.ops[first.OpIndex] : undefined;
      const key = op ? this.host.userKey(op.KV.Key) : '';
      throw new KeyModifiedError(key, {
        cause: new Error(outcome.failed.map((e) => `op ${e.OpIndex}: ${e.What}`).join('; ')),
      });
    }
    const written = new Map<string, number>();
    const read = new Map<string, KVPair>();
    for (const result of outcome) {
      const kv = result.KV;
      if (!kv) continue;
      const key = this.host.userKey(kv.Key);
      if (kv.Value !== null && kv.Value !== undefined) {
        read.set(key, {
          key,
          value: new Uint8Array(Buffer.from(kv.Value, 'base64')),
          lastIndex: kv.ModifyIndex,
        });
      } else {
        written.set(key, kv.ModifyIndex);
      }
    }
    return { written, read };
  }
}
