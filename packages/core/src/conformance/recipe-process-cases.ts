import { type ChildProcess, fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { expect } from 'vitest';
import { type Capabilities, type Member, members, observe } from '../index.js';
import { type Define, Reader, range, type Settings, text, within } from './harness.js';
import type { ChildMessage, ChildSpec, ResourceState } from './recipe-child.js';

/** How child processes open the same store as the kit: see `ConformanceOptions.processes`. */
export interface ProcessOptions {
  /** A URL `createStore` opens the store with, for this key prefix. */
  url: (prefix: string) => string;
  /**
   * Modules the child imports before `createStore` (so the backend is
   * registered): package names (resolved from the working directory, as the
   * test file's package sees them), absolute paths or file: URLs.
   */
  imports?: readonly string[];
}

/** The compiled child script: next to this file in dist; from src (the kit's own tests), the dist copy. */
function childScript(): string {
  const here = fileURLToPath(import.meta.url);
  const js = here.replace(/\.ts$/, '.js').replace(/recipe-process-cases\.js$/, 'recipe-child.js');
  if (!here.endsWith('.ts')) return js;
  const dist = js.replace(/[\\/]src[\\/]conformance[\\/]/, `${'/dist/conformance/'}`);
  if (!existsSync(dist)) throw new Error(`build @kv/core first: ${dist} is missing`);
  return dist;
}

function resolveImports(imports: readonly string[]): string[] {
  const require = createRequire(join(process.cwd(), 'package.json'));
  return imports.map((spec) => {
    if (/^(file|data|node):/.test(spec)) return spec;
    if (spec.startsWith('/')) return pathToFileURL(spec).href;
    return pathToFileURL(require.resolve(spec)).href;
  });
}

/** A child process with a queue of the messages it sent. */
class Child {
  readonly name: string;
  private readonly process: ChildProcess;
  private readonly queue: ChildMessage[] = [];
  private readonly waiters = new Set<() => void>();
  private stderr = '';
  exited = false;
  /** Resolves to the fencing token when this candidate leads (once: a candidate leads at most once). */
  readonly leading: Promise<number>;
  /** `performance.now()` when its 'leading' message arrived. */
  ledAt: number | undefined;

  constructor(spec: ChildSpec) {
    this.name = spec.name;
    this.process = fork(childScript(), [JSON.stringify(spec)], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    this.process.stderr?.on('data', (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString()).slice(-4_000);
    });
    let led: (token: number) => void = () => {};
    this.leading = new Promise((resolve) => {
      led = resolve;
    });
    this.process.on('message', (message: ChildMessage) => {
      if (message.type === 'leading') {
        this.ledAt = performance.now();
        led(message.token);
      } else this.queue.push(message);
      for (const wake of this.waiters) wake();
    });
    this.process.on('exit', () => {
      this.exited = true;
      for (const wake of this.waiters) wake();
    });
  }

  /** The last lines the child wrote to stderr. */
  get errors(): string {
    return this.stderr;
  }

  /** Every message received so far and not yet taken. */
  drain(): ChildMessage[] {
    return this.queue.splice(0);
  }

  /** The next message of `type` (earlier ones of other types are dropped); fails after `ms` or if the child dies. */
  async next<T extends ChildMessage['type']>(
    type: T,
    ms: number,
  ): Promise<Extract<ChildMessage, { type: T }>> {
    const deadline = performance.now() + ms;
    for (;;) {
      const index = this.queue.findIndex((m) => m.type === type || m.type === 'error');
      if (index >= 0) {
        const [message] = this.queue.splice(0, index + 1).slice(-1) as [ChildMessage];
        if (message.type === 'error') throw new Error(`${this.name} failed: ${message.message}`);
        return message as Extract<ChildMessage, { type: T }>;
      }
      if (this.exited) throw new Error(`${this.name} exited before sending ${type}; stderr: ${this.stderr}`);
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`${this.name} sent no ${type} within ${ms} ms; stderr: ${this.stderr}`);
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.waiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, left);
        this.waiters.add(wake);
      });
    }
  }

  send(command: string): void {
    this.process.send(command);
  }

  /** SIGKILL: the process dies mid-whatever, as a crash. Resolves once it is gone. */
  async kill(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((resolve) => this.process.once('exit', () => resolve()));
    this.process.kill('SIGKILL');
    await gone;
  }
}

