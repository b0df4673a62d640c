import { expect } from 'vitest';
import {
  ClosedError,
  KeyExistsError,
  KeyModifiedError,
  KeyNotFoundError,
  type KVPair,
  type LockLease,
  type Store,
  UnavailableError,
} from '../index.js';
import {
  type ClusterFaultHooks,
  type Define,
  expectKVError,
  type FaultHooks,
  type PartitionableStore,
  Reader,
  settle,
  sleep,
  type TestEnv,
  text,
  within,
} from './harness.js';
import { checkKVHistory, type KVInput, type KVOperation, type KVOutput } from './linearizability.js';

/** ms the linearizability workload runs. */
export const LINEARIZABLE_RUN_MS = 8_000;
export const LINEARIZABLE_CLIENTS = 5;
/** Operations per client: bounds the history the checker searches. */
export const LINEARIZABLE_OPS = 200;
/**
 * Finished operations a history needs to say something: when the faults left
 * fewer, the clients go on after the heal until it has them (see `runWorkload`).
 */
export const LINEARIZABLE_MIN_FINISHED = 50;
/**
 * Finished operations the faulty part of the run must have on its own: each
 * fault cuts off some clients or one member, never all of them, so the rest
 * go on. (A slow etcd v2 cluster finished 43 there; most backends, hundreds.)
 */
export const LINEARIZABLE_MIN_DURING_FAULTS = 10;

/** Cases that break things through the backend's `faults` hooks, on the backend's own fault server. */
export function faultCases(define: Define): void {
  define(
    'a partitioned holder: lost aborts strictly before another client acquires, which it does within ttl + ttlGranularity',
    {
      rows: ['partition', 'lock'],
      requires: 'lock',
      needsFault: 'openPartitionable',
      timeout: (caps, s) => 60_000 + 3 * (s.lockTtl + caps.ttlGranularity),
    },
    (t) =>
      withFaultStores(t, async (hooks, opened) => {
        const cut = await opened.partitionable(hooks);
        const other = await opened.plain(hooks);
        const ttl = t.settings.lockTtl;
        const held = await cut.store.newLock('locks/p', { value: 'cut', ttl }).lock();
        let lostAt: number | undefined;
        held.lost.addEventListener('abort', () => {
          lostAt = performance.now();
        });
        let holderHadLost: boolean | undefined;
        const waiting = other
          .newLock('locks/p', { value: 'other', ttl })
          .lock()
          .then((lease) => {
            holderHadLost = held.lost.aborted;
            return { lease, at: performance.now() };
          });
        waiting.catch(() => {});
        await cut.partition();
        const partitionedAt = performance.now();
        const bound = ttl + t.caps.ttlGranularity + t.settings.slack * 2;
        const { lease, at } = await within(
          waiting,
          bound,
          `the other client did not get the lock within ${bound} ms of the holder's partition`,
        );
        t.recordHistory({
          checker: 'locks',
          operations: 2,
          faults: 1,
          faultKinds: ['holder client link black-holed'],
          result: holderHadLost === true && lostAt !== undefined && lostAt < at ? 'ok' : 'violation',
          durationMs: Math.round(at - partitionedAt),
          detail: `holder lost after ${lostAt === undefined ? '-' : Math.round(lostAt - partitionedAt)} ms, the other acquired after ${Math.round(at - partitionedAt)} ms`,
        });
        expect(holderHadLost, 'two holders: the other client acquired before the holder lost').toBe(true);
        expect(lostAt).toBeDefined();
        expect(lostAt as number).toBeLessThan(at);
        expect(at - partitionedAt).toBeLessThan(bound);
        expect(lease.fencingToken).toBeGreaterThan(held.fencingToken);
        // Healed, the old holder's release must not free the new holder's lock.
        await cut.heal();
        await cut.store.newLock('locks/p', { ttl }).tryLock(); // a round trip through the healed link
        const third = await opened.plain(hooks);
        expect(await third.newLock('locks/p', { ttl }).tryLock(), 'the new holder still holds it').toBeNull();
        expect(text((await third.get('locks/p')).value)).toBe('other');
      }),
  );

  define(
    'a partitioned watcher yields the latest state after the partition heals',
    {
      rows: ['partition', 'watch'],
      requires: 'watch',
      needsFault: 'openPartitionable',
      timeout: () => 60_000,
    },
    (t) =>
      withFaultStores(t, async (hooks, opened) => {
        const cut = await opened.partitionable(hooks);
        const writer = await opened.plain(hooks);
        await writer.put('w', 'v0');
        const reader = opened.reader(cut.store, 'w', t.settings.eventTimeout);
        expect(text(((await reader.next()) as KVPair).value)).toBe('v0');
        await cut.partition();
        for (let i = 1; i <= 5; i++) await writer.put('w', `v${i}`);
        await writer.delete('w');
        await writer.put('w', 'final');
        await cut.heal();
        const healedAt = performance.now();
        let last: KVPair | null = null;
        let events = 0;
        const deadline = performance.now() + t.settings.eventTimeout * 3;
        while (last?.value === undefined || text(last.value) !== 'final') {
          if (performance.now() > deadline)
            throw new Error('the healed watcher never yielded the final state');
          last = await reader.next(t.settings.eventTimeout * 3);
          events++;
        }
        expect(text(last.value)).toBe('final');
        t.recordHistory({
          checker: 'watch',
          operations: events,
          faults: 1,
          faultKinds: ['watcher client link black-holed'],
          result: 'ok',
          durationMs: Math.round(performance.now() - healedAt),
          detail: 'the final state came after the heal',
        });
      }),
  );

  define(
    'a server restart: watches resume by themselves with the latest state; lastIndex and fencing tokens never go backwards; a stale CAS fails',
    {
      rows: ['restart', 'watch', 'atomicPut', 'lock'],
      requires: ['watch', 'lock'],
      needsFault: 'restart',
      timeout: () => 120_000,
    },
    (t) =>
      withFaultStores(t, async (hooks, opened) => {
        const store = await opened.plain(hooks);
        const { before, lock, token, reader } = await beforeRestart(t, opened, store, store);
        await (hooks.restart as () => Promise<void>)();
        // The same store object must come back by itself: retry until the server serves again.
        const after = await retry(() => store.put('r', 'after').then(() => store.get('r')), 30_000);
        expect(after.lastIndex, 'lastIndex went backwards across the restart').toBeGreaterThan(
          before.lastIndex,
        );
        await expectKVError(
          () => store.atomicPut('r', 'stale', before),
          KeyModifiedError,
          'CAS with a pair read before the restart',
        );
        expect(text((await store.get('r')).value)).toBe('after');
        let seen: KVPair | null = null;
        while (seen === null || text(seen.value) !== 'after') {
          seen = await reader.next(30_000);
        }
        const again = (await retry(() => lock.lock(), 30_000)) as LockLease;
        expect(again.fencingToken, 'fencing token went backwards across the restart').toBeGreaterThan(token);
        await lock.unlock();
      }),
  );
}

