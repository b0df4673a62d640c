import { execFile, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { which } from './install.js';
import { runDir } from './paths.js';
import { isAlive, procStartTime } from './proc.js';

/**
 * A private network for a cluster, so a test can cut the links between its
 * members one by one (and between a member and the clients), as a real
 * partition does: each member runs in a network namespace of its own, wired
 * to a router namespace by a veth pair; the test process (the clients) reaches
 * the router through one more veth pair. A cut is a pair of `ip rule ...
 * blackhole` rules in the router: packets between the two ends are dropped in
 * flight, so established connections stay open and their bytes vanish both
 * ways (TCP retransmits), and new connections hang on their SYN. Healing
 * deletes the rules and the held bytes flow again on the next retransmission.
 *
 * Addresses come from a random private 10.x.y.0/24 (link k is the /30 at
 * 4k: the router is .4k+1, the other end .4k+2; link 0 is the clients').
 * Needs Linux, root and `ip` (iproute2); `clusterNetProblem()` says why not.
 * Namespaces are recorded in `compose/.run/netns/`: the next launch (or
 * `cli down`) deletes those whose owning process is gone.
 */
export interface ClusterNet {
  /** Short random id: the namespaces are `kv-<id>-r` (router) and `kv-<id>-<member>`. */
  readonly id: string;
  readonly size: number;
  /** The address of member `i` (0-based), inside its own namespace. */
  address(i: number): string;
  /** The clients' address (this process's side, in the root namespace). */
  readonly clientAddress: string;
  /** The network namespace of member `i`. */
  namespace(i: number): string;
  /** `[command, args]` that run `command args` inside member `i`'s namespace (same PID: `ip netns exec` execs). */
  wrap(i: number, command: string, args: readonly string[]): [string, string[]];
  /** Cuts the link between two ends (members by index, or `'clients'`): both directions black-holed. */
  cut(a: LinkEnd, b: LinkEnd): Promise<void>;
  heal(a: LinkEnd, b: LinkEnd): Promise<void>;
  /** Cuts member `i` from every other member (the clients still reach it). */
  isolate(i: number): Promise<void>;
  /** Heals every link of member `i`, to members and clients. */
  rejoin(i: number): Promise<void>;
  /** Heals every cut link. */
  healAll(): Promise<void>;
  /** The links cut now, as `"a-b"` with a < b ('clients' sorts first). */
  readonly cuts: readonly string[];
  /** Deletes the namespaces and links (the processes in them must be gone or die with them). */
  dispose(): Promise<void>;
}

/** One end of a link: a member's index, or the clients (the test process). */
export type LinkEnd = number | 'clients';

export interface ClusterNetOptions {
  /** Members (namespaces). */
  size: number;
  /** PID owning the network (recorded, to reap it once the owner is gone). Default: this process. */
  owner?: number;
}

interface NetRecord {
  id: string;
  owner: number;
  ownerStartTime?: string;
  namespaces: string[];
  /** Links in the root namespace to delete (deleting a namespace deletes the ones inside it). */
  links: string[];
}

const netRegistryDir = (): string => join(runDir(), 'netns');

function ipPath(): string | undefined {
  return (
    which('ip') ?? ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip'].find((p) => spawnSync(p, ['-V']).status === 0)
  );
}

function ip(args: readonly string[]): Promise<string> {
  const bin = ipPath();
  if (!bin) return Promise.reject(new Error('cluster net: no `ip` command (iproute2)'));
  return new Promise((resolve, reject) => {
    execFile(bin, [...args], { timeout: 10_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`ip ${args.join(' ')}: ${stderr.trim() || error.message}`));
      else resolve(stdout);
    });
  });
}

function ipSync(args: readonly string[]): void {
  const bin = ipPath();
  if (bin) spawnSync(bin, [...args], { stdio: 'ignore', timeout: 10_000 });
}

let problemCache: Promise<string | undefined> | undefined;

/** Why a `ClusterNet` cannot be made here (undefined when it can): not Linux, not root, no `ip`, no namespaces. */
export function clusterNetProblem(): Promise<string | undefined> {
  problemCache ??= (async () => {
    if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
    if (process.getuid?.() !== 0) return 'network namespaces need root';
    if (!ipPath()) return 'no `ip` command (iproute2)';
    const probe = `kv-probe-${process.pid}`;
    try {
      await ip(['netns', 'add', probe]);
      await ip(['netns', 'del', probe]);
      return undefined;
    } catch (error) {
      return `ip netns does not work here: ${(error as Error).message}`;
    }
  })();
  return problemCache;
}

