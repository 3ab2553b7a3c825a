/** Small helpers for readable terminal output. */

export function int(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

export function rate(perSecond: number): string {
  if (perSecond >= 1_000_000) return `${(perSecond / 1_000_000).toFixed(2)}M/s`;
  if (perSecond >= 1_000) return `${(perSecond / 1_000).toFixed(1)}k/s`;
  return `${perSecond.toFixed(0)}/s`;
}

export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** A plain text table: first row is the header, columns padded, numbers right-aligned. */
export function table(rows: ReadonlyArray<readonly string[]>): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows
    .map((row) =>
      row
        .map((cell, i) => (/^[0-9,.%]+$/.test(cell) ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/**
 * Progress on stderr: rewritten in place on a terminal, a line every few seconds otherwise
 * (so CI logs stay readable).
 */
export class ProgressLine {
  private last = 0;
  private readonly tty = process.stderr.isTTY === true;

  update(text: string, force = false): void {
    const now = Date.now();
    if (!force && now - this.last < (this.tty ? 200 : 5000)) return;
    this.last = now;
    if (this.tty) process.stderr.write(`\r\x1b[2K${text}`);
    else process.stderr.write(`${text}\n`);
  }

  done(text: string): void {
    if (this.tty) process.stderr.write(`\r\x1b[2K${text}\n`);
    else process.stderr.write(`${text}\n`);
  }
}