/**
 * Before a restart: `r` written with a CAS, a lock taken and released on
 * `writer` (its fencing token kept), and a watch of `r` on `watcher` that
 * saw the write.
 */
async function beforeRestart(t: TestEnv, opened: Opened, writer: Store, watcher: Store) {
  const before = await writer.atomicPut('r', 'before', null);
  const lock = writer.newLock('locks/r', { ttl: t.settings.lockTtl });
  const token = (await lock.lock()).fencingToken;
  await lock.unlock();
  const reader = opened.reader(watcher, 'r', t.settings.eventTimeout);
  expect(text(((await reader.next()) as KVPair).value)).toBe('before');
  return { before, lock, token, reader };
}

/**
 * An embedded store's "restart": every process using the data closed
 * (`faults.reopen`), then new ones opened on it.
 */
export function reopenCase(define: Define): void {
  define(
    'every process closed and reopened: what was written is there, lastIndex and fencing tokens never go backwards, a stale CAS fails, a new watch yields the latest state',
    {
      rows: ['restart', 'atomicPut', 'lock', 'watch'],
      requires: ['watch', 'lock'],
      needsFault: 'reopen',
      timeout: () => 60_000,
    },
    (t) =>
      withFaultStores(t, async (hooks, opened) => {
        const first = await opened.plain(hooks);
        const other = await opened.plain(hooks);
        await other.put('kept', 'yes');
        const { before, token, reader } = await beforeRestart(t, opened, first, other);
        await (hooks.reopen as () => Promise<void>)();
        await expectKVError(() => first.get('r'), ClosedError, 'a call on a store of a closed process');
        // The watch of a closed process ends.
        await reader.end();
        const store = await opened.plain(hooks);
        expect(text((await store.get('kept')).value), 'a write from before the reopen').toBe('yes');
        expect(text((await store.get('r')).value)).toBe('before');
        await store.put('r', 'after');
        const after = await store.get('r');
        expect(after.lastIndex, 'lastIndex went backwards across the reopen').toBeGreaterThan(
          before.lastIndex,
        );
        await expectKVError(
          () => store.atomicPut('r', 'stale', before),
          KeyModifiedError,
          'CAS with a pair read before the reopen',
        );
        const watcher = opened.reader(store, 'r', t.settings.eventTimeout);
        expect(text(((await watcher.next()) as KVPair).value)).toBe('after');
        const again = store.newLock('locks/r', { ttl: t.settings.lockTtl });
        const lease = await again.lock();
        expect(lease.fencingToken, 'fencing token went backwards across the reopen').toBeGreaterThan(token);
        await again.unlock();
      }),
  );
}

