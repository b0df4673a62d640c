import { existsSync } from 'node:fs';
import { dirname, join, parse, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

function isRepoRoot(dir: string): boolean {
  return existsSync(join(dir, 'pnpm-workspace.yaml')) || existsSync(join(dir, '.git'));
}

/** Walks up from `start` to the first directory that looks like the repository root. */
export function findRepoRoot(start: string = process.cwd()): string | undefined {
  let dir = resolve(start);
  const { root } = parse(dir);
  for (;;) {
    if (isRepoRoot(dir)) return dir;
    if (dir === root) return undefined;
    dir = dirname(dir);
  }
}

let cachedHome: string | undefined;

/**
 * The folder holding `.cache/` (fetched packages) and `.run/` (state, logs, data, endpoints):
 * `$KV_TEST_SERVERS_DIR`, else `<repo>/compose` where `<repo>` is found from this module's own
 * location (packages/test-servers/{src,dist}), else from the current directory.
 */
export function serversHome(): string {
  const fromEnv = process.env.KV_TEST_SERVERS_DIR;
  if (fromEnv) return resolve(fromEnv);
  if (cachedHome) return cachedHome;
  const here = dirname(fileURLToPath(import.meta.url));
  const root = findRepoRoot(resolve(here, '../../..')) ?? findRepoRoot(process.cwd());
  if (!root) throw new Error('@kv/test-servers: cannot find the repository root (set KV_TEST_SERVERS_DIR)');
  cachedHome = join(root, 'compose');
  return cachedHome;
}

export const cacheDir = (): string => join(serversHome(), '.cache');
export const runDir = (): string => join(serversHome(), '.run');
export const stateFile = (): string => join(runDir(), 'state.json');
export const endpointsFile = (): string => join(runDir(), 'endpoints.json');
export const envFile = (): string => join(runDir(), '.env');
export const registryDir = (): string => join(runDir(), 'procs');
