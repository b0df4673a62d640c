import { abortError } from '@kv/core';

/**
 * Wakes watchers and lock waiters when the database may have changed. Each
 * wake bumps `generation`; a waiter passes the generation it last saw, so a
 * change between its read and its wait is never missed.
 */
export class Notifier {
  generation = 0;
  private readonly waiters = new Set<() => void>();
  private active = 0;
  private readonly onActive: (active: boolean) => void;

  constructor(onActive: (active: boolean) => void) {
    this.onActive = onActive;
  }

  wake(): void {
    this.generation++;
    if (this.waiters.size === 0) return; // every write wakes: no copy when nobody waits
    for (const waiter of [...this.waiters]) waiter();
  }

  /** Registers a long-lived user (a watch or a lock wait): polling runs while there is one. */
  hold(): () => void {
    if (this.active++ === 0) this.onActive(true);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--this.active === 0) this.onActive(false);
    };
  }

  /** Resolves when `generation` moves past `seen`, after `timeout` ms, or rejects when `signal` aborts. */
  wait(seen: number, signal: AbortSignal, timeout?: number): Promise<void> {
    if (this.generation !== seen) return Promise.resolve();
    if (signal.aborted) return Promise.reject(abortError(signal));
    return new Promise((resolve, reject) => {
      const done = () => {
        this.waiters.delete(done);
        signal.removeEventListener('abort', onAbort);
        if (timer) clearTimeout(timer);
        resolve();
      };
      const onAbort = () => {
        this.waiters.delete(done);
        if (timer) clearTimeout(timer);
        reject(abortError(signal));
      };
      const timer = timeout === undefined ? undefined : setTimeout(done, Math.max(0, timeout));
      timer?.unref?.();
      this.waiters.add(done);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}