/**
 * Five clients run get / put / atomicPut / atomicDelete / delete on three keys
 * (every written value unique), while a nemesis black-holes one client at a
 * time when the backend gives `openPartitionable`. Every call's invocation and
 * completion is recorded on one monotonic clock; calls that failed without a
 * definite answer count as "may have happened". The history must be
 * linearizable under a register-with-CAS model, key by key.
 */
export function linearizabilityCase(define: Define): void {
  define(
    'concurrent get/put/atomicPut/atomicDelete form a linearizable history (a nemesis partitions clients when it can)',
    { rows: ['linearizable', 'get', 'put', 'atomicPut', 'atomicDelete'], timeout: () => 120_000 },
    async (t) => {
      const hooks = t.settings.faults;
      const cuts: PartitionableStore[] = [];
      const stores: Store[] = [];
      try {
        await openClients(t, LINEARIZABLE_CLIENTS, 'lin', stores, cuts);
        const history: KVOperation[] = [];
        const until = performance.now() + LINEARIZABLE_RUN_MS * t.settings.timeScale;
        let faults = 0;
        const nemesis = (async () => {
          if (cuts.length === 0) return;
          for (let i = 0; performance.now() < until - 1_500; i++) {
            const cut = cuts[i % cuts.length] as PartitionableStore;
            await sleep(500);
            await cut.partition();
            faults++;
            // Short cuts delay calls; long ones (past a typical requestTimeout) leave outcomes unknown.
            await sleep(i % 2 === 0 ? 600 : 1_600);
            await cut.heal();
          }
        })();
        const started = performance.now();
        const run = await runWorkload(stores, until, history, nemesis, workloadOptions(t));
        const result = checkKVHistory(history);
        const { unknown } = run;
        const summary = `${history.length} operations (${unknown} of unknown outcome; ${run.duringFaults} finished while the nemesis ran, ${run.afterHeal} after), ${faults} partitions, ${result.visited} states searched`;
        t.recordHistory({
          checker: 'linearizable',
          operations: history.length,
          unknown,
          faults,
          faultKinds: faults > 0 ? ['client link black-holed'] : [],
          result: result.inconclusive ? 'inconclusive' : result.ok ? 'ok' : 'violation',
          durationMs: Math.round(performance.now() - started),
          detail: `${result.visited} states searched${result.ok ? '' : `; failed on key ${result.failedKey}`}`,
        });
        if (process.env.KV_CONFORMANCE_VERBOSE) console.info(`linearizability: ${summary}`);
        expect(result.inconclusive, summary).toBeUndefined();
        expect(result.ok, `not linearizable on key ${result.failedKey}: ${summary}`).toBe(true);
        expectProgress(run, summary);
      } finally {
        await Promise.allSettled(cuts.map((c) => c.heal()));
        if (hooks) await Promise.allSettled(cuts.map((c) => c.store.close()));
      }
    },
  );
}

/**
 * Workers take turns on one lock and write to a fenced resource (it refuses a
 * token lower than the highest it has seen) while a nemesis partitions one
 * worker at a time for longer than the lock can survive. Every hold is
 * recorded from its grant to its end (`lost` aborted or `unlock()`), all on
 * one monotonic clock: holds never overlap, tokens grow in grant order, and
 * the resource never refuses a holder that had not lost its lock.
 */
