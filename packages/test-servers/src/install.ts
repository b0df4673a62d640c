import { spawn } from 'node:child_process';
import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { userInfo } from 'node:os';
import { delimiter, join } from 'node:path';
import { withLock } from './lock.js';
import { cacheDir } from './paths.js';

export type Component = 'etcd' | 'consul' | 'zookeeper' | 'redis';

/** Debian packages per server: `name/suite` (bookworm, except Consul which left Debian after bullseye). */
export const DEBIAN_PACKAGES: Record<Component, readonly string[]> = {
  etcd: ['etcd-server/bookworm', 'etcd-client/bookworm'],
  consul: ['consul/bullseye'],
  // ZooKeeper 3.8 needs, at run time: zookeeper + jute, netty, metrics-core, snappy-java, slf4j, commons-cli.
  zookeeper: [
    'libzookeeper-java/bookworm',
    'libnetty-java/bookworm',
    'libdropwizard-metrics-java/bookworm',
    'libsnappy-java/bookworm',
    'libslf4j-java/bookworm',
    'libcommons-cli-java/bookworm',
  ],
  redis: ['redis-tools/bookworm', 'libjemalloc2/bookworm', 'liblzf1/bookworm'],
};

const ZK_JARS = [
  'zookeeper',
  'zookeeper-jute',
  'netty-handler',
  'netty-transport',
  'netty-transport-native-epoll',
  'netty-transport-native-unix-common',
  'netty-common',
  'netty-buffer',
  'netty-codec',
  'netty-resolver',
  'metrics-core',
  'snappy-java',
  'slf4j-api',
  'slf4j-simple',
  'commons-cli',
];

export interface EtcdBins {
  etcd: string;
  etcdctl: string;
}
export interface ConsulBins {
  consul: string;
}
export interface RedisBins {
  redisServer: string;
  redisCli: string;
  /** Directory to put on LD_LIBRARY_PATH ('' when the binaries come from PATH). */
  libDir: string;
}
export interface ZooKeeperBins {
  java: string;
  classpath: string;
}
export interface Bins {
  etcd: EtcdBins;
  consul: ConsulBins;
  zookeeper: ZooKeeperBins;
  redis: RedisBins;
}

export type Log = (msg: string) => void;

interface RunResult {
  code: number | null;
  out: string;
}

function run(cmd: string, args: string[], cwd?: string, timeoutMs = 5 * 60_000): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C', DEBIAN_FRONTEND: 'noninteractive' },
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, out });
    });
  });
}

export function which(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, cmd);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

const optDir = (c: Component): string => join(cacheDir(), 'opt', c);
const markerFile = (c: Component): string => join(optDir(c), '.installed.json');

function isInstalled(c: Component): boolean {
  try {
    const m = JSON.parse(readFileSync(markerFile(c), 'utf8')) as { packages?: string[] };
    return JSON.stringify(m.packages) === JSON.stringify(DEBIAN_PACKAGES[c]);
  } catch {
    return false;
  }
}

function binsFromCache(c: Component): Bins[Component] {
  const usr = join(optDir(c), 'usr');
  switch (c) {
    case 'etcd':
      return { etcd: join(usr, 'bin/etcd'), etcdctl: join(usr, 'bin/etcdctl') };
    case 'consul':
      return { consul: join(usr, 'bin/consul') };
    case 'redis': {
      const libDirs = readdirSync(join(usr, 'lib')).filter((d) => d.includes('-linux-'));
      return {
        redisServer: join(usr, 'bin/redis-server'),
        redisCli: join(usr, 'bin/redis-cli'),
        libDir: libDirs.map((d) => join(usr, 'lib', d)).join(':'),
      };
    }
    case 'zookeeper':
      return {
        java: javaBinary(),
        classpath: ZK_JARS.map((j) => join(usr, 'share/java', `${j}.jar`)).join(':'),
      };
  }
}

function javaBinary(): string {
  const home = process.env.JAVA_HOME;
  if (home && existsSync(join(home, 'bin/java'))) return join(home, 'bin/java');
  const j = which('java');
  if (!j) throw new Error('ZooKeeper needs Java 11+ ("java" not on PATH and JAVA_HOME not set)');
  return j;
}

