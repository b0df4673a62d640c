// Checks each public package the way a user installs it: publint on the
// package and @arethetypeswrong/cli on the packed tarball (ESM only).
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const bin = (name) => join(root, 'node_modules', '.bin', name);
let failed = 0;
for (const dir of readdirSync(join(root, 'packages')).sort()) {
  const path = join(root, 'packages', dir);
  let pkg;
  try {
    pkg = JSON.parse(readFileSync(join(path, 'package.json'), 'utf8'));
  } catch {
    continue;
  }
  if (pkg.private) continue;
  for (const [tool, args] of [
    ['publint', ['--strict', path]],
    ['attw', ['--pack', path, '--profile', 'esm-only', '--format', 'table-flipped']],
  ]) {
    try {
      execFileSync(bin(tool), args, { stdio: 'pipe', encoding: 'utf8' });
      console.log(`ok   ${pkg.name}: ${tool}`);
    } catch (error) {
      failed++;
      console.log(`FAIL ${pkg.name}: ${tool}\n${error.stdout ?? ''}${error.stderr ?? ''}`);
    }
  }
}
if (failed > 0) {
  console.log(`${failed} package check(s) failed`);
  process.exit(1);
}
