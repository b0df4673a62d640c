import { InvalidArgumentError } from '@kv/core';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** `1500`, `1500ms`, `10s`, `5m`, `1h` -> ms (a bare number is ms, the API's unit). */
export function parseDuration(text: string, what = 'duration'): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  const ms = match ? Math.round(Number(match[1]) * (UNITS[match[2] ?? 'ms'] as number)) : Number.NaN;
  if (!Number.isSafeInteger(ms) || ms <= 0) {
    throw new InvalidArgumentError(
      `${what} must be a positive duration such as 1500, 1500ms, 10s, 5m or 1h, got ${JSON.stringify(text)}`,
    );
  }
  return ms;
}

/** A non-negative integer option such as `--if-index`. */
export function parseIndex(text: string, what: string): number {
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) {
    throw new InvalidArgumentError(`${what} must be a non-negative integer, got ${JSON.stringify(text)}`);
  }
  return Number(text);
}
