import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../src/exit-codes.js';
import { buildProgram } from '../src/program.js';
import { kv, tempDir } from './run-kv.js';

const ESC = '\u001b[';
const tmp = tempDir();
afterAll(() => tmp.remove());
let n = 0;
/** A fresh SQLite store per test. */
const freshUrl = () => `sqlite:${join(tmp.dir, `keys-${n++}.db`)}`;

describe.concurrent('kv get / put / rm / ls / exists on SQLite', () => {
  it('puts and gets a value; rm removes it; a missing key is KEY_NOT_FOUND (exit 10)', async () => {
    const url = freshUrl();
    expect((await kv(['put', 'config/db/url', 'postgres://db-1/app'], { url })).status).toBe(0);
    const got = await kv(['get', 'config/db/url'], { url });
    expect(got.status).toBe(0);
    expect(got.out).toBe('postgres://db-1/app'); // not a terminal: the bytes exactly, no newline added
    expect((await kv(['rm', 'config/db/url'], { url })).status).toBe(0);
    const missing = await kv(['get', 'config/db/url'], { url });
    expect(missing.status).toBe(EXIT_CODES.KEY_NOT_FOUND);
    expect(missing.stderr).toBe('kv: KEY_NOT_FOUND: key not found: "config/db/url"\n');
    // Deleting a missing key is not an error (the contract's delete).
    expect((await kv(['rm', 'config/db/url'], { url })).status).toBe(0);
  });

  it('round-trips every byte value through stdin and stdout, and the empty value', async () => {
    const url = freshUrl();
    const bytes = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), randomBytes(4096)]);
    expect((await kv(['put', 'blobs/r', '-'], { url, input: bytes })).status).toBe(0);
    const got = await kv(['get', 'blobs/r'], { url });
    expect(Buffer.compare(got.stdout, bytes)).toBe(0);
    expect((await kv(['put', 'blobs/empty'], { url, input: '' })).status).toBe(0);
    const empty = await kv(['get', '--json', 'blobs/empty'], { url });
    expect(JSON.parse(empty.out)).toMatchObject({ key: 'blobs/empty', value: '', base64: '' });
    const json = JSON.parse((await kv(['--json', 'get', 'blobs/r'], { url })).out);
    expect(Buffer.from(json.base64, 'base64').equals(bytes)).toBe(true);
    // A value's text keeps a leading U+FEFF (a decoder would drop it as a byte-order mark by default).
    expect((await kv(['put', 'blobs/bom', '\uFEFFtext'], { url })).status).toBe(0);
    const bom = JSON.parse((await kv(['--json', 'get', 'blobs/bom'], { url })).out);
    expect(bom.value).toBe('\uFEFFtext');
    expect(json.value).toBeUndefined(); // not UTF-8: no text form
  });

  it('--create creates only; --if-index is compare-and-swap and prints the new lastIndex', async () => {
    const url = freshUrl();
    const created = await kv(['put', '--create', 'jobs/owner', 'w1'], { url });
    expect(created.status).toBe(0);
    const first = Number(created.out.trim());
    expect(Number.isSafeInteger(first) && first > 0).toBe(true);
    const again = await kv(['put', '--create', 'jobs/owner', 'w2'], { url });
    expect(again.status).toBe(EXIT_CODES.KEY_EXISTS);
    expect(again.stderr).toMatch(/^kv: KEY_EXISTS: /);
    const swapped = await kv(['put', '--if-index', String(first), 'jobs/owner', 'w3'], { url });
    expect(swapped.status).toBe(0);
    const second = Number(swapped.out.trim());
    expect(second).toBeGreaterThan(first);
    const stale = await kv(['put', '--if-index', String(first), 'jobs/owner', 'w4'], { url });
    expect(stale.status).toBe(EXIT_CODES.KEY_MODIFIED);
    expect((await kv(['get', 'jobs/owner'], { url })).out).toBe('w3');
    const gone = await kv(['put', '--if-index', '1', 'jobs/nobody', 'x'], { url });
    expect(gone.status).toBe(EXIT_CODES.KEY_NOT_FOUND);
    // rm --if-index: a stale index refuses, the current one deletes.
    expect((await kv(['rm', '--if-index', String(first), 'jobs/owner'], { url })).status).toBe(
      EXIT_CODES.KEY_MODIFIED,
    );
    expect((await kv(['rm', '--if-index', String(second), 'jobs/owner'], { url })).status).toBe(0);
    expect((await kv(['exists', 'jobs/owner'], { url })).status).toBe(EXIT_CODES.FALSE);
  });

  it('--ttl expires the key; a bad ttl is INVALID_ARGUMENT (exit 14)', async () => {
    const url = freshUrl();
    expect((await kv(['put', '--ttl', '1s', 'sessions/u1', 'alive'], { url })).status).toBe(0);
    // The key is gone by ttl + granularity; poll (bounded) instead of sleeping a guessed time.
    const deadline = Date.now() + 20_000;
    let status = 0;
    while (Date.now() < deadline) {
      status = (await kv(['exists', 'sessions/u1'], { url })).status ?? -1;
      if (status === EXIT_CODES.FALSE) break;
    }
    expect(status).toBe(EXIT_CODES.FALSE);
    const bad = await kv(['put', '--ttl', '-5', 'sessions/u2', 'x'], { url });
    expect(bad.status).toBe(EXIT_CODES.INVALID_ARGUMENT);
    expect(bad.stderr).toMatch(/^kv: INVALID_ARGUMENT: --ttl must be a positive duration/);
    expect((await kv(['exists', 'sessions/u2'], { url })).status).toBe(EXIT_CODES.FALSE);
  });

  it('ls lists below a directory at any depth, sorted; --long, --values and --json', async () => {
    const url = freshUrl();
    for (const [k, v] of [
      ['app/b', '2'],
      ['app/a/deep/x', 'deep'],
      ['apple', 'not below app'],
      ['app/c', 'three'],
    ] as const) {
      expect((await kv(['put', k, v], { url })).status).toBe(0);
    }
    expect((await kv(['ls', 'app'], { url })).out).toBe('app/a/deep/x\napp/b\napp/c\n');
    expect((await kv(['ls'], { url })).out.split('\n').filter(Boolean)).toHaveLength(4);
    const long = (await kv(['ls', '-l', '--values', 'app'], { url })).out.split('\n');
    expect(long[0]).toMatch(/^KEY\s+LAST INDEX\s+SIZE\s+VALUE$/);
    expect(long[1]).toMatch(/^app\/a\/deep\/x {2}\d+\s+4\s+deep$/);
    // Columns line up: every row's value starts where the header's VALUE does.
    const column = (long[0] as string).indexOf('VALUE');
    for (const row of long.slice(1, 4)) expect(row.slice(column)).toMatch(/^(deep|2|three)$/);
    const json = (await kv(['ls', '--json', 'app'], { url })).out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(json.map((p) => p.key)).toEqual(['app/a/deep/x', 'app/b', 'app/c']);
    expect(json.every((p) => Number.isSafeInteger(p.lastIndex) && p.lastIndex > 0)).toBe(true);
    expect((await kv(['ls', 'missing/dir'], { url })).out).toBe('');
    expect((await kv(['rm', '-r', 'app'], { url })).status).toBe(0);
    expect((await kv(['ls'], { url })).out).toBe('apple\n');
  });

  it('exists prints true/false and exits 0/1', async () => {
    const url = freshUrl();
    await kv(['put', 'a/b', 'x'], { url });
    expect(await kv(['exists', 'a/b'], { url })).toMatchObject({ status: 0, out: 'true\n' });
    expect(await kv(['exists', 'a'], { url })).toMatchObject({ status: EXIT_CODES.FALSE, out: 'false\n' });
    expect(JSON.parse((await kv(['exists', '--json', 'a/b'], { url })).out)).toEqual({
      key: 'a/b',
      exists: true,
    });
  });

  it('colours only when asked for: never with NO_COLOR, never when not a terminal', async () => {
    const url = freshUrl();
    await kv(['put', 'a', 'x'], { url });
    const plain = await kv(['ls', '-l', '--values'], { url, env: { NO_COLOR: undefined } });
    expect(plain.out).not.toContain(ESC);
    const forced = await kv(['ls', '-l', '--values'], {
      url,
      env: { NO_COLOR: undefined, FORCE_COLOR: '1' },
    });
    expect(forced.out).toContain(ESC);
    const both = await kv(['ls', '-l'], { url, env: { NO_COLOR: '1', FORCE_COLOR: '1' } });
    expect(both.out).not.toContain(ESC);
  });
});

