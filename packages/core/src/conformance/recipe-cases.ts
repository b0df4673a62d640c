import { randomBytes } from 'node:crypto';
import { expect } from 'vitest';
import {
  type Capabilities,
  campaign,
  EncryptedStore,
  encrypted,
  encryptionOverhead,
  IntegrityError,
  InvalidValueError,
  json,
  KeyExistsError,
  KeyModifiedError,
  KeyNotFoundError,
  type Leader,
  type Leadership,
  type Member,
  members,
  NotSupportedError,
  observe,
  passphraseKey,
  register,
  type StandardSchemaV1,
  type Store,
  typed,
  ValueTooLargeError,
} from '../index.js';
import { withFaultStores } from './fault-cases.js';
import {
  type Define,
  expectAbort,
  expectIndex,
  expectKVError,
  keys,
  Reader,
  range,
  type Settings,
  sameBytes,
  text,
  waitUntil,
  within,
} from './harness.js';

/** Fixed test keys: the kit's own, never a user's. */
const K1 = new Uint8Array(32).fill(0x11);
const K2 = new Uint8Array(32).fill(0x22);
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');
const MAX_TESTED_VALUE = 1024 * 1024;

const expiryBound = (caps: Capabilities, s: Settings) => 30_000 + 4 * (s.ttl + caps.ttlGranularity + s.slack);
const lockBound = (caps: Capabilities, s: Settings) =>
  30_000 + 3 * (s.lockTtl + caps.ttlGranularity + s.slack);

/** Asserts an `IntegrityError` naming the key and never holding the secret. */
async function expectIntegrity(fn: () => unknown, key: string, what: string): Promise<void> {
  const error = await expectKVError(fn, IntegrityError, what);
  expect(error.code).toBe('INTEGRITY');
  expect(error.message, `${what}: the error names the key`).toContain(JSON.stringify(key));
  for (const secret of [K1, K2]) {
    expect(error.message.includes(hex(secret)), `${what}: the error holds a secret`).toBe(false);
  }
}

