import {
  describeValue,
  InvalidArgumentError,
  MAX_TIMER_MS,
  parseQueryOptions,
  type StoreConfig,
} from '@kv/core';

/** Options of the SQLite backend, beyond the common ones. */
export interface SqliteOptions {
  /** Database file, or `:memory:` for a private in-memory store. */
  path?: string;
  /** ms: how often other processes' commits are looked for while a watch or lock wait is active. Default 25. */
  pollInterval?: number;
  /** ms: how long a write waits for another process's write lock. Default: the requestTimeout. */
  busyTimeout?: number;
  /** How many change-log entries to keep for watchers (older ones are trimmed; a watcher that lags further re-reads). Default 10 000. */
  changeLogSize?: number;
  /** Bytes (keys and values) the change log may hold; the oldest entries are trimmed past it. Default 64 MiB. */
  changeLogBytes?: number;
}

declare module '@kv/core' {
  interface BackendOptions {
    sqlite: SqliteOptions;
  }
}

export const SQLITE_OPTIONS = [
  'path',
  'pollInterval',
  'busyTimeout',
  'changeLogSize',
  'changeLogBytes',
] as const;

/**
 * `sqlite:./data/kv.db?prefix=app`, `sqlite:/abs/kv.db`, `sqlite:///abs/kv.db`,
 * `sqlite::memory:`. Query parameters are options.
 */
export function parseSqliteUrl(url: string): StoreConfig {
  if (!/^sqlite:/i.test(url)) throw new InvalidArgumentError(`not a sqlite URL: ${JSON.stringify(url)}`);
  let rest = url.slice('sqlite:'.length);
  const q = rest.indexOf('?');
  const query = q < 0 ? '' : rest.slice(q + 1);
  rest = q < 0 ? rest : rest.slice(0, q);
  if (rest.startsWith('//')) rest = rest.slice(2);
  let path: string;
  try {
    path = decodeURIComponent(rest);
  } catch (error) {
    throw new InvalidArgumentError(`bad percent-encoding in sqlite URL ${JSON.stringify(url)}`, {
      cause: error,
    });
  }
  if (path === '') {
    throw new InvalidArgumentError(
      `a sqlite URL needs a file path or :memory:, e.g. sqlite:./kv.db (got ${JSON.stringify(url)})`,
    );
  }
  const config: Record<string, unknown> = { backend: 'sqlite', path };
  parseQueryOptions(query, config, ['path']);
  return config as StoreConfig;
}

/** A positive integer option; `max` defaults to the longest timer delay. */
export function positiveInt(value: unknown, name: string, fallback: number, max = MAX_TIMER_MS): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0 || value > max) {
    throw new InvalidArgumentError(
      `${name} must be a positive integer up to ${max}, got ${describeValue(value)}`,
    );
  }
  return value;
}
