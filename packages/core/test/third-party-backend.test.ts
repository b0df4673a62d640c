import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createStore, registeredBackends, UnknownBackendError } from '../src/index.js';

// A fresh application directory whose node_modules holds third-party backend packages, as npm
// installs them; the packages import @kv/core (a link to this package's build) and register.
const app = mkdtempSync(join(tmpdir(), 'kv-third-party-'));
const modules = join(app, 'node_modules');
const core = join(dirname(fileURLToPath(import.meta.url)), '..');

function fakePackage(name: string, source: string): void {
  const dir = join(modules, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'package.json'),
    JSON.stringify({ name, version: '1.0.0', type: 'module', exports: './index.js' }),
  );
  writeFileSync(join(dir, 'index.js'), source);
}

const registering = (
  name: string,
) => `import { MemoryServer, memoryBackend, registerBackend } from '@kv/core';
registerBackend(memoryBackend('${name}', new MemoryServer()));
`;

let cwd: string;
beforeAll(() => {
  mkdirSync(join(modules, '@kv'), { recursive: true });
  symlinkSync(core, join(modules, '@kv', 'core'), 'dir');
  fakePackage('kv-backend-tpfixture', registering('tpfixture'));
  fakePackage('kv-backend-tpsilent', 'export const nothing = true;\n');
  fakePackage('kv-backend-tpbroken', "import 'kv-no-such-dependency';\n");
  fakePackage('@acme/kv-backend-tpscoped', registering('tpscoped'));
  cwd = process.cwd();
  process.chdir(app);
});

afterAll(() => {
  process.chdir(cwd);
  rmSync(app, { recursive: true, force: true });
});

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => error,
  );
}

describe('third-party backend packages', () => {
  it('createStore loads an installed kv-backend-<name> by itself', async () => {
    expect(registeredBackends()).not.toContain('tpfixture');
    const store = await createStore('tpfixture://local/app');
    const other = await createStore({ backend: 'tpfixture', prefix: 'app' });
    try {
      await store.put('k', 'v');
      expect(new TextDecoder().decode((await other.get('k')).value)).toBe('v');
    } finally {
      await store.close();
      await other.close();
    }
    expect(registeredBackends()).toContain('tpfixture');
  });

  it('a package that loads but registers nothing is named in the error', async () => {
    const error = await rejection(createStore('tpsilent://local'));
    expect(UnknownBackendError.isInstance(error), String(error)).toBe(true);
    expect((error as Error).message).toContain('kv-backend-tpsilent loaded but registered no backend');
  });

  it('a package whose own import fails surfaces that failure, not "unknown backend"', async () => {
    const error = await rejection(createStore('tpbroken://local'));
    expect(UnknownBackendError.isInstance(error)).toBe(false);
    expect(String((error as Error).message)).toContain('kv-no-such-dependency');
  });

  it('a scoped package is listed as installed, and registers when the application imports it', async () => {
    const error = await rejection(createStore('tpscoped://local'));
    expect(UnknownBackendError.isInstance(error)).toBe(true);
    const unknown = error as UnknownBackendError;
    expect(unknown.installed).toEqual(
      expect.arrayContaining(['@acme/kv-backend-tpscoped', 'kv-backend-tpfixture']),
    );
    expect(unknown.message).toContain('@acme/kv-backend-tpscoped');
    await import(pathToFileURL(join(modules, '@acme', 'kv-backend-tpscoped', 'index.js')).href);
    const store = await createStore('tpscoped://local');
    await store.close();
  });
});
