/** A one-shot "something happened" that a loop awaits: a watch fired, a session changed, a deadline came. */
export class Wake {
  private fired = false;
  private resolve: (() => void) | undefined;

  readonly fire = (): void => {
    this.fired = true;
    this.resolve?.();
  };

  /** Resolves when fired, when `signal` aborts, or after `ms` (if given). Never rejects. */
  wait(signal: AbortSignal, ms?: number): Promise<void> {
    if (this.fired || signal.aborted) return Promise.resolve();
    return new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        if (timer) clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.resolve = undefined;
        resolve();
      };
      this.resolve = done;
      signal.addEventListener('abort', done, { once: true });
      if (ms !== undefined) {
        timer = setTimeout(done, Math.max(0, Math.min(ms, 2_147_483_647)));
        timer.unref?.();
      }
    });
  }
}