/** Binaries from PATH (non-Debian machines): etcd, etcdctl, consul, redis-server; ZooKeeper from
 * $KV_ZOOKEEPER_CLASSPATH or $ZOOKEEPER_HOME/lib. */
function binsFromPath(c: Component): Bins[Component] | undefined {
  switch (c) {
    case 'etcd': {
      const etcd = which('etcd');
      const etcdctl = which('etcdctl');
      return etcd && etcdctl ? { etcd, etcdctl } : undefined;
    }
    case 'consul': {
      const consul = which('consul');
      return consul ? { consul } : undefined;
    }
    case 'redis': {
      const redisServer = which('redis-server');
      const redisCli = which('redis-cli');
      return redisServer && redisCli ? { redisServer, redisCli, libDir: '' } : undefined;
    }
    case 'zookeeper': {
      let classpath = process.env.KV_ZOOKEEPER_CLASSPATH;
      const home = process.env.ZOOKEEPER_HOME;
      if (!classpath && home && existsSync(join(home, 'lib'))) {
        classpath = readdirSync(join(home, 'lib'))
          .filter((f) => f.endsWith('.jar'))
          .map((f) => join(home, 'lib', f))
          .join(':');
      }
      return classpath ? { java: javaBinary(), classpath } : undefined;
    }
  }
}

function aptOptions(aptDir: string): string[] {
  const opts = [
    `Dir::Etc::sourcelist=${join(aptDir, 'sources.list')}`,
    'Dir::Etc::sourceparts=-',
    `Dir::State::Lists=${join(aptDir, 'lists')}`,
    `Dir::Cache=${join(aptDir, 'cache')}`,
    'Debug::NoLocking=1',
    'Acquire::Retries=3',
  ];
  let user = '';
  try {
    user = userInfo().username;
  } catch {
    // no passwd entry
  }
  if (user) opts.push(`APT::Sandbox::User=${user}`);
  return opts.flatMap((o) => ['-o', o]);
}

function prepareAptDir(aptDir: string): void {
  mkdirSync(join(aptDir, 'lists/partial'), { recursive: true });
  mkdirSync(join(aptDir, 'cache/archives/partial'), { recursive: true });
  const mirror = process.env.KV_DEBIAN_MIRROR ?? 'http://deb.debian.org/debian';
  const keyring = '/usr/share/keyrings/debian-archive-keyring.gpg';
  const signed = existsSync(keyring) ? ` [signed-by=${keyring}]` : '';
  const suites = [...new Set(Object.values(DEBIAN_PACKAGES).flatMap((ps) => ps.map((p) => p.split('/')[1])))];
  const list = `${suites.map((s) => `deb${signed} ${mirror} ${s} main`).join('\n')}\n`;
  const file = join(aptDir, 'sources.list');
  let old = '';
  try {
    old = readFileSync(file, 'utf8');
  } catch {
    // first time
  }
  if (old !== list) {
    writeFileSync(file, list);
    rmSync(join(aptDir, 'lists'), { recursive: true, force: true });
    mkdirSync(join(aptDir, 'lists/partial'), { recursive: true });
  }
}

function hasLists(aptDir: string): boolean {
  try {
    return readdirSync(join(aptDir, 'lists')).some((f) => f.includes('_Packages'));
  } catch {
    return false;
  }
}

function debFor(debDir: string, pkg: string): string | undefined {
  const name = pkg.split('/')[0];
  let files: string[] = [];
  try {
    files = readdirSync(debDir);
  } catch {
    // none yet
  }
  const f = files.find((x) => x.startsWith(`${name}_`) && x.endsWith('.deb'));
  return f ? join(debDir, f) : undefined;
}

