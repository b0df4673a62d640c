#!/usr/bin/env node
// Runs every package's tests against real etcd, Consul, ZooKeeper and Redis servers:
//
//   node scripts/test-all.mjs [--servers=etcd,consul,zookeeper,redis] [--no-servers] [turbo args...]
//
// 1. Builds @kv/test-servers (turbo run build --filter=@kv/test-servers: a cache hit when up to date);
//    `turbo run test` then builds the other packages itself (test dependsOn build).
// 2. Starts the servers with the local launcher (Debian packages cached in compose/.cache: no Docker,
//    no root), each on a free port of 127.0.0.1 with a throwaway data dir. A server whose
//    KV_*_ENDPOINTS is already set in the environment is not started: the given one is used.
// 3. Runs `pnpm turbo run test --concurrency=1 --continue --ui=stream` with KV_*_ENDPOINTS set.
// 4. ALWAYS stops every server it started (also on failure, SIGINT, SIGTERM, timeout) and exits
//    with the tests' exit code.
//
// Environment: KV_TEST_SERVERS (comma list, same as --servers), KV_TEST_ALL_TIMEOUT_MS (default
// 30 min; on expiry the test run is killed and the exit code is 124).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const distIndex = join(root, 'packages/test-servers/dist/index.js');
const log = (m) => process.stderr.write(`[test-all] ${m}\n`);

let serverNames;
let noServers = false;
const turboArgs = [];
for (const a of process.argv.slice(2)) {
  if (a.startsWith('--servers=')) serverNames = a.slice('--servers='.length);
  else if (a === '--no-servers') noServers = true;
  else turboArgs.push(a);
}
serverNames ??= process.env.KV_TEST_SERVERS;

// Build @kv/test-servers first (a turbo cache hit when it is up to date): the launcher comes from its dist/.
{
  log('building @kv/test-servers (turbo; cached when up to date)');
  const b = spawnSync(
    'pnpm',
    ['turbo', 'run', 'build', '--filter=@kv/test-servers', '--ui=stream', '--output-logs=errors-only'],
    {
      cwd: root,
      stdio: 'inherit',
    },
  );
  if (b.status !== 0 || !existsSync(distIndex)) {
    log(`build failed (exit ${b.status ?? b.signal})`);
    process.exit(b.status || 1);
  }
}

const ts = await import(pathToFileURL(distIndex).href);

let started;
let child;
let stopping;
let signalled;

async function stopServers() {
  stopping ??= (async () => {
    if (!started) return;
    const pids = Object.values(started.handles).flatMap((h) =>
      ('members' in h ? h.members : [h]).map((m) => m.pid),
    );
    log('stopping the servers');
    await started.stop();
    await ts.reapOrphanedServers().catch(() => []);
    const alive = pids.filter((pid) => {
      if (!pid) return false;
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    });
    // A stopped server may linger as a zombie until PID 1 reaps it: not alive for our purposes.
    if (alive.length > 0) log(`note: PIDs ${alive.join(', ')} still listed (zombies awaiting reaping?)`);
  })();
  return stopping;
}

function killTests(sig) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, sig); // the whole process group: pnpm, turbo, vitest workers
  } catch {
    // already gone
  }
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    if (signalled) return;
    signalled = sig;
    log(`${sig}: stopping the tests and the servers`);
    killTests(sig);
    if (!child)
      void stopServers().then(() => process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1)));
  });
}

let code = 1;
try {
  const env = { ...process.env };
  env.TURBO_TELEMETRY_DISABLED ??= '1';
  if (!noServers) {
    const wanted = (
      serverNames
        ? serverNames
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean)
        : ts.DEFAULT_SERVERS
    ).filter((n) => {
      if (!ts.SERVER_NAMES.includes(n))
        throw new Error(`unknown server "${n}" (one of ${ts.SERVER_NAMES.join(', ')})`);
      if (process.env[ts.ENV_VARS[n]]) {
        log(`${n}: using ${ts.ENV_VARS[n]}=${process.env[ts.ENV_VARS[n]]} from the environment`);
        return false;
      }
      return true;
    });
    if (wanted.length > 0) {
      const t0 = Date.now();
      log(`starting ${wanted.join(', ')}`);
      started = await ts.startServers(wanted, { log });
      for (const [name, err] of Object.entries(started.errors)) {
        const bar = '!'.repeat(78);
        process.stderr.write(`\n${bar}\n[test-all] ${name} DID NOT START: ${err.message}\n${bar}\n\n`);
      }
      for (const [k, v] of Object.entries(started.env)) {
        env[k] = v;
        log(`${k}=${v}`);
      }
      log(`servers ready in ${Date.now() - t0} ms`);
    }
  }
  if (!signalled) {
    const timeoutMs = Number(process.env.KV_TEST_ALL_TIMEOUT_MS ?? 30 * 60_000);
    const args = ['turbo', 'run', 'test', '--concurrency=1', '--continue']; // every package runs and reports, even after one fails
    if (!turboArgs.some((a) => a.startsWith('--ui'))) args.push('--ui=stream');
    args.push(...turboArgs);
    log(`pnpm ${args.join(' ')}`);
    child = spawn('pnpm', args, { cwd: root, env, stdio: ['ignore', 'inherit', 'inherit'], detached: true });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      log(`tests still running after ${timeoutMs} ms: killing them`);
      killTests('SIGTERM');
      setTimeout(() => killTests('SIGKILL'), 10_000).unref();
    }, timeoutMs);
    code = await new Promise((res) => {
      child.on('error', (err) => {
        log(`cannot run pnpm: ${err.message}`);
        res(1);
      });
      child.on('exit', (c, s) => res(c ?? 128 + (s === 'SIGINT' ? 2 : s === 'SIGKILL' ? 9 : 15)));
    });
    clearTimeout(timer);
    if (timedOut) code = 124;
    // Leftovers of the process group (a worker that ignored the signal).
    killTests('SIGKILL');
  } else {
    code = 130;
  }
} catch (err) {
  log(`error: ${err instanceof Error ? err.stack : String(err)}`);
  code = 1;
} finally {
  await stopServers();
}
if (signalled && code === 0) code = 130;
log(`exit ${code}`);
process.exit(code);
