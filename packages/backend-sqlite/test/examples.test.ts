import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

// The runnable recipe examples in examples/ run on this backend, with no server: run them as a user would.
const run = promisify(execFile);
const example = (name: string) => fileURLToPath(new URL(`../../../examples/${name}`, import.meta.url));
const node = async (name: string) =>
  (await run(process.execPath, [example(name)], { timeout: 60_000, encoding: 'utf8' })).stdout;

describe('examples on embedded SQLite', () => {
  it('encrypted-config.mjs: round trip, rotation to v2, a copied value refused', async () => {
    const out = await node('encrypted-config.mjs');
    expect(out).toContain("read back: { url: 'postgres://db-1:5432/app', pool: 10 }");
    expect(out).toContain('rotate: { rewritten: 2, current: 0 }');
    expect(out).toContain('key id now: v2');
    expect(out).toContain('copied value: INTEGRITY');
  }, 90_000);

  it('election.mjs: a SIGKILLed leader is replaced; resign hands over before the ttl', async () => {
    const out = await node('election.mjs');
    expect(out).toMatch(/failover took \d+ ms/);
    const handover = Number(/hand-over took (\d+) ms/.exec(out)?.[1]);
    expect(handover, out).toBeLessThan(2_000);
    expect(out.match(/leads \(fencing token \d+\)/g)?.length, out).toBe(3);
  }, 90_000);

  it('discovery.mjs: members join, a SIGKILLed one disappears, a closed one leaves', async () => {
    const out = await node('discovery.mjs');
    expect(out).toMatch(
      /members: \[api-1=10\.0\.0\.1:8080, api-2=10\.0\.0\.2:8080, api-3=10\.0\.0\.3:8080\]/,
    );
    expect(out).toMatch(/api-2 disappeared \d+ ms after the crash/);
    expect(out.trimEnd().split('\n').at(-1)).toMatch(/members: \[api-1=10\.0\.0\.1:8080\]$/);
  }, 90_000);
});
