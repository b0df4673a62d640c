import type { CallOptions, KVPair, Value } from '@kv/core';

/** A pair with etcd's own revision data. `lastIndex` is `modRevision`. */
export interface EtcdKeyValue extends KVPair {
  /** Revision of the write that created this key (since it last did not exist). */
  readonly createRevision: number;
  /** Revision of the last write of this key (= `lastIndex`). */
  readonly modRevision: number;
  /** Number of writes since the key was created (1 after the create). */
  readonly version: number;
  /** Lease the key is attached to, as a decimal string; `'0'` for none. */
  readonly lease: string;
}

export type CompareOperator = '==' | '!=' | '<' | '>';

/** A condition of a transaction, on one key. Build them with `compare.*`. */
export type EtcdCompare =
  | {
      readonly key: string;
      readonly target: 'value';
      readonly operator: CompareOperator;
      readonly value: Value;
    }
  | {
      readonly key: string;
      readonly target: 'version' | 'createRevision' | 'modRevision';
      readonly operator: CompareOperator;
      readonly value: number;
    }
  | {
      readonly key: string;
      readonly target: 'lease';
      readonly operator: CompareOperator;
      readonly value: string;
    };

/**
 * Conditions for `transaction().if(...)`. On a missing key, `version`,
 * `createRevision` and `modRevision` are 0 and the lease is `'0'`; a `value`
 * compare on a missing key is always false (etcd's rule).
 *
 * ```ts
 * compare.createRevision('jobs/a', '==', 0)   // jobs/a does not exist
 * compare.value('config/mode', '==', 'blue')
 * ```
 */
export const compare = {
  value: (key: string, operator: CompareOperator, value: Value): EtcdCompare => ({
    key,
    target: 'value',
    operator,
    value,
  }),
  version: (key: string, operator: CompareOperator, version: number): EtcdCompare => ({
    key,
    target: 'version',
    operator,
    value: version,
  }),
  createRevision: (key: string, operator: CompareOperator, revision: number): EtcdCompare => ({
    key,
    target: 'createRevision',
    operator,
    value: revision,
  }),
  modRevision: (key: string, operator: CompareOperator, revision: number): EtcdCompare => ({
    key,
    target: 'modRevision',
    operator,
    value: revision,
  }),
  lease: (key: string, operator: CompareOperator, lease: string): EtcdCompare => ({
    key,
    target: 'lease',
    operator,
    value: lease,
  }),
} as const;

/** An operation of a transaction. Build them with `op.*`. */
export type EtcdOp =
  | { readonly type: 'put'; readonly key: string; readonly value: Value; readonly lease?: string }
  | { readonly type: 'get'; readonly key: string }
  | { readonly type: 'list'; readonly directory: string }
  | { readonly type: 'delete'; readonly key: string }
  | { readonly type: 'deleteTree'; readonly directory: string };

/**
 * Operations for `transaction().then(...)` / `.else(...)`. Keys are store
 * keys (the prefix is applied); a transaction may not write one key twice.
 */
export const op = {
  /** Writes `value`; with `lease`, attached to that lease (see `grantLease`), else permanent. */
  put: (key: string, value: Value, options: { lease?: string } = {}): EtcdOp =>
    options.lease === undefined
      ? { type: 'put', key, value }
      : { type: 'put', key, value, lease: options.lease },
  get: (key: string): EtcdOp => ({ type: 'get', key }),
  /** Every pair below `directory`, like `Store.list`. */
  list: (directory: string): EtcdOp => ({ type: 'list', directory }),
  delete: (key: string): EtcdOp => ({ type: 'delete', key }),
  /** `directory` and everything below it, like `Store.deleteTree`. */
  deleteTree: (directory: string): EtcdOp => ({ type: 'deleteTree', directory }),
} as const;

export type EtcdOpResult =
  | { readonly type: 'put'; readonly key: string; readonly revision: number }
  | { readonly type: 'get'; readonly key: string; readonly pair: EtcdKeyValue | null }
  | { readonly type: 'list'; readonly directory: string; readonly pairs: EtcdKeyValue[] }
  | { readonly type: 'delete'; readonly key: string; readonly deleted: number }
  | { readonly type: 'deleteTree'; readonly directory: string; readonly deleted: number };

export interface EtcdTxnResult {
  /** True when every condition held and the `then` branch ran; false: the `else` branch ran. */
  readonly succeeded: boolean;
  /** The store's revision after the transaction (its writes have this revision). */
  readonly revision: number;
  /** One result per operation of the branch that ran, in order. */
  readonly results: EtcdOpResult[];
}

export interface TxnSpec {
  readonly compares: readonly EtcdCompare[];
  readonly success: readonly EtcdOp[];
  readonly failure: readonly EtcdOp[];
}

/**
 * An etcd transaction: if every condition holds, the `then` operations run,
 * else the `else` operations, all in one atomic step. Nothing is sent until
 * `commit()`. It is not a promise: `await` the `commit()`.
 *
 * ```ts
 * const { succeeded } = await store
 *   .transaction()
 *   .if(compare.value('config/mode', '==', 'blue'))
 *   .then(op.put('config/mode', 'green'), op.put('config/changed', 'yes'))
 *   .else(op.get('config/mode'))
 *   .commit();
 * ```
 */
export class EtcdTransaction {
  private readonly compares: EtcdCompare[] = [];
  private readonly success: EtcdOp[] = [];
  private readonly failure: EtcdOp[] = [];
  private readonly run: (spec: TxnSpec, options?: CallOptions) => Promise<EtcdTxnResult>;

  /** @internal Use `EtcdStore.transaction()`. */
  constructor(run: (spec: TxnSpec, options?: CallOptions) => Promise<EtcdTxnResult>) {
    this.run = run;
  }

  /** Adds conditions; all must hold. */
  if(...compares: EtcdCompare[]): this {
    this.compares.push(...compares);
    return this;
  }

  /** Operations when every condition holds. */
  // biome-ignore lint/suspicious/noThenProperty: the etcd transaction's own if/then/else vocabulary; calling it as a promise fails loudly
  then(...ops: EtcdOp[]): this {
    notAPromise(ops);
    this.success.push(...ops);
    return this;
  }

  /** Operations when a condition does not hold. */
  else(...ops: EtcdOp[]): this {
    this.failure.push(...ops);
    return this;
  }

  /** Sends the transaction. */
  commit(options?: CallOptions): Promise<EtcdTxnResult> {
    return this.run(
      { compares: [...this.compares], success: [...this.success], failure: [...this.failure] },
      options,
    );
  }
}

function notAPromise(ops: unknown[]): void {
  if (ops.some((o) => typeof o === 'function')) {
    throw new TypeError('an EtcdTransaction is not a promise: await its commit()');
  }
}
