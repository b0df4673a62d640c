import { describe, expect, it } from 'vitest';
import { diffListings, type KVPair } from '../src/index.js';

const pair = (key: string, lastIndex: number): KVPair => ({ key, value: new Uint8Array(0), lastIndex });

describe('diffListings', () => {
  it('is empty between equal listings', () => {
    expect(diffListings([], [])).toEqual([]);
    expect(diffListings([pair('a', 1)], [pair('a', 1)])).toEqual([]);
  });

  it('a pair whose lastIndex came back for another value (a restored server) is a put', () => {
    const v = (text: string, lastIndex: number): KVPair => ({
      key: 'a',
      value: new TextEncoder().encode(text),
      lastIndex,
    });
    expect(diffListings([v('old', 5)], [v('new', 5)])).toEqual([{ type: 'put', pair: v('new', 5) }]);
    expect(diffListings([v('same', 5)], [v('same', 5)])).toEqual([]);
  });

  it('lists every pair of the first listing as a put', () => {
    const after = [pair('a', 1), pair('b/c', 2)];
    expect(diffListings([], after)).toEqual(after.map((p) => ({ type: 'put', pair: p })));
  });

  it('gives puts for new and rewritten keys and deletes for vanished ones, sorted by key', () => {
    const before = [pair('a', 1), pair('b', 2), pair('c', 3), pair('e', 5)];
    const after = [pair('a', 1), pair('b', 7), pair('d', 8), pair('e', 5), pair('f', 9)];
    expect(diffListings(before, after)).toEqual([
      { type: 'put', pair: pair('b', 7) },
      { type: 'delete', key: 'c' },
      { type: 'put', pair: pair('d', 8) },
      { type: 'put', pair: pair('f', 9) },
    ]);
  });

  it('a rewrite of the same value (new lastIndex) is a put', () => {
    expect(diffListings([pair('a', 1)], [pair('a', 2)])).toEqual([{ type: 'put', pair: pair('a', 2) }]);
  });

  it('everything deleted', () => {
    expect(diffListings([pair('a', 1), pair('a/b', 2)], [])).toEqual([
      { type: 'delete', key: 'a' },
      { type: 'delete', key: 'a/b' },
    ]);
  });

  it('orders keys by UTF-16 code units, as listings are sorted', () => {
    const before = [pair('a-b', 1), pair('a/x', 2), pair('🔑', 3)];
    const after = [pair('a/x', 2), pair('🔑', 4), pair('ｱ', 5)];
    expect(diffListings(before, after)).toEqual([
      { type: 'delete', key: 'a-b' },
      { type: 'put', pair: pair('🔑', 4) },
      { type: 'put', pair: pair('ｱ', 5) },
    ]);
  });
});
