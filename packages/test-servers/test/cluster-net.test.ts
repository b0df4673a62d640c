import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ClusterNet, clusterNetProblem, createClusterNet, reapClusterNets } from '../src/index.js';
import { runDir } from '../src/paths.js';
import { within } from './helpers.js';

// Real namespaces and links: bytes between the ends of a cut link vanish, nothing resets.

const problem = await clusterNetProblem();
if (problem && process.env.CI === 'true')
  throw new Error(`cluster networks do not work here (CI=true): ${problem}`);
if (problem) console.warn(`\n!!! cluster-net tests SKIPPED: ${problem} !!!\n`);

const PORT = 7000;
/** An echo server inside a namespace, printing "ready" once it listens. */
const ECHO = `require('net').createServer(s=>{s.on('error',()=>{});s.pipe(s)}).listen(${PORT},process.argv[1],()=>console.log('ready'))`;
/** Inside a namespace: connects to argv[1], relays stdin lines to it and echoes back to stdout. */
const RELAY = `const s=require('net').connect(${PORT},process.argv[1],()=>console.log('connected'));s.on('data',d=>process.stdout.write(d));s.on('error',e=>console.log('error '+e.code));s.on('close',()=>console.log('closed'));process.stdin.on('data',d=>s.write(d))`;

class Lines {
  private text = '';
  constructor(readonly child: ChildProcess) {
    child.stdout?.on('data', (d: Buffer) => {
      this.text += d.toString();
    });
  }
  get output(): string {
    return this.text;
  }
  async waitFor(what: string, ms: number): Promise<void> {
    await within(
      ms,
      `"${what}" from the child`,
      (async () => {
        while (!this.text.includes(what)) await once(this.child.stdout as NodeJS.ReadableStream, 'data');
      })(),
    );
  }
}

const children: ChildProcess[] = [];
function inMember(net: ClusterNet, i: number, script: string, arg: string): Lines {
  const [command, args] = net.wrap(i, process.execPath, ['-e', script, arg]);
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(child);
  return new Lines(child);
}

/** Resolves with what arrives on `socket` within `ms` (possibly ''). */
async function received(socket: Socket, ms: number): Promise<string> {
  let text = '';
  const onData = (d: Buffer) => {
    text += d.toString();
  };
  socket.on('data', onData);
  await new Promise((resolve) => setTimeout(resolve, ms));
  socket.off('data', onData);
  return text;
}

describe.skipIf(problem !== undefined)('cluster networks (namespaces, cut links)', () => {
  let net: ClusterNet;
  const echoes: Lines[] = [];
  beforeAll(async () => {
    net = await createClusterNet({ size: 3 });
    for (let i = 0; i < 3; i++) echoes.push(inMember(net, i, ECHO, net.address(i)));
    await Promise.all(echoes.map((e) => e.waitFor('ready', 20_000)));
  }, 60_000);
  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL');
    await net?.dispose();
  });

  it('records the network while it lives, with one namespace per member and a router', () => {
    expect(existsSync(join(runDir(), 'netns', `${net.id}.json`))).toBe(true);
    const names = execFileSync('ip', ['netns', 'list']).toString();
    for (let i = 0; i < 3; i++) expect(names).toContain(net.namespace(i));
    expect(names).toContain(`kv-${net.id}-r`);
    expect(new Set([0, 1, 2].map((i) => net.address(i))).size).toBe(3);
  });

  it('a cut client link black-holes an open connection (no reset), new connections hang; heal delivers what was held', async () => {
    const socket = connect(PORT, net.address(1));
    await within(5_000, 'connect', once(socket, 'connect'));
    let closed = false;
    socket.on('close', () => {
      closed = true;
    });
    socket.on('error', () => {});
    socket.write('before\n');
    await within(5_000, 'echo', once(socket, 'data'));
    await net.cut('clients', 1);
    expect(net.cuts).toEqual(['clients-1']);
    const pending = received(socket, 1_500);
    socket.write('during\n');
    expect(await pending, 'bytes crossed a cut link').toBe('');
    expect(closed, 'a cut link must not close the connection').toBe(false);
    const fresh = connect(PORT, net.address(1));
    fresh.on('error', () => {});
    const connected = await Promise.race([
      once(fresh, 'connect').then(() => true),
      new Promise((resolve) => setTimeout(() => resolve(false), 1_500)),
    ]);
    expect(connected, 'a new connection over a cut link must hang').toBe(false);
    // Another member is still reachable.
    const other = connect(PORT, net.address(2));
    await within(5_000, 'connect to member 2 during the cut', once(other, 'connect'));
    other.destroy();
    await net.heal('clients', 1);
    expect(net.cuts).toEqual([]);
    let text = '';
    socket.on('data', (d: Buffer) => {
      text += d.toString();
    });
    await within(
      20_000,
      'the held bytes after heal',
      (async () => {
        while (!text.includes('during')) await once(socket, 'data');
      })(),
    );
    await within(20_000, 'the new connection after heal', once(fresh, 'connect'));
    socket.destroy();
    fresh.destroy();
  }, 60_000);

  it('isolate(i) cuts member i from the others both ways; rejoin heals it', async () => {
    const relay = inMember(net, 0, RELAY, net.address(1));
    await relay.waitFor('connected', 10_000);
    relay.child.stdin?.write('one\n');
    await relay.waitFor('one', 10_000);
    await net.isolate(0);
    expect(net.cuts).toEqual(['0-1', '0-2']);
    relay.child.stdin?.write('two\n');
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(relay.output, 'bytes crossed an isolated member link').not.toContain('two');
    expect(relay.output).not.toMatch(/closed|error/);
    // The clients still reach the isolated member, and the others reach each other.
    const toIsolated = connect(PORT, net.address(0));
    await within(5_000, 'clients to the isolated member', once(toIsolated, 'connect'));
    toIsolated.destroy();
    const between = inMember(net, 1, RELAY, net.address(2));
    await between.waitFor('connected', 10_000);
    await net.rejoin(0);
    expect(net.cuts).toEqual([]);
    await relay.waitFor('two', 20_000);
  }, 60_000);

  it('healAll heals every cut; dispose removes the namespaces and the record', async () => {
    const other = await createClusterNet({ size: 2 });
    await other.cut(0, 1);
    await other.cut('clients', 0);
    expect(other.cuts).toEqual(['0-1', 'clients-0']);
    await other.healAll();
    expect(other.cuts).toEqual([]);
    await other.dispose();
    const names = execFileSync('ip', ['netns', 'list']).toString();
    expect(names).not.toContain(`kv-${other.id}-`);
    expect(existsSync(join(runDir(), 'netns', `${other.id}.json`))).toBe(false);
    await expect(other.cut(0, 1)).rejects.toThrow(/disposed/);
  });

  it('a network whose owner died is reaped', async () => {
    const owner = spawn(process.execPath, ['-e', 'setTimeout(()=>{},60000)']);
    children.push(owner);
    const orphan = await createClusterNet({ size: 1, owner: owner.pid as number });
    owner.kill('SIGKILL');
    await once(owner, 'exit');
    const reaped = await reapClusterNets();
    expect(reaped).toContain(orphan.id);
    expect(reaped).not.toContain(net.id);
    const names = execFileSync('ip', ['netns', 'list']).toString();
    expect(names).not.toContain(`kv-${orphan.id}-`);
  });
});