export function encryptedCases(define: Define): void {
  define(
    'encrypted: values round-trip, are ciphertext at rest with a fresh nonce per write, and name their key id',
    { rows: ['encrypted'] },
    async (t) => {
      const enc = encrypted(t.store, { keys: { k1: K1 }, current: 'k1' });
      const all = Uint8Array.from(range(256));
      for (const [key, value] of [
        ['e/bytes', all],
        ['e/empty', new Uint8Array(0)],
        ['e/text', 'päss wörd ✓'],
      ] as const) {
        await enc.put(key, value);
        const got = await enc.get(key);
        const expected = typeof value === 'string' ? new TextEncoder().encode(value) : value;
        expect(sameBytes(got.value, expected), `${key} round-trips`).toBe(true);
        expectIndex(got.lastIndex, 'lastIndex');
        const stored = (await t.store.get(key)).value;
        expect(EncryptedStore.keyIdOf(stored)).toBe('k1');
        expect(stored.byteLength).toBe(expected.byteLength + encryptionOverhead('k1'));
      }
      const secret = new TextEncoder().encode('the same secret value');
      await enc.put('e/same', secret);
      const first = (await t.store.get('e/same')).value;
      await enc.put('e/same', secret);
      const second = (await t.store.get('e/same')).value;
      expect(sameBytes(first, second), 'two writes of one value give different ciphertexts').toBe(false);
      expect(Buffer.from(first).includes(Buffer.from(secret)), 'the plaintext is not stored').toBe(false);
      // Keys stay plaintext: listings work, values decrypted.
      const listed = await enc.list('e');
      expect(keys(listed)).toEqual(['e/bytes', 'e/empty', 'e/same', 'e/text']);
      expect(text((listed[2] as { value: Uint8Array }).value)).toBe('the same secret value');
      expect(await enc.exists('e/text')).toBe(true);
      await enc.delete('e/text');
      expect(await enc.exists('e/text')).toBe(false);
      await enc.deleteTree('e');
      expect(await t.store.list('e')).toEqual([]);
    },
  );

  define(
    'encrypted: a copied value, a changed byte, a wrong key, an unknown key id or a plaintext value fail with IntegrityError',
    { rows: ['encrypted'] },
    async (t) => {
      const enc = encrypted(t.store, { keys: { k1: K1 }, current: 'k1' });
      await enc.put('i/a', 'alpha');
      const stored = (await t.store.get('i/a')).value;
      await t.store.put('i/copy', stored);
      await expectIntegrity(() => enc.get('i/copy'), 'i/copy', 'a value copied to another key');
      for (const at of [0, 2, 3, stored.byteLength - 20, stored.byteLength - 1]) {
        const changed = Uint8Array.from(stored);
        changed[at] = (changed[at] as number) ^ 0x01;
        await t.store.put('i/changed', changed);
        await expectIntegrity(() => enc.get('i/changed'), 'i/changed', `byte ${at} changed`);
      }
      const wrong = encrypted(t.store, { keys: { k1: K2 }, current: 'k1' });
      await expectIntegrity(() => wrong.get('i/a'), 'i/a', 'read with a wrong key');
      const other = encrypted(t.store, { keys: { k2: K2 }, current: 'k2' });
      const error = await expectKVError(() => other.get('i/a'), IntegrityError, 'unknown key id');
      expect(error.message).toContain('"k1"');
      await t.store.put('i/plain', 'not encrypted');
      await expectIntegrity(() => enc.get('i/plain'), 'i/plain', 'a plaintext value');
      await expectIntegrity(() => enc.list('i'), 'i/changed', 'list with a bad value');
      // Another prefix over the same keys is another key: the AAD is the full storage key.
      expect(text((await enc.get('i/a')).value)).toBe('alpha');
    },
  );

  define(
    'encrypted: compare-and-swap compares lastIndex, never ciphertexts; concurrent increments lose nothing',
    { rows: ['encrypted', 'atomicPut', 'atomicDelete'] },
    async (t) => {
      const stores = await t.openMany(3);
      const encs = stores.map((s) => encrypted(s, { keys: { k1: K1 }, current: 'k1' }));
      const enc = encs[0] as EncryptedStore;
      const created = await enc.atomicPut('c/n', '0', null);
      await expectKVError(() => enc.atomicPut('c/n', 'x', null), KeyExistsError, 'create-only again');
      const next = await enc.atomicPut('c/n', '1', created);
      expect(text(next.value)).toBe('1');
      await expectKVError(() => enc.atomicPut('c/n', 'stale', created), KeyModifiedError, 'stale CAS');
      await expectKVError(() => enc.atomicDelete('c/n', created), KeyModifiedError, 'stale atomicDelete');
      // The same plaintext written again still moves lastIndex; CAS on the pair read works.
      const read = await enc.get('c/n');
      expect(read.lastIndex).toBe(next.lastIndex);
      await enc.atomicDelete('c/n', read);
      await expectKVError(() => enc.get('c/n'), KeyNotFoundError, 'after atomicDelete');
      await enc.put('c/counter', '0');
      const rounds = 5;
      await Promise.all(
        encs.map(async (s) => {
          for (let i = 0; i < rounds; i++) {
            for (;;) {
              const pair = await s.get('c/counter');
              try {
                await s.atomicPut('c/counter', String(Number(text(pair.value)) + 1), pair);
                break;
              } catch (error) {
                if (!KeyModifiedError.isInstance(error)) throw error;
              }
            }
          }
        }),
      );
      expect(text((await enc.get('c/counter')).value)).toBe(String(encs.length * rounds));
    },
  );

  define(
    'encrypted: maxValueSize shrinks by the overhead; a value of it round-trips, one byte more is ValueTooLargeError',
    { rows: ['encrypted'] },
    async (t) => {
      const enc = encrypted(t.store, { keys: { old: K2, k1: K1 }, current: 'k1' });
      const overhead = Math.max(encryptionOverhead('old'), encryptionOverhead('k1'));
      const max = enc.capabilities.maxValueSize;
      expect(max).toBe(Math.max(0, t.caps.maxValueSize - overhead));
      if (t.caps.maxValueSize > MAX_TESTED_VALUE) return;
      const big = randomBytes(max);
      await enc.put('big', big);
      expect(sameBytes((await enc.get('big')).value, big)).toBe(true);
      await expectKVError(() => enc.put('big2', new Uint8Array(max + 1)), ValueTooLargeError, 'max + 1');
      expect(await t.store.exists('big2')).toBe(false);
    },
  );

  define(
    'encrypted: watch and watchTree yield decrypted values',
    { rows: ['encrypted', 'watch', 'watchTree'], requires: ['watch', 'watchTree'] },
    async (t) => {
      const enc = encrypted(t.store, { keys: { k1: K1 }, current: 'k1' });
      const watch = t.watch(enc, 'w/a');
      expect(await watch.next()).toBeNull();
      const tree = t.watchTree(enc, 'w');
      expect((await tree.next()).pairs).toEqual([]);
      await enc.put('w/a', 'one');
      expect(text(((await watch.next()) as { value: Uint8Array }).value)).toBe('one');
      const event = await tree.until((e) => e.pairs.length === 1);
      const pair = (event.at(-1) as { pairs: { value: Uint8Array }[] }).pairs[0] as { value: Uint8Array };
      expect(text(pair.value)).toBe('one');
      await enc.delete('w/a');
      expect(await watch.next()).toBeNull();
      await tree.until((e) => e.pairs.length === 0);
    },
  );

  define(
    'encrypted: locks work through it; the lock value is encrypted at rest and get() decrypts it',
    { rows: ['encrypted', 'lock'], requires: 'lock', timeout: lockBound },
    async (t) => {
      const [one, two] = (await t.openMany(2)) as [Store, Store];
      const a = encrypted(one, { keys: { k1: K1 }, current: 'k1' });
      const b = encrypted(two, { keys: { k1: K1 }, current: 'k1' });
      const lockA = a.newLock('l/x', { value: 'owner-a', ttl: t.settings.lockTtl });
      const held = await lockA.lock();
      expectIndex(held.fencingToken, 'fencingToken');
      expect(text((await b.get('l/x')).value)).toBe('owner-a');
      expect(EncryptedStore.keyIdOf((await t.store.get('l/x')).value)).toBe('k1');
      const lockB = b.newLock('l/x', { value: 'owner-b', ttl: t.settings.lockTtl });
      expect(await lockB.tryLock(), 'tryLock while held').toBeNull();
      const waiting = lockB.lock();
      await lockA.unlock();
      expect(held.lost.aborted).toBe(true);
      const second = await within(waiting, t.settings.prompt + t.settings.slack, 'waiter after unlock');
      expect(second.fencingToken).toBeGreaterThan(held.fencingToken);
      expect(text((await a.get('l/x')).value)).toBe('owner-b');
      await lockB.unlock();
    },
  );

  define(
    'encrypted: ttl and keep-alive keys work through it; closing the encrypted store lets keep-alive keys expire',
    { rows: ['encrypted', 'ttl', 'keepAlive'], requires: ['ttl', 'keepAlive'], timeout: expiryBound },
    async (t) => {
      const owner = encrypted(await t.open(), { keys: { k1: K1 }, current: 'k1' });
      const ttl = t.settings.ttl;
      await owner.put('t/ttl', 'short', { ttl });
      await owner.put('t/alive', 'ephemeral', { ttl, keepAlive: true });
      expect(text((await owner.get('t/ttl')).value)).toBe('short');
      const closed = performance.now();
      await owner.close();
      const deadline = closed + 2 * ttl + t.caps.ttlGranularity + t.settings.slack;
      await waitUntil(async () => !(await t.store.exists('t/ttl')) && !(await t.store.exists('t/alive')), {
        deadline,
        interval: Math.max(10, Math.min(250, Math.floor(ttl / 20))),
        what: 'both keys are gone',
      });
    },
  );

  define(
    'encrypted: rotation reads old key ids, writes the current one, and rotate() rewrites with CAS, losing no concurrent write',
    { rows: ['encrypted'], timeout: () => 60_000 },
    async (t) => {
      const [writerStore] = (await t.openMany(1)) as [Store];
      const before = encrypted(t.store, { keys: { k1: K1 }, current: 'k1' });
      const n = 30;
      for (const i of range(n)) await before.put(`r/${String(i).padStart(2, '0')}`, `old-${i}`);
      const after = encrypted(t.store, { keys: { k1: K1, k2: K2 }, current: 'k2' });
      expect(text((await after.get('r/00')).value)).toBe('old-0');
      await after.put('r/new', 'fresh');
      expect(EncryptedStore.keyIdOf((await t.store.get('r/new')).value)).toBe('k2');
      // A writer on its own connection overwrites every other key while the rotation runs.
      const writer = encrypted(writerStore, { keys: { k1: K1, k2: K2 }, current: 'k2' });
      const written = range(n).filter((i) => i % 2 === 1);
      const [result] = await Promise.all([
        after.rotate('r'),
        (async () => {
          for (const i of written) await writer.put(`r/${String(i).padStart(2, '0')}`, `new-${i}`);
        })(),
      ]);
      expect(result.rewritten + result.current).toBeGreaterThanOrEqual(n);
      const listed = await after.list('r');
      expect(listed.length).toBe(n + 1);
      for (const i of range(n)) {
        const key = `r/${String(i).padStart(2, '0')}`;
        const expected = written.includes(i) ? `new-${i}` : `old-${i}`;
        expect(text((await after.get(key)).value), `${key} after rotate`).toBe(expected);
        expect(EncryptedStore.keyIdOf((await t.store.get(key)).value), `${key} key id`).toBe('k2');
      }
      // Once rotated, the old key can be dropped.
      const only2 = encrypted(t.store, { keys: { k2: K2 }, current: 'k2' });
      expect((await only2.list('r')).length).toBe(n + 1);
      expect(await after.rotate('r')).toEqual({ rewritten: 0, current: n + 1 });
    },
  );

  define(
    'encrypted: a passphrase key derives from a salt stored in the store; the same passphrase reads, another fails',
    { rows: ['encrypted'] },
    async (t) => {
      const other = await t.open();
      const key1 = await passphraseKey(t.store, 'correct horse', 'p/salt');
      const key2 = await passphraseKey(other, 'correct horse', 'p/salt');
      expect(sameBytes(key1, key2), 'both stores derive the same key').toBe(true);
      expect((await t.store.get('p/salt')).value.byteLength).toBe(16);
      const writer = encrypted(t.store, { keys: { pw: key1 }, current: 'pw' });
      await writer.put('p/secret', 'launch codes');
      const reader = encrypted(other, { keys: { pw: key2 }, current: 'pw' });
      expect(text((await reader.get('p/secret')).value)).toBe('launch codes');
      const wrong = await passphraseKey(other, 'wrong horse', 'p/salt');
      const intruder = encrypted(other, { keys: { pw: wrong }, current: 'pw' });
      await expectKVError(() => intruder.get('p/secret'), IntegrityError, 'another passphrase');
    },
  );
}

