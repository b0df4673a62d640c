import { expect } from 'vitest';
import { InvalidKeyError, KeyNotFoundError, type Store, ValueTooLargeError } from '../index.js';
import {
  type Define,
  expectIndex,
  expectKVError,
  expectPair,
  keys,
  range,
  sameBytes,
  text,
} from './harness.js';

/** Keys the contract rejects, on every call. */
export const INVALID_KEYS = [
  '',
  '/',
  '//',
  'a//b',
  'a/./b',
  'a/../b',
  '.',
  '..',
  'a/.',
  '../a',
  'a\u0000b',
  'a\u001fb',
  'a\u007fb',
  '\n',
];

/** Above this, the maxValueSize test round-trips a value of this size instead of maxValueSize itself. */
export const MAX_TESTED_VALUE = 64 * 1024 * 1024;
/** Above this, the over-the-limit check is left out: allocating maxValueSize + 1 bytes would be unreasonable. */
const MAX_OVERSIZE_ALLOCATION = 1024 * 1024 * 1024;

/** Keys that trip URL- and path-based backends; each must round-trip as given. */
const AWKWARD_KEYS = [
  'ключ/日本/🔑',
  'ключ/ß',
  'ключ/e\u0301',
  'special/a b',
  'special/100%',
  'special/%2F',
  'special/q?x=1&y',
  'special/h#1',
  'special/p+q',
  'special/c:d',
  'special/back\\slash',
  'special/"quote\'',
  'special/[x]{y}*',
  'special/.hidden',
  'special/a..b',
  'special/~user',
  'special/\u0080\u00a0\u2028',
  'special/\ufeff',
];

