// Service discovery on the embedded SQLite store, across real processes:
// `node examples/discovery.mjs` (after `pnpm build`). Three member processes
// register; a watcher prints the member list on every change; one member is
// SIGKILLed and disappears within its ttl, another leaves cleanly at once.
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import '@kv/backend-sqlite';
import { createStore, members, register } from '@kv/core';

const TTL = 1_000;
const text = (bytes) => new TextDecoder().decode(bytes);

if (process.argv[2] === 'member') {
  const [, , , url, id, address] = process.argv;
  const store = await createStore(url);
  const registration = await register(store, 'services/api', { id, value: address, ttl: TTL });
  process.send('registered');
  process.on('message', async () => {
    await registration.close();
    await store.close();
    process.exit(0);
  });
} else {
  const dir = mkdtempSync(join(tmpdir(), 'kv-discovery-'));
  const url = `sqlite:${join(dir, 'kv.db')}?prefix=demo`;
  const started = performance.now();
  const log = (message) =>
    console.log(`${String(Math.round(performance.now() - started)).padStart(5)} ms  ${message}`);
  const store = await createStore(url);
  const stop = new AbortController();
  const lists = [];
  let onList;
  const watcher = (async () => {
    for await (const list of members(store, 'services/api', { signal: stop.signal })) {
      const shown = list.map((m) => `${m.id}=${text(m.value)}`);
      log(`members: [${shown.join(', ')}]`);
      lists.push(list.map((m) => m.id).join(','));
      onList?.();
    }
  })();
  const until = (ids) =>
    new Promise((resolve) => {
      onList = () => lists.at(-1) === ids && resolve();
      onList();
    });

  const children = {};
  try {
    for (const [i, id] of ['api-1', 'api-2', 'api-3'].entries()) {
      children[id] = fork(process.argv[1], ['member', url, id, `10.0.0.${i + 1}:8080`]);
    }
    await until('api-1,api-2,api-3');
    log('SIGKILL api-2');
    const killed = performance.now();
    children['api-2'].kill('SIGKILL');
    await until('api-1,api-3');
    log(`api-2 disappeared ${Math.round(performance.now() - killed)} ms after the crash (ttl ${TTL} ms)`);
    log('api-3 closes its registration');
    children['api-3'].send('close');
    await until('api-1');
  } finally {
    for (const child of Object.values(children)) child.kill('SIGKILL');
    stop.abort();
    await watcher;
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
