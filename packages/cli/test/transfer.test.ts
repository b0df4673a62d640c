import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { createStore, type Store } from '@kv/core';
import { serverFor } from '@kv/test-servers';
import { afterAll, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../src/exit-codes.js';
import { finished, kv, lineMatching, startKv, tempDir } from './run-kv.js';

const tmp = tempDir();
afterAll(() => tmp.remove());
let n = 0;
const freshSqlite = () => `sqlite:${join(tmp.dir, `transfer-${n++}.db`)}`;

/** Values that a text-only copy would break: every byte, the empty value, invalid UTF-8, a newline. */
const BINARY = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), randomBytes(2048)]);
const SEED: [string, Uint8Array | string][] = [
  ['app/config/url', 'postgres://db-1/app'],
  ['app/blobs/binary', BINARY],
  ['app/blobs/empty', ''],
  ['app/blobs/bad-utf8', Buffer.from([0xff, 0xfe, 0x0a, 0xc3])],
  ['app/deep/a/b/c/d', 'deep\nvalue\n'],
];

/** A ttl long enough that the test's own duration never runs it out. */
const HOUR = 3_600_000;

/** The ttl a copy carried: an hour less what has passed since it was written (etcd rounds to seconds). */
function expectTtlLeft(ttl: number | undefined, writtenAt: number): void {
  const passed = performance.now() - writtenAt;
  expect(ttl).toBeGreaterThan(HOUR - passed - 2_000);
  expect(ttl).toBeLessThanOrEqual(HOUR);
}

