// What the I/O benchmarks write and where, the shape of their workloads and result rows, and how runs are summed up
// (median): shared so every target and the link ceiling see the same.
import fs from 'node:fs';

/** Writes a non-sparse pattern (each MiB filled with its own index's low byte) over `[0, size)` of `fd`. */
export function writePattern(fd: number, size: number): void {
  const chunk = Buffer.alloc(1 << 20);
  for (let off = 0; off < size; off += chunk.length) {
    chunk.fill((off >>> 20) & 255);
    fs.writeSync(fd, chunk, 0, Math.min(chunk.length, size - off), off);
  }
}

/** The median of `xs` (the mean of the middle two for an even count); runs alternate between targets and are compared by it. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** The blocks a workload visits: in order, or xorshift32 from a fixed seed (the same in every run and for every target). */
export function blockPicker(random: boolean, blocks: number): () => number {
  let seq = 0;
  let rng = 0x9e3779b9;
  return () => {
    if (!random) return seq++ % blocks;
    rng ^= rng << 13; rng >>>= 0; rng ^= rng >>> 17; rng ^= rng << 5; rng >>>= 0;
    return rng % blocks;
  };
}

/** One I/O workload of a benchmark: direction, pattern, block size and queue depth. */
export interface Workload {
  name: string;
  write: boolean;
  random: boolean;
  bs: number;
  depth: number;
}

/** One measured row, as `--json` prints it. */
export interface Row {
  target: string;
  workload: string;
  iops: number;
  mbps: number;
  p50_us: number;
  p99_us: number;
}
