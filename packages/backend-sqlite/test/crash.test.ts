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

/**
 * Runs the worker in `mode` and hands each line it says to `onLine`; when
 * `onLine` returns true the worker is killed at once (SIGKILL). Resolves once
 * it has exited; rejects when it stalls for `ms`.
 */
async function killWhen(args: string[], onLine: (line: string) => boolean, ms: number): Promise<void> {
  const child = spawn(process.execPath, [worker, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the ${args[0]} worker stalled; ${stderr}`));
    }, ms);
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (onLine(line)) {
        clearTimeout(timer);
        child.kill('SIGKILL');
        resolve();
      }
    });
  });
  await exited;
}

describe('sqlite: a writer killed mid-transaction', () => {
  it('loses nothing it reported committed; the file opens and takes writes afterwards', async () => {
    const path = join(dir, 'crash.db');
    let committed = -1;
    const target = 300;
    // Killed while its next write is in flight.
    await killWhen(
      ['writer', path],
      (line) => {
        committed = (JSON.parse(line) as { committed: number }).committed;
        return committed >= target;
      },
      30_000,
    );
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

  it('a writer killed during a deleteTree leaves the tree whole or gone, never half; kill after kill on one file', async () => {
    const path = join(dir, 'trees.db');
    // 2000 keys: the transaction takes a few ms, so a kill sent as it starts often lands inside it.
    const size = 2_000;
    const reported = new Map<number, string>();
    let next = 0;
    const killedDeleting = () => [...reported.values()].filter((step) => step === 'deleting').length;
    for (let kill = 0; kill < 12 && killedDeleting() < 3; kill++) {
      let deletions = 0;
      // Killed as this process's second deletion starts.
      await killWhen(
        ['trees', path, String(size), String(next)],
        (line) => {
          const event = JSON.parse(line) as Record<string, number>;
          const [step, round] = Object.entries(event)[0] as [string, number];
          reported.set(round, step);
          next = Math.max(next, round + 1);
          return step === 'deleting' && ++deletions === 2;
        },
        60_000,
      );
    }
    const store = await createStore({ backend: 'sqlite', path, prefix: 'mp' });
    try {
      let whole = 0;
      let gone = 0;
      for (const [round, step] of [...reported].sort((a, b) => a[0] - b[0])) {
        const left = (await store.list(`t/${round}`)).filter((p) => !p.key.endsWith('/kept'));
        if (step === 'deleted' || step === 'kept') {
          expect(left, `round ${round}: a reported deleteTree left keys behind`).toEqual([]);
        } else if (step === 'filled') {
          expect(left.length, `round ${round}: reported filled`).toBe(size);
        } else if (step === 'deleting') {
          // Killed during the transaction: all or nothing.
          expect([0, size], `round ${round}: a deleteTree killed mid-way left ${left.length} keys`).toContain(
            left.length,
          );
          if (left.length === 0) gone++;
          else whole++;
        }
        for (const pair of left) {
          expect(new TextDecoder().decode(pair.value)).toBe(`${round}:${pair.key.split('/').pop()}`);
        }
        if (step === 'kept') expect(await store.exists(`t/${round}/kept`), `round ${round}: kept`).toBe(true);
      }
      // Killed before it reported the deleteTree done: whole (the kill won) or gone (the commit won).
      expect(
        whole + gone,
        `rounds killed during their deleteTree (${whole} whole, ${gone} gone)`,
      ).toBeGreaterThanOrEqual(3);
      await store.put('after', 'fine');
      expect(new TextDecoder().decode((await store.get('after')).value)).toBe('fine');
    } finally {
      await store.close();
    }
  }, 120_000);
});
