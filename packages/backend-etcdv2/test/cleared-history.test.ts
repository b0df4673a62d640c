import type { KVPair, TreeEvent } from '@kv/core';
import { Reader } from '@kv/core/conformance';
import { serverFor, startFaultProxy } from '@kv/test-servers';
import { describe, expect, it, vi } from 'vitest';
import { EtcdV2Error } from '../src/etcdv2-errors.js';
import { type EtcdV2Store, openEtcdV2 } from '../src/index.js';
import { text } from './helpers.js';

const etcd = await serverFor('etcd');

/** More than the 1000 events etcd's v2 API keeps. */
const BURST = 1_200;
const KEYS = 10;
const BATCH = 50;

describe.skipIf(!etcd.available)('a watcher that falls behind the 1000 events v2 keeps', () => {
  it('watch and watchTree re-read after EventIndexCleared and yield the final state of every key', async () => {
    const prefix = `kvtest-etcdv2/cleared-${Date.now().toString(36)}-${process.pid}`;
    const writer = await openEtcdV2({ endpoints: etcd.endpoints, prefix });
    // The watcher reaches the server through a proxy the test holds shut while the burst lands:
    // its long polls (and their answers) wait there, so it is behind by the whole burst, for sure.
    const proxy = await startFaultProxy(etcd.endpoints[0] as string);
    const watcher: EtcdV2Store = await openEtcdV2({ endpoints: [proxy.endpoint], prefix });
    const polls = vi.spyOn(watcher, 'poll');
    const key = (i: number) => `h/k${i}`;
    const first = new Reader<KVPair | null>(() => watcher.watch(key(0)), 'watch(h/k0)', 30_000);
    const last = new Reader<KVPair | null>(() => watcher.watch(key(KEYS - 1)), 'watch(h/k9)', 30_000);
    const tree = new Reader<TreeEvent>(() => watcher.watchTree('h'), 'watchTree(h)', 30_000);
    try {
      for (let i = 0; i < KEYS; i++) await writer.put(key(i), 'seed');
      // Each watch has seen the seeded state, so each has a long poll in flight from there.
      const untilValue = async (reader: Reader<KVPair | null>, value: string | null) => {
        for (;;) {
          const state = await reader.next();
          if (value === null ? state === null : state !== null && text(state.value) === value) return;
        }
      };
      await untilValue(first, 'seed');
      await untilValue(last, 'seed');
      for (;;) if ((await tree.next()).pairs.length === KEYS) break;

      proxy.blackhole();
      const started = performance.now();
      for (let n = 0; n < BURST; n += BATCH) {
        await Promise.all(
          Array.from({ length: BATCH }, (_, j) => writer.put(key((n + j) % KEYS), `v${n + j}`)),
        );
      }
      // The final states: every key rewritten, one new key, one deleted.
      await writer.put('h/new', 'born late');
      await writer.delete(key(KEYS - 1));
      const final = await writer.list('h');
      const burstMs = performance.now() - started;
      proxy.pass();

      const lastOf0 = final.find((p) => p.key === key(0));
      await untilValue(first, lastOf0 ? text(lastOf0.value) : null);
      await untilValue(last, null);
      const snapshot = (pairs: readonly KVPair[]) =>
        pairs.map((p) => `${p.key}=${text(p.value)}@${p.lastIndex}`);
      for (;;) {
        const event = await tree.next();
        if (snapshot(event.pairs).join() === snapshot(final).join()) break;
      }
      // The server did clear the history under these watches (and they read the state again).
      const cleared = polls.mock.settledResults.filter(
        (r) => r.type === 'rejected' && r.value instanceof EtcdV2Error && r.value.errorCode === 401,
      ).length;
      expect(cleared, 'polls answered EventIndexCleared').toBeGreaterThanOrEqual(3);
      console.log(
        `${BURST} writes in ${Math.round(burstMs)} ms; ${cleared} polls answered EventIndexCleared`,
      );
    } finally {
      await Promise.allSettled([first.close(), last.close(), tree.close()]);
      await writer.deleteTree('h').catch(() => {});
      await Promise.allSettled([writer.close(), watcher.close()]);
      await proxy.close();
    }
  });
});
