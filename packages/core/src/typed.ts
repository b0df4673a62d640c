import { InvalidValueError, KVError } from './errors.js';
import type {
  CallOptions,
  KVPair,
  Lock,
  LockOptions,
  ReadOptions,
  Store,
  Value,
  WriteOptions,
} from './types.js';

/**
 * The Standard Schema interface (https://standardschema.dev, v1), declared
 * here so no schema library is a dependency: zod, valibot, arktype and others
 * implement it, and any of their schemas can be passed to `json()`.
 */
export interface StandardSchemaV1<Input = unknown, Output = Input> {
  readonly '~standard': {
    readonly version: 1;
    readonly vendor: string;
    readonly validate: (
      value: unknown,
    ) => StandardSchemaV1.Result<Output> | Promise<StandardSchemaV1.Result<Output>>;
    readonly types?: { readonly input: Input; readonly output: Output } | undefined;
  };
}

export declare namespace StandardSchemaV1 {
  type Result<Output> =
    | { readonly value: Output; readonly issues?: undefined }
    | { readonly issues: ReadonlyArray<Issue> };
  interface Issue {
    readonly message: string;
    readonly path?: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }> | undefined;
  }
  type InferOutput<S extends StandardSchemaV1> = NonNullable<S['~standard']['types']>['output'];
}

/**
 * Turns values of `T` into stored bytes and back. `decode` (and `encode`)
 * throw for a value that is not a valid `T`; the typed store turns that
 * into an `InvalidValueError` naming the key.
 */
export interface Codec<T> {
  encode(value: T): Value | Promise<Value>;
  decode(bytes: Uint8Array): T | Promise<T>;
}

/** Thrown by a codec for a value that does not validate; `issues` are shown in the `InvalidValueError`. */
export class CodecError extends Error {
  readonly issues: readonly string[];
  constructor(issues: readonly string[]) {
    super(issues.join('; '));
    this.name = 'CodecError';
    this.issues = issues;
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * JSON values of `T`. With a Standard Schema (zod, valibot, arktype...),
 * every value is validated on the way in and out, and `T` is the schema's
 * output type.
 */
export function json<T>(): Codec<T>;
export function json<S extends StandardSchemaV1>(schema: S): Codec<StandardSchemaV1.InferOutput<S>>;
export function json(schema?: StandardSchemaV1): Codec<unknown> {
  const check = async (value: unknown): Promise<unknown> => {
    if (!schema) return value;
    const result = await schema['~standard'].validate(value);
    if (result.issues) throw new CodecError(result.issues.map(describeIssue));
    return result.value;
  };
  return {
    async encode(value) {
      const valid = await check(value);
      let text: string | undefined;
      try {
        text = JSON.stringify(valid);
      } catch (error) {
        throw new CodecError([`not serialisable as JSON: ${(error as Error).message}`]);
      }
      if (text === undefined) throw new CodecError([`${typeof valid} is not a JSON value`]);
      return encoder.encode(text);
    },
    async decode(bytes) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(decoder.decode(bytes));
      } catch (error) {
        throw new CodecError([`stored bytes are not JSON: ${(error as Error).message}`]);
      }
      return check(parsed);
    },
  };
}

function describeIssue(issue: StandardSchemaV1.Issue): string {
  const path = issue.path
    ?.map((part) => String(typeof part === 'object' && part !== null ? part.key : part))
    .join('.');
  return path ? `${path}: ${issue.message}` : issue.message;
}

/** A pair whose value was decoded. */
export interface TypedPair<T> {
  readonly key: string;
  readonly value: T;
  readonly lastIndex: number;
}

export type TypedTreeChange<T> =
  | { readonly type: 'put'; readonly pair: TypedPair<T> }
  | { readonly type: 'delete'; readonly key: string };

export interface TypedTreeEvent<T> {
  readonly pairs: TypedPair<T>[];
  readonly changes: TypedTreeChange<T>[];
}

/** Anything with the key and `lastIndex` of a pair: a `KVPair` or a `TypedPair`. */
export type Previous = Pick<KVPair, 'key' | 'lastIndex'>;

/**
 * A view of a store whose values are `T`: writes encode (and validate) before
 * anything is sent and refuse a bad value with an `InvalidValueError`; reads
 * decode (and validate) what is stored, and a stored value that is not a
 * valid `T` is an `InvalidValueError` too. Keys, CAS, TTLs, watches and locks
 * are the inner store's.
 */
export class TypedStore<T> {
  readonly store: Store;
  readonly codec: Codec<T>;

  constructor(store: Store, codec: Codec<T>) {
    this.store = store;
    this.codec = codec;
  }

  /** The decoded value at `key`; `KeyNotFoundError` when absent. */
  async get(key: string, options?: ReadOptions): Promise<T> {
    return (await this.getPair(key, options)).value;
  }

  /** The decoded pair at `key`, with its `lastIndex` for `atomicPut`. */
  async getPair(key: string, options?: ReadOptions): Promise<TypedPair<T>> {
    return this.decodePair(await this.store.get(key, options));
  }

