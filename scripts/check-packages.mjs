// Checks each public package the way a user installs it: publint on the
// package and @arethetypeswrong/cli on the packed tarball (ESM only), then,
// on the packed tarball itself:
// - every source map (.js.map and .d.ts.map) resolves: its sources are in the
//   tarball or embedded, so stack traces and go-to-definition lead somewhere;
// - `repository`, `homepage` and `bugs` match the root's repository URL
//   (`node scripts/package-meta.mjs` writes them);
// - the README has no relative links (they break on the npm page), and the
//   relative links of other shipped Markdown files point at shipped files;
// - the public types import only packages the user gets with their types
//   (a dependency that ships types, or its @types package as a dependency),
//   so a project with `skipLibCheck: false` compiles.
// And every changeset in .changeset names packages of this repository and never mixes an
// ignored package with released ones (`changeset version` would refuse it).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import {
  expectedMeta,
  publicPackages,
  relativeLinks,
  repositoryUrl,
  workspacePackages,
} from './package-meta.mjs';

const root = new URL('..', import.meta.url).pathname;
const bin = (name) => join(root, 'node_modules', '.bin', name);
const isDeepStrictEqual = (a, b) => JSON.stringify(a) === JSON.stringify(b);
let failed = 0;
const report = (name, check, problems) => {
  if (problems.length === 0) {
    console.log(`ok   ${name}: ${check}`);
    return;
  }
  failed++;
  console.log(`FAIL ${name}: ${check}\n${problems.map((p) => `  - ${p}`).join('\n')}`);
};

