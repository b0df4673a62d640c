/**
 * Views of bytes, never copies: the Buffer a backend hands its client or
 * driver, and the plain Uint8Array a store hands its users (a Buffer's
 * methods, and its pooled slab's `.buffer`, stay out of the values users get).
 */

/** A Buffer over the same memory as `value` (no copy): what Node's clients and drivers take. */
export function bufferView(value: Uint8Array): Buffer {
  return Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

/** A plain Uint8Array over the same memory as `bytes` (no copy), for a value handed to users. */
export function uint8View(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
