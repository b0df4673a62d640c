#!/usr/bin/env node
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { reapClusterNets } from './cluster-net.js';
import { ensureInstalled } from './install.js';
import { launch, type Member, membersOf } from './launch.js';
import { withLock } from './lock.js';
import { DEFAULT_SERVERS, ENV_VARS, isServerName, KIND_OF, SERVER_NAMES, type ServerName } from './names.js';
import { endpointsFile, runDir } from './paths.js';
import { isAlive, isFrozen, listRegistry, reapRegistered } from './proc.js';
import { adopt, entryServes, envOf, readState, type StateEntry, writeState } from './state.js';

const USAGE = `usage: node packages/test-servers/dist/cli.js <command> [args]

  up [server...]        start (or reuse, if alive) servers; default: ${DEFAULT_SERVERS.join(' ')}
                        servers: ${SERVER_NAMES.join(' ')}
  down [server...]      stop them (default: all started by "up"), and any private server
                        (and cluster network) whose owning test process is gone; --all: every
                        registered server and cluster network
  status                what runs, where
  env                   print the KV_*_ENDPOINTS variables (as "export" lines)
  stop|start|kill|freeze|thaw <server> [member]
                        act on one server or cluster member (1-based; default 1)
  logs <server> [member] [lines]

Endpoints are written to compose/.run/endpoints.json and compose/.run/.env.`;

const log = (m: string): void => {
  process.stderr.write(`[test-servers] ${m}\n`);
};
const lockFile = (): string => join(runDir(), 'state.lock');
const lock = <T>(fn: () => Promise<T>): Promise<T> =>
  withLock(lockFile(), fn, {
    timeoutMs: 15 * 60_000,
    what: 'the test-servers state lock',
    onWait: (p) => log(`waiting for PID ${p}`),
  });

function parseNames(args: string[]): ServerName[] {
  for (const a of args) {
    if (!isServerName(a)) throw new UsageError(`unknown server "${a}" (one of: ${SERVER_NAMES.join(', ')})`);
  }
  return args as ServerName[];
}

class UsageError extends Error {}

function printEnv(env: Record<string, string>): void {
  for (const [k, v] of Object.entries(env)) process.stdout.write(`export ${k}=${v}\n`);
}

async function stopEntry(e: StateEntry): Promise<void> {
  await Promise.all(
    adopt(e).map(async (m) => {
      await m.stop();
      rmSync(m.spec.dataDir, { recursive: true, force: true });
    }),
  );
}

function toEntry(name: ServerName, baseDir: string, members: Member[]): StateEntry {
  return {
    name,
    baseDir,
    members: members.map((m) => ({
      spec: m.spec,
      pid: m.pid ?? 0,
      ...(m.startTime ? { startTime: m.startTime } : {}),
    })),
  };
}

async function up(names: ServerName[]): Promise<number> {
  const t0 = Date.now();
  const failures: string[] = [];
  const state = await lock(async () => {
    await ensureInstalled([...new Set(names.map((n) => KIND_OF[n]))], log);
    await reapRegistered();
    await reapClusterNets();
    const s = readState();
    await Promise.all(
      names.map(async (n) => {
        const prev = s.servers[n];
        if (prev && (await entryServes(prev))) {
          log(`${n}: already running at ${prev.members.map((m) => m.spec.endpoint).join(',')}`);
          return;
        }
        if (prev) {
          await stopEntry(prev);
          delete s.servers[n];
        }
        const baseDir = join(runDir(), n);
        rmSync(baseDir, { recursive: true, force: true });
        const t = Date.now();
        try {
          const h = await launch(n, { baseDir, detached: true, owner: 0 }, log);
          s.servers[n] = toEntry(n, baseDir, membersOf(h));
          log(`${n}: serving at ${h.endpoints.join(',')} (${Date.now() - t} ms)`);
        } catch (err) {
          failures.push(`${n}: ${(err as Error).message}`);
        }
      }),
    );
    writeState(s);
    return s;
  });
  printEnv(envOf(state));
  if (failures.length > 0) {
    log(`FAILED:\n${failures.join('\n')}`);
    return 1;
  }
  log(`ready in ${Date.now() - t0} ms; endpoints in ${endpointsFile()}`);
  return 0;
}

