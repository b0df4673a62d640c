import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Member, type ProcessSpec, probe } from './launch.js';
import { ENV_VARS, SERVER_NAMES, type ServerName } from './names.js';
import { endpointsFile, envFile, findRepoRoot, stateFile } from './paths.js';

/** One server started by `cli up`, recorded in compose/.run/state.json. */
export interface StateEntry {
  name: ServerName;
  baseDir: string;
  members: { spec: ProcessSpec; pid: number; startTime?: string }[];
}

export interface State {
  version: 1;
  servers: Partial<Record<ServerName, StateEntry>>;
}

/** compose/.run/endpoints.json: what the test helper reads. */
export interface EndpointsFile {
  version: 1;
  /** KV_*_ENDPOINTS → comma-separated host:port. */
  env: Record<string, string>;
  servers: Partial<Record<ServerName, string[]>>;
}

function writeAtomic(file: string, text: string): void {
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

export function readState(): State {
  try {
    const s = JSON.parse(readFileSync(stateFile(), 'utf8')) as State;
    if (s.version === 1 && s.servers) return s;
  } catch {
    // none yet
  }
  return { version: 1, servers: {} };
}

export function writeState(s: State): void {
  writeAtomic(stateFile(), `${JSON.stringify(s, null, 2)}\n`);
  writeEndpoints(s);
}

export function adopt(entry: StateEntry): Member[] {
  return entry.members.map((m) => Member.adopt(m.spec, m.pid, m.startTime, { detached: true, owner: 0 }));
}

export function entryAlive(entry: StateEntry): boolean {
  return adopt(entry).every((m) => m.running);
}

/** Every member alive and answering its readiness probe (one quick try each). */
export async function entryServes(entry: StateEntry): Promise<boolean> {
  if (!entryAlive(entry)) return false;
  const results = await Promise.allSettled(entry.members.map((m) => probe(m.spec.probe)));
  return results.every((r) => r.status === 'fulfilled' && r.value);
}

export function envOf(s: State): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of SERVER_NAMES) {
    const e = s.servers[name];
    if (e) env[ENV_VARS[name]] = e.members.map((m) => m.spec.endpoint).join(',');
  }
  return env;
}

export function writeEndpoints(s: State): void {
  const env = envOf(s);
  if (Object.keys(env).length === 0) {
    rmSync(endpointsFile(), { force: true });
    rmSync(envFile(), { force: true });
    return;
  }
  const servers: EndpointsFile['servers'] = {};
  for (const name of SERVER_NAMES) {
    const e = s.servers[name];
    if (e) servers[name] = e.members.map((m) => m.spec.endpoint);
  }
  const file: EndpointsFile = { version: 1, env, servers };
  writeAtomic(endpointsFile(), `${JSON.stringify(file, null, 2)}\n`);
  writeAtomic(
    envFile(),
    `# Written by: node packages/test-servers/dist/cli.js up\n${Object.entries(env)
      .map(([k, v]) => `${k}=${v}`)
      .join('\n')}\n`,
  );
}

/**
 * Finds compose/.run/endpoints.json by walking up from `start` to the repository root
 * ($KV_TEST_SERVERS_DIR/.run/endpoints.json when that is set).
 */
export function findEndpointsFile(start: string = process.cwd()): string | undefined {
  const fromEnv = process.env.KV_TEST_SERVERS_DIR;
  if (fromEnv) {
    const f = join(fromEnv, '.run', 'endpoints.json');
    return existsSync(f) ? f : undefined;
  }
  const root = findRepoRoot(start);
  let dir = start;
  for (;;) {
    const f = join(dir, 'compose', '.run', 'endpoints.json');
    if (existsSync(f)) return f;
    if (!root || dir === root || dirname(dir) === dir) break;
    dir = dirname(dir);
  }
  return undefined;
}

export function readEndpointsFile(file: string): EndpointsFile | undefined {
  try {
    const f = JSON.parse(readFileSync(file, 'utf8')) as EndpointsFile;
    return f.version === 1 && f.env ? f : undefined;
  } catch {
    return undefined;
  }
}
