// The one size parser: resource files (resync-rate, bitmap-granularity, block-size) and the command
// line (--size) both read sizes with it.
import { ConfigError, describe, quote } from './messages.js';

const UNITS: Record<string, number> = { K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };

/**
 * Parses sizes like 4096, 512K, 100M, 1.5G, 2T (binary units; "512KiB" and "512KB" mean the same;
 * a fraction must come to whole bytes). Throws a ConfigError with one message otherwise.
 */
export function parseSize(s: string | number): number {
  const bad = (why: string): never => {
    throw new ConfigError([why]);
  };
  if (typeof s === 'number') {
    if (!Number.isSafeInteger(s) || s < 0) bad(`${s} is not a size; sizes are whole numbers of bytes, 0 or more`);
    return s;
  }
  if (typeof s !== 'string') return bad(`expected a size such as 4096, 512K, 100M or 1G, got ${describe(s)}`);
  const m = /^([0-9]+(?:\.[0-9]+)?)\s*(?:([KkMmGgTtPp])(?:iB|B)?|B)?$/.exec(s.trim());
  if (m === null) return bad(`${quote(s)} is not a size; write a number of bytes or a number with K, M, G or T (binary units), e.g. 512K, 100M, 1G`);
  const bytes = Number(m[1]) * (m[2] === undefined ? 1 : UNITS[m[2].toUpperCase()]!);
  if (!Number.isInteger(bytes)) bad(`${quote(s)} is not a whole number of bytes`);
  if (!Number.isSafeInteger(bytes)) bad(`${quote(s)} is too large`);
  return bytes;
}

/** 2147483648 -> "2G", 4096 -> "4K", 1000 -> "1000": the shortest exact form parseSize reads back. */
export function formatSize(n: number): string {
  for (const u of ['P', 'T', 'G', 'M', 'K']) if (n >= UNITS[u]! && n % UNITS[u]! === 0) return `${n / UNITS[u]!}${u}`;
  return String(n);
}