interface Config {
  readonly host: string;
  readonly port: number;
}

/** A Standard Schema written by hand, as zod, valibot or arktype give one. */
const configSchema: StandardSchemaV1<unknown, Config> = {
  '~standard': {
    version: 1,
    vendor: 'kv-conformance',
    validate(value) {
      const v = value as Partial<Config> | null;
      const issues: StandardSchemaV1.Issue[] = [];
      if (typeof v !== 'object' || v === null) return { issues: [{ message: 'expected an object' }] };
      if (typeof v.host !== 'string') issues.push({ message: 'expected a string', path: ['host'] });
      if (!Number.isInteger(v.port)) issues.push({ message: 'expected an integer', path: [{ key: 'port' }] });
      return issues.length > 0 ? { issues } : { value: { host: v.host as string, port: v.port as number } };
    },
  },
};

export function typedCases(define: Define): void {
  define(
    'typed: json values round-trip; CAS, list, update and watch give parsed values',
    { rows: ['typed'] },
    async (t) => {
      const configs = typed(t.store, json<Config>());
      await configs.put('cfg/db', { host: 'db.local', port: 5432 });
      const got: Config = await configs.get('cfg/db');
      expect(got).toEqual({ host: 'db.local', port: 5432 });
      const pair = await configs.getPair('cfg/db');
      const moved = await configs.atomicPut('cfg/db', { host: 'db2.local', port: 5432 }, pair);
      await expectKVError(
        () => configs.atomicPut('cfg/db', { host: 'x', port: 1 }, pair),
        KeyModifiedError,
        'stale typed CAS',
      );
      expect(moved.value.host).toBe('db2.local');
      await configs.put('cfg/cache', { host: 'cache', port: 6379 });
      expect((await configs.list('cfg')).map((p) => p.value.port)).toEqual([6379, 5432]);
      const counters = typed(t.store, json<number>());
      await Promise.all(range(5).map(() => counters.update('cfg/n', (n) => (n ?? 0) + 1)));
      expect(await counters.get('cfg/n')).toBe(5);
      expect(text((await t.store.get('cfg/n')).value)).toBe('5');
    },
  );

  define(
    'typed: a Standard Schema validates writes (refused with InvalidValueError, nothing written) and reads',
    { rows: ['typed'] },
    async (t) => {
      const configs = typed(t.store, json(configSchema));
      await configs.put('v/ok', { host: 'a', port: 1 });
      const bad = { host: 7, port: 'x' } as unknown as Config;
      const refused = await expectKVError(() => configs.put('v/bad', bad), InvalidValueError, 'invalid put');
      expect(refused.code).toBe('INVALID_VALUE');
      expect(refused.message).toContain('host: expected a string');
      expect(refused.message).toContain('port: expected an integer');
      expect(await t.store.exists('v/bad')).toBe(false);
      await expectKVError(
        () => configs.atomicPut('v/bad', bad, null),
        InvalidValueError,
        'invalid atomicPut',
      );
      expect(await t.store.exists('v/bad')).toBe(false);
      await t.store.put('v/stored', '{"host":"a"}');
      await expectKVError(() => configs.get('v/stored'), InvalidValueError, 'invalid stored value');
      await t.store.put('v/garbage', Uint8Array.of(0xff, 0x00));
      const garbage = await expectKVError(() => configs.get('v/garbage'), InvalidValueError, 'not JSON');
      expect(garbage.message).toContain('"v/garbage"');
    },
  );

  define(
    'typed over encrypted: the wrappers compose',
    { rows: ['typed', 'encrypted'], requires: 'watch' },
    async (t) => {
      const configs = typed(encrypted(t.store, { keys: { k1: K1 }, current: 'k1' }), json(configSchema));
      const watch = new Reader(() => configs.watch('x/cfg'), 'typed watch', t.settings.eventTimeout);
      try {
        expect(await watch.next()).toBeNull();
        await configs.put('x/cfg', { host: 'h', port: 2 });
        expect((await watch.next())?.value).toEqual({ host: 'h', port: 2 });
        expect(EncryptedStore.keyIdOf((await t.store.get('x/cfg')).value)).toBe('k1');
      } finally {
        await watch.close();
      }
    },
  );
}

