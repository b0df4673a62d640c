/**
 * Copies of the values in replies, carved out of shared slabs as Node's own Buffer pool does: a
 * listing of 10 000 small values makes about 60 allocations instead of 10 000 (each its own
 * backing store, which is most of the cost of decoding a listing). A value keeps at most its
 * slab alive; larger values get an allocation of their own.
 */
const SLAB_SIZE = 16 * 1024;
const SLAB_MAX = 2 * 1024;

let slab = new Uint8Array(0);
let used = 0;

/** A copy of `src` from `start` to its end, as a plain Uint8Array. */
export function copyBytes(src: Buffer, start: number): Uint8Array {
  const length = src.length - start;
  if (length > SLAB_MAX) {
    const out = new Uint8Array(length);
    src.copy(out, 0, start);
    return out;
  }
  if (used + length > slab.length) {
    slab = new Uint8Array(SLAB_SIZE);
    used = 0;
  }
  const out = new Uint8Array(slab.buffer, used, length);
  src.copy(slab, used, start);
  used += (length + 7) & ~7;
  return out;
}