async function down(names: ServerName[], all: boolean): Promise<number> {
  await lock(async () => {
    const s = readState();
    const selected = names.length > 0 ? names : (Object.keys(s.servers) as ServerName[]);
    await Promise.all(
      selected.map(async (n) => {
        const e = s.servers[n];
        if (!e) return;
        await stopEntry(e);
        delete s.servers[n];
        log(`${n}: stopped`);
      }),
    );
    writeState(s);
    if (names.length === 0 || all) {
      const reaped = await reapRegistered(all ? { all: true } : {});
      for (const r of reaped) log(`${r.name} (PID ${r.pid}, owner ${r.owner || 'cli'}): stopped`);
      for (const id of await reapClusterNets(all ? { all: true } : {})) log(`cluster network ${id}: deleted`);
    }
  });
  return 0;
}

function memberState(m: Member): string {
  if (!m.running) return 'stopped';
  return m.pid !== undefined && isFrozen(m.pid) ? 'frozen' : 'running';
}

function status(): number {
  const s = readState();
  const names = Object.keys(s.servers) as ServerName[];
  if (names.length === 0) process.stdout.write('no servers started by "up"\n');
  for (const n of names) {
    const e = s.servers[n];
    if (!e) continue;
    process.stdout.write(
      `${n.padEnd(20)} ${ENV_VARS[n]}=${e.members.map((m) => m.spec.endpoint).join(',')}\n`,
    );
    for (const m of adopt(e)) {
      process.stdout.write(
        `  ${m.name.padEnd(22)} ${memberState(m).padEnd(8)} pid ${String(m.pid ?? '-').padEnd(8)} ${m.logFile}\n`,
      );
    }
  }
  const priv = listRegistry().filter((r) => r.owner !== 0 && isAlive(r.pid, r.startTime));
  if (priv.length > 0) {
    process.stdout.write(`private servers owned by test processes: ${priv.length}\n`);
    for (const r of priv) {
      const orphan = !isAlive(r.owner, r.ownerStartTime);
      process.stdout.write(
        `  ${r.name.padEnd(22)} pid ${r.pid} owner ${r.owner}${orphan ? ' (ORPHANED)' : ''}\n`,
      );
    }
  }
  return 0;
}

function pickMember(args: string[]): { name: ServerName; index: number } {
  const [name, idx] = args;
  if (!name) throw new UsageError('which server?');
  const [n] = parseNames([name]);
  const index = idx === undefined ? 1 : Number(idx);
  if (!Number.isInteger(index) || index < 1) throw new UsageError(`bad member number "${idx}"`);
  return { name: n as ServerName, index };
}

async function memberCommand(cmd: string, args: string[]): Promise<number> {
  const { name, index } = pickMember(args);
  return lock(async () => {
    const s = readState();
    const e = s.servers[name];
    if (!e) throw new UsageError(`${name} was not started by "up"`);
    const m = adopt(e)[index - 1];
    if (!m) throw new UsageError(`${name} has ${e.members.length} member(s)`);
    switch (cmd) {
      case 'stop':
        await m.stop();
        break;
      case 'kill':
        await m.kill();
        break;
      case 'start':
        await m.start();
        s.servers[name] = toEntry(
          name,
          e.baseDir,
          adopt(e).map((x, i) => (i === index - 1 ? m : x)),
        );
        writeState(s);
        break;
      case 'freeze':
        m.freeze();
        break;
      case 'thaw':
        m.thaw();
        break;
    }
    log(`${m.name}: ${memberState(m)}${m.pid ? ` (pid ${m.pid})` : ''}`);
    return 0;
  });
}

function logs(args: string[]): number {
  const { name, index } = pickMember(args);
  const e = readState().servers[name];
  const m = e ? adopt(e)[index - 1] : undefined;
  if (!m) throw new UsageError(`${name} member ${index} is not recorded`);
  process.stdout.write(`${m.logTail(Number(args[2] ?? 60))}\n`);
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'up':
      return up(rest.length > 0 ? parseNames(rest) : [...DEFAULT_SERVERS]);
    case 'down':
      return down(parseNames(rest.filter((a) => a !== '--all')), rest.includes('--all'));
    case 'status':
      return status();
    case 'env':
      printEnv(envOf(readState()));
      return 0;
    case 'stop':
    case 'start':
    case 'kill':
    case 'freeze':
    case 'thaw':
      return memberCommand(cmd, rest);
    case 'logs':
      return logs(rest);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${USAGE}\n`);
      return cmd === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command "${cmd}"`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`${err.message}\n\n${USAGE}\n`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`[test-servers] ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    }
  },
);
