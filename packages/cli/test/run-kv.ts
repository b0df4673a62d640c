import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The built binary: the tests run it exactly as a user does. */
export const BIN = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'bin.js');
export const PACKAGE_DIR = join(dirname(fileURLToPath(import.meta.url)), '..');

export interface KvResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
  /** stdout as UTF-8. */
  out: string;
}

export interface KvOptions {
  url?: string;
  input?: Uint8Array | string;
  env?: Record<string, string | undefined>;
  /** Generous: a kv call is a process start plus a round trip. */
  timeoutMs?: number;
}

function environment(options: KvOptions): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
  delete env.FORCE_COLOR;
  Object.assign(env, options.env);
  if (options.url !== undefined) env.KV_URL = options.url;
  for (const [name, value] of Object.entries(options.env ?? {})) if (value === undefined) delete env[name];
  return env;
}

/** Starts `kv ARGS` (cwd: this package, so the backend packages resolve as for a user's install). */
export function startKv(args: readonly string[], options: KvOptions = {}): ChildProcess {
  return spawn(process.execPath, [BIN, ...args], {
    cwd: PACKAGE_DIR,
    env: environment(options),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

/** The outcome of a running kv process, once it exits (killed after `timeoutMs`, failing the test). */
export function finished(child: ChildProcess, timeoutMs = 60_000): Promise<KvResult> {
  const stdout: Buffer[] = [];
  let stderr = '';
  child.stdout?.on('data', (c: Buffer) => stdout.push(c));
  child.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString('utf8');
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`kv did not exit within ${timeoutMs} ms; stderr: ${stderr}`));
    }, timeoutMs);
    child.once('error', reject);
    child.once('close', (status, signal) => {
      clearTimeout(timer);
      const out = Buffer.concat(stdout);
      resolve({ status, signal, stdout: out, stderr, out: out.toString('utf8') });
    });
  });
}

/** Runs `kv ARGS` to completion. */
export function kv(args: readonly string[], options: KvOptions = {}): Promise<KvResult> {
  const child = startKv(args, options);
  const done = finished(child, options.timeoutMs);
  child.stdin?.end(options.input ?? '');
  return done;
}

/** Resolves with the text once a line matching `pattern` has appeared on the child's stdout. */
export function lineMatching(child: ChildProcess, pattern: RegExp, timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(() => {
      child.stdout?.off('data', onData);
      reject(new Error(`no line matching ${pattern} within ${timeoutMs} ms; got: ${buffered}`));
    }, timeoutMs);
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      const line = buffered.split('\n').find((l) => pattern.test(l));
      if (line !== undefined) {
        clearTimeout(timer);
        child.stdout?.off('data', onData);
        resolve(line);
      }
    };
    child.stdout?.on('data', onData);
  });
}

/** A throwaway directory for SQLite files, removed by the returned function. */
export function tempDir(): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'kv-cli-'));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
