import {
  type BaseStore,
  InvalidArgumentError,
  KeyExistsError,
  KeyModifiedError,
  KeyNotFoundError,
  KVError,
  type KVPair,
  NotSupportedError,
  type ReadOptions,
  type Store,
  type WriteOptions,
} from '@kv/core';
import cliProgress from 'cli-progress';
import type { Context } from '../context.js';
import { nextTick } from '../event-loop.js';
import { EXIT_CODES } from '../exit-codes.js';
import { base64Of } from '../output.js';
import { stdinLines } from '../stdin.js';

/** One key to write: from a source store's listing or a dump line. */
interface Entry {
  key: string;
  value: Uint8Array;
  /** ms left to live on the source, when it has a ttl and the source can tell. */
  ttl?: number;
}

export interface TransferOptions {
  dryRun?: boolean;
  overwrite?: boolean;
}

type Result = 'copied' | 'skipped' | 'failed';

interface Outcome {
  key: string;
  result: Result;
  reason: string;
}

/** Keys written at once: enough to hide a network round trip, few enough to stay gentle. */
const PARALLEL = 8;

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.compare(a, b) === 0;
}

/** Where the entries go, with what was there when the transfer started. */
interface Destination {
  store: Store;
  /** The destination's pairs, read once (consistent) before the first write. */
  before: Map<string, KVPair>;
}

/** The ttl to write: what the source had left, at least the destination's minimum; none if it has no ttls. */
function ttlFor(dst: Store, entry: Entry): WriteOptions {
  if (entry.ttl === undefined || !dst.capabilities.ttl) return {};
  return { ttl: Math.max(entry.ttl, dst.capabilities.minTtl) };
}

/**
 * Writes one key to the destination, never blindly: an absent key is created only if still absent,
 * a different value is replaced (with --overwrite) only if it still has the lastIndex read before
 * the transfer began, a key that already has the same bytes is skipped (so a rerun resumes).
 */
async function writeEntry(dst: Destination, entry: Entry, options: TransferOptions): Promise<Outcome> {
  const { key, value } = entry;
  const current = dst.before.get(key) ?? null;
  if (current && sameBytes(current.value, value)) return { key, result: 'skipped', reason: 'same value' };
  if (current && !options.overwrite) {
    return {
      key,
      result: 'skipped',
      reason: 'different value on the destination (--overwrite replaces it)',
    };
  }
  if (options.dryRun) return { key, result: 'copied', reason: current ? 'would overwrite' : 'would create' };
  try {
    await dst.store.atomicPut(key, value, current, ttlFor(dst.store, entry));
    return { key, result: 'copied', reason: current ? 'overwritten' : 'created' };
  } catch (error) {
    if (
      KeyExistsError.isInstance(error) ||
      KeyModifiedError.isInstance(error) ||
      KeyNotFoundError.isInstance(error)
    ) {
      return { key, result: 'skipped', reason: 'changed on the destination during the copy' };
    }
    if (KVError.isInstance(error))
      return { key, result: 'failed', reason: `${error.code}: ${error.message}` };
    throw error;
  }
}

/** The destination with its current pairs below `dir`. */
async function destination(store: Store, dir: string): Promise<Destination> {
  const pairs = await store.list(dir, { consistent: store.capabilities.consistentRead });
  return { store, before: new Map(pairs.map((p) => [p.key, p])) };
}

interface Summary {
  copied: number;
  skipped: number;
  failed: number;
}

