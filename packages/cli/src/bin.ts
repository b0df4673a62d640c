#!/usr/bin/env node
import { run } from './program.js';

const controller = new AbortController();
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    // The first one ends the command cleanly (a watch stops, a lock is released); a second one forces.
    if (controller.signal.aborted) process.exit(130);
    controller.abort();
  });
}
// `kv watch ... | head`: a closed pipe ends the command quietly.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') controller.abort();
});

process.exitCode = await run(process.argv.slice(2), controller.signal);