const bound = (caps: Capabilities, s: Settings) => 60_000 + 6 * (s.lockTtl + caps.ttlGranularity + s.slack);
const discoveryBound = (caps: Capabilities, s: Settings) =>
  60_000 + 6 * (s.ttl + caps.ttlGranularity + s.slack);

export function recipeProcessCases(define: Define): void {
  define(
    'election across processes: three candidates, one leader; SIGKILLed leader replaced within ttl; resign hands over at once; a fenced resource never interleaves two leaders; observers see every leader',
    { rows: ['electionFailover'], requires: ['lock', 'watch'], needsProcesses: true, timeout: bound },
    async (t) => {
      const processes = t.settings.processes as ProcessOptions;
      const ttl = t.settings.lockTtl;
      const url = processes.url(t.prefix);
      const imports = resolveImports(processes.imports ?? []);
      const startup = 30_000 * t.settings.timeScale;
      const children: Child[] = [];
      const spawn = (role: ChildSpec['role'], name: string) => {
        const child = new Child({ url, imports, role, name, key: 'election', ttl, resource: 'resource' });
        children.push(child);
        return child;
      };
      t.onCleanup(() => Promise.all(children.map((c) => c.kill())).then(() => {}));
      const watcher = new Reader(() => observe(t.store, 'election'), 'observe', t.settings.eventTimeout);
      t.onCleanup(() => watcher.close());
      const seen: (string | null)[] = [];
      const observed = async (value: string) => {
        for (;;) {
          const leader = await watcher.next(startup);
          seen.push(leader === null ? null : text(leader.value));
          if (leader !== null && text(leader.value) === value) return;
        }
      };
      const remote = spawn('observer', 'observer');
      await remote.next('ready', startup);
      expect((await remote.next('leader', startup)).value).toBeNull();

      const candidates = range(3).map((i) => spawn('candidate', `c${i}`));
      await Promise.all(candidates.map((c) => c.next('ready', startup)));
      const leaderOf = (waiting: Child[], ms: number) =>
        within(
          Promise.race(waiting.map((c) => c.leading.then((token) => ({ child: c, token })))),
          ms,
          `none of ${waiting.map((c) => c.name).join(', ')} led within ${ms} ms; stderr: ${waiting.map((c) => c.errors).join(' | ')}`,
        );

      const first = await leaderOf(candidates, startup);
      await first.child.next('wrote', t.settings.eventTimeout);
      await first.child.next('wrote', t.settings.eventTimeout);
      await observed(first.child.name);
      let rest = candidates.filter((c) => c !== first.child);

      expect(
        rest.filter((c) => c.ledAt !== undefined).map((c) => c.name),
        'no other candidate leads',
      ).toEqual([]);
      // Crash the leader.
      const killed = performance.now();
      await first.child.kill();
      const limit = ttl + t.caps.ttlGranularity + t.settings.slack;
      const second = await leaderOf(rest, limit + t.settings.eventTimeout);
      const failover = performance.now() - killed;
      t.note(`failover after SIGKILL of the leader: ${Math.round(failover)} ms (lock ttl ${ttl} ms)`);
      expect(failover, 'a new leader within ttl + ttlGranularity of the crash').toBeLessThan(limit);
      expect(second.token).toBeGreaterThan(first.token);
      await second.child.next('wrote', t.settings.eventTimeout);
      await observed(second.child.name);
      rest = rest.filter((c) => c !== second.child);
      expect(
        rest.filter((c) => c.ledAt !== undefined).map((c) => c.name),
        'no other candidate leads',
      ).toEqual([]);

      // Resign: the last candidate leads at once.
      const resigning = performance.now();
      second.child.send('resign');
      const third = await leaderOf(rest, t.settings.prompt + t.settings.slack);
      const handover = performance.now() - resigning;
      t.note(`hand-over after resign(): ${Math.round(handover)} ms`);
      expect(handover, 'resign hands over well before the ttl').toBeLessThan(ttl);
      await second.child.next('resigned', t.settings.eventTimeout);
      expect(third.token).toBeGreaterThan(second.token);
      await third.child.next('wrote', t.settings.eventTimeout);
      await observed(third.child.name);

      // The observer process saw the same leaders, in order.
      const remoteSeen: (string | null)[] = [];
      while (remoteSeen.at(-1) !== third.child.name) {
        remoteSeen.push((await remote.next('leader', t.settings.eventTimeout)).value);
      }
      for (const views of [seen, remoteSeen]) {
        expect(views.filter((v) => v !== null)).toEqual([
          first.child.name,
          second.child.name,
          third.child.name,
        ]);
      }

      // No leader that believed it led was ever fenced out, and the resource saw one leader after another.
      for (const child of candidates) {
        const fenced = child.drain().filter((m) => m.type === 'fenced' && !m.stale);
        expect(fenced, `${child.name} was fenced out while it believed it led`).toEqual([]);
      }
      const state = JSON.parse(text((await t.store.get('resource')).value)) as ResourceState;
      const writers = state.log.map((entry) => entry.split(':').slice(0, 2).join(':'));
      const runs = writers.filter((w, i) => i === 0 || writers[i - 1] !== w);
      expect(runs, 'each leader wrote in one run, in leader order').toEqual(
        [first, second, third].map((l) => `${l.child.name}:${l.token}`).slice(-runs.length),
      );
    },
  );

  define(
    'discovery across processes: members of three processes listed; a SIGKILLed one disappears within ttl, a closed one at once',
    {
      rows: ['discoveryProcesses'],
      requires: ['keepAlive', 'watchTree', 'watch'],
      needsProcesses: true,
      timeout: discoveryBound,
    },
    async (t) => {
      const processes = t.settings.processes as ProcessOptions;
      const ttl = t.settings.ttl;
      const url = processes.url(t.prefix);
      const imports = resolveImports(processes.imports ?? []);
      const startup = 30_000 * t.settings.timeScale;
      const children: Child[] = [];
      const spawn = (role: ChildSpec['role'], name: string) => {
        const child = new Child({ url, imports, role, name, key: 'svc', ttl });
        children.push(child);
        return child;
      };
      t.onCleanup(() => Promise.all(children.map((c) => c.kill())).then(() => {}));
      const list = new Reader<Member[]>(() => members(t.store, 'svc'), 'members', t.settings.eventTimeout);
      t.onCleanup(() => list.close());
      const until = async (ids: string[], ms: number) => {
        for (;;) {
          const got = (await list.next(ms)).map((m) => m.id);
          if (JSON.stringify(got) === JSON.stringify(ids)) return;
        }
      };
      expect((await list.next()).map((m) => m.id)).toEqual([]);
      const watcher = spawn('members', 'watcher');
      await watcher.next('ready', startup);
      const nodes = range(3).map((i) => spawn('member', `m${i}`));
      await Promise.all(nodes.map((c) => c.next('registered', startup)));
      await until(['m0', 'm1', 'm2'], startup);

      const killed = performance.now();
      await (nodes[1] as Child).kill();
      const limit = ttl + t.caps.ttlGranularity + t.settings.slack;
      await until(['m0', 'm2'], limit + t.settings.eventTimeout);
      const gone = performance.now() - killed;
      t.note(`a SIGKILLed member left the list after ${Math.round(gone)} ms (ttl ${ttl} ms)`);
      expect(gone, 'a crashed member disappears within ttl + ttlGranularity').toBeLessThan(limit);

      const closing = performance.now();
      (nodes[2] as Child).send('close');
      await (nodes[2] as Child).next('closed', t.settings.eventTimeout);
      await until(['m0'], t.settings.eventTimeout);
      expect(performance.now() - closing, 'a closed member leaves at once').toBeLessThan(
        ttl + t.settings.slack,
      );

      // The watching process saw the same final list.
      for (;;) {
        const { ids } = await watcher.next('members', t.settings.eventTimeout);
        if (JSON.stringify(ids) === '["m0"]') break;
      }
    },
  );
}
