import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ClusterNet, createClusterNet, reapClusterNets } from './cluster-net.js';
import { closingInheritedFds } from './inherited-fds.js';
import { type Bins, ensureInstalled, type Log, which } from './install.js';
import type { ServerKind, ServerName } from './names.js';
import {
  consulReady,
  etcdHealthy,
  freePorts,
  redisCommands,
  redisReady,
  type TlsFiles,
  zkMode,
} from './probes.js';
import {
  isAlive,
  logTail,
  procStartTime,
  reapRegistered,
  registerProcess,
  signal,
  terminate,
  unregisterProcess,
  waitUntil,
} from './proc.js';

const HOST = '127.0.0.1';

/** How to tell that a server really serves. */
export type ProbeSpec =
  | { type: 'etcd'; url: string; tls?: TlsFiles }
  | { type: 'consul'; url: string }
  | { type: 'zookeeper'; endpoint: string; modes: string[] }
  | { type: 'redis'; endpoint: string; auth?: { username?: string; password: string } };

/** Everything needed to (re)start one server process: serialisable, so `cli` can restart it. */
export interface ProcessSpec {
  kind: ServerKind;
  name: string;
  command: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  logFile: string;
  dataDir: string;
  /** Client endpoint, host:port. */
  endpoint: string;
  /** Client URL: http(s)://host:port for etcd and Consul, redis://host:port, host:port for ZooKeeper. */
  url: string;
  probe: ProbeSpec;
}

export async function probe(p: ProbeSpec): Promise<boolean> {
  switch (p.type) {
    case 'etcd':
      return etcdHealthy(p.url, p.tls);
    case 'consul':
      return consulReady(p.url);
    case 'zookeeper': {
      const mode = await zkMode(p.endpoint);
      if (mode && p.modes.includes(mode)) return true;
      throw new Error(`srvr says Mode: ${mode ?? '(none)'}`);
    }
    case 'redis':
      return redisReady(p.endpoint, p.auth);
  }
}

/** A running (or stopped) server you own: stop, restart on the same port and data dir, freeze. */
export interface ServerHandle {
  readonly kind: ServerKind;
  readonly name: string;
  /** host:port, for clients. */
  readonly endpoints: string[];
  /** http(s)://host:port (etcd, Consul), redis://host:port, host:port (ZooKeeper). */
  readonly urls: string[];
  /** PID of the server process while it runs. */
  readonly pid: number | undefined;
  readonly dataDir: string;
  readonly logFile: string;
  /** Alive (a frozen server is alive). */
  readonly running: boolean;
  /** Starts it again (same port, same data dir) and waits until it serves. No-op if running. */
  start(): Promise<void>;
  /** SIGTERM, then SIGKILL after a bounded grace period; resolves once the process is gone. */
  stop(): Promise<void>;
  /** Kills it at once (SIGKILL): a crash. */
  kill(): Promise<void>;
  restart(): Promise<void>;
  /** Waits (bounded; default: the start timeout) until it serves, e.g. after thaw(). */
  waitReady(timeoutMs?: number): Promise<void>;
  /** SIGSTOP: the process keeps its sockets but answers nothing. */
  freeze(): void;
  /** SIGCONT. */
  thaw(): void;
  logTail(lines?: number): string;
  /** Stops it (SIGKILL when its data is throwaway) and deletes its throwaway directory. */
  dispose(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface EtcdHandle extends ServerHandle {
  /** Runs `etcdctl` (API v3) against this server, with its TLS files and root credentials. */
  etcdctl(args: string[]): Promise<string>;
}

export interface RedisHandle extends ServerHandle {
  /** Sends commands over a fresh connection and returns the raw replies ("+OK", "-ERR ...", bulk text). */
  command(...commands: string[][]): Promise<string[]>;
}

export interface ClusterHandle<M extends ServerHandle = ServerHandle> {
  readonly kind: ServerKind;
  readonly name: string;
  readonly endpoints: string[];
  readonly urls: string[];
  readonly members: M[];
  /** With `isolated: true`: the members' private network, whose links a test can cut one by one. */
  readonly net?: ClusterNet;
  /** Starts every stopped member and waits until all serve. */
  start(): Promise<void>;
  stop(): Promise<void>;
  dispose(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface MemberOptions {
  /** Start it in its own session, outliving this process (cli up). */
  detached?: boolean;
  /** PID owning it; 0 = shared (cli up). Defaults to this process. */
  owner?: number;
  /** Directory to delete on dispose (throwaway base dir). */
  removeDir?: string;
  startTimeoutMs?: number;
}

// Attached servers of this process, killed synchronously if the process exits without stopping them.
const live = new Set<Member>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const m of live) m.killSync();
  });
}

let setprivCache: string | null | undefined;
function setprivPath(): string | undefined {
  if (setprivCache === undefined)
    setprivCache = process.platform === 'linux' ? (which('setpriv') ?? null) : null;
  return setprivCache ?? undefined;
}

function childEnv(extra: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = { LANG: 'C.UTF-8' };
  for (const k of ['PATH', 'HOME', 'TMPDIR', 'JAVA_HOME', 'USER']) {
    const v = process.env[k];
    if (v !== undefined) env[k] = v;
  }
  return { ...env, ...extra };
}