export function fencedLockCase(define: Define): void {
  define(
    'locks under partitions: holds never overlap, tokens grow, a fenced resource never refuses a live holder',
    {
      rows: ['fencedLocks', 'lock'],
      requires: 'lock',
      // Without partitions this would be the plain lock test again: it needs a link to cut.
      needsFault: 'openPartitionable',
      timeout: () => 120_000,
    },
    async (t) => {
      const hooks = t.settings.faults;
      const cuts: PartitionableStore[] = [];
      const stores: Store[] = [];
      try {
        await openClients(t, FENCED_WORKERS, 'fenced', stores, cuts);
        const ttl = Math.max(t.caps.minTtl, 2_000);
        const until = performance.now() + FENCED_RUN_MS * t.settings.timeScale;
        const holds: { worker: number; token: number; start: number; end: number }[] = [];
        const refusedLive: string[] = [];
        let highest = 0;
        let writes = 0;
        const resource = (token: number, live: boolean, worker: number) => {
          if (token < highest) {
            if (live) refusedLive.push(`worker ${worker} with token ${token} < ${highest} while holding`);
            return false;
          }
          highest = token;
          writes++;
          return true;
        };
        let faults = 0;
        let holder: number | undefined;
        const nemesis = (async () => {
          if (cuts.length === 0) return;
          for (let i = 0; performance.now() < until - 3_000; i++) {
            await sleep(400);
            // Cut the holder when there is one: that is where two holders would come from.
            const cut = cuts[holder ?? i % cuts.length] as PartitionableStore;
            await cut.partition();
            faults++;
            await sleep(ttl + 500); // past the lock's ttl: the cut holder must lose it
            await cut.heal();
          }
        })();
        await Promise.all(
          stores.map(async (store, worker) => {
            const lock = store.newLock('fenced/lock', { value: `w${worker}`, ttl });
            while (performance.now() < until) {
              let lease: LockLease;
              try {
                const left = Math.ceil(Math.max(1, until - performance.now()));
                lease = await lock.lock({ signal: AbortSignal.timeout(left) });
              } catch {
                await sleep(50); // cut off or out of time: the loop decides
                continue;
              }
              const start = performance.now();
              holder = worker;
              let end = Number.POSITIVE_INFINITY;
              lease.lost.addEventListener('abort', () => {
                end = Math.min(end, performance.now());
              });
              for (let k = 0; k < 4 && !lease.lost.aborted; k++) {
                resource(lease.fencingToken, !lease.lost.aborted, worker);
                await sleep(40);
              }
              await lock.unlock().catch(() => {});
              end = Math.min(end, performance.now());
              holds.push({ worker, token: lease.fencingToken, start, end });
            }
          }),
        );
        await nemesis;
        holds.sort((a, b) => a.start - b.start);
        const overlapping = holds.filter((h, i) => i > 0 && h.start < (holds[i - 1] as typeof h).end).length;
        const shrinking = holds.filter((h, i) => i > 0 && h.token <= (holds[i - 1] as typeof h).token).length;
        t.recordHistory({
          checker: 'locks',
          operations: holds.length,
          faults,
          faultKinds: ['client link black-holed past the lock ttl'],
          result: overlapping + shrinking + refusedLive.length === 0 ? 'ok' : 'violation',
          durationMs: Math.round(FENCED_RUN_MS * t.settings.timeScale),
          detail: `${writes} fenced writes; ${overlapping} overlapping holds, ${shrinking} tokens not growing, ${refusedLive.length} live holders refused`,
        });
        for (let i = 1; i < holds.length; i++) {
          const prev = holds[i - 1] as (typeof holds)[number];
          const next = holds[i] as (typeof holds)[number];
          expect(
            next.start,
            `two holders: worker ${next.worker} (token ${next.token}) got the lock while worker ${prev.worker} (token ${prev.token}) still held it`,
          ).toBeGreaterThanOrEqual(prev.end);
          expect(next.token, 'fencing tokens grow in grant order').toBeGreaterThan(prev.token);
        }
        expect(refusedLive).toEqual([]);
        expect(
          holds.length,
          `holds: ${holds.length}, writes: ${writes}, partitions: ${faults}`,
        ).toBeGreaterThan(3);
        if (process.env.KV_CONFORMANCE_VERBOSE) {
          console.info(`fenced locks: ${holds.length} holds, ${writes} fenced writes, ${faults} partitions`);
        }
      } finally {
        await Promise.allSettled(cuts.map((c) => c.heal()));
        if (hooks) await Promise.allSettled(cuts.map((c) => c.store.close()));
      }
    },
  );
}

