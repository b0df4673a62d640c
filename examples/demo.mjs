// kv demo: what the library is for, on the embedded SQLite store.
// Run it with `pnpm demo` (see the README). It makes a throwaway database file
// and shows four things services do with a metadata store:
//   1. config distribution: a watcher sees every change of a config key
//   2. job coordination: workers contend for a lock; fencing tokens grow
//   3. a shared counter advanced with compare-and-swap, losing nothing
//   4. a session key that expires by TTL, seen by a watcher
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createStore, KeyModifiedError } from '@kv/core';

const dir = mkdtempSync(join(tmpdir(), 'kv-demo-'));
const url = `sqlite:${join(dir, 'demo.db')}?prefix=demo`;
const text = (bytes) => new TextDecoder().decode(bytes);
const started = Date.now();
const log = (section, message) =>
  console.log(`${String(Date.now() - started).padStart(5)} ms  ${section.padEnd(8)} ${message}`);

// Each "service" opens its own store, as separate processes would.
const admin = await createStore(url);
console.log(`kv demo on ${admin.backend} (${url})\n`);

// 1. Config distribution -------------------------------------------------
await configDistribution();

async function configDistribution() {
  const service = await createStore(url);
  await admin.put('config/db/url', 'postgres://db-1:5432/app');
  const seen = [];
  const watching = (async () => {
    for await (const pair of service.watch('config/db/url')) {
      seen.push(pair);
      log(
        'config',
        pair
          ? `service now uses ${text(pair.value)}  (lastIndex ${pair.lastIndex})`
          : 'config removed: service falls back to defaults',
      );
      if (seen.length === 4) break;
    }
  })();
  await waitFor(() => seen.length === 1);
  log('config', 'admin fails the database over to db-2');
  await admin.put('config/db/url', 'postgres://db-2:5432/app');
  await waitFor(() => seen.length === 2);
  log('config', 'admin moves it to db-3');
  await admin.put('config/db/url', 'postgres://db-3:5432/app');
  await waitFor(() => seen.length === 3);
  await admin.delete('config/db/url');
  await watching;
  await service.close();
}
console.log();

// 2. Workers contending for a lock ---------------------------------------
await lockContention();

async function lockContention() {
  const workers = await Promise.all(
    ['alpha', 'beta', 'gamma'].map(async (name) => ({ name, store: await createStore(url) })),
  );
  let inside = 0;
  let maxInside = 0;
  await Promise.all(
    workers.map(async ({ name, store }) => {
      for (let round = 0; round < 2; round++) {
        const lock = store.newLock('jobs/nightly-report', { value: name, ttl: 5_000 });
        const lease = await lock.lock();
        inside++;
        maxInside = Math.max(maxInside, inside);
        const holder = text((await admin.get('jobs/nightly-report')).value);
        log(
          'lock',
          `${name.padEnd(5)} holds the lock, fencing token ${lease.fencingToken} (the store says the holder is ${holder})`,
        );
        await new Promise((resolve) => setTimeout(resolve, 30)); // the job itself
        inside--;
        await lock.unlock();
      }
    }),
  );
  log('lock', `6 turns, never more than ${maxInside} holder at a time`);
  await Promise.all(workers.map(({ store }) => store.close()));
}
console.log();

// 3. A counter advanced with compare-and-swap ----------------------------
await casCounter();

async function casCounter() {
  await admin.put('stats/builds', '0');
  const clients = await Promise.all([1, 2, 3, 4].map(() => createStore(url)));
  let conflicts = 0;
  await Promise.all(
    clients.map(async (client) => {
      for (let i = 0; i < 25; i++) {
        for (;;) {
          const current = await client.get('stats/builds');
          try {
            await client.atomicPut('stats/builds', String(Number(text(current.value)) + 1), current);
            break;
          } catch (error) {
            if (!KeyModifiedError.isInstance(error)) throw error;
            conflicts++; // someone else got there first: read again and retry
          }
        }
      }
    }),
  );
  log(
    'cas',
    `4 clients x 25 increments: counter is ${text((await admin.get('stats/builds')).value)} (${conflicts} conflicts retried)`,
  );
  await Promise.all(clients.map((client) => client.close()));
}
console.log();

// 4. A session key that expires -----------------------------------------
await sessionExpiry();

async function sessionExpiry() {
  await admin.put('sessions/user-42', 'logged in', { ttl: 1_000 });
  log('ttl', 'session sessions/user-42 written with a 1 s ttl');
  for await (const pair of admin.watch('sessions/user-42')) {
    if (pair) log('ttl', `session present: ${text(pair.value)}`);
    else {
      log('ttl', 'session expired and is gone');
      break;
    }
  }
  log('ttl', `exists('sessions/user-42') = ${await admin.exists('sessions/user-42')}`);
}

await admin.close();
rmSync(dir, { recursive: true, force: true });
console.log('\ndone: every store closed, nothing left running.');

async function waitFor(condition) {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('demo: timed out waiting');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