export class Member implements ServerHandle {
  #pid: number | undefined;
  #startTime: string | undefined;
  #child: ChildProcess | undefined;
  #exit: string | undefined;
  readonly spec: ProcessSpec;
  readonly #opts: MemberOptions;
  /** Extra work once the server first serves (etcd auth set-up). */
  afterReady: (() => Promise<void>) | undefined;

  constructor(spec: ProcessSpec, opts: MemberOptions = {}) {
    this.spec = spec;
    this.#opts = opts;
  }

  /** A handle on a server started earlier (by another process: cli up). */
  static adopt(spec: ProcessSpec, pid: number, startTime: string | undefined, opts: MemberOptions): Member {
    const m = new Member(spec, opts);
    m.#pid = pid;
    m.#startTime = startTime;
    return m;
  }

  get kind(): ServerKind {
    return this.spec.kind;
  }
  get name(): string {
    return this.spec.name;
  }
  get endpoints(): string[] {
    return [this.spec.endpoint];
  }
  get urls(): string[] {
    return [this.spec.url];
  }
  get pid(): number | undefined {
    return this.running ? this.#pid : undefined;
  }
  get startTime(): string | undefined {
    return this.#startTime;
  }
  get dataDir(): string {
    return this.spec.dataDir;
  }
  get logFile(): string {
    return this.spec.logFile;
  }
  get running(): boolean {
    return this.#pid !== undefined && isAlive(this.#pid, this.#startTime);
  }

  logTail(lines = 40): string {
    return logTail(this.spec.logFile, lines);
  }

