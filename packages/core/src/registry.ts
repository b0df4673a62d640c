import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { MAX_TIMER_MS } from './call.js';
import {
  backendPackages,
  InvalidArgumentError,
  KVError,
  UnavailableError,
  UnknownBackendError,
} from './errors.js';
import { normalizeKey } from './keys.js';
import { memoryBackend } from './memory-store.js';
import type { BackendDefinition, CommonConfig, ResolvedConfig, Store, StoreConfig } from './types.js';

const REGISTRY = Symbol.for('@kv/core.registry');

/**
 * One registry per process, even with duplicated copies of @kv/core. The
 * backends @kv/core itself holds (`memory`) are in it from the start.
 */
function registry(): Map<string, BackendDefinition> {
  const holder = globalThis as { [REGISTRY]?: Map<string, BackendDefinition> };
  if (!holder[REGISTRY]) {
    const memory = memoryBackend();
    holder[REGISTRY] = new Map([[memory.name, memory]]);
  }
  return holder[REGISTRY];
}

const NAME = /^[a-z][a-z0-9+.-]*$/;

/** Registers a backend under its name (the URL scheme). Registering a name twice throws. */
export function registerBackend(definition: BackendDefinition): void {
  if (!definition || typeof definition.name !== 'string' || !NAME.test(definition.name)) {
    throw new InvalidArgumentError(
      `a backend name must match ${NAME}, got ${JSON.stringify(definition?.name)}`,
    );
  }
  if (typeof definition.create !== 'function') {
    throw new InvalidArgumentError(`backend ${definition.name} has no create function`);
  }
  const backends = registry();
  if (backends.has(definition.name)) {
    throw new InvalidArgumentError(`a backend named "${definition.name}" is already registered`);
  }
  backends.set(definition.name, definition);
}

/** The names of the registered backends. */
export function registeredBackends(): string[] {
  return [...registry().keys()].sort();
}

/**
 * The definition of a backend, loading its package if needed: the first of
 * `@kv/backend-<name>` and `kv-backend-<name>` that is installed is
 * imported, and must register the backend. Any other package (a scoped
 * `@scope/kv-backend-<name>`) is imported by the application before
 * `createStore`; importing it registers the backend.
 */
export async function loadBackend(name: string): Promise<BackendDefinition> {
  const found = registry().get(name);
  if (found) return found;
  if (!NAME.test(name)) throw new UnknownBackendError(name, registeredBackends());
  const tried: string[] = [];
  let lastMissing: unknown;
  for (const pkg of backendPackages(name)) {
    tried.push(pkg);
    try {
      await importBackend(pkg);
    } catch (error) {
      if (!isMissing(error, pkg)) throw error;
      lastMissing = error;
      continue;
    }
    const loaded = registry().get(name);
    if (loaded) return loaded;
    throw new UnknownBackendError(name, registeredBackends(), {
      tried,
      installed: installedBackendPackages(),
      loadedWithout: pkg,
    });
  }
  throw new UnknownBackendError(name, registeredBackends(), {
    tried,
    installed: installedBackendPackages(),
    cause: lastMissing,
  });
}

