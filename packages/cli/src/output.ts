import type { KVPair } from '@kv/core';
import { bufferView } from '@kv/core';
import pc from 'picocolors';

type Colors = ReturnType<typeof pc.createColors>;

// ignoreBOM: a value's text is all of its bytes; a leading U+FEFF is kept, not read as a byte-order mark.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The UTF-8 text of a value, or `undefined` when the bytes are not valid UTF-8. */
export function textOf(value: Uint8Array): string | undefined {
  try {
    return utf8.decode(value);
  } catch {
    return undefined;
  }
}

export function base64Of(value: Uint8Array): string {
  return bufferView(value).toString('base64');
}

/** A pair as a JSON object: `value` when it is UTF-8 text, `base64` always (exact bytes). */
export function pairJson(pair: KVPair): Record<string, unknown> {
  const text = textOf(pair.value);
  return {
    key: pair.key,
    lastIndex: pair.lastIndex,
    ...(text === undefined ? {} : { value: text }),
    base64: base64Of(pair.value),
  };
}

/** Colours only on a TTY, never with NO_COLOR (https://no-color.org), always with FORCE_COLOR. */
export function colorsFor(stream: NodeJS.WriteStream): Colors {
  const env = process.env;
  const noColor = env.NO_COLOR !== undefined && env.NO_COLOR !== '';
  const force = env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== '' && env.FORCE_COLOR !== '0';
  return pc.createColors(!noColor && (force || stream.isTTY === true));
}

/** What every command writes through: people get tables and colour, `--json` gets NDJSON. */
export class Output {
  readonly json: boolean;
  /** Colours for stdout. */
  readonly color: Colors;
  /** Colours for stderr: decided by stderr's own terminal, not stdout's (`kv copy > log`). */
  readonly errColor: Colors;
  readonly stdout: NodeJS.WriteStream;

  constructor(json: boolean, stdout: NodeJS.WriteStream = process.stdout) {
    this.json = json;
    this.stdout = stdout;
    this.color = colorsFor(stdout);
    this.errColor = colorsFor(process.stderr);
  }

  /** One NDJSON line. */
  record(value: unknown): void {
    this.stdout.write(`${JSON.stringify(value)}\n`);
  }

  line(text = ''): void {
    this.stdout.write(`${text}\n`);
  }

  /** An aligned table; `header` is dimmed. Cells are printed as given (already formatted). */
  table(header: readonly string[], rows: readonly (readonly string[])[]): void {
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => visibleLength(r[i] ?? ''))));
    const render = (cells: readonly string[]) =>
      cells
        .map((cell, i) =>
          i === cells.length - 1 ? cell : cell + ' '.repeat((widths[i] ?? 0) - visibleLength(cell)),
        )
        .join('  ')
        .trimEnd();
    this.line(this.color.dim(render(header)));
    for (const row of rows) this.line(render(row));
  }

  /** A value for a table cell: its text when printable on one line, else a byte count. */
  cell(value: Uint8Array): string {
    const text = textOf(value);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it looks for
    if (text !== undefined && !/[\u0000-\u001f\u007f]/.test(text)) return text;
    return this.color.dim(`<${value.byteLength} bytes>`);
  }
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: ANSI escapes start with ESC
const ANSI = /\u001b\[[0-9;]*m/g;
function visibleLength(text: string): number {
  return text.replace(ANSI, '').length;
}
