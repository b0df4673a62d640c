import { join } from 'node:path';
import { launchRedis, serverFor } from '@kv/test-servers';
import { afterAll, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../src/exit-codes.js';
import { finished, kv, lineMatching, startKv, tempDir } from './run-kv.js';

const tmp = tempDir();
afterAll(() => tmp.remove());

interface Report {
  backend: string;
  server: { name: string; version: string } | null;
  capabilities: Record<string, unknown>;
  checks: { name: string; status: string; detail: string }[];
}

/** `kv doctor --json`: exit 0 when every check is ok or skipped, 1 when one warns. */
async function doctor(url: string, status = 0): Promise<Report> {
  const result = await kv(['doctor', '--json'], { url });
  expect(result.status, result.stderr).toBe(status);
  const lines = result.out.trim().split('\n');
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0] as string);
}

const check = (report: Report, name: string) => report.checks.find((c) => c.name === name);

describe('kv doctor', async () => {
  const etcd = await serverFor('etcd');

  it('SQLite: version, capabilities, journal mode; says clock skew does not apply', async () => {
    const url = `sqlite:${join(tmp.dir, 'doctor.db')}`;
    const human = await kv(['doctor'], { url });
    expect(human.status, human.stderr).toBe(0);
    expect(human.out).toMatch(/^server\s+SQLite \d+\.\d+\.\d+$/m);
    expect(human.out).toMatch(/^CAPABILITY\s+VALUE$/m);
    expect(human.out).toMatch(/^watch\s+yes$/m);
    expect(human.out).toMatch(/^distributed\s+no$/m);
    expect(human.out).toMatch(/^clock skew\s+skip\s+not applicable/m);
    // Not a terminal: no colour even without NO_COLOR; FORCE_COLOR turns it on, NO_COLOR wins over it.
    const piped = await kv(['doctor'], { url, env: { NO_COLOR: undefined } });
    expect(piped.out).not.toContain('\u001b[');
    const forced = await kv(['doctor'], { url, env: { NO_COLOR: undefined, FORCE_COLOR: '1' } });
    expect(forced.out).toContain('\u001b[32myes\u001b[39m');
    const both = await kv(['doctor'], { url, env: { NO_COLOR: '1', FORCE_COLOR: '1' } });
    expect(both.out).not.toContain('\u001b[');
    const report = await doctor(url);
    expect(report.backend).toBe('sqlite');
    expect(report.capabilities).toMatchObject({ watch: true, ttl: true, minTtl: 50 });
    expect(check(report, 'journal mode')).toMatchObject({ status: 'ok' });
  });

  it('Redis: warns when keyspace notifications are off, and is content once they are on', async () => {
    // A private server: turning notifications off on the shared one would disturb other tests.
    const redis = await launchRedis();
    try {
      const url = `redis://${redis.endpoints[0]}/doctor`;
      await redis.command(['CONFIG', 'SET', 'notify-keyspace-events', '']);
      const off = await doctor(url, EXIT_CODES.FALSE);
      expect(off.server?.name).toBe('Redis');
      expect(off.server?.version).toMatch(/^\d+\.\d+\.\d+$/);
      expect(check(off, 'keyspace notifications')).toMatchObject({ status: 'warn' });
      expect(check(off, 'keyspace notifications')?.detail).toMatch(/CONFIG SET notify-keyspace-events Ex/);
      // Local server, same clock: no skew beyond the measurement's uncertainty.
      expect(check(off, 'clock skew')).toMatchObject({ status: 'ok' });
      expect(check(off, 'clock skew')?.detail).toMatch(/from TIME/);
      await redis.command(['CONFIG', 'SET', 'notify-keyspace-events', 'Ex']);
      expect(check(await doctor(url), 'keyspace notifications')).toMatchObject({ status: 'ok' });
    } finally {
      await redis.dispose();
    }
  });

  it.skipIf(!etcd.available)(
    'etcd: version, the minimum lease the server grants, clock skew from the HTTP Date',
    async () => {
      const report = await doctor(`etcd://${etcd.endpoints[0]}/doctor`);
      expect(report.server?.name).toBe('etcd');
      expect(report.server?.version).toMatch(/^3\.\d+\.\d+$/);
      const lease = check(report, 'minimum lease');
      expect(lease?.status).toBe('ok');
      // etcd raises a 1 s lease to 1.5 × its election timeout, in whole seconds: 2 s by default.
      expect(lease?.detail).toMatch(/^a 1 s lease was granted as 2000 ms/);
      expect(check(report, 'clock skew')).toMatchObject({ status: 'ok' });
    },
  );
});

describe('kv bench', () => {
  it('SQLite: every figure with sane numbers (human and --json), nothing left behind', async () => {
    const url = `sqlite:${join(tmp.dir, 'bench.db')}`;
    await kv(['put', 'mine', 'kept'], { url });
    const human = await kv(['bench', '--ops', '20', '--lock-ops', '5'], { url });
    expect(human.status, human.stderr).toBe(0);
    const lines = human.out.trim().split('\n');
    expect(lines[0]).toMatch(/^kv bench: sqlite, 20 operations each, 100-byte values, below kv-bench-\w+\/$/);
    const names = [
      'put',
      'get',
      'atomicPut \\(CAS\\)',
      'list \\(20 keys\\)',
      'lock \\+ unlock',
      'put -> watch event',
    ];
    for (const [i, name] of names.entries()) {
      expect(lines[i + 2]).toMatch(
        new RegExp(`^${name}\\s+\\d+ ops/s   p50 \\d+\\.\\d{3} ms   p99 \\d+\\.\\d{3} ms$`),
      );
    }
    const json = await kv(['bench', '--json', '--ops', '10', '--lock-ops', '3', '--value-size', '1000'], {
      url,
    });
    expect(json.status, json.stderr).toBe(0);
    const figures = json.out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(figures.map((f) => f.name)).toEqual([
      'put',
      'get',
      'atomicPut (CAS)',
      'list (10 keys)',
      'lock + unlock',
      'put -> watch event',
    ]);
    for (const f of figures) {
      expect(f.ops, f.name).toBe(f.name === 'list (10 keys)' ? 20 : f.name === 'lock + unlock' ? 3 : 10);
      expect(f.opsPerSecond, f.name).toBeGreaterThan(0);
      expect(f.p50Ms, f.name).toBeGreaterThan(0);
      expect(f.p99Ms, f.name).toBeGreaterThanOrEqual(f.p50Ms);
    }
    // Only the user's own key is left.
    expect((await kv(['ls'], { url })).out).toBe('mine\n');
    const bad = await kv(['bench', '--ops', '0'], { url });
    expect(bad.status).toBe(EXIT_CODES.INVALID_ARGUMENT);
    expect(bad.stderr).toBe('kv: INVALID_ARGUMENT: --ops must be at least 1, got 0\n');
  });

  it('Ctrl-C stops it: exit 130, its directory removed', async () => {
    const url = `sqlite:${join(tmp.dir, 'bench-interrupted.db')}`;
    const bench = startKv(['bench', '--ops', '1000000'], { url });
    const done = finished(bench);
    await lineMatching(bench, /^kv bench: sqlite/);
    bench.kill('SIGINT');
    const result = await done;
    expect(result.status, result.stderr).toBe(EXIT_CODES.INTERRUPTED);
    expect(result.stderr).toBe('');
    expect((await kv(['ls'], { url })).out).toBe('');
  });
});
