import { ensureInstalled, type Log } from './install.js';
import { type AnyHandle, type InternalOptions, launch } from './launch.js';
import { DEFAULT_SERVERS, ENV_VARS, KIND_OF, type ServerName } from './names.js';

export interface StartedServers {
  handles: Partial<Record<ServerName, AnyHandle>>;
  /** KV_*_ENDPOINTS for the servers that started. */
  env: Record<string, string>;
  /** Servers that failed to start, with the error (it includes the server's log tail). */
  errors: Partial<Record<ServerName, Error>>;
  /** Stops every server started here (bounded). */
  stop(): Promise<void>;
}

/**
 * Starts several servers at once with the local launcher (fetching the packages first, in one go,
 * when the cache lacks them). A server that fails does not stop the others: see `errors`.
 */
export async function startServers(
  names: readonly ServerName[] = DEFAULT_SERVERS,
  opts: { log?: Log; internal?: InternalOptions } = {},
): Promise<StartedServers> {
  const handles: StartedServers['handles'] = {};
  const errors: StartedServers['errors'] = {};
  const env: Record<string, string> = {};
  const stop = async (): Promise<void> => {
    await Promise.allSettled(Object.values(handles).map((h) => h.dispose()));
  };
  try {
    await ensureInstalled([...new Set(names.map((n) => KIND_OF[n]))], opts.log);
  } catch (err) {
    for (const n of names) errors[n] = err as Error;
    return { handles, env, errors, stop };
  }
  await Promise.all(
    names.map(async (n) => {
      try {
        const h = await launch(n, opts.internal ?? {}, opts.log);
        handles[n] = h;
        env[ENV_VARS[n]] = h.endpoints.join(',');
      } catch (err) {
        errors[n] = err as Error;
      }
    }),
  );
  return { handles, env, errors, stop };
}