export function electionCases(define: Define): void {
  define(
    'election: one leader at a time; observers see each leader; resign hands over at once with a larger fencing token',
    { rows: ['election'], requires: ['lock', 'watch'], timeout: lockBound },
    async (t) => {
      const [a, b, c] = (await t.openMany(3)) as [Store, Store, Store];
      const ttl = t.settings.lockTtl;
      const seen = new Reader<Leader | null>(() => observe(c, 'leader'), 'observe', t.settings.eventTimeout);
      try {
        expect(await seen.next()).toBeNull();
        const first = await campaign(a, 'leader', { value: 'a', ttl });
        expect(text(((await seen.next()) as Leader).value)).toBe('a');
        let second: Leadership | undefined;
        const waiting = campaign(b, 'leader', { value: 'b', ttl }).then((l) => {
          second = l;
          return l;
        });
        // b must not lead while a does.
        await expect(within(waiting, 300, 'b leads')).rejects.toThrow('b leads');
        expect(second).toBeUndefined();
        const resigned = performance.now();
        await first.resign();
        expect(first.lost.aborted).toBe(true);
        const next = await within(waiting, t.settings.prompt + t.settings.slack, 'b leads after a resigned');
        expect(performance.now() - resigned).toBeLessThan(ttl);
        expect(next.fencingToken).toBeGreaterThan(first.fencingToken);
        let leader = (await seen.next()) as Leader | null;
        if (leader === null) leader = (await seen.next()) as Leader;
        expect(text(leader.value)).toBe('b');
        await next.resign();
        expect(await seen.next()).toBeNull();
      } finally {
        await seen.close();
      }
    },
  );

  define(
    'election: aborting a waiting campaign rejects with AbortError and leaves the leader alone',
    { rows: ['election'], requires: ['lock', 'watch'], timeout: lockBound },
    async (t) => {
      const [a, b] = (await t.openMany(2)) as [Store, Store];
      const leader = await campaign(a, 'el', { value: 'a', ttl: t.settings.lockTtl });
      const controller = new AbortController();
      const waiting = campaign(b, 'el', { value: 'b', ttl: t.settings.lockTtl, signal: controller.signal });
      const reason = new Error('stop campaigning');
      setTimeout(() => controller.abort(reason), 100);
      await expectAbort(() => waiting, reason, 'aborted campaign');
      expect(leader.lost.aborted).toBe(false);
      expect(text((await a.get('el')).value)).toBe('a');
      await leader[Symbol.asyncDispose]();
    },
  );
}

