import { describe, expect, it } from 'vitest';
import { bufferView, uint8View } from '../src/index.js';

describe('byte views', () => {
  it('bufferView is a Buffer over the same bytes: offset and length kept, writes seen both ways, no copy', () => {
    const backing = new Uint8Array([0, 1, 2, 3, 4, 5, 6, 7]);
    const part = backing.subarray(2, 5);
    const view = bufferView(part);
    expect(Buffer.isBuffer(view)).toBe(true);
    expect([...view]).toEqual([2, 3, 4]);
    expect(view.buffer).toBe(backing.buffer);
    expect(view.byteOffset).toBe(2);
    view[0] = 42;
    expect(backing[2]).toBe(42);
    const buffer = Buffer.from('abc');
    expect(bufferView(buffer)).toBe(buffer);
    expect(bufferView(new Uint8Array(0)).byteLength).toBe(0);
  });

  it('uint8View is a plain Uint8Array (no Buffer methods) over the same bytes', () => {
    const buffer = Buffer.from('hello world');
    const part = buffer.subarray(6);
    const view = uint8View(part);
    expect(Buffer.isBuffer(view)).toBe(false);
    expect(Object.getPrototypeOf(view)).toBe(Uint8Array.prototype);
    expect(new TextDecoder().decode(view)).toBe('world');
    expect(view.buffer).toBe(buffer.buffer);
    expect(view.byteOffset).toBe(part.byteOffset);
    view[0] = 87;
    expect(part.toString()).toBe('World');
  });
});
