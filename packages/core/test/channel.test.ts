import { describe, expect, it } from 'vitest';
import { Channel } from '../src/index.js';

describe('Channel', () => {
  it('buffers pushes until pulled, then waits for the next one', async () => {
    const channel = new Channel<number>();
    channel.push(1);
    channel.push(2);
    expect(await channel.next()).toEqual({ value: 1, done: false });
    expect(await channel.next()).toEqual({ value: 2, done: false });
    const pending = channel.next();
    channel.push(3);
    expect(await pending).toEqual({ value: 3, done: false });
  });

  it('end() lets the buffered items out first, then is done for good', async () => {
    const channel = new Channel<string>();
    channel.push('a');
    channel.end();
    channel.push('ignored');
    expect(await channel.next()).toEqual({ value: 'a', done: false });
    expect((await channel.next()).done).toBe(true);
    expect((await channel.next()).done).toBe(true);
    const waiting = new Channel<string>();
    const pending = waiting.next();
    waiting.end();
    expect((await pending).done).toBe(true);
  });

  it('fail() throws once after the buffered items, then the channel is done', async () => {
    const channel = new Channel<string>();
    channel.push('a');
    channel.fail(new Error('boom'));
    expect((await channel.next()).value).toBe('a');
    await expect(channel.next()).rejects.toThrow('boom');
    expect((await channel.next()).done).toBe(true);
    const waiting = new Channel<string>();
    const pending = waiting.next();
    waiting.fail(new Error('now'));
    await expect(pending).rejects.toThrow('now');
    expect((await waiting.next()).done).toBe(true);
  });

  it('never holds more than its limit: the oldest go, the newest stays', async () => {
    const channel = new Channel<number>({ limit: 3 });
    for (let i = 0; i < 10; i++) channel.push(i);
    const seen: number[] = [];
    channel.end();
    for await (const item of channel) seen.push(item);
    expect(seen).toEqual([7, 8, 9]);
  });

  it('replace() keeps only the newest full state', async () => {
    const channel = new Channel<number[]>();
    channel.replace([1]);
    channel.replace([1, 2]);
    expect((await channel.next()).value).toEqual([1, 2]);
    const pending = channel.next();
    channel.replace([3]);
    expect((await pending).value).toEqual([3]);
  });

  it('return() drops the buffer, ends, and calls onReturn (a for-await break)', async () => {
    let returned = 0;
    const channel = new Channel<number>({ onReturn: () => returned++ });
    channel.push(1);
    channel.push(2);
    for await (const item of channel) {
      expect(item).toBe(1);
      break;
    }
    expect(returned).toBe(1);
    expect((await channel.next()).done).toBe(true);
    expect(channel.closed).toBe(true);
  });

  it('serves concurrent next() calls in order, none left hanging', async () => {
    const channel = new Channel<number>();
    const first = channel.next();
    const second = channel.next();
    const third = channel.next();
    channel.push(1);
    channel.push(2);
    channel.end();
    expect(await first).toEqual({ value: 1, done: false });
    expect(await second).toEqual({ value: 2, done: false });
    expect((await third).done).toBe(true);
  });

  it('a failure reaches the first pending next(); the others end', async () => {
    const channel = new Channel<number>();
    const first = channel.next();
    const second = channel.next();
    channel.fail(new Error('x'));
    await expect(first).rejects.toThrow('x');
    expect((await second).done).toBe(true);
  });

  it('return() ends every pending next()', async () => {
    const channel = new Channel<number>();
    const first = channel.next();
    const second = channel.next();
    await channel.return();
    expect((await first).done).toBe(true);
    expect((await second).done).toBe(true);
  });
});