export function kvCases(define: Define): void {
  define(
    'put/get/exists/delete on k, k/, k/a/, k/a/b: a key may hold a value and children',
    { rows: ['put', 'get', 'exists', 'delete'] },
    async ({ store }) => {
      await store.put('k/', 'v1');
      expectPair(await store.get('k'), 'k', 'v1');
      expectPair(await store.get('/k/'), 'k', 'v1');
      await store.put('k/a/', 'v2');
      await store.put('/k/a/b', 'v3');
      expectPair(await store.get('k/a'), 'k/a', 'v2');
      expectPair(await store.get('k/a/b/'), 'k/a/b', 'v3');
      expectPair(await store.get('k'), 'k', 'v1');
      for (const key of ['k', 'k/', 'k/a/', 'k/a/b']) expect(await store.exists(key), key).toBe(true);
      await store.delete('k/a/');
      expect(await store.exists('k/a')).toBe(false);
      expectPair(await store.get('k/a/b'), 'k/a/b', 'v3');
      expectPair(await store.get('k'), 'k', 'v1');
      await store.delete('/k');
      expect(await store.exists('k')).toBe(false);
      expect(await store.exists('k/a/b')).toBe(true);
      await store.delete('k/a/b/');
      expect(await store.exists('k/a/b')).toBe(false);
    },
  );

  define(
    'get of a missing key is KeyNotFoundError; delete of a missing key is fine',
    { rows: ['get', 'delete', 'exists'] },
    async ({ store }) => {
      const error = await expectKVError(() => store.get('missing'), KeyNotFoundError, 'get(missing)');
      expect(error.code).toBe('KEY_NOT_FOUND');
      await expectKVError(() => store.get('missing/deeper/still'), KeyNotFoundError, 'get(missing/deeper)');
      expect(await store.exists('missing')).toBe(false);
      await store.delete('missing');
      await store.delete('missing/deeper/still');
      await store.put('present', 'x');
      await store.delete('present');
      await store.delete('present');
      await expectKVError(() => store.get('present'), KeyNotFoundError, 'get after delete');
    },
  );

  define(
    'tryGet resolves to null for a missing key (directory-only keys included) and to the pair of a present one',
    { rows: ['get'] },
    async ({ store, caps }) => {
      expect(await store.tryGet('missing'), 'tryGet(missing)').toBeNull();
      expect(await store.tryGet('missing/deeper/still'), 'tryGet(missing/deeper)').toBeNull();
      await store.put('t/a', 'x');
      expect(await store.tryGet('t'), 'tryGet(t) with only t/a').toBeNull();
      const pair = await store.tryGet('/t/a/');
      expectPair(pair, 't/a', 'x');
      expect(pair?.lastIndex).toBe((await store.get('t/a')).lastIndex);
      if (caps.consistentRead) expectPair(await store.tryGet('t/a', { consistent: true }), 't/a', 'x');
      await store.delete('t/a');
      expect(await store.tryGet('t/a'), 'tryGet after delete').toBeNull();
      await expectKVError(() => store.tryGet('a//b'), InvalidKeyError, 'tryGet of an invalid key');
    },
  );

  define(
    'directories are implicit: only a/b exists, so a does not; delete(a) never removes children',
    { rows: ['get', 'exists', 'delete', 'list'] },
    async ({ store }) => {
      await store.put('a/b', 'child');
      expect(await store.exists('a')).toBe(false);
      await expectKVError(() => store.get('a'), KeyNotFoundError, 'get(a) with only a/b');
      await store.delete('a');
      expectPair(await store.get('a/b'), 'a/b', 'child');
      await store.put('a', 'parent');
      await store.delete('a');
      expect(await store.exists('a')).toBe(false);
      expect(keys(await store.list('a'))).toEqual(['a/b']);
    },
  );

  define(
    'lastIndex is a positive integer that changes on every write, including a write of the same value',
    { rows: ['put'] },
    async ({ store }) => {
      await store.put('idx', 'same');
      const first = await store.get('idx');
      expectIndex(first.lastIndex, 'lastIndex');
      await store.put('idx', 'same');
      const second = await store.get('idx');
      expectIndex(second.lastIndex, 'lastIndex');
      expect(second.lastIndex, 'lastIndex after a same-value put').not.toBe(first.lastIndex);
      await store.put('idx', 'other');
      const third = await store.get('idx');
      expect(third.lastIndex).not.toBe(second.lastIndex);
    },
  );

  define(
    'values: the empty value, all 256 byte values and UTF-8 strings round-trip',
    { rows: ['put', 'get', 'list'] },
    async ({ store }) => {
      const all = Uint8Array.from(range(256));
      const reversed = Uint8Array.from(range(256).reverse());
      await store.put('v/empty', '');
      await store.put('v/empty-bytes', new Uint8Array(0));
      await store.put('v/all', all);
      await store.put('v/reversed', reversed);
      await store.put('v/nul', new Uint8Array([0]));
      await store.put('v/text', 'héllo ✓ 🔑 \u0000 end');
      expect((await store.get('v/empty')).value.byteLength).toBe(0);
      expect((await store.get('v/empty-bytes')).value.byteLength).toBe(0);
      expectPair(await store.get('v/all'), 'v/all', all);
      expectPair(await store.get('v/reversed'), 'v/reversed', reversed);
      expectPair(await store.get('v/nul'), 'v/nul', new Uint8Array([0]));
      expectPair(await store.get('v/text'), 'v/text', 'héllo ✓ 🔑 \u0000 end');
      const listed = new Map((await store.list('v')).map((p) => [p.key, p.value]));
      expect(sameBytes(listed.get('v/all') as Uint8Array, all), 'list returns the same bytes').toBe(true);
      expect(listed.get('v/empty')?.byteLength).toBe(0);
      // A value given as a view into a larger buffer is stored as exactly its bytes.
      const view = new Uint8Array(all.buffer, 10, 5);
      await store.put('v/view', view);
      expectPair(await store.get('v/view'), 'v/view', Uint8Array.from([10, 11, 12, 13, 14]));
    },
  );

  define(
    'Unicode keys and URL-hostile characters round-trip in get, list and delete',
    { rows: ['put', 'get', 'list', 'delete', 'exists'] },
    async ({ store }) => {
      for (const key of AWKWARD_KEYS) await store.put(key, `value of ${key}`);
      for (const key of AWKWARD_KEYS) expectPair(await store.get(key), key, `value of ${key}`);
      const listed = keys(await store.list(''));
      expect(listed).toEqual([...AWKWARD_KEYS].sort());
      expect(keys(await store.list('ключ'))).toEqual(['ключ/e\u0301', 'ключ/ß', 'ключ/日本/🔑']);
      expect(keys(await store.list('ключ/日本'))).toEqual(['ключ/日本/🔑']);
      for (const key of AWKWARD_KEYS) {
        await store.delete(key);
        expect(await store.exists(key), key).toBe(false);
      }
      expect(await store.list('')).toEqual([]);
    },
  );

  define(
    'a value of maxValueSize round-trips; one byte more is ValueTooLargeError and writes nothing',
    {
      rows: ['put', 'get', 'atomicPut'],
      timeout: (caps) => 30_000 + Math.min(caps.maxValueSize, MAX_TESTED_VALUE) / 10_000,
    },
    async ({ store, caps }) => {
      const size = Math.min(caps.maxValueSize, MAX_TESTED_VALUE);
      const big = new Uint8Array(size);
      for (let i = 0; i < size; i += 4096) big[i] = (i / 4096) % 251;
      if (size > 0) big[size - 1] = 0xff;
      await store.put('big', big);
      const got = await store.get('big');
      expect(got.value.byteLength).toBe(size);
      expect(sameBytes(got.value, big), 'the large value round-trips').toBe(true);
      await store.delete('big');
      if (caps.maxValueSize + 1 <= MAX_OVERSIZE_ALLOCATION) {
        // Never touched, so the pages of this buffer are not really allocated.
        const over = new Uint8Array(caps.maxValueSize + 1);
        const error = await expectKVError(
          () => store.put('big', over),
          ValueTooLargeError,
          'put(maxValueSize + 1)',
        );
        expect(error.code).toBe('VALUE_TOO_LARGE');
        await expectKVError(
          () => store.atomicPut('big', over, null),
          ValueTooLargeError,
          'atomicPut(maxValueSize + 1)',
        );
        expect(await store.exists('big')).toBe(false);
      }
    },
  );

  define(
    'invalid keys are InvalidKeyError on every call and change nothing',
    { rows: ['put', 'get', 'delete', 'exists', 'list', 'deleteTree', 'atomicPut', 'atomicDelete'] },
    async (t) => {
      const { store, caps } = t;
      await store.put('a/b', 'kept');
      const fake = { key: 'x', value: new Uint8Array(0), lastIndex: 1 };
      const calls: [string, (key: string) => unknown][] = [
        ['put', (k) => store.put(k, 'v')],
        ['get', (k) => store.get(k)],
        ['delete', (k) => store.delete(k)],
        ['exists', (k) => store.exists(k)],
        ['atomicPut', (k) => store.atomicPut(k, 'v', null)],
        ['atomicDelete', (k) => store.atomicDelete(k, fake)],
      ];
      if (caps.lock) {
        t.tag('lock');
        calls.push(['newLock', (k) => store.newLock(k).tryLock()]);
      }
      for (const key of INVALID_KEYS) {
        for (const [name, call] of calls) {
          await expectKVError(() => call(key), InvalidKeyError, `${name}(${JSON.stringify(key)})`);
        }
        if (key !== '' && key !== '/' && key !== '//') {
          await expectKVError(() => store.list(key), InvalidKeyError, `list(${JSON.stringify(key)})`);
        }
        await expectKVError(
          () => store.deleteTree(key),
          InvalidKeyError,
          `deleteTree(${JSON.stringify(key)})`,
        );
      }
      if (caps.watch) {
        t.tag('watch');
        await expectInvalidWatch(store, 'watch', 'a//b');
      }
      if (caps.watchTree) {
        t.tag('watchTree');
        await expectInvalidWatch(store, 'watchTree', 'a/../b');
      }
      expect(keys(await store.list(''))).toEqual(['a/b']);
    },
  );

  define(
    'list is recursive, sorted by key, and excludes the directory itself',
    { rows: ['list'] },
    async ({ store }) => {
      const inside = [
        'dir/b',
        'dir/a',
        'dir/a/x',
        'dir/a/y/z',
        'dir/a-b',
        'dir/c',
        'dir/é',
        'dir/ｱ',
        'dir/🔑',
        'dir/Z',
      ];
      for (const key of [...inside, 'dir', 'dirx', 'dir0/x', 'dir-a', 'di']) await store.put(key, `v:${key}`);
      // Sorted by UTF-16 code units, like Array.prototype.sort: 'a-b' < 'a/x', '🔑' < 'ｱ'.
      const expected = [...inside].sort();
      expect(expected).toEqual([
        'dir/Z',
        'dir/a',
        'dir/a-b',
        'dir/a/x',
        'dir/a/y/z',
        'dir/b',
        'dir/c',
        'dir/é',
        'dir/🔑',
        'dir/ｱ',
      ]);
      for (const dir of ['dir', 'dir/', '/dir/', '/dir']) {
        const listed = await store.list(dir);
        expect(keys(listed), `list(${JSON.stringify(dir)})`).toEqual(expected);
        for (const pair of listed) {
          expect(text(pair.value)).toBe(`v:${pair.key}`);
          expect(pair.lastIndex, `list and get give the same lastIndex for ${pair.key}`).toBe(
            (await store.get(pair.key)).lastIndex,
          );
        }
      }
      expect(keys(await store.list('dir/a'))).toEqual(['dir/a/x', 'dir/a/y/z']);
      expect(keys(await store.list('dir/a/y'))).toEqual(['dir/a/y/z']);
    },
  );

  define(
    'list(a) never matches ab/...; a missing directory and a leaf give []',
    { rows: ['list'] },
    async ({ store }) => {
      for (const key of ['a', 'a/x', 'ab', 'ab/x', 'a-b/x', 'a.b/x', 'leaf']) await store.put(key, key);
      expect(keys(await store.list('a'))).toEqual(['a/x']);
      expect(keys(await store.list('ab'))).toEqual(['ab/x']);
      expect(await store.list('nothing')).toEqual([]);
      expect(await store.list('nothing/deeper')).toEqual([]);
      expect(await store.list('leaf')).toEqual([]);
      expect(await store.list('a/x')).toEqual([]);
    },
  );

  define("list('') and list('/') list everything inside the prefix", { rows: ['list'] }, async (t) => {
    const { store } = t;
    const all = ['top', 'x/1', 'x/2/3', 'y'];
    for (const key of all) await store.put(key, key);
    // A store whose prefix is this one's x/ sees only that part.
    const neighbour = await t.open('x');
    await neighbour.put('inner', 'seen as x/inner');
    expect(keys(await store.list(''))).toEqual(['top', 'x/1', 'x/2/3', 'x/inner', 'y']);
    expect(keys(await store.list('/'))).toEqual(['top', 'x/1', 'x/2/3', 'x/inner', 'y']);
    expect(keys(await neighbour.list(''))).toEqual(['1', '2/3', 'inner']);
  });

  define(
    'deleteTree removes the directory key and everything below it, and nothing else',
    { rows: ['deleteTree'] },
    async ({ store }) => {
      const doomed = ['a', 'a/b', 'a/b/c', 'a/d', 'a/é/🔑'];
      const kept = ['ab', 'ab/x', 'a-b', 'a.b/x', 'b', 'aa/a'];
      for (const key of [...doomed, ...kept]) await store.put(key, key);
      await store.deleteTree('a');
      for (const key of doomed) expect(await store.exists(key), key).toBe(false);
      expect(keys(await store.list(''))).toEqual([...kept].sort());
      await store.deleteTree('/ab/');
      expect(keys(await store.list(''))).toEqual(['a-b', 'a.b/x', 'aa/a', 'b']);
      await store.deleteTree('missing/dir');
      await store.deleteTree('b');
      expect(await store.exists('b')).toBe(false);
      await store.put('c/d/e', 'deep');
      await store.deleteTree('c/d');
      expect(await store.list('c')).toEqual([]);
    },
  );

  define(
    "deleteTree('') and deleteTree('/') are InvalidKeyError and delete nothing",
    { rows: ['deleteTree'] },
    async ({ store }) => {
      await store.put('keep', 'me');
      await expectKVError(() => store.deleteTree(''), InvalidKeyError, "deleteTree('')");
      await expectKVError(() => store.deleteTree('/'), InvalidKeyError, "deleteTree('/')");
      expect(await store.exists('keep')).toBe(true);
    },
  );
}

async function expectInvalidWatch(store: Store, call: 'watch' | 'watchTree', key: string): Promise<void> {
  await expectKVError(
    async () => {
      const iterator = store[call](key)[Symbol.asyncIterator]();
      try {
        await iterator.next();
      } finally {
        await iterator.return?.();
      }
    },
    InvalidKeyError,
    `${call}(${JSON.stringify(key)})`,
  );
}
