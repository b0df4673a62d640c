import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeRangeReply } from '../src/range-reply.js';

interface RangeMethod {
  responseSerialize(message: unknown): Buffer;
  responseDeserialize(bytes: Buffer): { header: { cluster_id: string } };
}

// The reference encoder and decoder: etcd3's own protobuf definitions, loaded as etcd3 loads them.
const require = createRequire(import.meta.url);
const etcd3Main = require.resolve('etcd3');
const protoLoader = createRequire(etcd3Main)('@grpc/proto-loader') as {
  loadSync(file: string, options: object): Record<string, Record<string, RangeMethod>>;
};
const definition = protoLoader.loadSync(join(dirname(etcd3Main), '..', 'proto', 'rpc.proto'), {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const rangeMethod = definition['etcdserverpb.KV']?.Range as RangeMethod;
const encodeRangeResponse = (message: unknown): Buffer => rangeMethod.responseSerialize(message);

interface Kv {
  key: Buffer;
  value: Buffer;
  create_revision: string;
  mod_revision: string;
  version: string;
  lease: string;
}

/** A small seeded generator (xorshift32), so a failure can be replayed from its seed. */
function generator(seed: number) {
  let state = seed >>> 0 || 1;
  const next = () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 2 ** 32;
  };
  const int = (below: number) => Math.floor(next() * below);
  const bytes = (length: number) => Buffer.from(Array.from({ length }, () => int(256)));
  return { next, int, bytes };
}

// The key's text as written: a leading U+FEFF is part of it, not a byte-order mark.
const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const utf8 = (bytes: Buffer): string | undefined => {
  try {
    return strict.decode(bytes);
  } catch {
    return undefined;
  }
};

describe('etcd Range replies decoded into pairs', () => {
  it("match etcd3 protobuf encoding on 400 random replies: UTF-8 keys kept, others left out, values byte for byte, versions exact up to 2^53, the header's cluster id exact to 64 bits", () => {
    for (let seed = 1; seed <= 400; seed++) {
      const g = generator(seed);
      const kvs: Kv[] = Array.from({ length: g.int(12) }, () => {
        const kind = g.int(4);
        const key =
          kind === 0
            ? g.bytes(1 + g.int(20)) // arbitrary bytes: often not UTF-8
            : kind === 1
              ? Buffer.from(`${g.int(2) === 0 ? '\uFEFF' : ''}k/\uFFFD/${g.int(1000)}`) // U+FFFD is valid UTF-8
              : Buffer.from(`${g.int(4) === 0 ? '\uFEFF' : ''}dir/é/${'x'.repeat(g.int(300))}/${g.int(1e6)}`);
        const big = g.int(3) === 0;
        return {
          key,
          value: g.int(5) === 0 ? Buffer.alloc(0) : g.bytes(g.int(2_000)),
          create_revision: String(1 + g.int(1e9)),
          mod_revision: big ? String(Number.MAX_SAFE_INTEGER - g.int(1000)) : String(1 + g.int(1e9)),
          version: String(1 + g.int(100)),
          lease: big ? '9223372036854775807' : String(g.int(2) === 0 ? 0 : 1 + g.int(1e12)),
        };
      });
      const clusterId = (BigInt(g.int(2 ** 32)) << 32n) | BigInt(g.int(2 ** 32));
      const header = {
        cluster_id: seed === 1 ? '18446744073709551615' : clusterId.toString(),
        member_id: String(g.int(1e9)),
        revision: String(1 + g.int(2 ** 40)),
        raft_term: String(g.int(100)),
      };
      const count = String(kvs.length + g.int(5));
      const encoded = encodeRangeResponse({ header, kvs, more: g.int(2) === 1, count });
      const reply = decodeRangeReply(encoded);
      const etcd3Header = rangeMethod.responseDeserialize(encoded).header;
      const expected = kvs
        .map((kv) => ({
          key: utf8(kv.key),
          value: new Uint8Array(kv.value),
          lastIndex: Number(kv.mod_revision),
        }))
        .filter((pair) => pair.key !== undefined);
      expect(reply.header.revision, `seed ${seed}`).toBe(Number(header.revision));
      // The cluster id exactly, as etcd3 reads it: watches compare it with their events' headers.
      expect(reply.header.clusterId, `seed ${seed}`).toBe(header.cluster_id);
      expect(reply.header.clusterId, `seed ${seed}`).toBe(etcd3Header.cluster_id);
      expect(reply.header.raftTerm, `seed ${seed}`).toBe(Number(header.raft_term));
      expect(reply.count, `seed ${seed}`).toBe(Number(count));
      expect(
        reply.pairs.map((p) => ({ key: p.key, value: new Uint8Array(p.value), lastIndex: p.lastIndex })),
        `seed ${seed}`,
      ).toEqual(expected);
      for (const pair of reply.pairs) expect(Object.getPrototypeOf(pair.value)).toBe(Uint8Array.prototype);
    }
  });

  it('skips fields it does not know (a newer etcd), at every level', () => {
    const known = encodeRangeResponse({
      header: { revision: '7' },
      kvs: [{ key: Buffer.from('a'), value: Buffer.from('v'), mod_revision: '5' }],
      count: '1',
    });
    // Field 15 of each wire type: varint 300, fixed64, length-delimited "zz", fixed32.
    const unknown = Buffer.from([
      0x78, 0xac, 0x02, 0x79, 1, 2, 3, 4, 5, 6, 7, 8, 0x7a, 2, 0x7a, 0x7a, 0x7d, 1, 2, 3, 4,
    ]);
    // A key-value with the unknown fields inside it, too.
    const kv = Buffer.concat([Buffer.from([0x0a, 1, 0x62]), unknown, Buffer.from([0x18, 9])]);
    const extraKv = Buffer.concat([Buffer.from([0x12, kv.length]), kv]);
    const reply = decodeRangeReply(Buffer.concat([unknown, known, extraKv, unknown]));
    expect(reply.header.revision).toBe(7);
    // A header without a cluster id reads as etcd3 reads it (protobuf's default, '0').
    expect(reply.header.clusterId).toBe('0');
    expect(reply.pairs.map((p) => [p.key, Buffer.from(p.value).toString(), p.lastIndex])).toEqual([
      ['a', 'v', 5],
      ['b', '', 9],
    ]);
  });

  it('refuses a truncated reply instead of returning part of it', () => {
    const whole = encodeRangeResponse({
      header: { revision: '7' },
      kvs: [
        { key: Buffer.from('a'), value: Buffer.from('value a'), mod_revision: '5' },
        { key: Buffer.from('b'), value: Buffer.from('value b'), mod_revision: '6' },
      ],
      count: '2',
    });
    const all = decodeRangeReply(whole).pairs;
    expect(all).toHaveLength(2);
    let refused = 0;
    for (let cut = 1; cut < whole.length; cut++) {
      let pairs: typeof all;
      try {
        pairs = decodeRangeReply(whole.subarray(0, cut)).pairs;
      } catch (error) {
        expect(String(error)).toMatch(/etcd range reply/);
        refused++;
        continue;
      }
      // A cut that falls between two whole fields is a shorter valid message: whole pairs only.
      expect(pairs, `cut at ${cut}`).toEqual(all.slice(0, pairs.length));
    }
    expect(refused).toBeGreaterThan(whole.length / 2);
  });
});
