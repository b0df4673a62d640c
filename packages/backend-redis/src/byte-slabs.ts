/**
 * Copies of the values in replies, carved out of shared slabs as Node's own Buffer pool does: a
 * listing of 10 000 small values makes about 60 allocations instead of 10 000 (each its own
 * backing store, which is most of the cost of decoding a listing). A value keeps at most its
 * slab alive; larger values get an allocation of their own.
 *
 * The values of one reply lie one after another in the socket's read buffers, a few bytes apart.
 * `copyLater` hands out a value's view at once and gathers such neighbours into one run, copied by
 * a single `set` (bytes between them included, outside every view) when the run ends or at
 * `copyNow`: one copy per slab instead of one per value. Its views read right only after
 * `copyNow`, which the caller runs before it hands any of them out, with no `await` in between.
 * The bytes between neighbours (reply framing, the next data string's version and owner) sit in
 * the slab outside every view; a value's `.buffer` shows its slab, as with Node's Buffer pool.
 */
const SLAB_SIZE = 16 * 1024;
const SLAB_MAX = 2 * 1024;
/**
 * Bytes between two neighbours of a run at most: the reply's framing (`\r\n$2048\r\n`) and the
 * next data string's `<version>:<owner>:` (see redis-script.ts; an owner is a UUID).
 */
const FRAMING_MAX = 96;

let slab = new Uint8Array(0);
let used = 0;

/** The run `copyLater` is gathering: bytes `runStart`..`runEnd` of `runSource` go to `slab` at `runAt`. */
let runSource: ArrayBufferLike | undefined;
let runStart = 0;
let runEnd = 0;
let runAt = 0;

/** A copy of `src` from `start` to its end, as a plain Uint8Array. */
export function copyBytes(src: Buffer, start: number): Uint8Array {
  copyNow();
  const length = src.length - start;
  if (length > SLAB_MAX) return ownCopy(src, start);
  const out = reserve(length);
  src.copy(slab, out.byteOffset, start);
  return out;
}

/** As `copyBytes`, but the bytes arrive in the view only at the next `copyNow` (see above). */
export function copyLater(src: Buffer, start: number): Uint8Array {
  const length = src.length - start;
  if (length > SLAB_MAX) return ownCopy(src, start);
  const from = src.byteOffset + start;
  const to = from + length;
  if (
    src.buffer === runSource &&
    from >= runEnd &&
    from - runEnd <= FRAMING_MAX &&
    runAt + (to - runStart) <= slab.length
  ) {
    // The next value of the run: framing and all, the run grows up to its end.
    runEnd = to;
    used = (runAt + (to - runStart) + 7) & ~7;
    return new Uint8Array(slab.buffer, runAt + (from - runStart), length);
  }
  copyNow();
  const out = reserve(length);
  runSource = src.buffer;
  runStart = from;
  runEnd = to;
  runAt = out.byteOffset;
  return out;
}

/** Copies the run `copyLater` gathered into its place; the views it handed out read right from now on. */
export function copyNow(): void {
  if (runSource === undefined) return;
  slab.set(new Uint8Array(runSource, runStart, runEnd - runStart), runAt);
  runSource = undefined;
}

/** A view of `length` bytes at the slab's free end (a new slab when they do not fit). */
function reserve(length: number): Uint8Array {
  if (used + length > slab.length) {
    slab = new Uint8Array(SLAB_SIZE);
    used = 0;
  }
  const out = new Uint8Array(slab.buffer, used, length);
  used += (length + 7) & ~7;
  return out;
}

function ownCopy(src: Buffer, start: number): Uint8Array {
  const out = new Uint8Array(src.length - start);
  src.copy(out, 0, start);
  return out;
}