function randomId(): string {
  return Math.random().toString(36).slice(2, 8).padEnd(6, '0');
}

const live = new Map<string, NetRecord>();
let exitHookInstalled = false;

function record(rec: NetRecord): void {
  live.set(rec.id, rec);
  try {
    mkdirSync(netRegistryDir(), { recursive: true });
    writeFileSync(join(netRegistryDir(), `${rec.id}.json`), JSON.stringify(rec));
  } catch {
    // best effort: the exit hook still cleans up
  }
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const r of live.values()) removeSync(r);
    });
  }
}

function forget(id: string): void {
  live.delete(id);
  try {
    unlinkSync(join(netRegistryDir(), `${id}.json`));
  } catch {
    // already gone
  }
}

function removeSync(rec: NetRecord): void {
  for (const link of rec.links) ipSync(['link', 'del', link]);
  for (const ns of rec.namespaces) ipSync(['netns', 'del', ns]);
}

async function remove(rec: NetRecord): Promise<void> {
  for (const link of rec.links) await ip(['link', 'del', link]).catch(() => {});
  await Promise.all(rec.namespaces.map((ns) => ip(['netns', 'del', ns]).catch(() => {})));
}

/**
 * Deletes recorded cluster networks whose owner process is gone (or all of
 * them with `all`). Their servers must be stopped first (`reapRegistered`).
 */
export async function reapClusterNets(opts: { all?: boolean } = {}): Promise<string[]> {
  let names: string[];
  try {
    names = readdirSync(netRegistryDir()).filter((n) => n.endsWith('.json'));
  } catch {
    return [];
  }
  const reaped: string[] = [];
  for (const name of names) {
    let rec: NetRecord;
    try {
      rec = JSON.parse(readFileSync(join(netRegistryDir(), name), 'utf8')) as NetRecord;
    } catch {
      continue;
    }
    if (!opts.all && isAlive(rec.owner, rec.ownerStartTime)) continue;
    await remove(rec);
    forget(rec.id);
    reaped.push(rec.id);
  }
  return reaped;
}

function endName(end: LinkEnd): string {
  return end === 'clients' ? 'clients' : String(end);
}

/** Creates the namespaces, links and addresses of a cluster network; see `ClusterNet`. */
export async function createClusterNet(options: ClusterNetOptions): Promise<ClusterNet> {
  const { size } = options;
  if (!Number.isInteger(size) || size < 1 || size > 60) {
    throw new Error(`cluster net: size must be 1..60, got ${size}`);
  }
  const problem = await clusterNetProblem();
  if (problem) throw new Error(`cluster net: ${problem}`);
  const routes = await ip(['-4', 'route', 'show']);
  for (let attempt = 0; ; attempt++) {
    const id = randomId();
    const subnet = `10.${200 + Math.floor(Math.random() * 50)}.${Math.floor(Math.random() * 256)}`;
    if (routes.includes(`${subnet}.`)) continue;
    try {
      return await build(id, subnet, size, options.owner ?? process.pid);
    } catch (error) {
      // Another network took the same subnet or name at the same moment: try another.
      if (attempt < 2 && /File exists|already exists/i.test((error as Error).message)) continue;
      throw error;
    }
  }
}