const FENCED_WORKERS = 3;
const FENCED_RUN_MS = 10_000;

const LIN_KEYS = ['a', 'b', 'c'];

/** Operations of a linearizability run: finished while its nemesis ran and after the heal, and of unknown outcome. */
export interface WorkloadRun {
  duringFaults: number;
  afterHeal: number;
  unknown: number;
}

const finished = (history: readonly KVOperation[]) =>
  history.filter((o) => o.ret !== Number.POSITIVE_INFINITY).length;

/**
 * Runs one client per store until `until` while `nemesis` injects faults,
 * then waits for the nemesis (which heals). When fewer than
 * `LINEARIZABLE_MIN_FINISHED` operations finished (slow members, calls that
 * waited out their timeouts), the same clients go on, healed, until the
 * history has them or another `LINEARIZABLE_RUN_MS` has passed. A store that
 * does not serve again after a heal still fails `expectProgress`.
 */
export async function runWorkload(
  stores: readonly Store[],
  until: number,
  history: KVOperation[],
  nemesis: Promise<void>,
  /** The test's time scale, and whether reads are `consistent` (see runClient). */
  options: { timeScale: number; consistent: boolean },
): Promise<WorkloadRun> {
  const read = { consistent: options.consistent };
  await Promise.all(stores.map((store, c) => runClient(store, c, until, history, read)));
  await nemesis;
  const duringFaults = finished(history);
  if (duringFaults <= LINEARIZABLE_MIN_FINISHED) {
    const more = performance.now() + LINEARIZABLE_RUN_MS * options.timeScale;
    const enough = () => finished(history) > LINEARIZABLE_MIN_FINISHED;
    await Promise.all(stores.map((store, c) => runClient(store, c, more, history, read, enough)));
  }
  const all = finished(history);
  return { duringFaults, afterHeal: all - duringFaults, unknown: history.length - all };
}

export const workloadOptions = (t: TestEnv) => ({
  timeScale: t.settings.timeScale,
  consistent: t.caps.consistentRead,
});

/** The liveness half of a linearizability case: calls finished through the faults, and enough in all. */
export function expectProgress(run: WorkloadRun, summary: string): void {
  expect(run.duringFaults, `too few calls finished while the nemesis ran: ${summary}`).toBeGreaterThan(
    LINEARIZABLE_MIN_DURING_FAULTS,
  );
  expect(run.duringFaults + run.afterHeal, summary).toBeGreaterThan(LINEARIZABLE_MIN_FINISHED);
}

/**
 * One client of the linearizability workload: random calls on `LIN_KEYS`
 * until `until` (or until `enough()` says so), recorded in `history`. Reads are `consistent: true` where
 * the backend declares `consistentRead`: the contract lets plain reads be
 * stale (an etcd v2 member cut off from the others answers from its copy).
 */
