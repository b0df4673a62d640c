import { type Capabilities, createStore, monotonicNow, parseStoreUrl, type Store } from '@kv/core';
import { type Context, maskUrl } from '../context.js';
import { EXIT_CODES } from '../exit-codes.js';

type Status = 'ok' | 'warn' | 'skip';

/** One finding: `skip` says plainly that something could not be checked on this backend, and why. */
export interface Check {
  name: string;
  status: Status;
  detail: string;
}

interface Report {
  url: string;
  backend: string;
  connectMs: number;
  roundTripMs: number;
  server: { name: string; version: string } | null;
  capabilities: Capabilities;
  checks: Check[];
}

/** A skew of the server's clock beyond this (ms, after the measurement's own uncertainty) is a warning. */
const SKEW_WARN_MS = 1_000;

interface RedisClient {
  sendCommand(args: string[]): Promise<unknown>;
}
interface EtcdToolkit {
  status(): Promise<{ version: string }>;
  /** The raw etcd3 client: its lease calls take any ttl (the toolkit's refuse one under minTtl). */
  client: {
    leaseClient: {
      leaseGrant(request: { TTL: number }): Promise<{ ID: string; TTL: string | number }>;
      leaseRevoke(request: { ID: string }): Promise<unknown>;
    };
  };
}
interface ConsulClient {
  agent: { self(): Promise<{ Config?: { Version?: string } }> };
}
interface SqliteDb {
  prepare(sql: string): { get(): unknown };
  pragma(sql: string, options: { simple: true }): unknown;
}

const ms = (n: number) => `${Math.round(n)} ms`;
const errorText = (error: unknown) => (error instanceof Error ? error.message : String(error));

/** The skew check's finding from a server time read between two local instants. */
function skewCheck(
  serverMs: number,
  before: number,
  after: number,
  resolutionMs: number,
  how: string,
): Check {
  const skew = serverMs - (before + after) / 2;
  const uncertainty = (after - before) / 2 + resolutionMs;
  const detail = `server clock ${skew >= 0 ? 'ahead' : 'behind'} by ${ms(Math.abs(skew))} (± ${ms(uncertainty)}, ${how})`;
  return {
    name: 'clock skew',
    status: Math.abs(skew) - uncertainty > SKEW_WARN_MS ? 'warn' : 'ok',
    detail:
      Math.abs(skew) - uncertainty > SKEW_WARN_MS
        ? `${detail}: ttls and logs compared across machines will disagree; run NTP on both`
        : detail,
  };
}

/** Server time from an HTTP `Date` header (whole seconds) of a plain-HTTP endpoint. */
async function httpDateSkew(url: string, path: string): Promise<Check> {
  const config = parseStoreUrl(url);
  const endpoint = config.endpoints?.[0];
  if (config.tls || endpoint === undefined || /^https:/.test(endpoint)) {
    return {
      name: 'clock skew',
      status: 'skip',
      detail: 'not checked over TLS (read from an HTTP Date header)',
    };
  }
  const base = /^https?:\/\//.test(endpoint) ? endpoint : `http://${endpoint}`;
  const before = Date.now();
  const response = await fetch(new URL(path, base), { signal: AbortSignal.timeout(5_000) });
  const after = Date.now();
  await response.body?.cancel();
  const date = response.headers.get('date');
  if (date === null) return { name: 'clock skew', status: 'skip', detail: 'the server sent no Date header' };
  // The header is truncated to the second: the true time is up to 1 s later.
  return skewCheck(Date.parse(date) + 500, before, after, 500, 'from the HTTP Date header');
}

/** Runs `fn`; a failure becomes a `skip` finding that names the error (never a crash of the whole report). */
async function attempt(name: string, fn: () => Promise<Check | Check[]>): Promise<Check[]> {
  try {
    const result = await fn();
    return Array.isArray(result) ? result : [result];
  } catch (error) {
    return [{ name, status: 'skip', detail: `could not be read: ${errorText(error)}` }];
  }
}

