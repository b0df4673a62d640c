import { createStore, InvalidArgumentError, UnavailableError, ValueTooLargeError } from '@kv/core';
import { serverFor, startFaultProxy } from '@kv/test-servers';
import { describe, expect, it } from 'vitest';
import { ConsulStore, parseConsulUrl } from '../src/index.js';

const consul = await serverFor('consul');

describe('consul URLs and options', () => {
  it('parses tokens, several endpoints, the prefix and options', () => {
    expect(
      parseConsulUrl('consul://s3cr3t@10.0.0.1:8500,10.0.0.2:8500/app/x?dc=dc2&consistency=stale'),
    ).toEqual({
      backend: 'consul',
      token: 's3cr3t',
      endpoints: ['10.0.0.1:8500', '10.0.0.2:8500'],
      prefix: '/app/x',
      dc: 'dc2',
      consistency: 'stale',
    });
    expect(parseConsulUrl('consuls://h:8501/p')).toMatchObject({ backend: 'consuls', tls: true });
    expect(() => parseConsulUrl('consul://u:p@h:8500/p')).toThrow(InvalidArgumentError);
    // A token in a URL that is refused never reaches the message.
    expect(() => parseConsulUrl('redis://s3cr3t@h:8500/p')).toThrow(/"redis:\/\/\*\*\*@h:8500\/p"/);
    expect(() => parseConsulUrl('redis://s3cr3t@h:8500/p')).not.toThrow(/s3cr3t/);
  });

  it('refuses bad options with InvalidArgumentError before connecting', async () => {
    const bad = [
      { backend: 'consul', endpoints: ['127.0.0.1:1'], consistency: 'sometimes' },
      { backend: 'consul', endpoints: ['127.0.0.1:1'], username: 'u', password: 'p' },
      { backend: 'consul', endpoints: ['127.0.0.1:1'], datacenter: 'a', dc: 'b' },
      { backend: 'consul', endpoints: ['redis://127.0.0.1:1'] },
      { backend: 'consul', endpoints: ['127.0.0.1:1'], blockingWait: -1 },
      { backend: 'consul', endpoints: ['127.0.0.1:1'], caFile: '/nonexistent/ca.pem' },
    ];
    for (const config of bad) {
      await expect(createStore(config), JSON.stringify(config)).rejects.toBeInstanceOf(InvalidArgumentError);
    }
  });

  it('a dead agent is UnavailableError within connectTimeout', async () => {
    const started = performance.now();
    await expect(createStore('consul://127.0.0.1:1/p?connectTimeout=1000')).rejects.toBeInstanceOf(
      UnavailableError,
    );
    expect(performance.now() - started).toBeLessThan(5_000);
  });
});

describe.skipIf(!consul.available)('consul://127.0.0.1:PORT/prefix against the agent', () => {
  it('opens, reports the agent limits, and fails over past a dead endpoint', async () => {
    const [endpoint] = consul.endpoints;
    await using store = await createStore(`consul://${endpoint}/held-out/prefix`);
    expect(store).toBeInstanceOf(ConsulStore);
    expect(store.prefix).toBe('held-out/prefix');
    // The test agent runs with session_ttl_min = 1s: every ttl is two sessions TTLs.
    expect(store.capabilities.minTtl).toBe(2_000);
    expect(store.capabilities.maxValueSize).toBe(Math.floor((512 * 1024 - 2_048) / 4) * 3);
    await store.put('k', 'v');
    expect(new TextDecoder().decode((await store.get('k')).value)).toBe('v');

    // The first endpoint refuses connections: every call goes on to the next agent.
    await using failover = await createStore(`consul://127.0.0.1:1,${endpoint}/held-out/prefix`);
    expect(new TextDecoder().decode((await failover.get('k')).value)).toBe('v');
    await failover.put('k2', 'v2');
    expect((await failover.list('')).map((p) => p.key)).toEqual(['k', 'k2']);
    await store.deleteTree('k');
    await store.deleteTree('k2');
  });

  it('an agent that hangs (black-holed) times a read out, and the next call goes to the next agent', async () => {
    const [endpoint] = consul.endpoints;
    const proxy = await startFaultProxy(endpoint as string);
    try {
      await using store = await createStore({
        backend: 'consul',
        endpoints: [proxy.endpoint, endpoint as string],
        prefix: 'hang',
        requestTimeout: 1_000,
      });
      await store.put('k', 'v');
      proxy.blackhole();
      await expect(store.get('k')).rejects.toBeInstanceOf(UnavailableError);
      // Not sent to the hung agent again: the next agent answers at once.
      expect(new TextDecoder().decode((await store.get('k')).value)).toBe('v');
      await store.delete('k');
    } finally {
      await proxy.close();
    }
  });

  it('a ttl under minTtl names session_ttl_min', async () => {
    await using store = await createStore(`consul://${consul.endpoints[0]}/ttl-min`);
    await expect(store.put('k', 'v', { ttl: 1_000 })).rejects.toThrow(/session_ttl_min/);
  });

  it('maxValueSize: the largest value goes through every write path; one byte more is refused before sending, naming the limit', async () => {
    await using store = await createStore(`consul://${consul.endpoints[0]}/value-size`);
    const max = store.capabilities.maxValueSize;
    const big = new Uint8Array(max).map((_, i) => (i * 7) % 251);
    // Byte for byte (vitest's toEqual walks a large array element by element: seconds).
    const same = (value: Uint8Array) => Buffer.from(value).equals(Buffer.from(big));
    await store.put('plain', big);
    expect(same((await store.get('plain')).value)).toBe(true);
    const created = await store.atomicPut('cas', big, null);
    await store.atomicPut('cas', big, created);
    await store.put('ttl', big, { ttl: 2_000 });
    expect(same((await store.get('ttl')).value)).toBe(true);
    const lock = store.newLock('lock', { value: big, ttl: 2_000 });
    await lock.lock();
    expect(same((await store.get('lock')).value)).toBe(true);
    await lock.unlock();

    const over = await store.put('plain', new Uint8Array(max + 1)).catch((e: unknown) => e);
    expect(ValueTooLargeError.isInstance(over), String(over)).toBe(true);
    // Refused here, not by the agent (a 413 would be its cause), and the message says what sets it.
    expect((over as Error).cause).toBeUndefined();
    expect(String(over)).toMatch(/txn_max_req_len|kv_max_value_size/);
    // Values each under the limit, together over a txn body: refused before sending, nothing applied.
    const half = new Uint8Array(Math.ceil(max / 2) + 1024);
    const batch = await (store as ConsulStore)
      .transaction()
      .put('t1', half)
      .put('t2', half)
      .commit()
      .catch((e: unknown) => e);
    expect(ValueTooLargeError.isInstance(batch), String(batch)).toBe(true);
    expect(await store.exists('t1')).toBe(false);
    for (const key of ['plain', 'cas', 'ttl']) await store.delete(key);
  });
});