export async function runClient(
  store: Store,
  client: number,
  until: number,
  history: KVOperation[],
  /** `{ consistent: true }` where the backend has it: its plain reads may be stale by the contract. */
  read: { consistent?: boolean } = {},
  enough: () => boolean = () => false,
): Promise<void> {
  const pairs = new Map<string, KVPair | null>();
  let n = 0;
  // Paced so the operations spread over the whole run, through the nemesis's partitions.
  const pace = (2 * Math.max(0, until - performance.now())) / LINEARIZABLE_OPS;
  while (performance.now() < until && n < LINEARIZABLE_OPS && !enough()) {
    await sleep(Math.random() * pace);
    const key = LIN_KEYS[Math.floor(Math.random() * LIN_KEYS.length)] as string;
    const roll = Math.random();
    const value = `c${client}-${n++}`;
    const known = pairs.get(key);
    let input: KVInput;
    let run: () => Promise<KVOutput>;
    if (roll < 0.4 || known === undefined) {
      input = { f: 'get' };
      run = async () => {
        try {
          const pair = await store.get(key, read);
          pairs.set(key, pair);
          return text(pair.value);
        } catch (error) {
          if (KeyNotFoundError.isInstance(error)) {
            pairs.set(key, null);
            return null;
          }
          throw error;
        }
      };
    } else if (roll < 0.55) {
      input = { f: 'put', value };
      run = () => store.put(key, value).then(() => true);
    } else if (roll < 0.85) {
      input = { f: 'cas', expected: known === null ? null : text(known.value), value };
      run = async () => {
        try {
          pairs.set(key, await store.atomicPut(key, value, known));
          return true;
        } catch (error) {
          if (definiteNo(error)) return false;
          throw error;
        }
      };
    } else if (roll < 0.95 && known !== null) {
      input = { f: 'cad', expected: text(known.value) };
      run = async () => {
        try {
          await store.atomicDelete(key, known);
          pairs.set(key, null);
          return true;
        } catch (error) {
          if (definiteNo(error)) return false;
          throw error;
        }
      };
    } else {
      input = { f: 'delete' };
      run = () => store.delete(key).then(() => true);
    }
    const call = performance.now();
    try {
      const output = await run();
      history.push({ key, client, input, output, call, ret: performance.now() });
    } catch {
      // No definite answer: a read had no effect, a write may or may not have happened.
      if (input.f !== 'get')
        history.push({ key, client, input, output: undefined, call, ret: Number.POSITIVE_INFINITY });
      pairs.delete(key);
    }
  }
}

function definiteNo(error: unknown): boolean {
  return (
    KeyModifiedError.isInstance(error) ||
    KeyExistsError.isInstance(error) ||
    KeyNotFoundError.isInstance(error)
  );
}

/**
 * Opens `n` clients on `<test prefix>/<sub>`: through partitionable links
 * when the backend gives them (recorded in `cuts`), else plain stores of the
 * test. Pushed as they open, so the caller's cleanup sees every one.
 */
async function openClients(
  t: TestEnv,
  n: number,
  sub: string,
  stores: Store[],
  cuts: PartitionableStore[],
): Promise<void> {
  const hooks = t.settings.faults;
  for (let i = 0; i < n; i++) {
    if (hooks?.openPartitionable) {
      const cut = await hooks.openPartitionable(`${t.prefix}/${sub}`);
      cuts.push(cut);
      stores.push(cut.store);
    } else {
      stores.push(await t.open(sub));
    }
  }
}

/**
 * One member of a cluster killed, then (after it came back) another frozen:
 * every call settles within the store's `requestTimeout` (a result or an
 * `UnavailableError`, never a hang), and a watch on another store misses no
 * final state.
 */