/** What the backend can tell about itself, and the checks that matter for it. */
async function backendChecks(
  store: Store,
  url: string,
): Promise<{ server: Report['server']; checks: Check[] }> {
  const raw = store as unknown as Record<string, unknown>;
  const checks: Check[] = [];
  let server: Report['server'] = null;
  switch (store.backend) {
    case 'redis': {
      const client = raw.client as RedisClient;
      checks.push(
        ...(await attempt('server version', async () => {
          const info = String(await client.sendCommand(['INFO', 'server']));
          const version = /redis_version:([^\r\n]+)/.exec(info)?.[1] ?? 'unknown';
          server = { name: 'Redis', version };
          return [];
        })),
        ...(await attempt('keyspace notifications', async () => {
          const reply = (await client.sendCommand(['CONFIG', 'GET', 'notify-keyspace-events'])) as string[];
          const flags = reply[1] ?? '';
          const ok = flags.includes('E') && (flags.includes('x') || flags.includes('A'));
          return {
            name: 'keyspace notifications',
            status: ok ? 'ok' : 'warn',
            detail: ok
              ? `notify-keyspace-events is "${flags}" (E and x: watches see expiries)`
              : `notify-keyspace-events is "${flags}": watches turn on E and x themselves with CONFIG SET; where CONFIG is refused (ACL, renamed) they fail. Set it for good: CONFIG SET notify-keyspace-events Ex (or in redis.conf)`,
          };
        })),
        ...(await attempt('clock skew', async () => {
          const before = Date.now();
          const [seconds, micros] = (await client.sendCommand(['TIME'])) as [string, string];
          const after = Date.now();
          return skewCheck(Number(seconds) * 1000 + Number(micros) / 1000, before, after, 0, 'from TIME');
        })),
      );
      break;
    }
    case 'etcd': {
      const etcd = store as unknown as EtcdToolkit;
      checks.push(
        ...(await attempt('server version', async () => {
          server = { name: 'etcd', version: (await etcd.status()).version };
          return [];
        })),
        ...(await attempt('minimum lease', async () => {
          // Ask for 1 s: etcd raises a smaller ttl to its minimum (1.5 × the election timeout).
          const leases = etcd.client.leaseClient;
          const lease = await leases.leaseGrant({ TTL: 1 });
          try {
            const granted = Number(lease.TTL) * 1000;
            const minTtl = store.capabilities.minTtl;
            return {
              name: 'minimum lease',
              status: granted > minTtl ? 'warn' : 'ok',
              detail:
                granted > minTtl
                  ? `a 1 s lease was granted as ${ms(granted)}, more than the store's minTtl (${ms(minTtl)}): ttls shorter than ${ms(granted)} live longer than asked (--election-timeout sets it)`
                  : `a 1 s lease was granted as ${ms(granted)} (the store's minTtl is ${ms(minTtl)})`,
            };
          } finally {
            await leases.leaseRevoke({ ID: lease.ID });
          }
        })),
        ...(await attempt('clock skew', () => httpDateSkew(url, '/version'))),
      );
      break;
    }
    case 'etcdv2': {
      checks.push(
        ...(await attempt('server version', async () => {
          const config = parseStoreUrl(url);
          const endpoint = config.endpoints?.[0] ?? '';
          const base = /^https?:\/\//.test(endpoint)
            ? endpoint
            : `http${config.tls ? 's' : ''}://${endpoint}`;
          const response = await fetch(new URL('/version', base), { signal: AbortSignal.timeout(5_000) });
          const body = (await response.json()) as { etcdserver?: string };
          server = { name: 'etcd', version: body.etcdserver ?? 'unknown' };
          return [];
        })),
        ...(await attempt('clock skew', () => httpDateSkew(url, '/version'))),
      );
      break;
    }
    case 'consul': {
      const sessionTtlMin = store.capabilities.minTtl / 2;
      checks.push(
        ...(await attempt('server version', async () => {
          const self = await (raw.client as ConsulClient).agent.self();
          server = { name: 'Consul', version: self.Config?.Version ?? 'unknown' };
          return [];
        })),
        {
          name: 'session_ttl_min',
          status: sessionTtlMin >= 10_000 ? 'warn' : 'ok',
          detail:
            sessionTtlMin >= 10_000
              ? `${ms(sessionTtlMin)} (Consul's default): every ttl is at least ${ms(2 * sessionTtlMin)} and a dead lock holder is replaced after that long; lower session_ttl_min in the agent's config for shorter ttls`
              : `${ms(sessionTtlMin)}: ttls from ${ms(2 * sessionTtlMin)}`,
        },
        ...(await attempt('clock skew', () => httpDateSkew(url, '/v1/status/leader'))),
      );
      break;
    }
    case 'sqlite': {
      const db = raw.db as SqliteDb;
      checks.push(
        ...(await attempt('server version', async () => {
          const row = db.prepare('SELECT sqlite_version() AS v').get() as { v: string };
          server = { name: 'SQLite', version: row.v };
          return [];
        })),
        ...(await attempt('journal mode', async () => {
          const mode = String(db.pragma('journal_mode', { simple: true }));
          return {
            name: 'journal mode',
            status: mode === 'wal' ? 'ok' : 'warn',
            detail:
              mode === 'wal'
                ? 'WAL (readers and the writer do not block each other)'
                : `${mode}: the file system may not support WAL (a network file system?); processes will block each other`,
          };
        })),
        { name: 'clock skew', status: 'skip', detail: 'not applicable: a local file, no server clock' },
      );
      break;
    }
    default:
      checks.push(
        {
          name: 'server version',
          status: 'skip',
          detail: `not readable through the ${store.backend} backend's client`,
        },
        {
          name: 'clock skew',
          status: 'skip',
          detail: `not readable: the ${store.backend} backend exposes no server time`,
        },
      );
  }
  if (server === null && !checks.some((c) => c.name === 'server version')) {
    checks.unshift({ name: 'server version', status: 'skip', detail: 'not reported by the server' });
  }
  return { server, checks };
}

