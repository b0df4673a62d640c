import { createStore, InvalidArgumentError, type Store } from '@kv/core';
import { Output } from './output.js';

/** Options every command takes (defined on the program, so they may come before or after the command). */
export interface GlobalOptions {
  url?: string;
  json?: boolean;
}

/** What a command runs with: where the store is, how to print, and a signal for Ctrl-C. */
export class Context {
  readonly out: Output;
  readonly url: string | undefined;
  /** Aborts on SIGINT / SIGTERM: long-running commands (watch, lock, copy) end cleanly on it. */
  readonly interrupted: AbortSignal;

  constructor(options: GlobalOptions, interrupted: AbortSignal) {
    this.out = new Output(options.json === true);
    const url = options.url ?? process.env.KV_URL;
    this.url = url === '' ? undefined : url;
    this.interrupted = interrupted;
  }

  /** The store URL, from `--url` or `KV_URL`. */
  storeUrl(): string {
    if (this.url === undefined) {
      throw new InvalidArgumentError(
        'no store given: pass --url URL or set KV_URL (e.g. sqlite:./kv.db, etcd://127.0.0.1:2379/app)',
      );
    }
    return this.url;
  }

  /** Opens the store (its backend package is loaded as `createStore` does), runs `fn`, closes it. */
  async withStore<T>(fn: (store: Store) => Promise<T>, url = this.storeUrl()): Promise<T> {
    const store = await createStore(url);
    try {
      return await fn(store);
    } finally {
      await store.close();
    }
  }
}

/** A store URL with its password masked, for printing. */
export function maskUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/]*:)[^@/]*@/i, '$1***@');
}