export function memberLostCase(define: Define): void {
  define(
    'a cluster member killed, then one frozen: calls settle within requestTimeout, watches miss no final state',
    {
      rows: ['memberLost', 'put', 'get', 'watch'],
      requires: 'watch',
      needsFault: 'cluster',
      timeout: () => 180_000,
    },
    async (t) => {
      const cluster = (t.settings.faults as FaultHooks).cluster as ClusterFaultHooks;
      const stores: Store[] = [];
      const readers: Reader<unknown>[] = [];
      const bound = cluster.requestTimeout + t.settings.slack * 2;
      let callCount = 0;
      let unavailable = 0;
      const began = performance.now();
      try {
        const writer = await cluster.open(t.prefix);
        stores.push(writer);
        const watcher = await cluster.open(t.prefix);
        stores.push(watcher);
        await writer.put('m', 'start');
        const reader = new Reader<KVPair | null>(
          () => watcher.watch('m'),
          'watch(m)',
          t.settings.eventTimeout,
        );
        readers.push(reader as Reader<unknown>);
        expect(text(((await reader.next()) as KVPair).value)).toBe('start');
        const calls = async (round: string) => {
          let ok = 0;
          for (let i = 0; i < 10; i++) {
            const started = performance.now();
            const result = await within(
              settle(() => writer.put('m', `${round}-${i}`).then(() => writer.get('m'))),
              bound * 2 + 1_000,
              `${round}: a call hung`,
            );
            const took = performance.now() - started;
            callCount++;
            if (result.ok) ok++;
            else if (!UnavailableError.isInstance(result.error)) throw result.error;
            else unavailable++;
            expect(took, `${round}: a put and a get took ${Math.round(took)} ms`).toBeLessThan(bound * 2);
          }
          return ok;
        };
        // The watch must reach the key's final state: the value a consistent read returns once the
        // watch has caught up. Not necessarily the test's last acknowledged write: a put that timed
        // out on the dead or frozen member "may have happened", and may still apply after that write
        // (Consul cannot cancel a request an agent holds; a thawed agent sends it on).
        const read = t.caps.consistentRead ? { consistent: true } : {};
        const untilFinal = async (written: string) => {
          const deadline = performance.now() + 30_000;
          const seen: string[] = [];
          for (;;) {
            const left = Math.max(1, deadline - performance.now());
            const state = (await reader.next(left).catch((error: unknown) => {
              throw new Error(
                `the watch did not reach the final state after ${written} was written; it yielded ${seen.join(', ') || 'nothing'}: ${String(error)}`,
              );
            })) as KVPair | null;
            seen.push(state === null ? 'null' : text(state.value));
            const current = await retry(() => writer.get('m', read), 10_000);
            if (state !== null && text(state.value) === text(current.value)) return;
          }
        };
        await cluster.kill(0);
        const afterKill = await calls('killed');
        expect(afterKill, 'a 3-member cluster with one member down still serves').toBeGreaterThan(0);
        await cluster.start(0);
        await retry(() => writer.put('m', 'after-kill'), 30_000);
        await untilFinal('after-kill');
        await cluster.freeze(1);
        try {
          await calls('frozen');
        } finally {
          await cluster.thaw(1);
        }
        await retry(() => writer.put('m', 'final'), 30_000);
        await untilFinal('final');
        t.recordHistory({
          checker: 'calls',
          operations: callCount,
          unknown: unavailable,
          faults: 2,
          faultKinds: ['member killed', 'member frozen'],
          result: 'ok',
          durationMs: Math.round(performance.now() - began),
          detail:
            'every put+get settled within 2 x (requestTimeout + slack); the watch saw both final states',
        });
      } finally {
        await Promise.allSettled(readers.map((r) => r.close()));
        await Promise.allSettled(stores.map((s) => s.close()));
      }
    },
  );
}

export interface Opened {
  plain(hooks: FaultHooks): Promise<Store>;
  partitionable(hooks: FaultHooks): Promise<PartitionableStore>;
  reader(store: Store, key: string, timeout: number): Reader<KVPair | null>;
}

/** Opens stores on the fault server under the test's prefix, and closes them (healed) at the end. */
export async function withFaultStores(
  t: TestEnv,
  body: (hooks: FaultHooks, opened: Opened) => Promise<void>,
): Promise<void> {
  const hooks = t.settings.faults as FaultHooks;
  const stores: Store[] = [];
  const cuts: PartitionableStore[] = [];
  const readers: Reader<unknown>[] = [];
  const opened: Opened = {
    plain: async (h) => {
      const store = await h.open(t.prefix);
      stores.push(store);
      return store;
    },
    partitionable: async (h) => {
      const cut = await (h.openPartitionable as NonNullable<FaultHooks['openPartitionable']>)(t.prefix);
      cuts.push(cut);
      stores.push(cut.store);
      return cut;
    },
    reader: (store, key, timeout) => {
      const reader = new Reader<KVPair | null>(() => store.watch(key), `watch(${key})`, timeout);
      readers.push(reader as Reader<unknown>);
      return reader;
    },
  };
  try {
    await body(hooks, opened);
  } finally {
    await Promise.allSettled(readers.map((r) => r.close()));
    await Promise.allSettled(cuts.map((c) => c.heal()));
    await Promise.allSettled(stores.map((s) => s.close()));
  }
}

/**
 * Retries `fn` until it resolves or `ms` pass (a server coming back); rethrows the last error, and
 * at once any error `retryOn` does not accept.
 */
export async function retry<T>(
  fn: () => Promise<T>,
  ms: number,
  retryOn: (error: unknown) => boolean = () => true,
): Promise<T> {
  const until = performance.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (error) {
      if (!retryOn(error) || performance.now() > until) throw error;
      await sleep(200);
    }
  }
}