async function fetchAndUnpack(components: Component[], log: Log): Promise<void> {
  if (!which('apt-get') || !which('dpkg')) {
    throw new Error('apt-get/dpkg not found (not a Debian-like system): install the servers on PATH');
  }
  const aptDir = join(cacheDir(), 'apt');
  const debDir = join(cacheDir(), 'debs');
  mkdirSync(debDir, { recursive: true });
  prepareAptDir(aptDir);
  const opts = aptOptions(aptDir);
  const update = async (): Promise<void> => {
    log(`apt-get update (private apt state in ${aptDir})`);
    const r = await run('apt-get', [...opts, '-q', 'update']);
    if (r.code !== 0) throw new Error(`apt-get update failed (exit ${r.code}):\n${r.out.slice(-3000)}`);
  };
  const missing = components.flatMap((c) => DEBIAN_PACKAGES[c]).filter((p) => !debFor(debDir, p));
  if (missing.length > 0) {
    if (!hasLists(aptDir)) await update();
    log(`apt-get download ${missing.join(' ')}`);
    let r = await run('apt-get', [...opts, '-q', 'download', ...missing], debDir);
    if (r.code !== 0) {
      // Stale package lists (a point release replaced a .deb): refresh once and retry.
      await update();
      r = await run('apt-get', [...opts, '-q', 'download', ...missing], debDir);
      if (r.code !== 0) throw new Error(`apt-get download failed (exit ${r.code}):\n${r.out.slice(-3000)}`);
    }
  }
  for (const c of components) {
    const tmp = `${optDir(c)}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    const debs: string[] = [];
    for (const p of DEBIAN_PACKAGES[c]) {
      const deb = debFor(debDir, p);
      if (!deb) throw new Error(`${p}: .deb missing after download`);
      debs.push(deb);
      const r = await run('dpkg', ['-x', deb, tmp]);
      if (r.code !== 0) throw new Error(`dpkg -x ${deb} failed (exit ${r.code}):\n${r.out.slice(-3000)}`);
    }
    if (c === 'redis') {
      // redis-server is the same binary as redis-check-rdb: argv[0] decides.
      symlinkSync('redis-check-rdb', join(tmp, 'usr/bin/redis-server'));
    }
    writeFileSync(
      join(tmp, '.installed.json'),
      JSON.stringify(
        { packages: DEBIAN_PACKAGES[c], debs: debs.map((d) => d.slice(debDir.length + 1)) },
        null,
        2,
      ),
    );
    rmSync(optDir(c), { recursive: true, force: true });
    renameSync(tmp, optDir(c));
    log(`unpacked ${c} into ${optDir(c)}`);
  }
}

const noLog: Log = () => {};

/**
 * Makes sure the servers' binaries are available and returns where they are. Debian packages are
 * fetched into compose/.cache with a private apt state and unpacked with `dpkg -x`, once: later calls
 * only check a marker file (no apt calls). A lock file keeps concurrent processes from fetching
 * together. `KV_TEST_SERVERS_USE_PATH=1` (or a machine without apt) uses binaries found on PATH.
 */
export async function ensureInstalled<C extends Component>(
  components: C[],
  log: Log = noLog,
): Promise<Pick<Bins, C>> {
  const out = {} as Pick<Bins, C>;
  const usePath = process.env.KV_TEST_SERVERS_USE_PATH === '1' || !which('apt-get');
  const usePathWhy =
    process.env.KV_TEST_SERVERS_USE_PATH === '1' ? 'KV_TEST_SERVERS_USE_PATH=1' : 'there is no apt-get';
  const need: C[] = [];
  for (const c of components) {
    if (usePath) {
      const b = binsFromPath(c);
      if (!b) throw new Error(`${c}: not found on PATH (used because ${usePathWhy})`);
      out[c] = b as Bins[C];
    } else if (!isInstalled(c)) {
      need.push(c);
    }
  }
  if (need.length > 0) {
    await withLock(
      join(cacheDir(), 'install.lock'),
      async () => {
        const still = need.filter((c) => !isInstalled(c));
        if (still.length > 0) await fetchAndUnpack(still, log);
      },
      {
        what: 'the package cache lock',
        onWait: (pid) => log(`waiting for PID ${pid} to finish fetching packages`),
      },
    );
  }
  if (!usePath) for (const c of components) out[c] = binsFromCache(c) as Bins[C];
  return out;
}
