import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, tlsMaterial } from '../src/index.js';

describe('tlsMaterial', () => {
  it('turns PEM text and bytes into buffers and keeps the option as given', () => {
    const m = tlsMaterial({
      ca: 'CA',
      cert: new Uint8Array([1, 2]),
      key: 'K',
      servername: 'h',
      rejectUnauthorized: false,
    });
    expect(m.ca?.toString()).toBe('CA');
    expect([...(m.cert ?? [])]).toEqual([1, 2]);
    expect(m.servername).toBe('h');
    expect(m.rejectUnauthorized).toBe(false);
    expect(tlsMaterial(true).option).toBe(true);
    expect(tlsMaterial(undefined).ca).toBeUndefined();
  });

  it('reads caFile/certFile/keyFile, and tls.* wins over them', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kv-tls-'));
    writeFileSync(join(dir, 'ca.pem'), 'FILE CA');
    expect(tlsMaterial(undefined, { caFile: join(dir, 'ca.pem') }).ca?.toString()).toBe('FILE CA');
    expect(tlsMaterial({ ca: 'INLINE' }, { caFile: join(dir, 'ca.pem') }).ca?.toString()).toBe('INLINE');
    expect(() => tlsMaterial(undefined, { caFile: join(dir, 'missing.pem') })).toThrow(/caFile: cannot read/);
  });

  it.each([
    ['a string', 'yes', /tls must be true, false or/],
    ['null', null, /tls must be true, false or/],
    ['an unknown key', { passphrase: 'x' }, /unknown tls option\(s\): passphrase/],
    ['a cert without key', { cert: 'C' }, /needs both cert and key/],
    ['a number as ca', { ca: 3 }, /tls.ca must be PEM text or bytes/],
    ['an empty servername', { servername: '' }, /servername must be a non-empty string/],
    ['a string rejectUnauthorized', { rejectUnauthorized: 'no' }, /rejectUnauthorized must be a boolean/],
  ])('refuses %s with InvalidArgumentError', (_, option, message) => {
    expect(() => tlsMaterial(option)).toThrow(InvalidArgumentError);
    expect(() => tlsMaterial(option)).toThrow(message);
  });
});
