import { createRequire } from 'node:module';
import { isAbortError } from '@kv/core';
import { Command, CommanderError } from 'commander';
import { benchCommand } from './commands/bench.js';
import { doctorCommand } from './commands/doctor.js';
import { existsCommand, getCommand, lsCommand, putCommand, rmCommand } from './commands/keys.js';
import { ELECT_ENV, electCommand, LOCK_ENV, lockCommand } from './commands/lock.js';
import { copyCommand, dumpCommand, restoreCommand } from './commands/transfer.js';
import { watchCommand } from './commands/watch.js';
import { Context, type GlobalOptions } from './context.js';
import { EXIT_CODES, errorLine, exitCodeFor } from './exit-codes.js';

const EXIT_HELP = `
Exit status:
  0   success
  1   exists: the key is absent; copy, restore: some keys failed; doctor: a check warns
  2   usage error                3   internal error
  10  KEY_NOT_FOUND     11  KEY_EXISTS         12  KEY_MODIFIED       13  INVALID_KEY
  14  INVALID_ARGUMENT  15  VALUE_TOO_LARGE    16  NOT_SUPPORTED      17  UNAVAILABLE
  18  UNAUTHENTICATED   19  PERMISSION_DENIED  20  LOCK_LOST          21  CLOSED
  22  UNKNOWN_BACKEND   23  INTEGRITY          24  INVALID_VALUE
  130 stopped by Ctrl-C before the work was done (copy, restore, bench, a lock wait)
  lock, elect: the command's own status (128+N if killed by signal N, 127 if it could
  not start, 20 LOCK_LOST if it was killed because the lock or leadership was lost)

The store: --url URL or KV_URL, any URL createStore takes, e.g. sqlite:./kv.db,
etcd://127.0.0.1:2379/app, redis://127.0.0.1:6379/app. The backend package
(@kv/backend-<name>) must be installed next to @kv/cli.`;

const { version } = createRequire(import.meta.url)('../package.json') as { version: string };

function examples(...lines: string[]): string {
  return `\nExamples:\n${lines.map((l) => `  $ ${l}`).join('\n')}`;
}

type Action = (ctx: Context, ...args: never[]) => Promise<number>;

