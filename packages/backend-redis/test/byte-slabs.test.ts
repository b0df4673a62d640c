import { describe, expect, it } from 'vitest';
import { copyBytes, copyLater, copyNow } from '../src/byte-slabs.js';

/** A reply-like buffer: each value behind a few bytes of header, as MGET's values lie in a socket read. */
function replyOf(values: string[], gap: number): { chunk: Buffer; views: Buffer[]; starts: number[] } {
  const parts: Buffer[] = [];
  const views: { at: number; length: number }[] = [];
  let at = 0;
  for (const value of values) {
    const header = Buffer.alloc(gap, 0x24); // '$'
    parts.push(header, Buffer.from(value));
    views.push({ at, length: gap + Buffer.byteLength(value) });
    at += gap + Buffer.byteLength(value);
  }
  const chunk = Buffer.concat(parts);
  return {
    chunk,
    // As the decoder hands them out: a view of each data string (header included) in the chunk.
    views: views.map(({ at, length }) => chunk.subarray(at, at + length)),
    starts: views.map(() => gap),
  };
}

const text = (bytes: Uint8Array) => Buffer.from(bytes).toString();

describe('byte slabs', () => {
  it('copyLater: every value reads right after copyNow, and is a copy (the source can change)', () => {
    const values = Array.from({ length: 500 }, (_, i) => `value-${i}-${'x'.repeat(i % 97)}`);
    for (const gap of [0, 9, 40, 96, 97, 300]) {
      const { chunk, views, starts } = replyOf(values, gap);
      const out = views.map((view, i) => copyLater(view, starts[i] as number));
      copyNow();
      expect(out.map(text)).toEqual(values);
      chunk.fill(0);
      expect(out.map(text)).toEqual(values);
      for (const bytes of out) expect(bytes).toBeInstanceOf(Uint8Array);
    }
  });

  it('copyLater: values of other buffers, large values and empty ones, mixed with copyBytes', () => {
    const a = replyOf(['a1', 'a2', 'a3'], 12);
    const b = replyOf(['b1', 'y'.repeat(5_000), '', 'b4'], 12);
    const out: Uint8Array[] = [];
    out.push(copyLater(a.views[0] as Buffer, 12));
    out.push(copyLater(b.views[0] as Buffer, 12));
    out.push(copyLater(a.views[1] as Buffer, 12));
    out.push(copyLater(b.views[1] as Buffer, 12));
    out.push(copyLater(b.views[2] as Buffer, 12));
    // copyBytes copies a pending run first, so a view handed out before it reads right too.
    out.push(copyBytes(a.views[2] as Buffer, 12));
    out.push(copyLater(b.views[3] as Buffer, 12));
    copyNow();
    a.chunk.fill(0);
    b.chunk.fill(0);
    expect(out.map(text)).toEqual(['a1', 'b1', 'a2', 'y'.repeat(5_000), '', 'a3', 'b4']);
  });

  it('copyLater: runs across many slabs keep every value whole', () => {
    const values = Array.from({ length: 3_000 }, (_, i) => `${i}:${'z'.repeat(1 + (i % 1_500))}`);
    const { views, starts } = replyOf(values, 20);
    const out = views.map((view, i) => copyLater(view, starts[i] as number));
    copyNow();
    expect(out.map(text)).toEqual(values);
    // Views of one slab never overlap.
    const spans = out
      .filter((bytes) => bytes.byteLength > 0)
      .map((bytes) => ({
        buffer: bytes.buffer,
        from: bytes.byteOffset,
        to: bytes.byteOffset + bytes.byteLength,
      }));
    for (let i = 1; i < spans.length; i++) {
      const [p, q] = [spans[i - 1], spans[i]] as [(typeof spans)[0], (typeof spans)[0]];
      if (p.buffer === q.buffer) expect(q.from).toBeGreaterThanOrEqual(p.to);
    }
  });
});
