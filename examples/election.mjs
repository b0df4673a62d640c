// Leader election with failover on the embedded SQLite store, across real
// processes: `node examples/election.mjs` (after `pnpm build`).
// Three candidate processes campaign; the leader is SIGKILLed and another takes
// over within the ttl; then the new leader resigns and the last one leads at once.
// An observer prints every leader change.
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import '@kv/backend-sqlite';
import { campaign, createStore, observe } from '@kv/core';

const TTL = 2_000;
const text = (bytes) => new TextDecoder().decode(bytes);

if (process.argv[2] === 'candidate') {
  // A candidate process: lead, do the leader's work with the fencing token, until told to resign.
  const [, , , url, name] = process.argv;
  const store = await createStore(url);
  const leadership = await campaign(store, 'election/scheduler', { value: name, ttl: TTL });
  process.send({ leading: name, token: leadership.fencingToken });
  let resigning = false;
  // Lost without resigning: stop the leader's work at once (here: the whole process).
  leadership.lost.addEventListener('abort', () => resigning || process.exit(1));
  process.on('message', async (command) => {
    if (command === 'resign') {
      resigning = true;
      await leadership.resign();
      await store.close();
      process.exit(0);
    }
  });
} else {
  const dir = mkdtempSync(join(tmpdir(), 'kv-election-'));
  const url = `sqlite:${join(dir, 'kv.db')}?prefix=demo`;
  const started = performance.now();
  const log = (message) =>
    console.log(`${String(Math.round(performance.now() - started)).padStart(5)} ms  ${message}`);
  const store = await createStore(url);
  const stop = new AbortController();
  const observer = (async () => {
    for await (const leader of observe(store, 'election/scheduler', { signal: stop.signal })) {
      log(`observer: leader is ${leader === null ? '(none)' : text(leader.value)}`);
    }
  })();

  const children = new Map();
  const leaders = [];
  let onLeader;
  for (const name of ['alpha', 'beta', 'gamma']) {
    const child = fork(process.argv[1], ['candidate', url, name]);
    children.set(name, child);
    child.on('message', (message) => {
      log(`${message.leading} leads (fencing token ${message.token})`);
      leaders.push(message.leading);
      onLeader?.();
    });
  }
  const nextLeader = (count) =>
    new Promise((resolve) => {
      onLeader = () => leaders.length >= count && resolve(leaders[count - 1]);
      onLeader();
    });

  try {
    const first = await nextLeader(1);
    log(`SIGKILL ${first}`);
    const killed = performance.now();
    children.get(first).kill('SIGKILL');
    const second = await nextLeader(2);
    log(`failover took ${Math.round(performance.now() - killed)} ms (ttl ${TTL} ms)`);
    log(`${second} resigns`);
    const resigned = performance.now();
    children.get(second).send('resign');
    await nextLeader(3);
    log(`hand-over took ${Math.round(performance.now() - resigned)} ms`);
  } finally {
    for (const child of children.values()) child.kill('SIGKILL');
    stop.abort();
    await observer;
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