export function discoveryCases(define: Define): void {
  define(
    'discovery: members yields the sorted member list on every change; a closed member leaves at once; a crashed one within ttl',
    {
      rows: ['discovery'],
      requires: ['keepAlive', 'watchTree', 'watch'],
      needsCrash: true,
      timeout: expiryBound,
    },
    async (t) => {
      const [a, b] = (await t.openMany(2)) as [Store, Store];
      const ttl = t.settings.ttl;
      const list = new Reader<Member[]>(() => members(t.store, 'svc'), 'members', t.settings.eventTimeout);
      const ids = async () => (await list.next()).map((m) => m.id);
      try {
        expect(await ids()).toEqual([]);
        const rb = await register(b, 'svc', { id: 'b', value: 'b:2', ttl });
        expect(await ids()).toEqual(['b']);
        const ra = await register(a, 'svc', { id: 'a', value: 'a:1', ttl });
        const both = await list.next();
        expect(both.map((m) => [m.id, text(m.value)])).toEqual([
          ['a', 'a:1'],
          ['b', 'b:2'],
        ]);
        await rb.close();
        await rb.close();
        expect(await ids()).toEqual(['a']);
        const crashed = performance.now();
        await t.settings.crash?.(a);
        expect(await ids()).toEqual([]);
        expect(performance.now() - crashed).toBeLessThan(ttl + t.caps.ttlGranularity + t.settings.slack);
        await ra.close().catch(() => {});
      } finally {
        await list.close();
      }
    },
  );

  define(
    'discovery: a member whose entry vanished while registered (expired in a partition) registers again',
    { rows: ['discovery'], requires: ['keepAlive', 'watchTree', 'watch'] },
    async (t) => {
      const member = await t.open();
      const reg = await register(member, 'svc2', { id: 'm', value: 'here', ttl: t.settings.ttl });
      // What the server does when the lease expires during a partition.
      await t.store.delete('svc2/m');
      await waitUntil(async () => t.store.exists('svc2/m'), {
        deadline: performance.now() + t.settings.eventTimeout,
        interval: 20,
        what: 'the member registered again',
      });
      expect(text((await t.store.get('svc2/m')).value)).toBe('here');
      await reg.close();
      expect(await t.store.exists('svc2/m')).toBe(false);
    },
  );
}