/** `kv doctor`: connect, show what the server and the backend are, check what bites users (exit 1 on a warning). */
export async function doctorCommand(ctx: Context): Promise<number> {
  const url = ctx.storeUrl();
  const started = monotonicNow();
  const store = await createStore(url);
  let report: Report;
  try {
    const connectMs = monotonicNow() - started;
    const probe = monotonicNow();
    await store.exists('kv-doctor-probe');
    const roundTripMs = monotonicNow() - probe;
    const { server, checks } = await backendChecks(store, url);
    report = {
      url: maskUrl(url),
      backend: store.backend,
      connectMs: Math.round(connectMs),
      roundTripMs: Math.round(roundTripMs * 10) / 10,
      server,
      capabilities: store.capabilities,
      checks,
    };
  } finally {
    await store.close();
  }
  print(ctx, report);
  // A warning is worth a non-zero status: `kv doctor || alert` in a health check.
  return report.checks.some((c) => c.status === 'warn') ? EXIT_CODES.FALSE : EXIT_CODES.OK;
}

function print(ctx: Context, report: Report): void {
  const { out } = ctx;
  if (out.json) {
    out.record(report);
    return;
  }
  const c = out.color;
  const server = report.server as Report['server'];
  out.table(
    ['STORE', ''],
    [
      ['url', report.url],
      ['backend', report.backend],
      ['server', server ? `${server.name} ${server.version}` : c.dim('unknown')],
      ['connect', ms(report.connectMs)],
      ['round trip', `${report.roundTripMs} ms`],
    ],
  );
  out.line();
  out.table(
    ['CAPABILITY', 'VALUE'],
    Object.entries(report.capabilities).map(([name, value]) => [
      name,
      typeof value === 'boolean' ? (value ? c.green('yes') : c.yellow('no')) : String(value),
    ]),
  );
  out.line();
  const paint: Record<Status, (s: string) => string> = {
    ok: c.green,
    warn: c.yellow,
    skip: c.dim,
  };
  out.table(
    ['CHECK', 'STATUS', 'DETAIL'],
    report.checks.map((check) => [check.name, paint[check.status](check.status), check.detail]),
  );
}