  /** The decoded pair at `key`, or `null` when it does not exist. */
  async tryGetPair(key: string, options?: ReadOptions): Promise<TypedPair<T> | null> {
    const pair = await this.store.tryGet(key, options);
    return pair === null ? null : this.decodePair(pair);
  }

  async put(key: string, value: T, options?: WriteOptions): Promise<void> {
    await this.store.put(key, await this.encode(key, value), options);
  }

  async atomicPut(
    key: string,
    value: T,
    previous: Previous | null,
    options?: WriteOptions,
  ): Promise<TypedPair<T>> {
    const bytes = await this.encode(key, value);
    const pair = await this.store.atomicPut(key, bytes, previous === null ? null : raw(previous), options);
    return { key: pair.key, value, lastIndex: pair.lastIndex };
  }

  atomicDelete(key: string, previous: Previous, options?: CallOptions): Promise<void> {
    return this.store.atomicDelete(key, raw(previous), options);
  }

  delete(key: string, options?: CallOptions): Promise<void> {
    return this.store.delete(key, options);
  }

  exists(key: string, options?: ReadOptions): Promise<boolean> {
    return this.store.exists(key, options);
  }

  async list(directory: string, options?: ReadOptions): Promise<TypedPair<T>[]> {
    const pairs = await this.store.list(directory, options);
    return Promise.all(pairs.map((pair) => this.decodePair(pair)));
  }

  deleteTree(directory: string, options?: CallOptions): Promise<void> {
    return this.store.deleteTree(directory, options);
  }

  async *watch(key: string, options?: CallOptions): AsyncGenerator<TypedPair<T> | null, void, undefined> {
    for await (const pair of this.store.watch(key, options)) {
      yield pair === null ? null : await this.decodePair(pair);
    }
  }

  async *watchTree(
    directory: string,
    options?: CallOptions,
  ): AsyncGenerator<TypedTreeEvent<T>, void, undefined> {
    for await (const event of this.store.watchTree(directory, options)) {
      const decoded = new Map<string, TypedPair<T>>();
      const pairs = await Promise.all(
        event.pairs.map(async (pair) => {
          const typed = await this.decodePair(pair);
          decoded.set(pair.key, typed);
          return typed;
        }),
      );
      const changes = event.changes.map(
        (change): TypedTreeChange<T> =>
          change.type === 'put'
            ? { type: 'put', pair: decoded.get(change.pair.key) as TypedPair<T> }
            : { type: 'delete', key: change.key },
      );
      yield { pairs, changes };
    }
  }

  /**
   * Read-modify-write with compare-and-swap, retried until it wins:
   * `update(current)` gets the decoded value (`undefined` when absent) and
   * returns the new one. Resolves to the pair written.
   */
  async update(
    key: string,
    update: (current: T | undefined) => T | Promise<T>,
    options?: WriteOptions,
  ): Promise<TypedPair<T>> {
    const read = options?.signal ? { signal: options.signal } : {};
    for (;;) {
      const current = await this.tryGetPair(key, read);
      try {
        return await this.atomicPut(key, await update(current?.value), current, options);
      } catch (error) {
        if (!KVError.isInstance(error) || !CONFLICTS.has(error.code)) throw error;
      }
    }
  }

  /** A lock whose value is a `T`. */
  async newLock(key: string, options: Omit<LockOptions, 'value'> & { value?: T } = {}): Promise<Lock> {
    const { value, ...rest } = options;
    return this.store.newLock(
      key,
      value === undefined ? rest : { ...rest, value: await this.encode(key, value) },
    );
  }

  close(): Promise<void> {
    return this.store.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.store.close();
  }

  private async encode(key: string, value: T): Promise<Value> {
    try {
      return await this.codec.encode(value);
    } catch (error) {
      throw invalid(key, error);
    }
  }

  private async decodePair(pair: KVPair): Promise<TypedPair<T>> {
    try {
      return { key: pair.key, value: await this.codec.decode(pair.value), lastIndex: pair.lastIndex };
    } catch (error) {
      throw invalid(pair.key, error);
    }
  }
}

const CONFLICTS: ReadonlySet<string> = new Set(['KEY_EXISTS', 'KEY_MODIFIED', 'KEY_NOT_FOUND']);

function invalid(key: string, error: unknown): KVError {
  if (KVError.isInstance(error)) return error;
  const issues =
    error instanceof CodecError ? error.issues : [error instanceof Error ? error.message : String(error)];
  return new InvalidValueError(key, issues, { cause: error });
}

function raw(previous: Previous): KVPair {
  return { key: previous.key, lastIndex: previous.lastIndex, value: new Uint8Array(0) };
}

/** `typed(store, json<Config>())`: a view of `store` whose values are `Config`s. */
export function typed<T>(store: Store, codec: Codec<T>): TypedStore<T> {
  return new TypedStore(store, codec);
}
