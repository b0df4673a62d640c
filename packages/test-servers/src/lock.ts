import { closeSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { isAlive, procStartTime } from './proc.js';

/**
 * Runs `fn` while holding an exclusive lock file (created with O_EXCL, holding "PID STARTTIME").
 * A lock whose holder is gone is taken over. Waiting is bounded by `timeoutMs`.
 */
export async function withLock<T>(
  file: string,
  fn: () => Promise<T>,
  opts: { timeoutMs?: number; what?: string; onWait?: (holder: number) => void } = {},
): Promise<T> {
  const { timeoutMs = 10 * 60_000, what = file } = opts;
  mkdirSync(dirname(file), { recursive: true });
  const deadline = Date.now() + timeoutMs;
  const me = `${process.pid} ${procStartTime(process.pid) ?? ''}`;
  let told = false;
  for (;;) {
    try {
      const fd = openSync(file, 'wx');
      writeSync(fd, me);
      closeSync(fd);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let holder = 0;
    let holderStart: string | undefined;
    try {
      const [p, s] = readFileSync(file, 'utf8').trim().split(' ');
      holder = Number(p);
      holderStart = s || undefined;
    } catch {
      continue; // removed meanwhile
    }
    if (!holder || !isAlive(holder, holderStart)) {
      // Stale: move it aside atomically (only one waiter wins), then retry.
      const aside = `${file}.stale.${process.pid}`;
      try {
        renameSync(file, aside);
        unlinkSync(aside);
      } catch {
        // another waiter took it over
      }
      continue;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (held by PID ${holder})`);
    }
    if (!told) {
      opts.onWait?.(holder);
      told = true;
    }
    await delay(200);
  }
  try {
    return await fn();
  } finally {
    try {
      unlinkSync(file);
    } catch {
      // gone already
    }
  }
}