async function build(id: string, subnet: string, size: number, owner: number): Promise<ClusterNet> {
  const router = `kv-${id}-r`;
  const members = Array.from({ length: size }, (_, i) => `kv-${id}-${i}`);
  const clientLink = `kv${id}c`;
  const ownerStartTime = procStartTime(owner);
  const rec: NetRecord = {
    id,
    owner,
    ...(ownerStartTime ? { ownerStartTime } : {}),
    namespaces: [router, ...members],
    links: [clientLink],
  };
  const at = (link: number, side: 1 | 2) => `${subnet}.${4 * link + side}`;
  record(rec);
  try {
    const inNs = (ns: string, ...args: string[]) => ip(['-n', ns, ...args]);
    await ip(['netns', 'add', router]);
    await inNs(router, 'link', 'set', 'lo', 'up');
    // Forwarding inside the router namespace only; the root namespace is left as it is.
    await ip(['netns', 'exec', router, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    await ip(['link', 'add', clientLink, 'type', 'veth', 'peer', 'name', 'c', 'netns', router]);
    await ip(['addr', 'add', `${at(0, 2)}/30`, 'dev', clientLink]);
    await ip(['link', 'set', clientLink, 'up']);
    await inNs(router, 'addr', 'add', `${at(0, 1)}/30`, 'dev', 'c');
    await inNs(router, 'link', 'set', 'c', 'up');
    for (let i = 0; i < size; i++) {
      const ns = members[i] as string;
      const link = i + 1;
      await ip(['netns', 'add', ns]);
      await inNs(ns, 'link', 'set', 'lo', 'up');
      await ip([
        'link',
        'add',
        `kv${id}m${i}`,
        'netns',
        ns,
        'type',
        'veth',
        'peer',
        'name',
        `m${i}`,
        'netns',
        router,
      ]);
      await inNs(ns, 'addr', 'add', `${at(link, 2)}/30`, 'dev', `kv${id}m${i}`);
      await inNs(ns, 'link', 'set', `kv${id}m${i}`, 'up');
      await inNs(ns, 'route', 'add', 'default', 'via', at(link, 1));
      await inNs(router, 'addr', 'add', `${at(link, 1)}/30`, 'dev', `m${i}`);
      await inNs(router, 'link', 'set', `m${i}`, 'up');
    }
    await ip(['route', 'add', `${subnet}.0/24`, 'via', at(0, 1), 'dev', clientLink]);
  } catch (error) {
    await remove(rec);
    forget(id);
    throw error;
  }

  const addressOf = (end: LinkEnd): string => {
    if (end === 'clients') return at(0, 2);
    if (!Number.isInteger(end) || end < 0 || end >= size) {
      throw new Error(`cluster net ${id}: no member ${String(end)} (size ${size})`);
    }
    return at(end + 1, 2);
  };
  const key = (a: LinkEnd, b: LinkEnd): string => {
    const [x, y] = [endName(a), endName(b)].sort((p, q) =>
      p === 'clients' ? -1 : q === 'clients' ? 1 : Number(p) - Number(q),
    );
    return `${x}-${y}`;
  };
  const cuts = new Map<string, [string, string]>();
  let disposed = false;
  const rule = (op: 'add' | 'del', from: string, to: string) =>
    ip(['-n', router, 'rule', op, 'from', from, 'to', to, 'blackhole', 'pref', '100']);

  const cut = async (a: LinkEnd, b: LinkEnd) => {
    if (disposed) throw new Error(`cluster net ${id} is disposed`);
    const [x, y] = [addressOf(a), addressOf(b)];
    if (x === y) throw new Error(`cluster net ${id}: cannot cut ${endName(a)} from itself`);
    const k = key(a, b);
    if (cuts.has(k)) return;
    cuts.set(k, [x, y]);
    await rule('add', x, y);
    await rule('add', y, x);
  };
  const heal = async (a: LinkEnd, b: LinkEnd) => {
    const k = key(a, b);
    const pair = cuts.get(k);
    if (!pair || disposed) return;
    cuts.delete(k);
    await rule('del', pair[0], pair[1]).catch(() => {});
    await rule('del', pair[1], pair[0]).catch(() => {});
  };
  const others = (i: number) => Array.from({ length: size }, (_, j) => j).filter((j) => j !== i);

  return {
    id,
    size,
    address: (i) => addressOf(i),
    clientAddress: at(0, 2),
    namespace: (i) => {
      addressOf(i);
      return members[i] as string;
    },
    wrap: (i, command, args) => {
      addressOf(i);
      return [ipPath() ?? 'ip', ['netns', 'exec', members[i] as string, command, ...args]];
    },
    cut,
    heal,
    isolate: async (i) => {
      for (const j of others(i)) await cut(i, j);
    },
    rejoin: async (i) => {
      for (const j of [...others(i), 'clients' as const]) await heal(i, j);
    },
    healAll: async () => {
      for (const k of [...cuts.keys()]) {
        const [a, b] = k.split('-') as [string, string];
        const end = (s: string): LinkEnd => (s === 'clients' ? 'clients' : Number(s));
        await heal(end(a), end(b));
      }
    },
    get cuts() {
      return [...cuts.keys()];
    },
    dispose: async () => {
      if (disposed) return;
      disposed = true;
      cuts.clear();
      await remove(rec);
      forget(id);
    },
  };
}