/** Whether an import failed because `pkg` itself is not installed (not one of its own imports). */
function isMissing(error: unknown, pkg: string): boolean {
  const code = (error as { code?: string }).code;
  return (
    (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') &&
    String((error as Error).message).includes(`'${pkg}'`)
  );
}

/**
 * Backend packages (`@kv/backend-*`, `kv-backend-*`, `@scope/kv-backend-*`)
 * in the node_modules directories above the working directory and above
 * @kv/core itself: for the advice of an `UnknownBackendError`.
 */
export function installedBackendPackages(): string[] {
  const found = new Set<string>();
  const seen = new Set<string>();
  for (const start of [process.cwd(), dirname(fileURLToPath(import.meta.url))]) {
    for (let dir = start; ; dir = dirname(dir)) {
      const modules = basename(dir) === 'node_modules' ? dir : join(dir, 'node_modules');
      if (!seen.has(modules)) {
        seen.add(modules);
        for (const pkg of backendPackagesIn(modules)) found.add(pkg);
      }
      if (dirname(dir) === dir) break;
    }
  }
  return [...found].sort();
}

function backendPackagesIn(modules: string): string[] {
  const names: string[] = [];
  for (const entry of readDir(modules)) {
    if (entry.startsWith('kv-backend-')) names.push(entry);
    else if (entry.startsWith('@')) {
      for (const scoped of readDir(join(modules, entry))) {
        if (entry === '@kv' ? scoped.startsWith('backend-') : scoped.startsWith('kv-backend-')) {
          names.push(`${entry}/${scoped}`);
        }
      }
    }
  }
  return names;
}

function readDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * Imports a backend package: first as @kv/core itself resolves it (an
 * optional peer), then from the application's directory, for strict
 * layouts where @kv/core cannot see its siblings.
 */
async function importBackend(pkg: string): Promise<unknown> {
  try {
    return await import(pkg);
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') throw error;
    let resolved: string;
    try {
      resolved = createRequire(join(process.cwd(), 'index.js')).resolve(pkg);
    } catch {
      throw error;
    }
    return import(pathToFileURL(resolved).href);
  }
}

const COMMON: ReadonlySet<string> = new Set<keyof CommonConfig | 'backend'>([
  'backend',
  'endpoints',
  'prefix',
  'username',
  'password',
  'token',
  'tls',
  'connectTimeout',
  'requestTimeout',
]);

const DEFAULT_TIMEOUT = 5_000;

/**
 * `url` with the password of its userinfo (`scheme://user:password@...`) masked, for messages;
 * with `secretUser`, the whole userinfo (a backend whose user part is a token: `consul://TOKEN@...`).
 */
export function redactUrl(url: string, options: { secretUser?: boolean } = {}): string {
  if (options.secretUser) return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^@/?#]+@/i, '$1***@');
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^@/?#:]*:)[^@/?#]*@/i, '$1***@');
}

/**
 * Parses a store URL the generic way: the scheme names the backend, hosts
 * are a comma list, the path is the prefix, query parameters are options
 * (numbers and booleans are converted), credentials may be in the URL.
 */
export function parseStoreUrl(url: string): StoreConfig {
  const match = /^([a-z][a-z0-9+.-]*):\/\/(?:([^@/?#]*)@)?([^/?#]*)([^?#]*)(?:\?([^#]*))?$/i.exec(url);
  if (!match) {
    throw new InvalidArgumentError(
      `not a store URL: ${JSON.stringify(redactUrl(url))} (expected scheme://host:port[,host:port]/prefix?option=value)`,
    );
  }
  const [, scheme, userinfo, hosts, path, query] = match;
  const config: Record<string, unknown> = { backend: (scheme as string).toLowerCase() };
  const decode = (part: string, what: string): string => {
    try {
      return decodeURIComponent(part);
    } catch (error) {
      throw new InvalidArgumentError(`bad percent-encoding in the ${what} of the store URL`, {
        cause: error,
      });
    }
  };
  if (userinfo) {
    const colon = userinfo.indexOf(':');
    config.username = decode(colon < 0 ? userinfo : userinfo.slice(0, colon), 'username');
    if (colon >= 0) config.password = decode(userinfo.slice(colon + 1), 'password');
  }
  if (hosts) config.endpoints = hosts.split(',').filter((h) => h !== '');
  if (path && path !== '/') config.prefix = decode(path, 'path');
  parseQueryOptions(query ?? '', config);
  return config as StoreConfig;
}

/** Options whose URL values stay strings even when they look like numbers (`?prefix=2024`). */
const STRING_OPTIONS: ReadonlySet<string> = new Set(['prefix', 'username', 'password', 'token']);

/**
 * Adds a URL's query parameters to `config` as options: integers become
 * numbers and `true`/`false` booleans, except for string options (the
 * common ones and `strings`), which stay as written.
 */
export function parseQueryOptions(
  query: string,
  config: Record<string, unknown>,
  strings: Iterable<string> = [],
): void {
  const keep = new Set([...STRING_OPTIONS, ...strings]);
  const seen = new Set<string>();
  for (const [name, value] of new URLSearchParams(query)) {
    // A repeated option, or one that repeats a part of the URL, is ambiguous: which one wins is a guess.
    if (seen.has(name)) {
      throw new InvalidArgumentError(`the store URL gives option ${JSON.stringify(name)} more than once`);
    }
    if (name in config) {
      throw new InvalidArgumentError(
        `the store URL's query option ${JSON.stringify(name)} repeats what the URL already says elsewhere`,
      );
    }
    seen.add(name);
    config[name] = keep.has(name) ? value : parseOptionValue(value);
  }
}

/** Query-string values: integers become numbers, `true`/`false` booleans, the rest stays a string. */
export function parseOptionValue(value: string): unknown {
  if (/^-?\d+$/.test(value)) return Number(value);
  if (value === 'true') return true;
  if (value === 'false') return false;
  return value;
}

function schemeOf(url: string): string {
  const match = /^([a-z][a-z0-9+.-]*):/i.exec(url);
  if (!match) throw new InvalidArgumentError(`not a store URL: ${JSON.stringify(url)}`);
  return (match[1] as string).toLowerCase();
}

function positiveMs(config: Record<string, unknown>, name: string): number {
  const value = config[name];
  if (value === undefined) return DEFAULT_TIMEOUT;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0 || value > MAX_TIMER_MS) {
    throw new InvalidArgumentError(
      `${name} must be a positive integer number of ms up to ${MAX_TIMER_MS}, got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

/** Validates a config against the common options and the backend's own, and applies defaults. */
export function resolveConfig(definition: BackendDefinition, config: StoreConfig): ResolvedConfig {
  const own = new Set(definition.options ?? []);
  const unknown = Object.keys(config).filter((name) => !COMMON.has(name) && !own.has(name));
  if (unknown.length > 0) {
    const accepted = [...COMMON].filter((n) => n !== 'backend').concat([...own]);
    throw new InvalidArgumentError(
      `unknown option(s) for the ${definition.name} backend: ${unknown.join(', ')} (accepted: ${accepted.join(', ')})`,
    );
  }
  const raw = config as Record<string, unknown>;
  const endpoints = raw.endpoints;
  if (
    endpoints !== undefined &&
    (!Array.isArray(endpoints) || endpoints.some((e) => typeof e !== 'string' || e === ''))
  ) {
    throw new InvalidArgumentError('endpoints must be an array of non-empty strings');
  }
  for (const name of ['username', 'password', 'token'] as const) {
    if (raw[name] !== undefined && typeof raw[name] !== 'string')
      throw new InvalidArgumentError(`${name} must be a string`);
  }
  const prefix = raw.prefix === undefined ? '' : raw.prefix;
  if (typeof prefix !== 'string') throw new InvalidArgumentError('prefix must be a string');
  return {
    ...raw,
    backend: definition.name,
    prefix: normalizeKey(prefix, true),
    connectTimeout: positiveMs(raw, 'connectTimeout'),
    requestTimeout: positiveMs(raw, 'requestTimeout'),
  } as ResolvedConfig;
}

/**
 * Opens a store from a URL (`etcd://127.0.0.1:2379/myapp`, `sqlite:./kv.db`)
 * or a config object. The backend package is imported on first use. Resolves
 * after one round trip to the server; rejects with a `KVError` within
 * `connectTimeout` otherwise.
 */
export async function createStore<B extends string>(config: string | StoreConfig<B>): Promise<Store> {
  let parsed: StoreConfig;
  let definition: BackendDefinition;
  if (typeof config === 'string') {
    definition = await loadBackend(schemeOf(config));
    parsed = definition.parseUrl ? definition.parseUrl(config) : parseStoreUrl(config);
  } else {
    if (typeof config !== 'object' || config === null || typeof config.backend !== 'string') {
      throw new InvalidArgumentError('createStore needs a URL or a config object with a `backend` name');
    }
    parsed = config as StoreConfig;
    definition = await loadBackend(parsed.backend);
  }
  const resolved = resolveConfig(definition, parsed);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new UnavailableError(
            `could not open the ${definition.name} store within connectTimeout (${resolved.connectTimeout} ms)`,
          ),
        ),
      resolved.connectTimeout + 250,
    );
    timer.unref?.();
  });
  // A create that throws synchronously rejects like one that rejects.
  const opening = Promise.resolve().then(() => definition.create(resolved));
  try {
    return await Promise.race([opening, deadline]);
  } catch (error) {
    // A store that opens after we gave up must not leak its sockets.
    opening.then((store) => store.close()).catch(() => {});
    if (KVError.isInstance(error)) throw error;
    throw new UnavailableError(
      `could not open the ${definition.name} store: ${(error as Error)?.message ?? String(error)}`,
      {
        cause: error,
      },
    );
  } finally {
    clearTimeout(timer);
  }
}
