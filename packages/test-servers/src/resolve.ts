import type { Log } from './install.js';
import { type AnyHandle, launch } from './launch.js';
import { ENV_VARS, KIND_OF, type ServerName } from './names.js';
import { tcpOpen } from './probes.js';
import { findEndpointsFile, readEndpointsFile } from './state.js';

export type ServerSource = 'env' | 'file' | 'testcontainers' | 'launcher';

export type ServerAvailability =
  | { available: true; name: ServerName; endpoints: string[]; source: ServerSource }
  /** `endpoints` is empty here: it exists so tests can read it without narrowing first. */
  | { available: false; name: ServerName; endpoints: string[]; reason: string };

export interface ServerForOptions {
  /** Where to look, in order. Default: env, file, testcontainers, launcher. */
  sources?: ServerSource[];
  /** Progress messages (default: to stderr, only for slow steps). */
  log?: Log;
}

const DEFAULT_SOURCES: ServerSource[] = ['env', 'file', 'testcontainers', 'launcher'];
const memo = new Map<ServerName, Promise<ServerAvailability>>();
const stoppers: (() => Promise<void>)[] = [];

function splitEndpoints(v: string | undefined): string[] {
  return (v ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

async function allReachable(endpoints: string[]): Promise<boolean> {
  const r = await Promise.all(endpoints.map((e) => tcpOpen(e, 1000)));
  return r.every(Boolean);
}

function loud(msg: string): void {
  const bar = '!'.repeat(78);
  process.stderr.write(`\n${bar}\n${msg}\n${bar}\n\n`);
}

async function resolveServer(name: ServerName, opts: ServerForOptions): Promise<ServerAvailability> {
  const reasons: string[] = [];
  const log: Log = opts.log ?? ((m) => process.stderr.write(`[kv test-servers] ${m}\n`));
  const envVar = ENV_VARS[name];
  for (const source of opts.sources ?? DEFAULT_SOURCES) {
    switch (source) {
      case 'env': {
        const endpoints = splitEndpoints(process.env[envVar]);
        if (endpoints.length > 0) return { available: true, name, endpoints, source };
        reasons.push(`${envVar} is not set`);
        break;
      }
      case 'file': {
        const file = findEndpointsFile();
        if (!file) {
          reasons.push('no compose/.run/endpoints.json (run: node packages/test-servers/dist/cli.js up)');
          break;
        }
        const endpoints = splitEndpoints(readEndpointsFile(file)?.env[envVar]);
        if (endpoints.length === 0) {
          reasons.push(`${file} has no ${envVar}`);
        } else if (await allReachable(endpoints)) {
          return { available: true, name, endpoints, source };
        } else {
          reasons.push(`${file} lists ${envVar}=${endpoints.join(',')} but nothing answers there (stale?)`);
        }
        break;
      }
      case 'testcontainers': {
        if (process.env.KV_TEST_SERVERS_NO_CONTAINERS === '1') {
          reasons.push('testcontainers disabled by KV_TEST_SERVERS_NO_CONTAINERS=1');
          break;
        }
        const { containerRuntime, startInContainers } = await import('./containers.js');
        const rt = await containerRuntime();
        if ('problem' in rt) {
          reasons.push(`testcontainers: ${rt.problem}`);
          break;
        }
        try {
          log(`starting ${name} with testcontainers`);
          const c = await startInContainers(name);
          stoppers.push(() => c.stop());
          return { available: true, name, endpoints: c.endpoints, source };
        } catch (err) {
          reasons.push(`testcontainers: ${(err as Error).message}`);
        }
        break;
      }
      case 'launcher': {
        try {
          const t0 = Date.now();
          const h: AnyHandle = await launch(name, {}, log);
          stoppers.push(() => h.dispose());
          log(
            `started a private ${name} (${KIND_OF[name]}) at ${h.endpoints.join(',')} in ${Date.now() - t0} ms`,
          );
          return { available: true, name, endpoints: h.endpoints, source };
        } catch (err) {
          reasons.push(`local launcher: ${(err as Error).message}`);
        }
        break;
      }
    }
  }
  const reason = reasons.join('\n  - ');
  if (process.env.CI === 'true') {
    throw new Error(`[kv test-servers] ${name} is not available (CI=true, so this fails):\n  - ${reason}`);
  }
  loud(`[kv test-servers] ${name.toUpperCase()} IS NOT AVAILABLE: its tests will be SKIPPED.\n  - ${reason}`);
  return { available: false, name, endpoints: [], reason };
}

/**
 * Where a test gets a server from, in this order: endpoints in the environment (KV_*_ENDPOINTS);
 * compose/.run/endpoints.json written by `cli up` (found by walking up from the cwd, used only if
 * the endpoints answer); testcontainers when a container runtime answers; else the local launcher
 * starts a private server for this process (stopped when it exits).
 *
 * When none works: with CI=true this throws (tests fail, never skip quietly); otherwise it prints
 * the reason loudly to stderr and returns `{ available: false, reason }` for `describe.skipIf`.
 * Memoised per process and name.
 */
export function serverFor(name: ServerName, opts: ServerForOptions = {}): Promise<ServerAvailability> {
  if (opts.sources) return resolveServer(name, opts);
  let p = memo.get(name);
  if (!p) {
    p = resolveServer(name, opts);
    memo.set(name, p);
    // A failure (CI=true) is not cached: the next caller gets a fresh attempt and error.
    p.catch(() => memo.delete(name));
  }
  return p;
}

/** Stops the servers serverFor started for this process (launcher, testcontainers). Also runs at exit. */
export async function stopStartedServers(): Promise<void> {
  const all = stoppers.splice(0);
  memo.clear();
  await Promise.allSettled(all.map((s) => s()));
}

/**
 * A private server for tests that change its settings (auth, TLS, users) or
 * stop and start it. When it cannot be launched: with CI=true this throws
 * (the tests fail); otherwise it says so loudly and returns the skip reason.
 */
export async function privateServer<H>(
  what: string,
  launch: () => Promise<H>,
): Promise<{ server: H; skip: false } | { server: undefined; skip: string }> {
  try {
    return { server: await launch(), skip: false };
  } catch (error) {
    const reason = `could not launch a private server for ${what}: ${(error as Error).message}`;
    if (process.env.CI === 'true') throw new Error(reason, { cause: error });
    loud(`[kv test-servers] ${reason}\nTHESE TESTS ARE SKIPPED`);
    return { server: undefined, skip: reason };
  }
}
