import { describe, expect, it } from 'vitest';
import {
  checkKVHistory,
  checkLinearizable,
  type KVInput,
  type KVOperation,
  type KVOutput,
  kvRegister,
} from '../src/conformance/linearizability.js';

const U = Number.POSITIVE_INFINITY;
let client = 0;
/** An operation on key `k` from `call` to `ret` (U: unknown outcome). */
function op(input: KVInput, output: KVOutput | undefined, call: number, ret: number, key = 'k'): KVOperation {
  return { key, client: client++, input, output, call, ret };
}
const get = (value: string | null, call: number, ret: number) => op({ f: 'get' }, value, call, ret);
const put = (value: string, call: number, ret: number) =>
  op({ f: 'put', value }, ret === U ? undefined : true, call, ret);
const cas = (expected: string | null, value: string, ok: boolean | undefined, call: number, ret: number) =>
  op({ f: 'cas', expected, value }, ok, call, ret);

const linearizable = (history: KVOperation[]) => checkKVHistory(history).ok;

describe('linearizability checker', () => {
  it('accepts a sequential history the model allows', () => {
    expect(linearizable([put('a', 0, 1), get('a', 2, 3), cas('a', 'b', true, 4, 5), get('b', 6, 7)])).toBe(
      true,
    );
  });

  it('rejects a read of a value never written', () => {
    expect(linearizable([put('a', 0, 1), get('z', 2, 3)])).toBe(false);
  });

  it('the classic stale read: after two completed writes, a later read of the first is not linearizable', () => {
    expect(linearizable([put('1', 0, 1), put('2', 2, 3), get('1', 4, 5)])).toBe(false);
    // Overlapping the second write, reading the first is fine.
    expect(linearizable([put('1', 0, 1), put('2', 2, 5), get('1', 3, 4)])).toBe(true);
  });

  it('a read concurrent with a write may see either value, but not new then old', () => {
    expect(linearizable([put('a', 0, 10), get(null, 1, 2)])).toBe(true);
    expect(linearizable([put('a', 0, 10), get('a', 1, 2)])).toBe(true);
    expect(linearizable([put('a', 0, 10), get('a', 1, 2), get(null, 3, 4)])).toBe(false);
  });

  it('two create-only CAS cannot both succeed', () => {
    expect(linearizable([cas(null, 'a', true, 0, 10), cas(null, 'b', true, 1, 9)])).toBe(false);
    expect(linearizable([cas(null, 'a', true, 0, 10), cas(null, 'b', false, 1, 9)])).toBe(true);
  });

  it('a failed CAS whose expected value was current is not linearizable', () => {
    expect(linearizable([put('a', 0, 1), cas('a', 'b', false, 2, 3)])).toBe(false);
  });

  it('an operation of unknown outcome may have happened at any time after its call, or never', () => {
    expect(linearizable([put('x', 0, U), get('x', 5, 6)])).toBe(true);
    expect(linearizable([put('x', 0, U), get(null, 5, 6)])).toBe(true);
    expect(linearizable([put('x', 0, U), get('x', 5, 6), get(null, 7, 8)])).toBe(false);
    // It cannot have happened before it was called.
    expect(linearizable([get('x', 0, 1), put('x', 2, U)])).toBe(false);
  });

  it('a stale CAS that succeeds after a newer write is caught (a reset version counter)', () => {
    expect(
      linearizable([put('v1', 0, 1), get('v1', 2, 3), put('v2', 4, 5), cas('v1', 'stale', true, 6, 7)]),
    ).toBe(false);
  });

  it('keys are checked independently', () => {
    const history = [op({ f: 'put', value: 'a' }, true, 0, 1, 'k1'), op({ f: 'get' }, null, 2, 3, 'k2')];
    expect(checkKVHistory(history).ok).toBe(true);
    const bad = [...history, op({ f: 'get' }, null, 4, 5, 'k1')];
    expect(checkKVHistory(bad)).toMatchObject({ ok: false, failedKey: 'k1' });
  });

  it('handles a concurrent history of some size quickly, and is correct on it', () => {
    // 5 clients, 40 rounds each, writes of unique values and reads of the latest completed one.
    const ops: KVOperation[] = [];
    let t = 0;
    let last: string | null = null;
    for (let round = 0; round < 40; round++) {
      const start = t;
      const value = `r${round}`;
      ops.push(put(value, start, start + 10));
      for (let c = 0; c < 4; c++) ops.push(get(c % 2 === 0 ? last : value, start + 1 + c, start + 9));
      last = value;
      t += 11;
    }
    const result = checkLinearizable(kvRegister, ops);
    expect(result.ok).toBe(true);
    expect(result.inconclusive).toBeUndefined();
  });
});
