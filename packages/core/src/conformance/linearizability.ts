/**
 * A linearizability checker for histories of a key/value store, in the
 * manner of Wing & Gong's search with Lowe's memoisation (as Knossos and
 * porcupine do it): find an order of the operations that respects real time
 * (an operation that returned before another was invoked comes first) and
 * that a sequential model accepts.
 *
 * Linearizability is local, so a key/value history is checked key by key.
 * An operation whose outcome is unknown (it timed out) may have taken effect
 * at any time after its invocation, or never.
 */

/** One operation of a history; times come from one monotonic clock. */
export interface Operation<I, O> {
  readonly client: number;
  readonly input: I;
  /** `undefined`: the outcome is unknown (timed out, connection lost). */
  readonly output: O | undefined;
  /** When it was invoked. */
  readonly call: number;
  /** When it returned; `Infinity` when the outcome is unknown. */
  readonly ret: number;
}

/** A sequential specification. `step` says whether `output` is what `input` gives in `state`, and the next state. */
export interface Model<S, I, O> {
  readonly init: S;
  /** `output` is `undefined` for an operation of unknown outcome: then any outcome is acceptable. */
  step(state: S, input: I, output: O | undefined): { ok: boolean; next: S };
  /** A string that identifies a state, for memoisation. */
  key(state: S): string;
}

export interface CheckResult {
  readonly ok: boolean;
  /** Operations searched. */
  readonly operations: number;
  /** States the search visited (memoised). */
  readonly visited: number;
  /** Present when the search gave up: the history was too large to decide. */
  readonly inconclusive?: string;
}

/** Decides whether `history` is linearizable under `model`. */
export function checkLinearizable<S, I, O>(
  model: Model<S, I, O>,
  history: readonly Operation<I, O>[],
  limit = 2_000_000,
): CheckResult {
  const ops = [...history].sort((a, b) => a.call - b.call);
  const n = ops.length;
  const seen = new Set<string>();
  const done = new Uint8Array(n);
  let visited = 0;
  let inconclusive: string | undefined;
  const known = ops.filter((op) => op.ret !== Number.POSITIVE_INFINITY).length;

  const search = (state: S, linearizedKnown: number): boolean => {
    if (linearizedKnown === known) return true; // unknown operations may never have happened
    if (++visited > limit) {
      inconclusive = `gave up after ${limit} states`;
      return false;
    }
    const memo = `${model.key(state)}|${bitsKey(done)}`;
    if (seen.has(memo)) return false;
    seen.add(memo);
    // Whatever goes next was invoked before the earliest return of what is still pending.
    let horizon = Number.POSITIVE_INFINITY;
    for (let i = 0; i < n; i++) {
      const op = ops[i] as Operation<I, O>;
      if (!done[i] && op.ret < horizon) horizon = op.ret;
    }
    for (let i = 0; i < n; i++) {
      const op = ops[i] as Operation<I, O>;
      if (op.call > horizon) break; // sorted by call
      if (done[i]) continue;
      const { ok, next } = model.step(state, op.input, op.output);
      if (!ok) continue;
      done[i] = 1;
      const found = search(next, linearizedKnown + (op.ret === Number.POSITIVE_INFINITY ? 0 : 1));
      done[i] = 0;
      if (found) return true;
      if (inconclusive) return false;
    }
    return false;
  };

  const ok = search(model.init, 0);
  return inconclusive ? { ok: false, operations: n, visited, inconclusive } : { ok, operations: n, visited };
}

function bitsKey(bits: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bits.length; i += 16) {
    let word = 0;
    for (let j = i; j < Math.min(i + 16, bits.length); j++) word = word * 2 + (bits[j] as number);
    out += String.fromCharCode(word + 1);
  }
  return out;
}

// ---- the key/value model: one register per key, values unique per write ----

/** What a client did to one key. Values are unique per write, so a CAS's expected pair is named by its value. */
export type KVInput =
  | { readonly f: 'get' }
  | { readonly f: 'put'; readonly value: string }
  | { readonly f: 'delete' }
  /** `expected: null`: create-only. */
  | { readonly f: 'cas'; readonly expected: string | null; readonly value: string }
  | { readonly f: 'cad'; readonly expected: string };

/** A get's value (`null`: missing), or whether a CAS / conditional delete succeeded; `true` for put and delete. */
export type KVOutput = string | null | boolean;

/** The key's value, or `null` while it does not exist. */
export const kvRegister: Model<string | null, KVInput, KVOutput> = {
  init: null,
  key: (state) => (state === null ? '\u0000' : `=${state}`),
  step(state, input, output) {
    switch (input.f) {
      case 'get':
        return { ok: output === undefined || output === state, next: state };
      case 'put':
        return { ok: true, next: input.value };
      case 'delete':
        return { ok: true, next: null };
      case 'cas': {
        const applies = state === input.expected;
        if (output === undefined) return { ok: true, next: applies ? input.value : state };
        return { ok: output === applies, next: applies ? input.value : state };
      }
      case 'cad': {
        const applies = state === input.expected;
        if (output === undefined) return { ok: true, next: applies ? null : state };
        return { ok: output === applies, next: applies ? null : state };
      }
    }
  },
};

/** A key/value history: each operation names its key. */
export type KVOperation = Operation<KVInput, KVOutput> & { readonly key: string };

/** Checks a key/value history key by key. */
export function checkKVHistory(
  history: readonly KVOperation[],
): CheckResult & { readonly failedKey?: string } {
  const byKey = new Map<string, KVOperation[]>();
  for (const op of history) {
    const list = byKey.get(op.key) ?? [];
    list.push(op);
    byKey.set(op.key, list);
  }
  let operations = 0;
  let visited = 0;
  for (const [key, ops] of byKey) {
    const result = checkLinearizable(kvRegister, ops);
    operations += result.operations;
    visited += result.visited;
    if (!result.ok) {
      return result.inconclusive
        ? { ok: false, operations, visited, failedKey: key, inconclusive: result.inconclusive }
        : { ok: false, operations, visited, failedKey: key };
    }
  }
  return { ok: true, operations, visited };
}