describe.concurrent('kv errors: one line on stderr with the code, a distinct exit status per class', () => {
  const url = freshUrl();
  const cases: [string, string[], Record<string, string>, number, RegExp][] = [
    ['invalid key', ['get', 'a//b'], { KV_URL: url }, EXIT_CODES.INVALID_KEY, /^kv: INVALID_KEY: /],
    [
      'no store given',
      ['get', 'a'],
      {},
      EXIT_CODES.INVALID_ARGUMENT,
      /^kv: INVALID_ARGUMENT: no store given/,
    ],
    [
      'bad URL option',
      ['get', 'a'],
      { KV_URL: `${url}?bogus=1` },
      EXIT_CODES.INVALID_ARGUMENT,
      /unknown option/,
    ],
    [
      'backend not installed',
      ['get', 'a'],
      { KV_URL: 'mongo://127.0.0.1:27017/app' },
      EXIT_CODES.UNKNOWN_BACKEND,
      /^kv: UNKNOWN_BACKEND: .*mongo/,
    ],
    [
      // Port 9 (discard) on 127.0.0.1: nothing listens, the connection is refused.
      'server unreachable',
      ['get', 'a'],
      { KV_URL: 'redis://127.0.0.1:9/app?connectTimeout=2000' },
      EXIT_CODES.UNAVAILABLE,
      /^kv: UNAVAILABLE: /,
    ],
    [
      'value too large',
      ['put', 'big', '-'],
      { KV_URL: url },
      EXIT_CODES.VALUE_TOO_LARGE,
      /^kv: VALUE_TOO_LARGE: /,
    ],
    ['usage error', ['get'], { KV_URL: url }, EXIT_CODES.USAGE, /missing required argument/],
    ['unknown command', ['frobnicate'], { KV_URL: url }, EXIT_CODES.USAGE, /unknown command/],
  ];
  for (const [name, args, env, status, stderr] of cases) {
    it(`${name}: exit ${status}`, async () => {
      const input = name === 'value too large' ? Buffer.alloc(16 * 1024 * 1024 + 1, 1) : '';
      const result = await kv(args, { env: { KV_URL: undefined, ...env }, input });
      expect(result.status).toBe(status);
      expect(result.stderr).toMatch(stderr);
      if (status !== EXIT_CODES.USAGE) expect(result.stderr.trimEnd().split('\n')).toHaveLength(1);
    });
  }

  it('every exit status is distinct', () => {
    const values = Object.values(EXIT_CODES);
    expect(new Set(values).size).toBe(values.length);
  });

  it('--help on every command shows examples', async () => {
    const top = await kv(['--help']);
    expect(top.status).toBe(0);
    expect(top.out).toMatch(/Exit status:/);
    // Every command the program has (so a new one without examples fails here). The text is what
    // `kv COMMAND --help` prints (commander's help with its after-text), rendered in-process.
    let text = '';
    const program = buildProgram(new AbortController().signal, () => {});
    const commands = program.commands;
    expect(commands.map((c) => c.name())).toEqual(
      expect.arrayContaining(['lock', 'elect', 'copy', 'dump', 'restore', 'doctor', 'bench']),
    );
    for (const command of commands) {
      text = '';
      command.configureOutput({
        writeOut: (chunk) => {
          text += chunk;
        },
      });
      command.outputHelp();
      expect(text, command.name()).toMatch(/Examples:\n {2}\$ kv /);
    }
    const one = await kv(['bench', '--help']);
    expect(one.status).toBe(0);
    expect(one.out).toMatch(/^Usage: kv bench \[options\]\n[\s\S]*Examples:\n {2}\$ kv /);
  });
});
