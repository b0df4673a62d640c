import { type ChildProcess, spawn } from 'node:child_process';
import { constants } from 'node:os';
import { InvalidArgumentError, isAbortError, type LockLease, type LockOptions } from '@kv/core';
import type { Context } from '../context.js';
import { parseDuration } from '../durations.js';
import { EXIT_CODES, errorLine } from '../exit-codes.js';

export interface LockCommandOptions {
  ttl?: string;
  value?: string;
  killGrace?: string;
}

/** The environment variables the command gets while it holds the lock. */
export const LOCK_ENV = { token: 'KV_FENCING_TOKEN', key: 'KV_LOCK_KEY' } as const;

/** Exit status when the command could not be started (as shells do for "command not found"). */
const NOT_STARTED = 127;

/**
 * `kv lock KEY -- COMMAND [ARGS]`: waits for the lock, runs COMMAND while holding it (fencing token
 * in `KV_FENCING_TOKEN`), kills it if the lock is lost, releases the lock when it exits, and exits
 * with its status (LOCK_LOST's code after a loss, 128+N for a signal N).
 */
export async function lockCommand(
  ctx: Context,
  key: string,
  command: readonly string[],
  options: LockCommandOptions,
): Promise<number> {
  const [file, ...args] = command;
  if (file === undefined)
    throw new InvalidArgumentError('lock needs a command to run: kv lock KEY -- COMMAND [ARGS]');
  const lockOptions: LockOptions = {
    ...(options.ttl === undefined ? {} : { ttl: parseDuration(options.ttl, '--ttl') }),
    ...(options.value === undefined ? {} : { value: options.value }),
  };
  const grace = options.killGrace === undefined ? 10_000 : parseDuration(options.killGrace, '--kill-grace');
  return ctx.withStore(async (store) => {
    const lock = store.newLock(key, lockOptions);
    let lease: LockLease;
    try {
      lease = await lock.lock({ signal: ctx.interrupted });
    } catch (error) {
      if (isAbortError(error) && ctx.interrupted.aborted) return 128 + constants.signals.SIGINT;
      throw error;
    }
    try {
      return await runHolding(ctx, file, args, key, lease, grace);
    } finally {
      await lock.unlock();
    }
  });
}

function runHolding(
  ctx: Context,
  file: string,
  args: string[],
  key: string,
  lease: LockLease,
  grace: number,
): Promise<number> {
  return new Promise((resolve) => {
    if (lease.lost.aborted) {
      process.stderr.write(`${errorLine(lease.lost.reason)}\n`);
      resolve(EXIT_CODES.LOCK_LOST);
      return;
    }
    // Its own process group, so a loss kills the command's children too (`sh -c '...'`).
    const child: ChildProcess = spawn(file, args, {
      stdio: 'inherit',
      detached: true,
      env: { ...process.env, [LOCK_ENV.token]: String(lease.fencingToken), [LOCK_ENV.key]: key },
    });
    let lost = false;
    let escalation: NodeJS.Timeout | undefined;
    const kill = (signal: NodeJS.Signals) => {
      if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
      try {
        process.kill(-child.pid, signal);
      } catch {
        child.kill(signal);
      }
    };
    const stop = () => {
      kill('SIGTERM');
      escalation ??= setTimeout(() => kill('SIGKILL'), grace);
    };
    const onLost = () => {
      lost = true;
      process.stderr.write(`${errorLine(lease.lost.reason)}\n`);
      stop();
    };
    const onInterrupt = () => stop();
    lease.lost.addEventListener('abort', onLost, { once: true });
    ctx.interrupted.addEventListener('abort', onInterrupt, { once: true });
    const done = (status: number) => {
      clearTimeout(escalation);
      lease.lost.removeEventListener('abort', onLost);
      ctx.interrupted.removeEventListener('abort', onInterrupt);
      resolve(status);
    };
    child.once('error', (error) => {
      process.stderr.write(`kv: could not run ${JSON.stringify(file)}: ${error.message}\n`);
      done(NOT_STARTED);
    });
    child.once('exit', (code, signal) => {
      if (lost) done(EXIT_CODES.LOCK_LOST);
      else if (signal) done(128 + (constants.signals[signal] ?? 0));
      else done(code ?? EXIT_CODES.INTERNAL);
    });
  });
}
