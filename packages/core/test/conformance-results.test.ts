import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { defaultResultsDir, ResultBook, writeResults } from '../src/conformance/results.js';
import { MEMORY_CAPABILITIES } from '../src/memory-store.js';

const caps = { ...MEMORY_CAPABILITIES, watch: false };
const status = (book: ResultBook, id: string, capabilities = caps, openError?: unknown) =>
  book.results('x', capabilities, openError).rows.find((row) => row.id === id)?.status;

describe('ResultBook', () => {
  it('a row works when its tests passed, fails when one failed', () => {
    const book = new ResultBook();
    const a = book.declare('a', ['put', 'get'], 'behaviour');
    const b = book.declare('b', ['get'], 'behaviour');
    ResultBook.start(a);
    ResultBook.finish(a, 'pass');
    ResultBook.start(b);
    ResultBook.finish(b, 'fail', new Error('boom'));
    expect(status(book, 'put')).toBe('works');
    expect(status(book, 'get')).toBe('fails');
    const get = book.results('x', caps).rows.find((row) => row.id === 'get');
    expect(get?.failures).toEqual(['b: boom']);
    expect(status(book, 'list'), 'no test ran for it').toBe('untested');
  });

  it('a test that started and never finished (a vitest timeout) counts as failed', () => {
    const book = new ResultBook();
    ResultBook.start(book.declare('hung', ['list'], 'behaviour'));
    const results = book.results('x', caps);
    expect(results.tests[0]?.state).toBe('fail');
    expect(results.tests[0]?.error).toContain('did not finish');
    expect(status(book, 'list')).toBe('fails');
  });

  it('a capability declared false is "not supported" only once its NotSupportedError check passed', () => {
    const book = new ResultBook();
    const behaviour = book.declare('behaviour', ['watch'], 'behaviour');
    ResultBook.finish(behaviour, 'skip');
    expect(status(book, 'watch')).toBe('untested');
    const check = book.declare('check', ['watch'], 'unsupported');
    ResultBook.start(check);
    ResultBook.finish(check, 'pass');
    expect(status(book, 'watch')).toBe('not supported');
    ResultBook.start(check);
    ResultBook.finish(check, 'fail', 'it worked after all');
    expect(status(book, 'watch')).toBe('fails');
  });

  it('keeps the histories a test recorded, and forgets them when the test runs again', () => {
    const book = new ResultBook();
    const entry = book.declare('lin', ['linearizable'], 'behaviour');
    const history = {
      checker: 'linearizable',
      operations: 120,
      unknown: 3,
      faults: 4,
      faultKinds: ['member isolated from the others'],
      result: 'ok',
      durationMs: 8000,
    } as const;
    ResultBook.start(entry);
    ResultBook.history(entry, history);
    ResultBook.finish(entry, 'pass');
    expect(book.results('x', caps).tests[0]?.histories).toEqual([history]);
    ResultBook.start(entry);
    ResultBook.finish(entry, 'fail', 'boom');
    expect(book.results('x', caps).tests[0]?.histories).toBeUndefined();
    expect(book.results('x', caps).tests[0]?.state).toBe('fail');
  });

  it('tests that never ran are "not run"; duplicate titles are refused', () => {
    const book = new ResultBook();
    book.declare('filtered out', ['put'], 'behaviour');
    expect(book.results('x', caps).summary).toEqual({ passed: 0, failed: 0, skipped: 0, notRun: 1 });
    expect(() => book.declare('filtered out', ['put'], 'behaviour')).toThrow(/duplicate/);
  });

  it('a suite that could not open a store fails every row', () => {
    const book = new ResultBook();
    const results = book.results('x', null, new Error('ECONNREFUSED'));
    expect(results.error).toBe('ECONNREFUSED');
    expect(new Set(results.rows.map((row) => row.status))).toEqual(new Set(['fails']));
  });
});

describe('results files', () => {
  afterEach(() => vi.unstubAllEnvs());

  it('are written whole as <dir>/<backend>.json', () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'kv-results-')), 'nested');
    const book = new ResultBook();
    const file = writeResults(dir, book.results('mystore', caps));
    expect(file).toBe(join(dir, 'mystore.json'));
    const data = JSON.parse(readFileSync(file, 'utf8'));
    expect(data).toMatchObject({ format: 1, kit: '@kv/core/conformance', backend: 'mystore' });
  });

  it('go to $KV_RESULTS_DIR, else .kv-test-results/ in the workspace root', () => {
    vi.stubEnv('KV_RESULTS_DIR', '/tmp/somewhere');
    expect(defaultResultsDir()).toBe('/tmp/somewhere');
    vi.stubEnv('KV_RESULTS_DIR', '');
    const root = mkdtempSync(join(tmpdir(), 'kv-root-'));
    writeFileSync(join(root, 'pnpm-workspace.yaml'), 'packages: []\n');
    const deep = join(root, 'packages', 'x');
    mkdirSync(deep, { recursive: true });
    const cwd = vi.spyOn(process, 'cwd').mockReturnValue(deep);
    try {
      expect(defaultResultsDir()).toBe(join(root, '.kv-test-results'));
    } finally {
      cwd.mockRestore();
    }
  });
});