/** The `kv` program. `run` decides what becomes of the exit status. */
export function buildProgram(interrupted: AbortSignal, setStatus: (status: number) => void): Command {
  const program = new Command('kv');
  program
    .description('Read, change, watch and lock any kv store; copy, dump and restore between backends.')
    .version(version, '-V, --version')
    .option('--url <url>', 'the store URL (default: $KV_URL)')
    .option('--json', 'machine-readable output: one JSON object per line')
    .addHelpText('after', EXIT_HELP)
    .showHelpAfterError('(add --help for usage)')
    .exitOverride()
    .configureOutput({ writeErr: (text) => process.stderr.write(text) });

  const action =
    (fn: Action) =>
    async (...args: unknown[]) => {
      const command = args[args.length - 1] as Command;
      const ctx = new Context(command.optsWithGlobals<GlobalOptions>(), interrupted);
      const status = await (fn as (ctx: Context, ...rest: unknown[]) => Promise<number>)(
        ctx,
        ...args.slice(0, -1),
      );
      // A command that stopped early on Ctrl-C (copy, restore, bench) did not finish: say so.
      const cut = interrupted.aborted && status === EXIT_CODES.OK && stopsEarly.has(command.name());
      setStatus(cut ? EXIT_CODES.INTERRUPTED : status);
    };

  program
    .command('get')
    .description('print the value of KEY (its exact bytes; a newline is added only on a terminal)')
    .argument('<key>')
    .addHelpText(
      'after',
      examples('kv get config/db/url', 'kv get --json config/db/url', 'kv get blobs/logo > logo.png'),
    )
    .action(action((ctx, key: string) => getCommand(ctx, key)));

  program
    .command('put')
    .description('set KEY to VALUE; with `-` or no VALUE, the value is read from stdin (any bytes)')
    .argument('<key>')
    .argument('[value]', 'the value, or - for stdin')
    .option('--ttl <duration>', 'expire the key after this long (1500, 1500ms, 10s, 5m, 1h)')
    .option(
      '--if-index <n>',
      'compare-and-swap: write only if the key is still at this lastIndex; prints the new one',
    )
    .option('--create', 'write only if the key does not exist yet (exit 11 KEY_EXISTS otherwise)')
    .addHelpText(
      'after',
      examples(
        'kv put config/db/url postgres://db-1/app',
        'kv put blobs/logo - < logo.png',
        'kv put sessions/u42 alive --ttl 30s',
        'kv put --create jobs/nightly/owner worker-7',
        'kv put --if-index 41 counters/builds 12',
      ),
    )
    .action(
      action((ctx, key: string, value: string | undefined, opts: object) =>
        putCommand(ctx, key, value, opts),
      ),
    );

  program
    .command('rm')
    .description('delete KEY (a missing key is not an error); -r deletes DIR and everything below it')
    .argument('<key>')
    .option('-r, --recursive', 'delete the directory KEY and every key below it')
    .option('--if-index <n>', 'delete only if the key is still at this lastIndex')
    .addHelpText('after', examples('kv rm config/db/url', 'kv rm -r config/db'))
    .action(action((ctx, key: string, opts: object) => rmCommand(ctx, key, opts)));

  program
    .command('ls')
    .description('list every key below DIR (default: the whole store), at any depth, sorted')
    .argument('[dir]')
    .option('--values', 'show values')
    .option('-l, --long', 'show lastIndex and size')
    .addHelpText('after', examples('kv ls config', 'kv ls -l --values config', 'kv ls --json'))
    .action(action((ctx, dir: string | undefined, opts: object) => lsCommand(ctx, dir, opts)));

  program
    .command('exists')
    .description('print true or false; exit 0 when KEY exists, 1 when it does not')
    .argument('<key>')
    .addHelpText('after', examples('kv exists config/db/url && echo configured'))
    .action(action((ctx, key: string) => existsCommand(ctx, key)));

  program
    .command('watch')
    .description('print the state of KEY, then one line per change, until Ctrl-C')
    .argument('<key>', 'the key (with --tree: the directory)')
    .option('--tree', 'watch every key below the directory KEY')
    .addHelpText(
      'after',
      examples('kv watch config/db/url', 'kv watch --tree config', 'kv watch --json --tree config | jq .'),
    )
    .action(action((ctx, key: string, opts: object) => watchCommand(ctx, key, opts)));

  program
    .command('lock')
    .description(
      `run COMMAND while holding the lock KEY; the fencing token is in $${LOCK_ENV.token}. The command is killed if the lock is lost; the lock is released when it exits`,
    )
    .argument('<key>')
    .argument('<command...>', 'the command and its arguments, after --')
    .option('--ttl <duration>', 'how soon a dead holder frees the lock (default 15s)')
    .option('--value <text>', 'stored at the lock key while held (e.g. the host name)')
    .option('--kill-grace <duration>', 'after a loss: SIGTERM, then SIGKILL this long after', '10s')
    .addHelpText(
      'after',
      examples(
        'kv lock jobs/nightly -- ./nightly.sh',
        `kv lock --ttl 30s jobs/deploy -- sh -c 'deploy --fence "$${LOCK_ENV.token}"'`,
      ),
    )
    .action(
      action((ctx, key: string, command: string[], opts: object) => lockCommand(ctx, key, command, opts)),
    );

  program
    .command('elect')
    .description(
      `campaign for leadership of KEY (the campaign() recipe) and run COMMAND while leading; the fencing token is in $${ELECT_ENV.token}. The command is killed if leadership is lost; this candidate resigns when it exits, so a waiting one leads at once`,
    )
    .argument('<key>')
    .argument('<command...>', 'the command and its arguments, after --')
    .option('--ttl <duration>', 'how soon a dead leader is replaced (default 15s)')
    .option('--value <text>', 'stored at KEY while leading: what observers see (e.g. the host name)')
    .option('--kill-grace <duration>', 'after a loss: SIGTERM, then SIGKILL this long after', '10s')
    .addHelpText(
      'after',
      examples(
        'kv elect --value "$(hostname)" election/scheduler -- ./scheduler',
        `kv elect --ttl 5s election/cron -- sh -c 'run-jobs --fence "$${ELECT_ENV.token}"'`,
        'kv watch election/scheduler    # who leads now, and every change',
      ),
    )
    .action(
      action((ctx, key: string, command: string[], opts: object) => electCommand(ctx, key, command, opts)),
    );

  program
    .command('copy')
    .description(
      'copy every key from one store to another (values byte for byte), with CAS on the destination: an existing different value is skipped unless --overwrite, a key changed during the copy is never overwritten; a rerun resumes',
    )
    .argument('<src-url>')
    .argument('<dst-url>')
    .option('--dir <dir>', 'copy only the keys below this directory')
    .option('--dry-run', 'show what would be copied, write nothing')
    .option('--overwrite', 'replace destination keys whose value differs')
    .addHelpText(
      'after',
      examples(
        'kv copy sqlite:./kv.db etcd://127.0.0.1:2379/app',
        'kv copy --dir config --dry-run redis://127.0.0.1:6379/app sqlite:./backup.db',
      ),
    )
    .action(action((ctx, src: string, dst: string, opts: object) => copyCommand(ctx, src, dst, opts)));

  program
    .command('dump')
    .description('write every key below DIR as NDJSON lines {"key", "value" (base64)}')
    .argument('[dir]')
    .addHelpText('after', examples('kv dump > backup.ndjson', 'kv dump config > config.ndjson'))
    .action(action((ctx, dir: string | undefined) => dumpCommand(ctx, dir)));

  program
    .command('restore')
    .description('write the keys of a dump read from stdin, with the same rules as copy')
    .option('--dry-run', 'show what would be written, write nothing')
    .option('--overwrite', 'replace keys whose value differs')
    .addHelpText(
      'after',
      examples('kv restore < backup.ndjson', 'kv dump | kv --url sqlite:./copy.db restore'),
    )
    .action(action((ctx, opts: object) => restoreCommand(ctx, opts)));

  program
    .command('doctor')
    .description(
      'connect and report: server version, round trip, the capabilities table, and checks of what bites users (Redis keyspace notifications, Consul session_ttl_min, etcd minimum lease, clock skew); what cannot be checked on a backend is shown as skip with the reason',
    )
    .addHelpText(
      'after',
      examples(
        'kv --url redis://127.0.0.1:6379/app doctor',
        'kv doctor --json | jq \'.checks[] | select(.status != "ok")\'',
      ),
    )
    .action(action((ctx) => doctorCommand(ctx)));

  program
    .command('bench')
    .description(
      'measure the store at --url: put, get, CAS, list, lock + unlock and put -> watch event, one call at a time (ops/s, p50, p99); writes only below its own directory, removed at the end',
    )
    .option('--ops <n>', 'operations per figure', '200')
    .option('--lock-ops <n>', 'lock + unlock rounds', '50')
    .option('--value-size <bytes>', 'size of each value', '100')
    .option('--dir <dir>', 'the directory to write below (default: kv-bench-<random>)')
    .addHelpText(
      'after',
      examples(
        'kv --url etcd://127.0.0.1:2379/app bench',
        'kv bench --ops 5000 --value-size 1024',
        "kv bench --json | jq -r '[.name, .opsPerSecond, .p99Ms] | @tsv'",
      ),
    )
    .action(action((ctx, opts: object) => benchCommand(ctx, opts)));

  return program;
}

/** Commands that end early on Ctrl-C with part of their work undone (watch ends normally on it). */
const stopsEarly = new Set(['copy', 'restore', 'bench']);

/** Runs `kv` with these arguments (without node and the script) and resolves to its exit status. */
export async function run(argv: readonly string[], interrupted: AbortSignal): Promise<number> {
  let status: number = EXIT_CODES.OK;
  const program = buildProgram(interrupted, (s) => {
    status = s;
  });
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return status;
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help and --version are not errors; everything else commander throws is a usage error.
      return error.exitCode === 0 ? EXIT_CODES.OK : EXIT_CODES.USAGE;
    }
    // Ctrl-C during a call: the call stopped (nothing half-applied), exit as a shell does for SIGINT.
    if (isAbortError(error) && interrupted.aborted) return EXIT_CODES.INTERRUPTED;
    process.stderr.write(`${errorLine(error)}\n`);
    return exitCodeFor(error);
  }
}
