import { type ChildProcess, spawn } from 'node:child_process';
import { constants } from 'node:os';
import {
  type CampaignOptions,
  campaign,
  InvalidArgumentError,
  isAbortError,
  type LockLease,
  type LockOptions,
} from '@kv/core';
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
/** The environment variables the command gets while it leads (`kv elect`). */
export const ELECT_ENV = { token: 'KV_FENCING_TOKEN', key: 'KV_ELECTION_KEY' } as const;

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
  const grace = killGrace(options);
  const lockOptions: LockOptions = {
    ...(options.ttl === undefined ? {} : { ttl: parseDuration(options.ttl, '--ttl') }),
    ...(options.value === undefined ? {} : { value: options.value }),
  };
  return ctx.withStore(async (store) => {
    const lock = store.newLock(key, lockOptions);
    let lease: LockLease;
    try {
      lease = await lock.lock({ signal: ctx.interrupted });
    } catch (error) {
      if (isAbortError(error) && ctx.interrupted.aborted) return EXIT_CODES.INTERRUPTED;
      throw error;
    }
    try {
      const env = { [LOCK_ENV.token]: String(lease.fencingToken), [LOCK_ENV.key]: key };
      return await runHolding(ctx, file, args, env, lease, grace);
    } finally {
      await lock.unlock();
    }
  });
}

function killGrace(options: LockCommandOptions): number {
  return options.killGrace === undefined ? 10_000 : parseDuration(options.killGrace, '--kill-grace');
}

/**
 * `kv elect KEY -- COMMAND [ARGS]`: campaigns (the `campaign()` recipe) until this process leads,
 * runs COMMAND while leading (fencing token in `KV_FENCING_TOKEN`), kills it if leadership is
 * lost, resigns when it exits (a waiting candidate leads at once), exits with its status.
 */
export async function electCommand(
  ctx: Context,
  key: string,
  command: readonly string[],
  options: LockCommandOptions,
): Promise<number> {
  const [file, ...args] = command;
  if (file === undefined)
    throw new InvalidArgumentError('elect needs a command to run: kv elect KEY -- COMMAND [ARGS]');
  const grace = killGrace(options);
  const campaignOptions: CampaignOptions = {
    signal: ctx.interrupted,
    ...(options.ttl === undefined ? {} : { ttl: parseDuration(options.ttl, '--ttl') }),
    ...(options.value === undefined ? {} : { value: options.value }),
  };
  return ctx.withStore(async (store) => {
    let leadership: Awaited<ReturnType<typeof campaign>>;
    try {
      leadership = await campaign(store, key, campaignOptions);
    } catch (error) {
      if (isAbortError(error) && ctx.interrupted.aborted) return EXIT_CODES.INTERRUPTED;
      throw error;
    }
    try {
      const env = { [ELECT_ENV.token]: String(leadership.fencingToken), [ELECT_ENV.key]: key };
      return await runHolding(ctx, file, args, env, leadership, grace);
    } finally {
      await leadership.resign();
    }
  });
}

/** Runs the command while `lease.lost` has not aborted; kills it (its process group) when it does. */
function runHolding(
  ctx: Context,
  file: string,
  args: string[],
  extraEnv: Record<string, string>,
  lease: Pick<LockLease, 'lost'>,
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
      env: { ...process.env, ...extraEnv },
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
