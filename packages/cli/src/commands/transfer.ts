import {
  InvalidArgumentError,
  KeyExistsError,
  KeyModifiedError,
  KeyNotFoundError,
  KVError,
  type KVPair,
  type Store,
} from '@kv/core';
import cliProgress from 'cli-progress';
import type { Context } from '../context.js';
import { EXIT_CODES } from '../exit-codes.js';
import { base64Of } from '../output.js';
import { stdinLines } from '../stdin.js';

/** One key to write: from a source store's listing or a dump line. */
interface Entry {
  key: string;
  value: Uint8Array;
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

/**
 * Writes one key to the destination, never blindly: an absent key is created only if still absent,
 * a different value is replaced (with --overwrite) only if it still has the lastIndex read here,
 * a key that already has the same bytes is skipped (so a rerun resumes).
 */
async function writeEntry(dst: Store, entry: Entry, options: TransferOptions): Promise<Outcome> {
  const { key, value } = entry;
  try {
    let current: KVPair | null = null;
    try {
      current = await dst.get(key, { consistent: true });
    } catch (error) {
      if (!KeyNotFoundError.isInstance(error)) throw error;
    }
    if (current && sameBytes(current.value, value)) return { key, result: 'skipped', reason: 'same value' };
    if (current && !options.overwrite) {
      return {
        key,
        result: 'skipped',
        reason: 'different value on the destination (--overwrite replaces it)',
      };
    }
    if (options.dryRun)
      return { key, result: 'copied', reason: current ? 'would overwrite' : 'would create' };
    await dst.atomicPut(key, value, current);
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

interface Summary {
  copied: number;
  skipped: number;
  failed: number;
}

/** Writes every entry with a few in flight; reports each outcome; returns the counts. */
async function transfer(
  ctx: Context,
  dst: Store,
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
    for (const f of failures) process.stderr.write(`${out.color.red('failed')}  ${f.key}: ${f.reason}\n`);
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

/** `kv copy SRC_URL DST_URL`: every key below --dir (default: all) from one store to another. */
export async function copyCommand(
  ctx: Context,
  src: string,
  dst: string,
  options: CopyOptions,
): Promise<number> {
  const summary = await ctx.withStore(
    (source) =>
      ctx.withStore(async (destination) => {
        const pairs = await source.list(options.dir ?? '', { consistent: true });
        return transfer(ctx, destination, pairs, pairs.length, options);
      }, dst),
    src,
  );
  return summary.failed > 0 ? EXIT_CODES.FALSE : EXIT_CODES.OK;
}

/** `kv dump [DIR]`: one `{"key","value"}` line per key, the value in base64. */
export async function dumpCommand(ctx: Context, dir: string | undefined): Promise<number> {
  const pairs = await ctx.withStore((store) => store.list(dir ?? '', { consistent: true }));
  for (const pair of pairs) ctx.out.record({ key: pair.key, value: base64Of(pair.value) });
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
    const { key, value } = (parsed ?? {}) as { key?: unknown; value?: unknown };
    if (typeof key !== 'string' || typeof value !== 'string' || !BASE64.test(value)) {
      throw new InvalidArgumentError(
        `dump line ${number} must be {"key": string, "value": base64 string}, got ${line.slice(0, 80)}`,
      );
    }
    yield { key, value: new Uint8Array(Buffer.from(value, 'base64')) };
  }
}

/** `kv restore < dump.ndjson`: the same careful writes as copy (create, skip same, --overwrite). */
export async function restoreCommand(ctx: Context, options: TransferOptions): Promise<number> {
  const summary = await ctx.withStore((store) =>
    transfer(ctx, store, dumpEntries(stdinLines()), undefined, options),
  );
  return summary.failed > 0 ? EXIT_CODES.FALSE : EXIT_CODES.OK;
}
