import { createStore, type Store } from '@kv/core';
import { serverFor } from '@kv/test-servers';
import { afterAll, describe, expect, it } from 'vitest';
import '../src/index.js';

const redis = await serverFor('redis');

// More keys than one chunk of a listing (10 000): the listing reads the index and the values in
// several commands, so a writer can change things between them.
const FILLERS = 10_200;

describe.skipIf(!redis.available)('redis listings are snapshots', () => {
  const stores: Store[] = [];
  afterAll(async () => {
    await stores[0]?.deleteTree('d').catch(() => {});
    await Promise.allSettled(stores.map((s) => s.close()));
  });

  it('while a writer moves a token between the first and the last chunk (put the next key, then delete the last), every listing holds one token or two neighbours, and every other key', async () => {
    const prefix = `snapshot-${Date.now()}`;
    const reader = await createStore({ backend: 'redis', endpoints: redis.endpoints, prefix });
    const writer = await createStore({ backend: 'redis', endpoints: redis.endpoints, prefix });
    stores.push(reader, writer);
    for (let i = 0; i < FILLERS; i += 600) {
      await Promise.all(
        Array.from({ length: Math.min(600, FILLERS - i) }, (_, j) =>
          writer.put(`d/f/${String(i + j).padStart(6, '0')}`, new Uint8Array([i + j, 0, 255])),
        ),
      );
    }
    // Even tokens sort before the fillers (the first chunk), odd ones after them (the last chunk).
    const token = (i: number) => `d/${i % 2 === 0 ? 'a' : 'z'}/${String(i).padStart(6, '0')}`;
    const isToken = (key: string) => key.startsWith('d/a/') || key.startsWith('d/z/');
    await writer.put(token(0), 'token');

    const check = async () => {
      const pairs = await reader.list('d');
      const tokens = pairs
        .filter((p) => isToken(p.key))
        .map((p) => Number(p.key.slice(4)))
        .sort((a, b) => a - b);
      expect(pairs.length - tokens.length).toBe(FILLERS);
      // Between the writer's steps there is always one token, or two neighbours: never none (the
      // first chunk read before a put, the last after the delete that followed it), never a gap.
      expect(tokens.length === 1 || (tokens.length === 2 && tokens[1] === (tokens[0] as number) + 1)).toBe(
        true,
      );
      const filler = pairs.find((p) => p.key === 'd/f/000257');
      expect(filler?.value).toEqual(new Uint8Array([1, 0, 255]));
    };
    await check(); // no writer yet: the chunked read

    let stop = false;
    let moves = 0;
    const moving = (async () => {
      for (let i = 0; !stop; i++) {
        await writer.put(token(i + 1), 'token');
        await writer.delete(token(i));
        moves++;
      }
    })();
    try {
      const started = performance.now();
      let listings = 0;
      while (listings < 10 || performance.now() - started < 1_500) {
        await check();
        listings++;
      }
    } finally {
      stop = true;
      await moving;
    }
    expect(moves).toBeGreaterThan(10);
  });
});
