import { InvalidArgumentError, type KVPair, type WriteOptions } from '@kv/core';
import type { Context } from '../context.js';
import { parseDuration, parseIndex } from '../durations.js';
import { EXIT_CODES } from '../exit-codes.js';
import { pairJson } from '../output.js';
import { readStdin } from '../stdin.js';

/** `kv get KEY`: the value's bytes as stored (a newline added only on a terminal). */
export async function getCommand(ctx: Context, key: string): Promise<number> {
  const pair = await ctx.withStore((store) => store.get(key));
  if (ctx.out.json) {
    ctx.out.record(pairJson(pair));
  } else {
    ctx.out.stdout.write(pair.value);
    const last = pair.value[pair.value.byteLength - 1];
    if (ctx.out.stdout.isTTY && last !== 0x0a) ctx.out.line();
  }
  return EXIT_CODES.OK;
}

export interface PutOptions {
  ttl?: string;
  ifIndex?: string;
  create?: boolean;
}

/** `kv put KEY [VALUE | -]`: no value or `-` reads the value (any bytes) from stdin. */
export async function putCommand(
  ctx: Context,
  key: string,
  value: string | undefined,
  options: PutOptions,
): Promise<number> {
  if (options.create && options.ifIndex !== undefined) {
    throw new InvalidArgumentError('--create and --if-index exclude each other');
  }
  const write: WriteOptions = options.ttl === undefined ? {} : { ttl: parseDuration(options.ttl, '--ttl') };
  const index = options.ifIndex === undefined ? undefined : parseIndex(options.ifIndex, '--if-index');
  if (value === undefined && process.stdin.isTTY) {
    throw new InvalidArgumentError('put needs a VALUE, or `-` with the value on stdin');
  }
  const bytes = value === undefined || value === '-' ? await readStdin() : value;
  const pair = await ctx.withStore(async (store): Promise<KVPair | undefined> => {
    if (options.create) return store.atomicPut(key, bytes, null, write);
    if (index !== undefined) {
      const previous: KVPair = { key, value: new Uint8Array(), lastIndex: index };
      return store.atomicPut(key, bytes, previous, write);
    }
    await store.put(key, bytes, write);
    return undefined;
  });
  // The new lastIndex is what the next `--if-index` needs, so a CAS put prints it.
  if (ctx.out.json) ctx.out.record({ key, ...(pair ? { lastIndex: pair.lastIndex } : {}) });
  else if (pair) ctx.out.line(String(pair.lastIndex));
  return EXIT_CODES.OK;
}

export interface RmOptions {
  recursive?: boolean;
  ifIndex?: string;
}

/** `kv rm KEY` (a missing key is not an error), `kv rm -r DIR`. */
export async function rmCommand(ctx: Context, key: string, options: RmOptions): Promise<number> {
  if (options.recursive && options.ifIndex !== undefined) {
    throw new InvalidArgumentError('--recursive and --if-index exclude each other');
  }
  const index = options.ifIndex === undefined ? undefined : parseIndex(options.ifIndex, '--if-index');
  await ctx.withStore(async (store) => {
    if (options.recursive) await store.deleteTree(key);
    else if (index !== undefined)
      await store.atomicDelete(key, { key, value: new Uint8Array(), lastIndex: index });
    else await store.delete(key);
  });
  if (ctx.out.json) ctx.out.record({ key, deleted: true, recursive: options.recursive === true });
  return EXIT_CODES.OK;
}

export interface LsOptions {
  values?: boolean;
  long?: boolean;
}

/** `kv ls [DIR]`: every key below DIR, at any depth, sorted. */
export async function lsCommand(ctx: Context, dir: string | undefined, options: LsOptions): Promise<number> {
  const pairs = await ctx.withStore((store) => store.list(dir ?? ''));
  const { out } = ctx;
  if (out.json) {
    for (const pair of pairs) out.record(pairJson(pair));
  } else if (options.long || options.values) {
    const header = [
      'KEY',
      ...(options.long ? ['LAST INDEX', 'SIZE'] : []),
      ...(options.values ? ['VALUE'] : []),
    ];
    const rows = pairs.map((p) => [
      out.color.bold(p.key),
      ...(options.long ? [String(p.lastIndex), String(p.value.byteLength)] : []),
      ...(options.values ? [out.cell(p.value)] : []),
    ]);
    out.table(header, rows);
  } else {
    for (const pair of pairs) out.line(pair.key);
  }
  return EXIT_CODES.OK;
}

/** `kv exists KEY`: prints true/false; exits 0 when present, 1 when absent. */
export async function existsCommand(ctx: Context, key: string): Promise<number> {
  const present = await ctx.withStore((store) => store.exists(key));
  if (ctx.out.json) ctx.out.record({ key, exists: present });
  else ctx.out.line(String(present));
  return present ? EXIT_CODES.OK : EXIT_CODES.FALSE;
}
