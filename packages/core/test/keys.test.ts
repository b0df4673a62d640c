import fc from 'fast-check';
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

  it('agrees with the plain reading of the rules on any string (one-pass check vs slice, regex, split)', () => {
    // The rules as the contract states them, written the obvious way.
    const byTheRules = (key: string): string => {
      const normalised = key.replace(/^\/+|\/+$/g, '');
      if (normalised === '') return 'error: the key is empty';
      // biome-ignore lint/suspicious/noControlCharactersInRegex: the characters the rules reject
      if (/[\u0000-\u001f\u007f]/.test(normalised)) return 'error: control';
      if (!normalised.isWellFormed()) return 'error: surrogate';
      // The first bad segment names the error.
      for (const segment of normalised.split('/')) {
        if (segment === '') return 'error: empty segment';
        if (segment === '.' || segment === '..') return 'error: dot segment';
      }
      return normalised;
    };
    const outcome = (key: string): string => {
      try {
        return normalizeKey(key);
      } catch (error) {
        expect(InvalidKeyError.isInstance(error)).toBe(true);
        const message = (error as Error).message;
        if (/empty$/.test(message)) return 'error: the key is empty';
        if (/control/.test(message)) return 'error: control';
        if (/surrogate/.test(message)) return 'error: surrogate';
        if (/empty path segment/.test(message)) return 'error: empty segment';
        if (/segments are not allowed/.test(message)) return 'error: dot segment';
        return `error: ${message}`;
      }
    };
    // Strings of the characters that matter: slashes, dots, controls, surrogates (paired and lone).
    const unit = fc.constantFrom(
      '/',
      '.',
      'a',
      'é',
      '\u0000',
      '\u001f',
      '\u007f',
      '\ud800',
      '\udc00',
      '🔑',
      ' ',
    );
    fc.assert(
      fc.property(fc.array(unit, { maxLength: 12 }), (units) => {
        const key = units.join('');
        expect(outcome(key)).toBe(byTheRules(key));
      }),
      { numRuns: 20_000 },
    );
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
