// The repository URL lives once, in the root package.json. From it, every
// public package gets `repository` (with its directory), `homepage` and
// `bugs`, and its README's relative links become absolute GitHub links (a
// relative link breaks on the npm page). `node scripts/package-meta.mjs`
// writes them; `pnpm check:packages` fails when they are out of date.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, posix, relative } from 'node:path';
import { pathToFileURL } from 'node:url';

const root = new URL('..', import.meta.url).pathname;

/** `https://github.com/owner/name`, from the root package.json's repository. */
export function repositoryUrl() {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  const url = typeof pkg.repository === 'string' ? pkg.repository : pkg.repository?.url;
  const match = /github\.com[/:]([^/]+\/[^/.]+)/.exec(url ?? '');
  if (!match) throw new Error('the root package.json needs repository.url on github.com');
  return `https://github.com/${match[1]}`;
}

/** Every package of the workspace, private ones too: { dir, path, pkg }. */
export function workspacePackages() {
  const out = [];
  for (const dir of readdirSync(join(root, 'packages')).sort()) {
    const path = join(root, 'packages', dir);
    let pkg;
    try {
      pkg = JSON.parse(readFileSync(join(path, 'package.json'), 'utf8'));
    } catch {
      continue;
    }
    out.push({ dir, path, pkg });
  }
  return out;
}

/** Public packages: { dir, path, pkg }. */
export function publicPackages() {
  return workspacePackages().filter(({ pkg }) => !pkg.private);
}

/** The metadata fields a package should have. */
export function expectedMeta(dir, repo = repositoryUrl()) {
  return {
    repository: { type: 'git', url: `git+${repo}.git`, directory: `packages/${dir}` },
    homepage: `${repo}/tree/main/packages/${dir}#readme`,
    bugs: { url: `${repo}/issues` },
  };
}

const LINK = /\]\(([^)\s]+)\)/g;

/** A README with every relative link made absolute; `file` is the README's path in the repository. */
export function absoluteLinks(text, file, repo = repositoryUrl()) {
  return text.replace(LINK, (whole, target) => {
    if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('#')) return whole;
    const [path, hash] = target.split('#');
    const resolved = posix.normalize(posix.join(posix.dirname(file), path)).replace(/\/$/, '');
    return `](${repo}/blob/main/${resolved}${hash === undefined ? '' : `#${hash}`})`;
  });
}

/** Relative links left in a README. */
export function relativeLinks(text) {
  return [...text.matchAll(LINK)]
    .map((m) => m[1])
    .filter((target) => !/^[a-z][a-z0-9+.-]*:/i.test(target) && !target.startsWith('#'));
}

function write() {
  const repo = repositoryUrl();
  for (const { dir, path, pkg } of publicPackages()) {
    const meta = expectedMeta(dir, repo);
    const next = {};
    // Keep the field order readable: the metadata after `license`.
    for (const [key, value] of Object.entries(pkg)) {
      if (key in meta) continue;
      next[key] = value;
      if (key === 'license') Object.assign(next, meta);
    }
    if (!('repository' in next)) Object.assign(next, meta);
    writeFileSync(join(path, 'package.json'), `${JSON.stringify(next, null, 2)}\n`);
    const readme = join(path, 'README.md');
    if (existsSync(readme)) {
      writeFileSync(readme, absoluteLinks(readFileSync(readme, 'utf8'), relative(root, readme), repo));
    }
    console.log(`wrote ${pkg.name}`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) write();