export function recipeUnsupportedCases(define: Define): void {
  define(
    'election: campaign throws NotSupportedError when capabilities.lock is false',
    { rows: ['election', 'electionFailover'], unsupported: 'lock' },
    async (t) => {
      await expectKVError(() => campaign(t.store, 'leader', { value: 'a' }), NotSupportedError, 'campaign');
    },
  );
  define(
    'discovery: register throws NotSupportedError when capabilities.keepAlive is false',
    { rows: ['discovery', 'discoveryProcesses'], unsupported: 'keepAlive' },
    async (t) => {
      await expectKVError(() => register(t.store, 'svc', { id: 'a' }), NotSupportedError, 'register');
      expect(await t.store.exists('svc/a')).toBe(false);
    },
  );
}

/** The recipes under a real partition, on the backend's fault server. */
export function recipeFaultCases(define: Define): void {
  define(
    'discovery under a partition: the cut member expires for the others, and registers again once healed',
    {
      rows: ['discovery', 'partition'],
      requires: ['keepAlive', 'watchTree', 'watch'],
      needsFault: 'openPartitionable',
      timeout: (caps, s) => 90_000 + 4 * (s.ttl + caps.ttlGranularity + s.slack),
    },
    (t) =>
      withFaultStores(t, async (hooks, opened) => {
        const cut = await opened.partitionable(hooks);
        const other = await opened.plain(hooks);
        const ttl = t.settings.ttl;
        const reg = await register(cut.store, 'svc', { id: 'cut', value: 'v', ttl });
        t.onCleanup(() => reg.close().catch(() => {}));
        const list = new Reader<Member[]>(() => members(other, 'svc'), 'members', t.settings.eventTimeout);
        t.onCleanup(() => list.close());
        const until = async (ids: string[], ms: number) => {
          for (;;) {
            const got = (await list.next(ms)).map((m) => m.id);
            if (JSON.stringify(got) === JSON.stringify(ids)) return;
          }
        };
        await until(['cut'], t.settings.eventTimeout);
        const cutAt = performance.now();
        await cut.partition();
        await until([], ttl + t.caps.ttlGranularity + t.settings.slack + t.settings.eventTimeout);
        expect(performance.now() - cutAt, 'the cut member expires within ttl').toBeLessThan(
          ttl + t.caps.ttlGranularity + t.settings.slack,
        );
        await cut.heal();
        // Reconnects back off (up to a few seconds): allow for that, then the entry must be back.
        await until(['cut'], 30_000 * t.settings.timeScale);
        expect(text((await other.get('svc/cut')).value)).toBe('v');
      }),
  );

  define(
    'election under a partition: the cut leader sees lost abort before another candidate leads',
    {
      rows: ['election', 'partition'],
      requires: ['lock', 'watch'],
      needsFault: 'openPartitionable',
      timeout: (caps, s) => 90_000 + 3 * (s.lockTtl + caps.ttlGranularity + s.slack),
    },
    (t) =>
      withFaultStores(t, async (hooks, opened) => {
        const cut = await opened.partitionable(hooks);
        const other = await opened.plain(hooks);
        const ttl = t.settings.lockTtl;
        const first = await campaign(cut.store, 'leader', { value: 'cut', ttl });
        let lostAt: number | undefined;
        first.lost.addEventListener('abort', () => {
          lostAt = performance.now();
        });
        const waiting = campaign(other, 'leader', { value: 'other', ttl });
        await cut.partition();
        const second = await within(
          waiting,
          ttl + t.caps.ttlGranularity + t.settings.slack + t.settings.eventTimeout,
          'the other candidate leads after the leader was cut off',
        );
        const ledAt = performance.now();
        expect(lostAt, 'the cut leader saw lost abort').toBeDefined();
        expect(lostAt as number, 'lost aborted before the other led').toBeLessThanOrEqual(ledAt);
        expect(second.fencingToken).toBeGreaterThan(first.fencingToken);
        await second.resign();
      }),
  );
}
