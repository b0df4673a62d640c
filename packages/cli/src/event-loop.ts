/**
 * Resolves on the next turn of the event loop. An embedded store (SQLite) answers in microtasks
 * only, so a loop of calls on it never lets signal handlers (Ctrl-C) or timers run without this.
 */
export const nextTick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
