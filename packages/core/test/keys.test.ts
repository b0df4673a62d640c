import { describe, expect, it } from 'vitest';
import {
  compareKeys,
  InvalidKeyError,
  isBelow,
  joinKey,
  normalizeKey,
  stripPrefix,
  toBytes,
} from '../src/index.js';

describe('normalizeKey', () => {
  it.each([
    ['a', 'a'],
    ['/a/b/', 'a/b'],
    ['//a//', 'a'],
    ['a/b', 'a/b'],
    ['.a/a./a..b/...', '.a/a./a..b/...'],
    ['ключ/日本/🔑', 'ключ/日本/🔑'],
    ['a b/%2F/?#', 'a b/%2F/?#'],
    ['\u0080\u00a0\u2028', '\u0080\u00a0\u2028'],
  ])('%j is %j', (key, normal) => {
    expect(normalizeKey(key)).toBe(normal);
  });

  it.each([
    '',
    '/',
    '///',
    'a//b',
    '.',
    '..',
    'a/./b',
    'a/../b',
    'a/.',
    '../a',
    'a\u0000b',
    'a\u001fb',
    'a\u007fb',
    '\n',
    'a\tb',
    'lone \ud800 surrogate',
  ])('rejects %j with InvalidKeyError', (key) => {
    let thrown: unknown;
    try {
      normalizeKey(key);
    } catch (error) {
      thrown = error;
    }
    expect(InvalidKeyError.isInstance(thrown)).toBe(true);
    expect((thrown as InvalidKeyError).key).toBe(key);
  });

  it('allows the empty directory only when asked', () => {
    expect(normalizeKey('', true)).toBe('');
    expect(normalizeKey('/', true)).toBe('');
    expect(() => normalizeKey('a//b', true)).toThrow(InvalidKeyError);
  });

  it('rejects a non-string key with InvalidKeyError, not a TypeError', () => {
    expect(() => normalizeKey(42 as unknown as string)).toThrow(InvalidKeyError);
    expect(() => normalizeKey(undefined as unknown as string)).toThrow(InvalidKeyError);
  });
});

describe('key helpers', () => {
  it('isBelow: strictly below, on segment boundaries', () => {
    expect(isBelow('a', 'a/b')).toBe(true);
    expect(isBelow('a', 'a/b/c')).toBe(true);
    expect(isBelow('a', 'a')).toBe(false);
    expect(isBelow('a', 'ab/c')).toBe(false);
    expect(isBelow('a', 'ab')).toBe(false);
    expect(isBelow('a/b', 'a/bc')).toBe(false);
    expect(isBelow('', 'x')).toBe(true);
    expect(isBelow('', '')).toBe(false);
  });

  it('joinKey and stripPrefix are inverse', () => {
    expect(joinKey('', 'a/b')).toBe('a/b');
    expect(joinKey('p', '')).toBe('p');
    expect(joinKey('p/q', 'a')).toBe('p/q/a');
    expect(stripPrefix('p/q', 'p/q/a')).toBe('a');
    expect(stripPrefix('p/q', 'p/q')).toBe('');
    expect(stripPrefix('', 'a')).toBe('a');
  });

  it('compareKeys orders by UTF-16 code units, like Array.prototype.sort', () => {
    const keys = ['b', 'a/x', 'a-b', 'a', 'é', '🔑', 'ｱ', 'Z'];
    expect([...keys].sort(compareKeys)).toEqual([...keys].sort());
    expect(compareKeys('a', 'a')).toBe(0);
    expect(compareKeys('🔑', 'ｱ')).toBeLessThan(0);
  });

  it('toBytes: strings as UTF-8, bytes as they are, anything else a TypeError', () => {
    expect([...toBytes('é')]).toEqual([0xc3, 0xa9]);
    const bytes = new Uint8Array([1, 2]);
    expect(toBytes(bytes)).toBe(bytes);
    expect(() => toBytes(42)).toThrow(TypeError);
    expect(() => toBytes(null)).toThrow(TypeError);
  });
});