/** Writes every entry with a few in flight; reports each outcome; returns the counts. */
async function transfer(
  ctx: Context,
  dst: Destination,
  entries: AsyncIterable<Entry> | Iterable<Entry>,
  total: number | undefined,
  options: TransferOptions,
): Promise<Summary> {
  const { out } = ctx;
  const summary: Summary = { copied: 0, skipped: 0, failed: 0 };
  const showBar = !out.json && total !== undefined && process.stderr.isTTY === true;
  const bar = showBar
    ? new cliProgress.SingleBar(
        {
          stream: process.stderr,
          format: ' {bar} {percentage}% | {value}/{total} keys | {eta_formatted} left',
          hideCursor: true,
        },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  bar?.start(total ?? 0, 0);
  const failures: Outcome[] = [];
  const iterator =
    Symbol.asyncIterator in entries
      ? (entries as AsyncIterable<Entry>)[Symbol.asyncIterator]()
      : (entries as Iterable<Entry>)[Symbol.iterator]();
  const worker = async () => {
    while (!ctx.interrupted.aborted) {
      const next = await iterator.next();
      if (next.done) return;
      const outcome = await writeEntry(dst, next.value, options);
      summary[outcome.result]++;
      if (outcome.result === 'failed') failures.push(outcome);
      if (out.json) out.record(outcome);
      bar?.increment();
      // An embedded destination answers in microtasks only: let Ctrl-C and the progress bar's timer in.
      if ((summary.copied + summary.skipped + summary.failed) % 64 === 0) await nextTick();
    }
  };
  try {
    await Promise.all(Array.from({ length: PARALLEL }, worker));
  } finally {
    bar?.stop();
  }
  if (out.json) {
    out.record({ summary: { ...summary, dryRun: options.dryRun === true } });
  } else {
    for (const f of failures) process.stderr.write(`${out.errColor.red('failed')}  ${f.key}: ${f.reason}\n`);
    const verb = options.dryRun ? 'would copy' : 'copied';
    out.line(
      `${out.color.green(`${verb} ${summary.copied}`)}, skipped ${summary.skipped}, ${
        summary.failed > 0 ? out.color.red(`failed ${summary.failed}`) : 'failed 0'
      }`,
    );
  }
  return summary;
}

export interface CopyOptions extends TransferOptions {
  dir?: string;
}

/** A consistent read where the backend has one. */
function latest(store: Store): ReadOptions {
  return store.capabilities.consistentRead ? { consistent: true } : {};
}

/** The source's pairs below `dir`, each with the ttl it has left when the backend can tell. */
async function* withTtls(store: Store, pairs: KVPair[]): AsyncGenerator<Entry> {
  const source = store as Store & Partial<Pick<BaseStore, 'remainingTtl'>>;
  let tells = typeof source.remainingTtl === 'function';
  for (const pair of pairs) {
    let ttl: number | undefined;
    if (tells) {
      try {
        ttl = await source.remainingTtl?.(pair.key);
      } catch (error) {
        // A store that cannot tell: keys go without ttl. Anything else stops the copy, as a read would.
        if (!NotSupportedError.isInstance(error)) throw error;
        tells = false;
      }
    }
    yield { key: pair.key, value: pair.value, ...(ttl === undefined ? {} : { ttl }) };
  }
}

/** `kv copy SRC_URL DST_URL`: every key below --dir (default: all) from one store to another. */
export async function copyCommand(
  ctx: Context,
  src: string,
  dst: string,
  options: CopyOptions,
): Promise<number> {
  const dir = options.dir ?? '';
  const summary = await ctx.withStore(
    (source) =>
      ctx.withStore(async (target) => {
        const pairs = await source.list(dir, latest(source));
        const to = await destination(target, dir);
        return transfer(ctx, to, withTtls(source, pairs), pairs.length, options);
      }, dst),
    src,
  );
  return summary.failed > 0 ? EXIT_CODES.FALSE : EXIT_CODES.OK;
}

/** `kv dump [DIR]`: one `{"key","value"}` line per key, the value in base64 (`ttl`: ms left, if any). */
export async function dumpCommand(ctx: Context, dir: string | undefined): Promise<number> {
  const url = ctx.storeUrl();
  await ctx.withStore(async (store) => {
    const pairs = await store.list(dir ?? '', latest(store));
    for await (const entry of withTtls(store, pairs)) {
      ctx.out.record({
        key: entry.key,
        value: base64Of(entry.value),
        ...(entry.ttl === undefined ? {} : { ttl: entry.ttl }),
      });
    }
  }, url);
  return EXIT_CODES.OK;
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** The entries of a dump on stdin; a malformed line stops the restore with its line number. */
async function* dumpEntries(lines: AsyncIterable<string>): AsyncGenerator<Entry> {
  let number = 0;
  for await (const line of lines) {
    number++;
    if (line.trim() === '') continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch (error) {
      throw new InvalidArgumentError(`dump line ${number} is not JSON`, { cause: error });
    }
    const { key, value, ttl } = (parsed ?? {}) as { key?: unknown; value?: unknown; ttl?: unknown };
    if (
      typeof key !== 'string' ||
      typeof value !== 'string' ||
      !BASE64.test(value) ||
      (ttl !== undefined && !(Number.isSafeInteger(ttl) && (ttl as number) > 0))
    ) {
      throw new InvalidArgumentError(
        `dump line ${number} must be {"key": string, "value": base64 string, "ttl"?: positive ms}, got ${line.slice(0, 80)}`,
      );
    }
    yield {
      key,
      value: new Uint8Array(Buffer.from(value, 'base64')),
      ...(ttl === undefined ? {} : { ttl: ttl as number }),
    };
  }
}

/** `kv restore < dump.ndjson`: the same careful writes as copy (create, skip same, --overwrite). */
export async function restoreCommand(ctx: Context, options: TransferOptions): Promise<number> {
  const summary = await ctx.withStore(async (store) =>
    transfer(ctx, await destination(store, ''), dumpEntries(stdinLines()), undefined, options),
  );
  return summary.failed > 0 ? EXIT_CODES.FALSE : EXIT_CODES.OK;
}
