export { ELECT_ENV, LOCK_ENV } from './commands/lock.js';
export { EXIT_CODES, errorLine, exitCodeFor } from './exit-codes.js';
export { buildProgram, run } from './program.js';