const repo = repositoryUrl();
const work = mkdtempSync(join(tmpdir(), 'kv-check-packages-'));
try {
  for (const { dir, path, pkg } of publicPackages()) {
    const packed = JSON.parse(
      execFileSync('pnpm', ['pack', '--json', '--pack-destination', work], {
        cwd: path,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );
    for (const [tool, args] of [
      ['publint', ['--strict', path]],
      ['attw', [packed.filename, '--profile', 'esm-only', '--format', 'table-flipped']],
    ]) {
      try {
        execFileSync(bin(tool), args, { stdio: 'pipe', encoding: 'utf8' });
        report(pkg.name, tool, []);
      } catch (error) {
        report(pkg.name, tool, [`${error.stdout ?? ''}${error.stderr ?? ''}`]);
      }
    }
    const unpacked = join(work, dir);
    execFileSync('mkdir', ['-p', unpacked]);
    execFileSync('tar', ['-xzf', packed.filename, '-C', unpacked]);
    const files = new Set(packed.files.map((f) => f.path));
    const read = (file) => readFileSync(join(unpacked, 'package', file), 'utf8');

    const mapProblems = [];
    for (const file of files) {
      if (!file.endsWith('.map')) continue;
      const map = JSON.parse(read(file));
      map.sources.forEach((source, i) => {
        const target = posix.normalize(posix.join(posix.dirname(file), map.sourceRoot ?? '', source));
        if (!files.has(target) && typeof map.sourcesContent?.[i] !== 'string') {
          mapProblems.push(`${file} points at ${target}, which is not in the package`);
        }
      });
    }
    report(pkg.name, 'source maps resolve in the tarball', mapProblems);

    const manifest = JSON.parse(read('package.json'));
    const meta = expectedMeta(dir, repo);
    const metaProblems = Object.entries(meta)
      .filter(([key, value]) => !isDeepStrictEqual(manifest[key], value))
      .map(([key, value]) => `${key} is ${JSON.stringify(manifest[key])}, expected ${JSON.stringify(value)}`);
    if (metaProblems.length > 0) metaProblems.push('run `node scripts/package-meta.mjs`');
    report(pkg.name, 'repository, homepage, bugs', metaProblems);

    const readme = files.has('README.md') ? read('README.md') : '';
    report(
      pkg.name,
      'README links work on npm',
      relativeLinks(readme).map((link) => `relative link ${link} (run \`node scripts/package-meta.mjs\`)`),
    );

    // Other shipped Markdown (guides, the kit's README) may link relatively to files of the package:
    // those files must be in the tarball.
    const linkProblems = [];
    for (const file of files) {
      if (!file.endsWith('.md') || file === 'README.md') continue;
      for (const target of relativeLinks(read(file))) {
        const inside = posix.normalize(posix.join(posix.dirname(file), target.split('#')[0]));
        if (inside.startsWith('..')) continue; // outside the package: the repository's, not the tarball's
        const shipped =
          files.has(inside) || [...files].some((f) => f.startsWith(`${inside.replace(/\/$/, '')}/`));
        if (!shipped) linkProblems.push(`${file} links to ${target}, which the package does not ship`);
      }
    }
    report(pkg.name, 'links of shipped Markdown files resolve in the tarball', linkProblems);

    const typeProblems = [];
    const deps = { ...manifest.dependencies, ...manifest.peerDependencies };
    const seen = new Set();
    for (const file of files) {
      if (!file.endsWith('.d.ts')) continue;
      for (const [, spec] of read(file).matchAll(/(?:from\s+|import\(\s*)['"]([^'"]+)['"]/g)) {
        if (spec.startsWith('.') || spec.startsWith('node:')) continue;
        const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0];
        if (seen.has(name)) continue;
        seen.add(name);
        if (!(name in deps)) {
          typeProblems.push(`${file} imports ${name}, which is not a dependency`);
          continue;
        }
        const typesPackage = `@types/${name.replace(/^@([^/]+)\//, '$1__')}`;
        if (shipsTypes(path, name) || typesPackage in deps) continue;
        typeProblems.push(`${file} imports ${name}, whose types (${typesPackage}) are not a dependency`);
      }
    }
    report(pkg.name, 'public types need no extra @types packages', typeProblems);
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}

/** Whether an installed package (as seen from `from`, a package directory) carries its own type declarations. */
function shipsTypes(from, name) {
  let manifestPath;
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name, 'package.json');
    if (existsSync(candidate)) {
      manifestPath = candidate;
      break;
    }
    if (dirname(dir) === dir) return false;
  }
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
  if (manifest.types || manifest.typings) return true;
  const exported = JSON.stringify(manifest.exports ?? {});
  return exported.includes('"types"') || existsSync(join(dirname(manifestPath), 'index.d.ts'));
}

// Every changeset names known packages, and none mixes an ignored package (config `ignore`) with
// released ones: `changeset version` refuses such a file, so a release would stop there.
{
  const config = JSON.parse(readFileSync(join(root, '.changeset', 'config.json'), 'utf8'));
  const ignored = new Set(config.ignore ?? []);
  const known = new Set(workspacePackages().map(({ pkg }) => pkg.name));
  const problems = [];
  for (const file of readdirSync(join(root, '.changeset')).filter(
    (f) => f.endsWith('.md') && f !== 'README.md',
  )) {
    const head = /^---\n([\s\S]*?)^---/m.exec(readFileSync(join(root, '.changeset', file), 'utf8'));
    if (!head) {
      problems.push(`${file}: no front matter`);
      continue;
    }
    const names = [...head[1].matchAll(/^["']?([^"':]+)["']?\s*:\s*(major|minor|patch)\s*$/gm)].map(
      (m) => m[1],
    );
    for (const name of names) if (!known.has(name)) problems.push(`${file}: ${name} is not a package here`);
    const some = names.filter((name) => ignored.has(name));
    if (some.length > 0 && some.length < names.length) {
      problems.push(`${file}: mixes ignored ${some.join(', ')} with released packages: split it in two`);
    }
  }
  report('.changeset', 'changesets name known packages and never mix ignored with released ones', problems);
}

if (failed > 0) {
  console.log(`${failed} package check(s) failed`);
  process.exit(1);
}
