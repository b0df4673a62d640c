import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { launchEtcd, serverFor } from '@kv/test-servers';
import { afterAll, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../src/exit-codes.js';
import { finished, kv, lineMatching, startKv, tempDir } from './run-kv.js';

const tmp = tempDir();
afterAll(() => tmp.remove());
let n = 0;
const freshUrl = () => `sqlite:${join(tmp.dir, `wl-${n++}.db`)}`;

describe('kv watch', () => {
  it('prints the current state, then one line per change, and exits 0 on SIGINT', async () => {
    const url = freshUrl();
    await kv(['put', 'cfg/a', 'one'], { url });
    const watcher = startKv(['watch', '--json', 'cfg/a'], { url });
    const done = finished(watcher);
    expect(JSON.parse(await lineMatching(watcher, /"one"/))).toMatchObject({
      type: 'put',
      key: 'cfg/a',
      value: 'one',
    });
    const changed = lineMatching(watcher, /"two"/);
    await kv(['put', 'cfg/a', 'two'], { url });
    await changed;
    const deleted = lineMatching(watcher, /"delete"/);
    await kv(['rm', 'cfg/a'], { url });
    expect(JSON.parse(await deleted)).toEqual({ type: 'delete', key: 'cfg/a' });
    watcher.kill('SIGINT');
    const result = await done;
    expect(result.status).toBe(0);
    expect(result.out.trim().split('\n')).toHaveLength(3);
  });

  it('--tree sees keys created later at any depth', async () => {
    const url = freshUrl();
    const watcher = startKv(['watch', '--tree', 'cfg'], { url });
    const done = finished(watcher);
    // A put that lands before the watch starts shows in its first listing, not as a change: put
    // until a put shows (the watch is set up by then), each from a process of its own.
    const seen = lineMatching(watcher, /^PUT\s+cfg\/deep\/x\s+@\d+\s+v$/);
    let shown = false;
    seen.then(
      () => {
        shown = true;
      },
      () => {},
    );
    for (let attempt = 0; !shown && attempt < 20; attempt++) await kv(['put', 'cfg/deep/x', 'v'], { url });
    await seen;
    const gone = lineMatching(watcher, /^DELETE\s+cfg\/deep\/x$/);
    await kv(['rm', 'cfg/deep/x'], { url });
    await gone;
    watcher.kill('SIGINT');
    expect((await done).status).toBe(0);
  });
});

/** Two `kv lock` processes on one key: the commands never overlap, tokens grow. */
async function exclusion(url: string, key: string) {
  const log = join(tmp.dir, `exclusion-${n++}.log`);
  // Each command appends start/end around a pause; overlapping holds would interleave the lines.
  const script = `echo "start $KV_FENCING_TOKEN" >> ${log}; sleep 1; echo "end $KV_FENCING_TOKEN" >> ${log}`;
  const runs = await Promise.all(
    [0, 1, 2].map(() => kv(['lock', '--ttl', '5s', key, '--', 'sh', '-c', script], { url })),
  );
  for (const run of runs) expect(run.status, run.stderr).toBe(0);
  const lines = readFileSync(log, 'utf8').trim().split('\n');
  expect(lines).toHaveLength(6);
  const tokens: number[] = [];
  for (let i = 0; i < lines.length; i += 2) {
    const [, token] = /^start (\d+)$/.exec(lines[i] as string) ?? [];
    expect(lines[i + 1]).toBe(`end ${token}`);
    tokens.push(Number(token));
  }
  expect([...tokens].sort((a, b) => a - b)).toEqual(tokens);
  expect(new Set(tokens).size).toBe(3);
}

/** A holder whose lock key is deleted loses the lock: its command is killed, kv exits LOCK_LOST. */
async function killedOnLoss(url: string, key: string, command: 'lock' | 'elect' = 'lock') {
  const holder = startKv([command, '--ttl', '5s', key, '--', 'sh', '-c', 'echo held; sleep 120'], { url });
  const done = finished(holder);
  await lineMatching(holder, /^held$/);
  expect((await kv(['rm', key], { url })).status).toBe(0);
  const result = await done;
  expect(result.status).toBe(EXIT_CODES.LOCK_LOST);
  expect(result.stderr).toMatch(/^kv: LOCK_LOST: /m);
  // The lock is free again: another holder gets it at once.
  const next = await kv([command, key, '--', 'sh', '-c', 'echo "$KV_FENCING_TOKEN"'], { url });
  expect(next.status).toBe(0);
}

describe('kv lock on SQLite', () => {
  it('runs the command with the fencing token and exits with its status', async () => {
    const url = freshUrl();
    const result = await kv(
      ['lock', 'jobs/a', '--', 'sh', '-c', 'echo "token=$KV_FENCING_TOKEN key=$KV_LOCK_KEY"; exit 7'],
      {
        url,
      },
    );
    expect(result.status).toBe(7);
    expect(result.out).toMatch(/^token=\d+ key=jobs\/a\n$/);
    // Released on exit.
    expect((await kv(['exists', 'jobs/a'], { url })).status).toBe(EXIT_CODES.FALSE);
    expect((await kv(['lock', 'jobs/a', '--', 'no-such-command-kv'], { url })).status).toBe(127);
  });
  it('excludes between processes', () => exclusion(freshUrl(), 'jobs/x'));
  it('kills the command when the lock is lost', () => killedOnLoss(freshUrl(), 'jobs/y'));
});

describe('kv elect on SQLite', () => {
  const leader = (url: string, name: string) =>
    startKv(
      [
        'elect',
        '--ttl',
        '2s',
        '--value',
        name,
        'election/x',
        '--',
        'sh',
        '-c',
        // $$ is the command's pid (its own process group): the test ends it if kv is SIGKILLed.
        'echo "leading $KV_FENCING_TOKEN $KV_ELECTION_KEY $$"; exec sleep 60',
      ],
      { url },
    );
  const parse = (line: string) => {
    const [, token, key, pid] = line.split(' ');
    return { token: Number(token), key, pid: Number(pid) };
  };

  it('one leader at a time; the next leads when the leader is killed, and at once when it exits', async () => {
    const url = freshUrl();
    const a = leader(url, 'A');
    const aDone = finished(a);
    const aLead = parse(await lineMatching(a, /^leading /));
    expect(aLead.key).toBe('election/x');
    const b = leader(url, 'B');
    const bDone = finished(b);
    let bLeadsAt = Number.POSITIVE_INFINITY;
    const bLeading = lineMatching(b, /^leading /).then((line) => {
      bLeadsAt = performance.now();
      return parse(line);
    });
    // A window in which B is up and campaigning (a process starts in well under 2 s) while A leads:
    // B must not run its command in it.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect(bLeadsAt).toBe(Number.POSITIVE_INFINITY);
    expect(b.exitCode).toBeNull();
    expect((await kv(['get', 'election/x'], { url })).out).toBe('A');
    const killedAt = performance.now();
    a.kill('SIGKILL'); // no resign: B leads once A's ttl runs out
    try {
      const bLead = await bLeading;
      expect(bLeadsAt).toBeGreaterThan(killedAt);
      expect(bLead.token).toBeGreaterThan(aLead.token);
      expect((await kv(['get', 'election/x'], { url })).out).toBe('B');
    } finally {
      process.kill(-aLead.pid, 'SIGKILL'); // kv was SIGKILLed: its command is ours to end
    }
    expect((await aDone).signal).toBe('SIGKILL');
    // SIGTERM ends B cleanly: its command is stopped, it resigns, the next candidate leads at once.
    b.kill('SIGTERM');
    expect((await bDone).status).toBe(128 + 15);
    const c = await kv(['elect', 'election/x', '--', 'sh', '-c', 'echo "$KV_FENCING_TOKEN"'], { url });
    expect(c.status).toBe(0);
    expect(Number(c.out.trim())).toBeGreaterThan(aLead.token);
  });

  it('kills the command when leadership is lost', () => killedOnLoss(freshUrl(), 'election/y', 'elect'));
});

describe('kv lock on etcd', async () => {
  const etcd = await serverFor('etcd');
  const url = `etcd://${etcd.endpoints[0]}/cli-lock-${process.pid}`;
  it.skipIf(!etcd.available)('excludes between processes', () => exclusion(url, 'jobs/x'));
  // etcd holds the lock by a lease, not by the visible key: the loss here is a frozen server.
  it.skipIf(!etcd.available)('kills the command when the server freezes and the lock is lost', async () => {
    const own = await launchEtcd();
    try {
      const privateUrl = `etcd://${own.endpoints[0]}/cli?requestTimeout=1000`;
      const holder = startKv(['lock', '--ttl', '3s', 'jobs/y', '--', 'sh', '-c', 'echo held; sleep 120'], {
        url: privateUrl,
      });
      const done = finished(holder);
      await lineMatching(holder, /^held$/);
      own.freeze();
      const result = await done;
      expect(result.status).toBe(EXIT_CODES.LOCK_LOST);
      expect(result.stderr).toMatch(/^kv: LOCK_LOST: /m);
    } finally {
      own.thaw();
      await own.dispose();
    }
  });
});

describe('kv lock on Redis', async () => {
  const redis = await serverFor('redis');
  const url = `redis://${redis.endpoints[0]}/cli-lock-${process.pid}`;
  it.skipIf(!redis.available)('excludes between processes', () => exclusion(url, 'jobs/x'));
  it.skipIf(!redis.available)('kills the command when the lock is lost', () => killedOnLoss(url, 'jobs/y'));
});
