import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createStore } from '@kv/core';
import { afterAll, describe, expect, it } from 'vitest';
import '@kv/backend-sqlite';

const worker = fileURLToPath(new URL('./fixtures/worker.mjs', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'kv-sqlite-crash-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('sqlite: a writer killed mid-transaction', () => {
  it('loses nothing it reported committed; the file opens and takes writes afterwards', async () => {
    const path = join(dir, 'crash.db');
    const child = spawn(process.execPath, [worker, 'writer', path], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    const exited = new Promise((resolve) => child.on('exit', resolve));
    let committed = -1;
    const target = 300;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`the writer stalled at ${committed}; ${stderr}`)),
        30_000,
      );
      createInterface({ input: child.stdout }).on('line', (line) => {
        committed = (JSON.parse(line) as { committed: number }).committed;
        if (committed >= target) {
          clearTimeout(timer);
          // Killed while its next write is in flight.
          child.kill('SIGKILL');
          resolve();
        }
      });
    });
    await exited;
    const store = await createStore({ backend: 'sqlite', path, prefix: 'mp' });
    try {
      const written = await store.list('w');
      const present = new Set(written.map((p) => p.key));
      for (let i = 0; i <= committed; i++) {
        expect(present.has(`w/${i}`), `committed write w/${i} is gone`).toBe(true);
      }
      for (const pair of written) {
        const i = Number(pair.key.slice(2));
        expect(new TextDecoder().decode(pair.value), pair.key).toBe(`${i}:${'x'.repeat(1024)}`);
      }
      // At most the one write in flight may have landed beyond what was reported.
      expect(written.length).toBeLessThanOrEqual(committed + 2);
      const cas = await store.list('cas');
      expect(cas.length).toBeGreaterThanOrEqual(Math.floor(committed / 10) + 1);
      await store.put('after', 'fine');
      expect(new TextDecoder().decode((await store.get('after')).value)).toBe('fine');
    } finally {
      await store.close();
    }
  });
});
