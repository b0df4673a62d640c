import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { registryDir } from './paths.js';

/** Start time of a process (clock ticks since boot, from /proc/PID/stat), to tell a reused PID apart. */
export function procStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state); starttime is field 22.
    return fields[19];
  } catch {
    return undefined;
  }
}

function procState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}

/**
 * Whether `pid` is a live process (a zombie counts as stopped: PID 1 here reaps orphans only about
 * once a second). With `startTime`, the process must also be the same one that was recorded.
 */
export function isAlive(pid: number, startTime?: string): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const state = procState(pid);
  if (state === 'Z' || state === 'X') return false;
  if (startTime !== undefined) {
    const now = procStartTime(pid);
    if (now !== undefined && now !== startTime) return false;
  }
  return true;
}

/** True when the process is stopped by a signal (frozen with SIGSTOP). */
export function isFrozen(pid: number): boolean {
  return procState(pid) === 'T';
}

export function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

export async function waitForExit(pid: number, timeoutMs: number, startTime?: string): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid, startTime)) {
    if (Date.now() >= deadline) return false;
    await delay(50);
  }
  return true;
}

/** SIGTERM (and SIGCONT, in case it is frozen), then SIGKILL after `graceMs`. Bounded. */
export async function terminate(
  pid: number,
  opts: { graceMs?: number; startTime?: string } = {},
): Promise<void> {
  const { graceMs = 10_000, startTime } = opts;
  if (!isAlive(pid, startTime)) return;
  signal(pid, 'SIGTERM');
  signal(pid, 'SIGCONT');
  if (await waitForExit(pid, graceMs, startTime)) return;
  signal(pid, 'SIGKILL');
  if (await waitForExit(pid, 10_000, startTime)) return;
  throw new Error(`process ${pid} did not exit after SIGKILL`);
}

/** The last `lines` lines of a log file ('' when missing). Reads at most the last 64 KiB. */
export function logTail(file: string, lines = 40): string {
  try {
    const size = statSync(file).size;
    const buf = readFileSync(file);
    const text = buf.subarray(Math.max(0, size - 65_536)).toString('utf8');
    return text
      .split('\n')
      .slice(-lines - 1)
      .join('\n')
      .trimEnd();
  } catch {
    return '';
  }
}

export interface WaitOptions {
  timeoutMs: number;
  intervalMs?: number;
  /** Checked on every round: a string aborts the wait with that message (e.g. "the process exited"). */
  abort?: () => string | undefined;
}

/** Polls `check` until it returns true, bounded by `timeoutMs`. Rejects with the last check error. */
export async function waitUntil(
  what: string,
  check: () => Promise<boolean>,
  opts: WaitOptions,
): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  const interval = opts.intervalMs ?? 150;
  let last = '';
  for (;;) {
    const aborted = opts.abort?.();
    if (aborted) throw new Error(`${what}: ${aborted}`);
    try {
      if (await check()) return;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    if (Date.now() >= deadline) {
      throw new Error(`${what}: not ready after ${opts.timeoutMs} ms${last ? ` (last error: ${last})` : ''}`);
    }
    await delay(interval);
  }
}

// ---------------------------------------------------------------------------------------------
// Registry of every server process started by this package (compose/.run/procs/PID.json), so
// servers whose owner died (a killed test worker) can be found and stopped later.

export interface RegistryEntry {
  pid: number;
  startTime?: string;
  name: string;
  /** PID of the process that owns the server; 0 for servers started by `cli up` (shared). */
  owner: number;
  ownerStartTime?: string;
  /** A data dir to delete once the server is gone (throwaway data dirs only). */
  removeDir?: string;
}

export function registerProcess(entry: RegistryEntry): void {
  try {
    mkdirSync(registryDir(), { recursive: true });
    writeFileSync(join(registryDir(), `${entry.pid}.json`), JSON.stringify(entry));
  } catch {
    // best effort
  }
}

export function unregisterProcess(pid: number): void {
  try {
    unlinkSync(join(registryDir(), `${pid}.json`));
  } catch {
    // already gone
  }
}

export function listRegistry(): RegistryEntry[] {
  let names: string[];
  try {
    names = readdirSync(registryDir());
  } catch {
    return [];
  }
  const out: RegistryEntry[] = [];
  for (const n of names) {
    if (!n.endsWith('.json')) continue;
    try {
      out.push(JSON.parse(readFileSync(join(registryDir(), n), 'utf8')) as RegistryEntry);
    } catch {
      // a half-written entry: skip
    }
  }
  return out;
}

function ownerAlive(e: RegistryEntry): boolean {
  return e.owner !== 0 && isAlive(e.owner, e.ownerStartTime);
}

/**
 * Stops registered servers: those whose owner process is gone (default), or every one (`all`).
 * Shared servers (owner 0, from `cli up`) are only stopped with `all`. Returns what was stopped.
 */
export async function reapRegistered(opts: { all?: boolean } = {}): Promise<RegistryEntry[]> {
  const victims = listRegistry().filter((e) => (opts.all ? true : e.owner !== 0 && !ownerAlive(e)));
  await Promise.all(
    victims.map(async (e) => {
      try {
        await terminate(e.pid, { graceMs: 5_000, ...(e.startTime ? { startTime: e.startTime } : {}) });
      } catch {
        // reported by the caller via status
      }
      if (e.removeDir) rmSync(e.removeDir, { recursive: true, force: true });
      unregisterProcess(e.pid);
    }),
  );
  return victims;
}

/** Stops servers whose owning process died without stopping them (e.g. a test worker killed by a
 * signal) and deletes their throwaway directories. Returns what it stopped. */
export function reapOrphanedServers(): Promise<RegistryEntry[]> {
  return reapRegistered();
}
