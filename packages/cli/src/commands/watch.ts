import type { Context } from '../context.js';
import { EXIT_CODES } from '../exit-codes.js';
import { pairJson } from '../output.js';

export interface WatchOptions {
  tree?: boolean;
}

/**
 * `kv watch KEY`: the current state, then one line per change, until Ctrl-C (exit 0).
 * `kv watch --tree DIR`: one line per change below DIR (`--json`: one line per event).
 */
export async function watchCommand(ctx: Context, key: string, options: WatchOptions): Promise<number> {
  const { out } = ctx;
  const signal = ctx.interrupted;
  await ctx.withStore(async (store) => {
    if (options.tree) {
      for await (const event of store.watchTree(key, { signal })) {
        if (out.json) {
          out.record({
            size: event.pairs.length,
            changes: event.changes.map((c) =>
              c.type === 'put' ? { type: 'put', ...pairJson(c.pair) } : { type: 'delete', key: c.key },
            ),
          });
          continue;
        }
        for (const change of event.changes) {
          if (change.type === 'put') {
            out.line(
              `${out.color.green('PUT')}     ${change.pair.key}  ${out.color.dim(`@${change.pair.lastIndex}`)}  ${out.cell(change.pair.value)}`,
            );
          } else {
            out.line(`${out.color.red('DELETE')}  ${change.key}`);
          }
        }
      }
      return;
    }
    let seen = false;
    let present = false;
    for await (const pair of store.watch(key, { signal })) {
      // The first state of an absent key is "absent", not a delete.
      const type = pair ? 'put' : seen && present ? 'delete' : 'absent';
      seen = true;
      present = pair !== null;
      if (out.json) {
        out.record(pair ? { type, ...pairJson(pair) } : { type, key });
      } else if (pair) {
        out.line(
          `${out.color.green('PUT')}     ${pair.key}  ${out.color.dim(`@${pair.lastIndex}`)}  ${out.cell(pair.value)}`,
        );
      } else {
        out.line(`${type === 'delete' ? out.color.red('DELETE') : out.color.dim('ABSENT')}  ${key}`);
      }
    }
  });
  return EXIT_CODES.OK;
}