  /** Starts the process without waiting for it to serve. */
  spawn(): void {
    if (this.running) return;
    const { spec } = this;
    mkdirSync(spec.dataDir, { recursive: true, mode: 0o700 });
    const fd = openSync(spec.logFile, 'a');
    writeSync(fd, `\n=== ${new Date().toISOString()} ${spec.command} ${spec.args.join(' ')}\n`);
    // Attached servers die with this process even when it is killed (a test worker ended by a
    // signal skips 'exit' handlers): setpriv sets PR_SET_PDEATHSIG, then execs the server (same PID).
    const setpriv = this.#opts.detached ? undefined : setprivPath();
    const [command, args] = closingInheritedFds(
      ...((setpriv
        ? [setpriv, ['--pdeathsig', 'KILL', '--', spec.command, ...spec.args]]
        : [spec.command, spec.args]) as [string, string[]]),
    );
    let child: ChildProcess;
    try {
      child = spawn(command, args, {
        cwd: spec.cwd,
        env: childEnv(spec.env),
        stdio: ['ignore', fd, fd],
        detached: this.#opts.detached === true,
      });
    } finally {
      closeSync(fd);
    }
    if (child.pid === undefined) {
      throw new Error(`${spec.name}: cannot start ${spec.command}`);
    }
    this.#child = child;
    this.#exit = undefined;
    child.on('error', (err) => {
      if (this.#child === child) this.#exit = `could not start: ${err.message}`;
    });
    child.on('exit', (code, sig) => {
      if (this.#child === child) this.#exit = `exited with ${sig ?? `code ${code}`}`;
      live.delete(this);
    });
    if (this.#opts.detached) {
      child.unref();
    } else {
      installExitHook();
      live.add(this);
    }
    this.#pid = child.pid;
    this.#startTime = procStartTime(child.pid);
    const owner = this.#opts.owner ?? process.pid;
    const ownerStartTime = owner !== 0 ? procStartTime(owner) : undefined;
    registerProcess({
      pid: child.pid,
      name: spec.name,
      owner,
      ...(this.#startTime ? { startTime: this.#startTime } : {}),
      ...(ownerStartTime ? { ownerStartTime } : {}),
      ...(this.#opts.removeDir ? { removeDir: this.#opts.removeDir } : {}),
    });
  }

  /** Waits (bounded) until the server really serves; on failure the error has the log's tail. */
  async waitReady(timeoutMs = this.#opts.startTimeoutMs ?? 30_000): Promise<void> {
    const { spec } = this;
    try {
      await waitUntil(`${spec.name} (${spec.endpoint})`, () => probe(spec.probe), {
        timeoutMs,
        abort: () => {
          if (this.#exit) return `the server ${this.#exit} before serving`;
          if (this.#pid === undefined || !isAlive(this.#pid, this.#startTime))
            return 'the server is not running';
          return undefined;
        },
      });
    } catch (err) {
      const tail = this.logTail(30);
      throw new Error(
        `${(err as Error).message}\n--- last lines of ${spec.logFile} ---\n${tail || '(empty)'}\n--- end of log ---`,
      );
    }
    if (this.afterReady) {
      const hook = this.afterReady;
      this.afterReady = undefined;
      await hook();
    }
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.spawn();
    try {
      await this.waitReady();
    } catch (err) {
      await this.kill();
      throw err;
    }
  }

  async stop(): Promise<void> {
    const pid = this.#pid;
    if (pid === undefined) return;
    await terminate(pid, this.#startTime ? { startTime: this.#startTime } : {});
    this.#forget(pid);
  }

  async kill(): Promise<void> {
    const pid = this.#pid;
    if (pid === undefined) return;
    await terminate(pid, { graceMs: 0, ...(this.#startTime ? { startTime: this.#startTime } : {}) });
    this.#forget(pid);
  }

  #forget(pid: number): void {
    unregisterProcess(pid);
    live.delete(this);
    this.#pid = undefined;
    this.#startTime = undefined;
  }

  /** For the exit hook: SIGKILL now, delete the throwaway directory. */
  killSync(): void {
    if (this.#pid !== undefined && isAlive(this.#pid, this.#startTime)) {
      signal(this.#pid, 'SIGKILL');
      unregisterProcess(this.#pid);
    }
    if (this.#opts.removeDir) rmSync(this.#opts.removeDir, { recursive: true, force: true });
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  freeze(): void {
    if (this.#pid === undefined || !this.running) throw new Error(`${this.name} is not running`);
    signal(this.#pid, 'SIGSTOP');
  }

  thaw(): void {
    if (this.#pid === undefined || !this.running) throw new Error(`${this.name} is not running`);
    signal(this.#pid, 'SIGCONT');
  }

  async dispose(): Promise<void> {
    const dir = this.#opts.removeDir;
    if (dir && this.spec.dataDir.startsWith(`${dir}/`)) {
      // The data is thrown away: no need for a graceful stop.
      await this.kill();
    } else {
      await this.stop();
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}

class EtcdMember extends Member implements EtcdHandle {
  etcdctlBin = '';
  rootPassword: string | undefined;
  clientTls: TlsFiles | undefined;

  etcdctl(args: string[]): Promise<string> {
    const flags = [`--endpoints=${this.spec.url}`, '--dial-timeout=5s', '--command-timeout=10s'];
    if (this.clientTls?.caFile) flags.push(`--cacert=${this.clientTls.caFile}`);
    if (this.clientTls?.certFile) flags.push(`--cert=${this.clientTls.certFile}`);
    if (this.clientTls?.keyFile) flags.push(`--key=${this.clientTls.keyFile}`);
    if (this.rootPassword !== undefined && this.authEnabled) flags.push(`--user=root:${this.rootPassword}`);
    return runTool(this.etcdctlBin, [...flags, ...args], { ETCDCTL_API: '3' });
  }
  authEnabled = false;
}

class RedisMember extends Member implements RedisHandle {
  command(...commands: string[][]): Promise<string[]> {
    return redisCommands(this.spec.endpoint, commands, 5000);
  }
}

function runTool(cmd: string, args: string[], env: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} ${args.join(' ')} failed (exit ${code}): ${err.trim() || out.trim()}`));
    });
  });
}

class Cluster<M extends Member> implements ClusterHandle<M> {
  readonly kind: ServerKind;
  readonly name: string;
  readonly members: M[];
  readonly #removeDir: string | undefined;
  readonly net?: ClusterNet;
  constructor(kind: ServerKind, name: string, members: M[], removeDir: string | undefined, net?: ClusterNet) {
    this.kind = kind;
    this.name = name;
    this.members = members;
    this.#removeDir = removeDir;
    if (net) this.net = net;
  }
  get endpoints(): string[] {
    return this.members.map((m) => m.spec.endpoint);
  }
  get urls(): string[] {
    return this.members.map((m) => m.spec.url);
  }
  async start(): Promise<void> {
    const stopped = this.members.filter((m) => !m.running);
    for (const m of stopped) m.spawn();
    try {
      await Promise.all(stopped.map((m) => m.waitReady()));
    } catch (err) {
      await Promise.all(stopped.map((m) => m.kill()));
      throw err;
    }
  }
  async stop(): Promise<void> {
    // One after the other: etcd members stopped together wait seconds for a leader transfer.
    for (const m of this.members) await m.stop();
  }
  async dispose(): Promise<void> {
    try {
      if (this.#removeDir) {
        // The data is thrown away: no need for a graceful stop.
        await Promise.all(this.members.map((m) => m.kill()));
        rmSync(this.#removeDir, { recursive: true, force: true });
      } else {
        await this.stop();
      }
    } finally {
      await this.net?.dispose();
    }
  }
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}

// ---------------------------------------------------------------------------------------------

export interface LaunchOptions {
  /** Data directory to use (kept on dispose). Default: a throwaway directory under os.tmpdir(). */
  dataDir?: string;
  /** Extra command-line arguments for the server (appended: they win over the defaults). */
  args?: string[];
  /** Extra environment variables for the server process. */
  env?: Record<string, string>;
  /** Bound on waiting for the server to serve, per start. Default 30 s (60 s for ZooKeeper). */
  startTimeoutMs?: number;
  /** Progress messages (fetching packages...). */
  log?: Log;
}

export interface EtcdOptions extends LaunchOptions {
  /** Serve clients over TLS (https). The peer URLs stay plain http. */
  tls?: {
    certFile: string;
    keyFile: string;
    /** CA that signed the server cert: used by the readiness probe and etcdctl to verify it, and, with
     * clientCertAuth only, given to etcd to verify clients' certs. */
    caFile?: string;
    clientCertAuth?: boolean;
    /** Client cert for the readiness probe and etcdctl, needed with clientCertAuth. */
    clientCertFile?: string;
    clientKeyFile?: string;
  };
  /** Create user root with this password and enable auth once the server serves. */
  auth?: { rootPassword: string };
}

export interface ConsulOptions extends LaunchOptions {
  /** session_ttl_min (default "1s"; Consul's own default is 10s). */
  sessionTtlMin?: string;
  /** Extra HCL snippets passed with -hcl. */
  hcl?: string[];
  /**
   * A one-server agent (`-server -bootstrap-expect=1`, not `-dev`) whose raft
   * data lives in `dataDir`: a restart keeps keys, sessions and the raft
   * index. Default false (a dev agent, in memory).
   */
  persistent?: boolean;
}

export interface ZooKeeperOptions extends LaunchOptions {
  /** Extra zoo.cfg lines (key → value), e.g. { maxSessionTimeout: '120000' }. */
  config?: Record<string, string>;
  /** Extra JVM options. */
  jvmArgs?: string[];
}

export interface RedisOptions extends LaunchOptions {
  /** requirepass: the readiness probe authenticates with it. */
  password?: string;
}

export interface ClusterOptions {
  /** Members (default 3). */
  size?: number;
  /**
   * Each member in a network namespace of its own (see `ClusterNet`), so a
   * test can cut member-to-member and client-to-member links one by one
   * (`handle.net`). Needs Linux and root; members listen on 10.x addresses.
   */
  isolated?: boolean;
  startTimeoutMs?: number;
  log?: Log;
}

/** Advanced (the CLI uses it): where to put a server's files and whether it outlives this process. */
export interface InternalOptions {
  /** Folder for data, logs and config (kept). Default: a throwaway folder under os.tmpdir(). */
  baseDir?: string;
  /** Own session, outliving this process (no parent-death signal, no exit hook). */
  detached?: boolean;
  /** PID recorded as the owner in compose/.run/procs (0: shared, only `cli down` stops it). */
  owner?: number;
}

interface Base {
  base: string;
  removeDir: string | undefined;
  memberOpts: MemberOptions;
}

function prepareBase(name: string, internal: InternalOptions, startTimeoutMs: number | undefined): Base {
  let base: string;
  let removeDir: string | undefined;
  if (internal.baseDir) {
    base = internal.baseDir;
    mkdirSync(base, { recursive: true });
  } else {
    mkdirSync(tmpdir(), { recursive: true });
    base = mkdtempSync(join(tmpdir(), `kv-${name}-`));
    removeDir = base;
  }
  const memberOpts: MemberOptions = {
    ...(internal.detached ? { detached: true } : {}),
    ...(internal.owner !== undefined ? { owner: internal.owner } : {}),
    ...(removeDir ? { removeDir } : {}),
    ...(startTimeoutMs !== undefined ? { startTimeoutMs } : {}),
  };
  return { base, removeDir, memberOpts };
}

const PORT_IN_USE = /address already in use|EADDRINUSE|BindException|bind: /i;

/** First start with freshly picked ports; picks new ones (up to 3 tries) if another process took one. */
async function withPortRetry<T>(attempt: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await attempt();
    } catch (err) {
      if (i < 2 && PORT_IN_USE.test((err as Error).message)) continue;
      throw err;
    }
  }
}

let reaped = false;
async function reapOnce(): Promise<void> {
  if (reaped) return;
  reaped = true;
  // Servers left behind by test processes that died without stopping them, then their networks.
  await reapRegistered();
  await reapClusterNets();
}

// --- etcd -----------------------------------------------------------------------------------

function etcdSpec(
  bins: Bins['etcd'],
  o: {
    name: string;
    base: string;
    dataDir: string;
    clientPort: number;
    peerPort: number;
    cluster: string;
    token: string;
    tls: EtcdOptions['tls'] | undefined;
    args: string[];
    env: Record<string, string>;
    /** Address to listen on (default 127.0.0.1). */
    host?: string;
  },
): ProcessSpec {
  const host = o.host ?? HOST;
  const scheme = o.tls ? 'https' : 'http';
  const clientUrl = `${scheme}://${host}:${o.clientPort}`;
  const peerUrl = `http://${host}:${o.peerPort}`;
  const args = [
    `--name=${o.name}`,
    `--data-dir=${o.dataDir}`,
    `--listen-client-urls=${clientUrl}`,
    `--advertise-client-urls=${clientUrl}`,
    `--listen-peer-urls=${peerUrl}`,
    `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=${o.cluster}`,
    '--initial-cluster-state=new',
    `--initial-cluster-token=${o.token}`,
    '--enable-v2=true',
    '--logger=zap',
    '--log-outputs=stderr',
  ];
  if (o.tls) {
    args.push(`--cert-file=${o.tls.certFile}`, `--key-file=${o.tls.keyFile}`);
    // etcd 3.4 demands client certificates as soon as it has a trusted CA: pass it only for that.
    if (o.tls.clientCertAuth) {
      if (!o.tls.caFile) throw new Error('etcd tls.clientCertAuth needs tls.caFile');
      args.push(`--trusted-ca-file=${o.tls.caFile}`, '--client-cert-auth=true');
    }
  }
  args.push(...o.args);
  const probeTls: TlsFiles = {
    ...(o.tls?.caFile ? { caFile: o.tls.caFile } : {}),
    ...(o.tls?.clientCertFile ? { certFile: o.tls.clientCertFile } : {}),
    ...(o.tls?.clientKeyFile ? { keyFile: o.tls.clientKeyFile } : {}),
  };
  const env: Record<string, string> = { ...o.env };
  if (process.arch === 'arm64') env.ETCD_UNSUPPORTED_ARCH = 'arm64';
  return {
    kind: 'etcd',
    name: o.name,
    command: bins.etcd,
    args,
    env,
    cwd: o.base,
    logFile: join(o.base, `${o.name}.log`),
    dataDir: o.dataDir,
    endpoint: `${host}:${o.clientPort}`,
    url: clientUrl,
    probe: { type: 'etcd', url: clientUrl, ...(o.tls ? { tls: probeTls } : {}) },
  };
}

/** A private etcd 3.4 (v2 API enabled) on a free port of 127.0.0.1, serving when this resolves. */
export async function launchEtcd(
  opts: EtcdOptions = {},
  internal: InternalOptions = {},
): Promise<EtcdHandle> {
  const { etcd: bins } = await ensureInstalled(['etcd'], opts.log);
  await reapOnce();
  const name = 'etcd';
  const { base, removeDir, memberOpts } = prepareBase(name, internal, opts.startTimeoutMs);
  try {
    return await withPortRetry(async () => {
      const [clientPort, peerPort] = (await freePorts(2)) as [number, number];
      const spec = etcdSpec(bins, {
        name,
        base,
        dataDir: opts.dataDir ?? join(base, 'data'),
        clientPort,
        peerPort,
        cluster: `${name}=http://${HOST}:${peerPort}`,
        token: `kv-${clientPort}`,
        tls: opts.tls,
        args: opts.args ?? [],
        env: opts.env ?? {},
      });
      const m = new EtcdMember(spec, memberOpts);
      m.etcdctlBin = bins.etcdctl;
      if (opts.tls) {
        m.clientTls = {
          ...(opts.tls.caFile ? { caFile: opts.tls.caFile } : {}),
          ...(opts.tls.clientCertFile ? { certFile: opts.tls.clientCertFile } : {}),
          ...(opts.tls.clientKeyFile ? { keyFile: opts.tls.clientKeyFile } : {}),
        };
      }
      const auth = opts.auth;
      if (auth) {
        m.rootPassword = auth.rootPassword;
        m.afterReady = async () => {
          await m.etcdctl(['user', 'add', `root:${auth.rootPassword}`]);
          await m.etcdctl(['auth', 'enable']);
          m.authEnabled = true;
        };
      }
      await m.start();
      return m;
    });
  } catch (err) {
    if (removeDir) rmSync(removeDir, { recursive: true, force: true });
    throw err;
  }
}

/**
 * A private etcd cluster (3 members by default) on 127.0.0.1, or, with
 * `isolated: true`, each member in a network namespace of its own
 * (`handle.net` cuts and heals the links between them).
 */
export async function launchEtcdCluster(
  opts: ClusterOptions = {},
  internal: InternalOptions = {},
): Promise<ClusterHandle<EtcdHandle>> {
  const { etcd: bins } = await ensureInstalled(['etcd'], opts.log);
  await reapOnce();
  const size = opts.size ?? 3;
  const name = opts.isolated ? 'etcd-isolated' : 'etcd-cluster';
  const { base, removeDir, memberOpts } = prepareBase(name, internal, opts.startTimeoutMs);
  const net = opts.isolated
    ? await createClusterNet({ size, ...(internal.owner !== undefined ? { owner: internal.owner } : {}) })
    : undefined;
  try {
    return await withPortRetry(async () => {
      // In namespaces of their own, every member has the usual ports to itself.
      const ports = net ? Array.from({ length: size }, () => [2379, 2380]).flat() : await freePorts(2 * size);
      const hostOf = (i: number) => net?.address(i) ?? HOST;
      const names = Array.from({ length: size }, (_, i) => `${name}-${i + 1}`);
      const cluster = names.map((n, i) => `${n}=http://${hostOf(i)}:${ports[2 * i + 1]}`).join(',');
      const members = names.map((n, i) => {
        const spec = etcdSpec(bins, {
          name: n,
          base,
          dataDir: join(base, `data-${i + 1}`),
          clientPort: ports[2 * i] as number,
          peerPort: ports[2 * i + 1] as number,
          cluster,
          token: `kv-cluster-${net?.id ?? ports[0]}`,
          tls: undefined,
          args: [],
          env: {},
          host: hostOf(i),
        });
        if (net) [spec.command, spec.args] = net.wrap(i, spec.command, spec.args);
        const m = new EtcdMember(spec, memberOpts);
        m.etcdctlBin = bins.etcdctl;
        return m;
      });
      const c = new Cluster<EtcdMember>('etcd', name, members, removeDir, net);
      await c.start();
      return c;
    });
  } catch (err) {
    await net?.dispose();
    if (removeDir) rmSync(removeDir, { recursive: true, force: true });
    throw err;
  }
}

// --- Consul ---------------------------------------------------------------------------------

/** A private Consul 1.8 dev agent (in-memory: a restart loses the data) with session_ttl_min 1s. */
export async function launchConsul(
  opts: ConsulOptions = {},
  internal: InternalOptions = {},
): Promise<ServerHandle> {
  const { consul: bins } = await ensureInstalled(['consul'], opts.log);
  await reapOnce();
  const name = 'consul';
  const { base, removeDir, memberOpts } = prepareBase(name, internal, opts.startTimeoutMs);
  try {
    return await withPortRetry(async () => {
      const [http, dns, server, serfLan, serfWan, grpc] = (await freePorts(6)) as [
        number,
        number,
        number,
        number,
        number,
        number,
      ];
      const dataDir = opts.dataDir ?? join(base, 'data');
      const hcl = [
        `session_ttl_min = "${opts.sessionTtlMin ?? '1s'}"`,
        ...(opts.persistent ? ['performance { raft_multiplier = 1 }'] : []),
        ...(opts.hcl ?? []),
      ];
      const url = `http://${HOST}:${http}`;
      const spec: ProcessSpec = {
        kind: 'consul',
        name,
        command: bins.consul,
        args: [
          'agent',
          ...(opts.persistent ? ['-server', '-bootstrap-expect=1', '-ui=false'] : ['-dev']),
          `-node=kv-test-${http}`,
          `-bind=${HOST}`,
          `-client=${HOST}`,
          `-advertise=${HOST}`,
          `-http-port=${http}`,
          `-dns-port=${dns}`,
          `-server-port=${server}`,
          `-serf-lan-port=${serfLan}`,
          `-serf-wan-port=${serfWan}`,
          `-grpc-port=${grpc}`,
          `-data-dir=${dataDir}`,
          ...hcl.flatMap((h) => ['-hcl', h]),
          ...(opts.args ?? []),
        ],
        env: { ...(opts.env ?? {}) },
        cwd: base,
        logFile: join(base, `${name}.log`),
        dataDir,
        endpoint: `${HOST}:${http}`,
        url,
        probe: { type: 'consul', url },
      };
      const m = new Member(spec, memberOpts);
      await m.start();
      return m;
    });
  } catch (err) {
    if (removeDir) rmSync(removeDir, { recursive: true, force: true });
    throw err;
  }
}

/** Options of `launchConsulCluster`. */
export interface ConsulClusterOptions extends ClusterOptions {
  /** session_ttl_min (default "1s"; Consul's own default is 10s). */
  sessionTtlMin?: string;
  /** Extra HCL snippets passed with -hcl to every member. */
  hcl?: string[];
}

/**
 * A private Consul 1.8 cluster of servers (3 by default: `-server
 * -bootstrap-expect=N`, joined with `-retry-join`), each with a data dir of
 * its own (a member started again keeps its raft log), fast raft timings
 * (`raft_multiplier = 1`), session_ttl_min 1s, and a fixed membership: dead
 * servers are never pruned from the raft configuration (autopilot's
 * `cleanup_dead_servers = false`), so a member killed or cut off comes back
 * as a voter. On 127.0.0.1, or, with `isolated: true`, each member in a
 * network namespace of its own (`handle.net` cuts and heals the links
 * between them); every member serves the HTTP API.
 */
export async function launchConsulCluster(
  opts: ConsulClusterOptions = {},
  internal: InternalOptions = {},
): Promise<ClusterHandle> {
  const { consul: bins } = await ensureInstalled(['consul'], opts.log);
  await reapOnce();
  const size = opts.size ?? 3;
  const name = opts.isolated ? 'consul-isolated' : 'consul-cluster';
  const { base, removeDir, memberOpts } = prepareBase(name, internal, opts.startTimeoutMs ?? 60_000);
  const net = opts.isolated
    ? await createClusterNet({ size, ...(internal.owner !== undefined ? { owner: internal.owner } : {}) })
    : undefined;
  try {
    return await withPortRetry(async () => {
      // In namespaces of their own, every member has Consul's usual ports to itself:
      // http, dns, server (raft/RPC), serf LAN, serf WAN, gRPC.
      const perMember = 6;
      const ports = net
        ? Array.from({ length: size }, () => [8500, 8600, 8300, 8301, 8302, 8502]).flat()
        : await freePorts(perMember * size);
      const hostOf = (i: number) => net?.address(i) ?? HOST;
      const port = (i: number, which: number) => ports[perMember * i + which] as number;
      const hcl = [
        `session_ttl_min = "${opts.sessionTtlMin ?? '1s'}"`,
        'performance { raft_multiplier = 1 }',
        'autopilot { cleanup_dead_servers = false }',
        ...(opts.hcl ?? []),
      ];
      const members = Array.from({ length: size }, (_, i) => {
        const memberName = `${name}-${i + 1}`;
        const host = hostOf(i);
        const dataDir = join(base, `data-${i + 1}`);
        const url = `http://${host}:${port(i, 0)}`;
        const joins = Array.from({ length: size }, (_, j) => j)
          .filter((j) => j !== i)
          .map((j) => `-retry-join=${hostOf(j)}:${port(j, 3)}`);
        const spec: ProcessSpec = {
          kind: 'consul',
          name: memberName,
          command: bins.consul,
          args: [
            'agent',
            '-server',
            `-bootstrap-expect=${size}`,
            '-ui=false',
            `-node=${memberName}`,
            `-bind=${host}`,
            `-client=${host}`,
            `-advertise=${host}`,
            `-http-port=${port(i, 0)}`,
            `-dns-port=${port(i, 1)}`,
            `-server-port=${port(i, 2)}`,
            `-serf-lan-port=${port(i, 3)}`,
            `-serf-wan-port=${port(i, 4)}`,
            `-grpc-port=${port(i, 5)}`,
            `-data-dir=${dataDir}`,
            ...joins,
            '-retry-interval=1s',
            ...hcl.flatMap((h) => ['-hcl', h]),
          ],
          env: {},
          cwd: base,
          logFile: join(base, `${memberName}.log`),
          dataDir,
          endpoint: `${host}:${port(i, 0)}`,
          url,
          probe: { type: 'consul', url },
        };
        if (net) [spec.command, spec.args] = net.wrap(i, spec.command, spec.args);
        return new Member(spec, memberOpts);
      });
      const c = new Cluster<Member>('consul', name, members, removeDir, net);
      await c.start();
      return c;
    });
  } catch (err) {
    await net?.dispose();
    if (removeDir) rmSync(removeDir, { recursive: true, force: true });
    throw err;
  }
}

// --- ZooKeeper ------------------------------------------------------------------------------

function zkSpec(
  bins: Bins['zookeeper'],
  o: {
    name: string;
    base: string;
    dataDir: string;
    clientPort: number;
    servers: string[];
    myId: number | undefined;
    config: Record<string, string>;
    jvmArgs: string[];
    args: string[];
    env: Record<string, string>;
    /** Address to listen on (default 127.0.0.1). */
    host?: string;
  },
): ProcessSpec {
  const host = o.host ?? HOST;
  mkdirSync(o.dataDir, { recursive: true, mode: 0o700 });
  const cfg: Record<string, string> = {
    tickTime: '500',
    initLimit: '20',
    syncLimit: '10',
    minSessionTimeout: '1000',
    maxSessionTimeout: '60000',
    dataDir: o.dataDir,
    clientPort: String(o.clientPort),
    clientPortAddress: host,
    'admin.enableServer': 'false',
    '4lw.commands.whitelist': '*',
    maxClientCnxns: '0',
    ...o.config,
  };
  const lines = Object.entries(cfg).map(([k, v]) => `${k}=${v}`);
  lines.push(...o.servers);
  const cfgFile = join(o.base, `${o.name}.cfg`);
  writeFileSync(cfgFile, `${lines.join('\n')}\n`);
  if (o.myId !== undefined) writeFileSync(join(o.dataDir, 'myid'), `${o.myId}\n`);
  const endpoint = `${host}:${o.clientPort}`;
  return {
    kind: 'zookeeper',
    name: o.name,
    command: bins.java,
    args: [
      '-Xms16m',
      '-Xmx256m',
      '-XX:+UseSerialGC',
      '-XX:TieredStopAtLevel=1',
      '-XX:-UsePerfData',
      '-Djava.awt.headless=true',
      '-Dzookeeper.admin.enableServer=false',
      '-Dzookeeper.jmx.log4j.disable=true',
      '-Dorg.slf4j.simpleLogger.showDateTime=true',
      ...o.jvmArgs,
      '-cp',
      bins.classpath,
      'org.apache.zookeeper.server.quorum.QuorumPeerMain',
      cfgFile,
      ...o.args,
    ],
    env: { ...o.env },
    cwd: o.base,
    logFile: join(o.base, `${o.name}.log`),
    dataDir: o.dataDir,
    endpoint,
    url: endpoint,
    probe: {
      type: 'zookeeper',
      endpoint,
      modes: o.myId === undefined ? ['standalone'] : ['leader', 'follower'],
    },
  };
}

/** A private standalone ZooKeeper 3.8 (tickTime 500 ms: sessions from 1 s to 60 s). */
export async function launchZooKeeper(
  opts: ZooKeeperOptions = {},
  internal: InternalOptions = {},
): Promise<ServerHandle> {
  const { zookeeper: bins } = await ensureInstalled(['zookeeper'], opts.log);
  await reapOnce();
  const name = 'zookeeper';
  const { base, removeDir, memberOpts } = prepareBase(name, internal, opts.startTimeoutMs ?? 60_000);
  try {
    return await withPortRetry(async () => {
      const [clientPort] = (await freePorts(1)) as [number];
      const m = new Member(
        zkSpec(bins, {
          name,
          base,
          dataDir: opts.dataDir ?? join(base, 'data'),
          clientPort,
          servers: [],
          myId: undefined,
          config: opts.config ?? {},
          jvmArgs: opts.jvmArgs ?? [],
          args: opts.args ?? [],
          env: opts.env ?? {},
        }),
        memberOpts,
      );
      await m.start();
      return m;
    });
  } catch (err) {
    if (removeDir) rmSync(removeDir, { recursive: true, force: true });
    throw err;
  }
}

/**
 * A private ZooKeeper ensemble (3 members by default) on 127.0.0.1, or, with
 * `isolated: true`, each member in a network namespace of its own
 * (`handle.net` cuts and heals the links between them).
 */
export async function launchZooKeeperEnsemble(
  opts: ClusterOptions = {},
  internal: InternalOptions = {},
): Promise<ClusterHandle> {
  const { zookeeper: bins } = await ensureInstalled(['zookeeper'], opts.log);
  await reapOnce();
  const size = opts.size ?? 3;
  const name = opts.isolated ? 'zookeeper-isolated' : 'zookeeper-ensemble';
  const { base, removeDir, memberOpts } = prepareBase(name, internal, opts.startTimeoutMs ?? 90_000);
  const net = opts.isolated
    ? await createClusterNet({ size, ...(internal.owner !== undefined ? { owner: internal.owner } : {}) })
    : undefined;
  try {
    return await withPortRetry(async () => {
      // In namespaces of their own, every member has the usual ports to itself.
      const ports = net
        ? Array.from({ length: size }, () => [2181, 2888, 3888]).flat()
        : await freePorts(3 * size);
      const hostOf = (i: number) => net?.address(i) ?? HOST;
      const servers = Array.from(
        { length: size },
        (_, i) => `server.${i + 1}=${hostOf(i)}:${ports[3 * i + 1]}:${ports[3 * i + 2]}`,
      );
      const members = servers.map((_, i) => {
        const spec = zkSpec(bins, {
          name: `${name}-${i + 1}`,
          base,
          dataDir: join(base, `data-${i + 1}`),
          clientPort: ports[3 * i] as number,
          servers,
          myId: i + 1,
          config: {},
          jvmArgs: [],
          args: [],
          env: {},
          host: hostOf(i),
        });
        if (net) [spec.command, spec.args] = net.wrap(i, spec.command, spec.args);
        return new Member(spec, memberOpts);
      });
      const c = new Cluster<Member>('zookeeper', name, members, removeDir, net);
      await c.start();
      return c;
    });
  } catch (err) {
    await net?.dispose();
    if (removeDir) rmSync(removeDir, { recursive: true, force: true });
    throw err;
  }
}

// --- Redis ----------------------------------------------------------------------------------

/** A private Redis 7.0 (keyspace notifications KEA, no persistence unless `args` say otherwise). */
export async function launchRedis(
  opts: RedisOptions = {},
  internal: InternalOptions = {},
): Promise<RedisHandle> {
  const { redis: bins } = await ensureInstalled(['redis'], opts.log);
  await reapOnce();
  const name = 'redis';
  const { base, removeDir, memberOpts } = prepareBase(name, internal, opts.startTimeoutMs);
  try {
    return await withPortRetry(async () => {
      const [port] = (await freePorts(1)) as [number];
      const dataDir = opts.dataDir ?? join(base, 'data');
      const endpoint = `${HOST}:${port}`;
      const spec: ProcessSpec = {
        kind: 'redis',
        name,
        command: bins.redisServer,
        args: [
          '--port',
          String(port),
          '--bind',
          HOST,
          '--dir',
          dataDir,
          '--save',
          '',
          '--appendonly',
          'no',
          '--notify-keyspace-events',
          'KEA',
          '--daemonize',
          'no',
          '--logfile',
          '',
          ...(opts.password !== undefined ? ['--requirepass', opts.password] : []),
          ...(opts.args ?? []),
        ],
        env: { ...(bins.libDir ? { LD_LIBRARY_PATH: bins.libDir } : {}), ...(opts.env ?? {}) },
        cwd: base,
        logFile: join(base, `${name}.log`),
        dataDir,
        endpoint,
        url: `redis://${endpoint}`,
        probe: {
          type: 'redis',
          endpoint,
          ...(opts.password !== undefined ? { auth: { password: opts.password } } : {}),
        },
      };
      const m = new RedisMember(spec, memberOpts);
      await m.start();
      return m;
    });
  } catch (err) {
    if (removeDir) rmSync(removeDir, { recursive: true, force: true });
    throw err;
  }
}

// --- by name --------------------------------------------------------------------------------

export type AnyHandle = ServerHandle | ClusterHandle;

export function membersOf(h: AnyHandle): Member[] {
  return ('members' in h ? h.members : [h]) as Member[];
}

/** Starts one server by its name, with default options. */
export function launch(name: ServerName, internal: InternalOptions = {}, log?: Log): Promise<AnyHandle> {
  const o = log ? { log } : {};
  switch (name) {
    case 'etcd':
      return launchEtcd(o, internal);
    case 'consul':
      return launchConsul(o, internal);
    case 'zookeeper':
      return launchZooKeeper(o, internal);
    case 'redis':
      return launchRedis(o, internal);
    case 'etcd-cluster':
      return launchEtcdCluster(o, internal);
    case 'zookeeper-ensemble':
      return launchZooKeeperEnsemble(o, internal);
  }
}
