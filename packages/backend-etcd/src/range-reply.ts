import type { RawPair } from '@kv/core';
import { decodeKey, NO_VALUE } from './etcd-keys.js';
import type { ServerMark } from './watch-cursor.js';

/*
 * etcd's RangeResponse, decoded straight from the protobuf wire format into the pairs a Store read
 * returns. etcd3 decodes replies with protobufjs into objects whose 64-bit fields are strings,
 * then kv turned those into pairs: about 3 ms per 1 000 keys in all, more than etcd takes to
 * answer. Here each key-value becomes one pair as it is read: the key as text (or no pair when it
 * is not UTF-8), the value a view of the reply's bytes (no copy, as etcd3's own Buffers were), the
 * version (`mod_revision`) a number. Only the fields a Store read needs are kept; every other
 * field is skipped by its wire type, so fields a later etcd adds cost nothing.
 *
 *   RangeResponse  { ResponseHeader header = 1; repeated KeyValue kvs = 2; bool more = 3; int64 count = 4; }
 *   ResponseHeader { uint64 cluster_id = 1; uint64 member_id = 2; int64 revision = 3; uint64 raft_term = 4; }
 *   KeyValue       { bytes key = 1; int64 create_revision = 2; int64 mod_revision = 3; int64 version = 4;
 *                    bytes value = 5; int64 lease = 6; }
 */

/** A Range reply as Store reads use it. */
export interface RangeReply {
  /**
   * The reply's header: the store's revision when the range was read, the cluster id (a uint64 in
   * decimal, '0' when missing, as etcd3 reads it) and the raft term. Its own object, so a watch can
   * keep it as its mark without keeping the pairs.
   */
  readonly header: ServerMark;
  /** The key-values in key order; those whose key is not UTF-8 are left out. */
  readonly pairs: RawPair[];
  /** The number of keys in the range (count). */
  readonly count: number;
}

class Reader {
  pos: number;
  constructor(
    readonly buf: Buffer,
    start: number,
    readonly end: number,
  ) {
    this.pos = start;
  }

  /** A varint as a number: exact up to 2^53, which etcd's revisions and counts never pass. */
  varint(): number {
    const buf = this.buf;
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new Error('etcd range reply: truncated varint');
      const byte = buf[this.pos++] as number;
      result += (byte & 0x7f) * scale;
      if (byte < 0x80) return result;
      scale *= 128;
    }
    throw new Error('etcd range reply: varint longer than 10 bytes');
  }

  /** A varint as the decimal text of its exact unsigned 64-bit value. */
  varintText(): string {
    const buf = this.buf;
    let result = 0n;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new Error('etcd range reply: truncated varint');
      const byte = buf[this.pos++] as number;
      result |= BigInt(byte & 0x7f) << BigInt(7 * i);
      if (byte < 0x80) return BigInt.asUintN(64, result).toString();
    }
    throw new Error('etcd range reply: varint longer than 10 bytes');
  }

  /** The end of a length-delimited field that starts here. */
  lengthEnd(): number {
    const length = this.varint();
    const end = this.pos + length;
    if (end > this.end) throw new Error('etcd range reply: field runs past its message');
    return end;
  }

  skip(wireType: number): void {
    switch (wireType) {
      case 0:
        this.varint();
        return;
      case 1:
        this.pos += 8;
        break;
      case 2:
        this.pos = this.lengthEnd();
        return;
      case 5:
        this.pos += 4;
        break;
      default:
        throw new Error(`etcd range reply: unknown wire type ${wireType}`);
    }
    if (this.pos > this.end) throw new Error('etcd range reply: field runs past its message');
  }
}

/** The text of `buf[start, end)` when it is UTF-8, else undefined. */
function utf8(buf: Buffer, start: number, end: number): string | undefined {
  const text = buf.toString('utf8', start, end);
  // toString replaces malformed sequences with U+FFFD; a key holding one is checked strictly.
  return text.includes('\uFFFD') ? decodeKey(buf.subarray(start, end)) : text;
}

function keyValue(r: Reader, end: number): RawPair | undefined {
  const buf = r.buf;
  let key: string | undefined;
  let value = NO_VALUE;
  let lastIndex = 0;
  while (r.pos < end) {
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (field === 1 && wireType === 2) {
      const stop = r.lengthEnd();
      key = utf8(buf, r.pos, stop);
      r.pos = stop;
    } else if (field === 5 && wireType === 2) {
      const stop = r.lengthEnd();
      if (stop > r.pos) value = new Uint8Array(buf.buffer, buf.byteOffset + r.pos, stop - r.pos);
      r.pos = stop;
    } else if (field === 3 && wireType === 0) {
      lastIndex = r.varint();
    } else {
      r.skip(wireType);
    }
  }
  if (r.pos !== end) throw new Error('etcd range reply: a key-value runs past its end');
  return key === undefined ? undefined : { key, value, lastIndex };
}

function header(r: Reader, end: number): ServerMark {
  const out = { revision: 0, clusterId: '0', raftTerm: 0 };
  while (r.pos < end) {
    const tag = r.varint();
    if (tag === 8 /* field 1 (cluster_id), varint */) out.clusterId = r.varintText();
    else if (tag === 24 /* field 3 (revision), varint */) out.revision = r.varint();
    else if (tag === 32 /* field 4 (raft_term), varint */) out.raftTerm = r.varint();
    else r.skip(tag & 7);
  }
  if (r.pos !== end) throw new Error('etcd range reply: the header runs past its end');
  return out;
}

/** Decodes a serialized etcdserverpb.RangeResponse (gRPC's response deserializer). */
export function decodeRangeReply(buf: Buffer): RangeReply {
  const r = new Reader(buf, 0, buf.length);
  const pairs: RawPair[] = [];
  let head: ServerMark = { revision: 0, clusterId: '0', raftTerm: 0 };
  let count = 0;
  while (r.pos < r.end) {
    const tag = r.varint();
    if (tag === 18 /* field 2 (kvs), length-delimited */) {
      const end = r.lengthEnd();
      const pair = keyValue(r, end);
      if (pair) pairs.push(pair);
    } else if (tag === 10 /* field 1 (header), length-delimited */) {
      head = header(r, r.lengthEnd());
    } else if (tag === 32 /* field 4 (count), varint */) {
      count = r.varint();
    } else {
      r.skip(tag & 7);
    }
  }
  return { header: head, pairs, count };
}
