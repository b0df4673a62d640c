// Checks each public package the way a user installs it: publint on the
// package, @arethetypeswrong/cli on the packed tarball (ESM only), and that
// every relative link of a shipped Markdown file to a file of the package
// points at a file the package ships.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

/** Links of shipped Markdown files to files of the package that the tarball lacks. */
function unshippedLinks(path) {
  const packed = JSON.parse(
    execFileSync('npm', ['pack', '--dry-run', '--json'], {
      cwd: path,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }),
  );
  const files = new Set(packed[0].files.map((file) => file.path));
  const missing = [];
  for (const file of files) {
    if (!file.endsWith('.md')) continue;
    const text = readFileSync(join(path, file), 'utf8');
    for (const [, target] of text.matchAll(/\]\(([^)\s#]+)(?:#[^)]*)?\)/g)) {
      if (/^[a-z]+:/i.test(target)) continue;
      const inside = relative(path, resolve(path, dirname(file), target));
      if (inside.startsWith('..')) continue; // outside the package: the repository's, not the tarball's
      const shipped = files.has(inside) || [...files].some((f) => f.startsWith(`${inside}/`));
      if (!shipped) missing.push(`${file} links to ${target}, which the package does not ship`);
    }
  }
  return missing;
}

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
  const links = unshippedLinks(path);
  if (links.length > 0) {
    failed++;
    console.log(`FAIL ${pkg.name}: links\n  ${links.join('\n  ')}`);
  } else {
    console.log(`ok   ${pkg.name}: links`);
  }
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