async function withStore<T>(url: string, fn: (store: Store) => Promise<T>): Promise<T> {
  const store = await createStore(url);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** NDJSON stdout as objects. */
function records(out: string): Record<string, unknown>[] {
  return out
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}

function summaryOf(out: string) {
  return records(out).find((r) => 'summary' in r)?.summary as {
    copied: number;
    skipped: number;
    failed: number;
    dryRun: boolean;
  };
}

/** The dump of a store as a map key -> { bytes, ttl }. */
async function dumped(url: string): Promise<Map<string, { value: Buffer; ttl?: number }>> {
  const result = await kv(['dump'], { url });
  expect(result.status, result.stderr).toBe(0);
  return new Map(
    records(result.out).map((r) => [
      r.key as string,
      {
        value: Buffer.from(r.value as string, 'base64'),
        ...(r.ttl === undefined ? {} : { ttl: r.ttl as number }),
      },
    ]),
  );
}

describe('kv copy SQLite -> etcd', async () => {
  const etcd = await serverFor('etcd');
  it.skipIf(!etcd.available)(
    'copies byte for byte with ttls; --dry-run writes nothing; a rerun resumes; --overwrite; failures counted',
    async () => {
      const src = freshSqlite();
      const dst = `etcd://${etcd.endpoints[0]}/cli-copy-${process.pid}-${n++}`;
      await withStore(src, async (store) => {
        for (const [key, value] of SEED) await store.put(key, value);
        await store.put('app/session', 'expires', { ttl: HOUR });
        // Larger than etcd's request limit (1.5 MiB): this key fails, the rest is copied.
        await store.put('app/huge', Buffer.alloc(2 * 1024 * 1024, 7));
      });
      const seededAt = performance.now();
      const total = SEED.length + 2;

      const dry = await kv(['copy', '--json', '--dry-run', src, dst]);
      expect(dry.status, dry.stderr).toBe(0);
      expect(summaryOf(dry.out)).toEqual({ copied: total, skipped: 0, failed: 0, dryRun: true });
      expect((await dumped(dst)).size).toBe(0);

      const first = await kv(['copy', '--json', src, dst]);
      expect(first.status).toBe(EXIT_CODES.FALSE); // one key failed
      expect(summaryOf(first.out)).toEqual({ copied: total - 1, skipped: 0, failed: 1, dryRun: false });
      const failed = records(first.out).find((r) => r.result === 'failed');
      expect(failed).toMatchObject({ key: 'app/huge' });
      expect(failed?.reason).toMatch(/^VALUE_TOO_LARGE: /);

      const copied = await dumped(dst);
      for (const [key, value] of SEED) {
        expect(
          Buffer.compare(copied.get(key)?.value ?? Buffer.from('missing'), Buffer.from(value)),
          key,
        ).toBe(0);
        expect(copied.get(key)?.ttl, key).toBeUndefined();
      }
      // The ttl went with the value: what the source had left, in etcd's whole seconds.
      const session = copied.get('app/session');
      expect(session?.value.toString()).toBe('expires');
      expectTtlLeft(session?.ttl, seededAt);
      expect(copied.has('app/huge')).toBe(false);

      // A rerun resumes: everything already there is skipped, only the failure is tried again.
      const rerun = await kv(['copy', '--json', src, dst]);
      expect(summaryOf(rerun.out)).toEqual({ copied: 0, skipped: total - 1, failed: 1, dryRun: false });

      // A destination key with another value is kept unless --overwrite; the human summary says so.
      await withStore(dst, (store) => store.put('app/config/url', 'changed on the destination'));
      const kept = await kv(['copy', '--dir', 'app/config', src, dst]);
      expect(kept.status).toBe(0);
      expect(kept.out).toBe('copied 0, skipped 1, failed 0\n');
      expect((await kv(['get', 'app/config/url'], { url: dst })).out).toBe('changed on the destination');
      const replaced = await kv(['copy', '--dir', 'app/config', '--overwrite', src, dst]);
      expect(replaced.out).toBe('copied 1, skipped 0, failed 0\n');
      expect((await kv(['get', 'app/config/url'], { url: dst })).out).toBe('postgres://db-1/app');
    },
  );
});

describe('kv copy Redis -> SQLite', async () => {
  const redis = await serverFor('redis');
  it.skipIf(!redis.available)(
    'never overwrites a key changed on the destination during the copy (CAS), even with --overwrite',
    async () => {
      const src = `redis://${redis.endpoints[0]}/cli-copy-${process.pid}-${n++}`;
      const dst = freshSqlite();
      const COUNT = 1500;
      const keys = Array.from({ length: COUNT }, (_, i) => `k/${String(i).padStart(4, '0')}`);
      await withStore(src, async (store) => {
        for (let i = 0; i < COUNT; i += 100) {
          await Promise.all(keys.slice(i, i + 100).map((k) => store.put(k, `source ${k}`)));
        }
        await store.put('t/session', BINARY, { ttl: HOUR });
      });
      const seededAt = performance.now();
      // Every destination key differs, so --overwrite replaces each with a CAS on what it read first.
      await withStore(dst, async (store) => {
        for (const k of keys) await store.put(k, `old ${k}`);
      });

      const copy = startKv(['copy', '--json', '--overwrite', src, dst]);
      const done = finished(copy);
      // Once the copy writes, change the last keys (the copy writes in key order, so it reaches them last).
      await lineMatching(copy, /"result":"copied"/);
      const late = keys.slice(-100);
      await withStore(dst, async (store) => {
        for (const k of late) await store.put(k, `concurrent ${k}`);
      });
      const result = await done;
      expect(result.status, result.stderr).toBe(0);
      const outcomes = new Map(records(result.out).map((r) => [r.key as string, r]));
      const raced = late.filter(
        (k) => outcomes.get(k)?.reason === 'changed on the destination during the copy',
      );
      // The race happened (else this test proves nothing) and every concurrent write survived it.
      expect(raced.length).toBeGreaterThan(0);
      const after = await dumped(dst);
      for (const k of late) expect(after.get(k)?.value.toString(), k).toBe(`concurrent ${k}`);
      expect(after.get('k/0000')?.value.toString()).toBe('source k/0000');
      const summary = summaryOf(result.out);
      expect(summary.copied + summary.skipped).toBe(COUNT + 1);
      expect(summary.skipped).toBe(raced.length);
      // Binary value and ttl came across from Redis.
      const session = after.get('t/session');
      expect(Buffer.compare(session?.value ?? Buffer.alloc(0), BINARY)).toBe(0);
      expectTtlLeft(session?.ttl, seededAt);
    },
  );
});

describe('kv dump | kv restore', () => {
  it('round-trips every value byte for byte; restore skips what is there; --dry-run writes nothing', async () => {
    const src = freshSqlite();
    const dst = freshSqlite();
    await withStore(src, async (store) => {
      for (const [key, value] of SEED) await store.put(key, value);
      await store.put('other/x', 'outside app');
    });
    const dump = await kv(['dump', 'app'], { url: src });
    expect(dump.status).toBe(0);
    expect(records(dump.out).map((r) => r.key)).toEqual(SEED.map(([k]) => k).sort());

    const dry = await kv(['restore', '--dry-run'], { url: dst, input: dump.stdout });
    expect(dry.out).toBe(`would copy ${SEED.length}, skipped 0, failed 0\n`);
    expect((await kv(['ls'], { url: dst })).out).toBe('');

    const restored = await kv(['restore'], { url: dst, input: dump.stdout });
    expect(restored.status, restored.stderr).toBe(0);
    expect(restored.out).toBe(`copied ${SEED.length}, skipped 0, failed 0\n`);
    // The destination's dump is the same bytes as the source's.
    const again = await kv(['dump', 'app'], { url: dst });
    expect(Buffer.compare(again.stdout, dump.stdout)).toBe(0);
    for (const [key, value] of SEED) {
      expect(Buffer.compare((await kv(['get', key], { url: dst })).stdout, Buffer.from(value)), key).toBe(0);
    }
    const rerun = await kv(['restore', '--json'], { url: dst, input: dump.stdout });
    expect(summaryOf(rerun.out)).toEqual({ copied: 0, skipped: SEED.length, failed: 0, dryRun: false });
  });

  it('a malformed dump line is INVALID_ARGUMENT (exit 14) naming the line', async () => {
    const input = `{"key":"a","value":"eA=="}\n\n{"key":"b","value":"not base64!"}\n`;
    const bad = await kv(['restore'], { url: freshSqlite(), input });
    expect(bad.status).toBe(EXIT_CODES.INVALID_ARGUMENT);
    expect(bad.stderr).toBe(
      'kv: INVALID_ARGUMENT: dump line 3 must be {"key": string, "value": base64 string, "ttl"?: positive ms}, got {"key":"b","value":"not base64!"}\n',
    );
  });

  it('an unreachable destination is UNAVAILABLE (exit 17)', async () => {
    const src = freshSqlite();
    await withStore(src, (store) => store.put('a', 'x'));
    const result = await kv(['copy', src, 'redis://127.0.0.1:9/app?connectTimeout=1000']);
    expect(result.status).toBe(EXIT_CODES.UNAVAILABLE);
    expect(result.stderr).toMatch(/^kv: UNAVAILABLE: [^\n]*\n$/);
  });
});
