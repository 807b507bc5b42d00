/*
 * Plain-text output of the operator commands: aligned columns, as `kubectl get` prints them.
 * Cells come from the server and, through it, from agents (labels, reason messages, IMA
 * paths), so characters that steer a terminal are shown escaped: no value can move the
 * cursor, recolour the screen or reorder the text around it.
 */

/** C0 and C1 controls, DEL, line/paragraph separators and the bidirectional overrides. */
const STEERING = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/gu;

/** `text` with every steering character written as \xNN or \uNNNN. */
export function printable(text: string): string {
  return text.replace(STEERING, (c) => {
    const n = c.charCodeAt(0);
    return n < 0x100 ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`;
  });
}

/** Columns are measured in code points, so a character outside the BMP counts once. */
function width(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

/**
 * Rows (and an optional header row) as lines of columns two spaces apart, each column as wide
 * as its widest cell; the last cell of a line is not padded. Empty when there is nothing.
 */
export function formatTable(rows: readonly (readonly string[])[], header?: readonly string[]): string {
  const lines = (header ? [header, ...rows] : rows).map((row) => row.map(printable));
  const widths: number[] = [];
  for (const line of lines) line.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, width(cell))));
  return lines
    .map((line) => `${line.map((cell, i) => (i === line.length - 1 ? cell : cell + ' '.repeat((widths[i] ?? 0) - width(cell) + 2))).join('').trimEnd()}\n`)
    .join('');
}
