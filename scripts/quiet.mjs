// Runs a command (a build step before the demo or the bench) and prints its
// output only when it fails, so the first screen a newcomer sees is ours.
// Turbo's telemetry notice and update check are turned off for it.
import { spawnSync } from 'node:child_process';

const [command, ...args] = process.argv.slice(2);
if (!command) {
  console.error('usage: node scripts/quiet.mjs <command> [args...]');
  process.exit(2);
}
const result = spawnSync(command, args, {
  env: { ...process.env, TURBO_TELEMETRY_DISABLED: '1', TURBO_NO_UPDATE_NOTIFIER: '1' },
  encoding: 'utf8',
  maxBuffer: 64 * 1024 * 1024,
  shell: false,
});
if (result.error) {
  console.error(`${command}: ${result.error.message}`);
  process.exit(1);
}
if (result.status !== 0) {
  process.stdout.write(result.stdout ?? '');
  process.stderr.write(result.stderr ?? '');
  process.exit(result.status ?? 1);
}
