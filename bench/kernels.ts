// `twindisk bench kernels`: the wasm kernels against the TypeScript references and installable peers.
// Prints one JSON object per line, {"kernel","impl","size","gbps"}, gbps counting source bytes per second.
// Impl names: `wasm` is the façade on ordinary Buffers (inputs are staged into wasm memory, as hash-wasm
// and xxhash-wasm also copy theirs), `wasm-slab` is the façade on buffers that live in wasm memory (how
// the engine calls it), `js` is the plain TypeScript reference. Standalone: node dist/bench/kernels.js --json
import { createRequire } from 'node:module';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import benny from 'benny';
import { createCRC32, createXXHash3 } from 'hash-wasm';
import xxhashWasm from 'xxhash-wasm';
import {
  crc32c, xxh3, xorInto, raid6GenPQ, countSet, findNextSet, allocBuffer, reserveKernelMemory, kernelImpl,
} from '../wasm/index.js';
import * as refCrc from '../wasm/src/reference/crc32c.js';
import * as refBitmap from '../wasm/src/reference/bitmap.js';
import * as refParity from '../wasm/src/reference/parity.js';

export interface KernelBenchOptions {
  json: boolean;
  /** One pass of about 0.1 s per case, instead of the best of two passes of 0.2 s. */
  quick?: boolean;
  /** Where result lines go (default: stdout). */
  out?: (line: string) => void;
}

/** One benchmark result: `gbps` is source bytes per second / 1e9, null when the impl could not load. */
export interface KernelRow {
  kernel: string;
  impl: string;
  size: number;
  gbps: number | null;
  error?: string;
}

interface Case {
  kernel: string;
  impl: string;
  size: number;
  /** Source bytes one call consumes. */
  bytes: number;
  fn: () => unknown;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const require = createRequire(import.meta.url);

/** Loads an optional native CRC32C package, or returns the reason it cannot be used here. */
function loadNative<T>(name: string): T | string {
  try {
    return require(name) as T;
  } catch (err) {
    return `${name} did not load: ${(err as Error).message.split('\n')[0]}`;
  }
}

function randomBuffer(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = 0x9e3779b9;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/** Runs the kernel benchmark and writes one line per case (JSON with `json`, else a table row). */
export async function runKernelBench(opts: KernelBenchOptions): Promise<void> {
  const out = opts.out ?? ((line: string) => process.stdout.write(line + '\n'));
  const maxTime = opts.quick ? 0.1 : 0.2;
  const rounds = opts.quick ? 1 : 2;
  reserveKernelMemory(200 * MiB);
  const cases: Case[] = [];
  const rows: KernelRow[] = [];
  const failed = (kernel: string, impl: string, size: number, error: string): void => {
    rows.push({ kernel, impl, size, gbps: null, error });
  };

  // Checksums and the block hash.
  const hwCrc = await createCRC32(0x82f63b78);
  const hwXxh3 = await createXXHash3();
  const xxhw = await xxhashWasm();
  const nodeRs = loadNative<{ crc32c(b: Buffer, init?: number): number }>('@node-rs/crc32');
  const sse4 = loadNative<{ calculate(b: Buffer, init?: number): number }>('sse4_crc32');
  for (const size of [4 * KiB, MiB]) {
    const buf = randomBuffer(size);
    const slab = allocBuffer(size);
    slab.bytes.set(buf);
    const add = (kernel: string, impl: string, fn: () => unknown): void => {
      cases.push({ kernel, impl, size, bytes: size, fn });
    };
    add('crc32c', 'wasm', () => crc32c(buf));
    add('crc32c', 'wasm-slab', () => crc32c(slab.bytes));
    add('crc32c', 'js', () => refCrc.crc32c(buf));
    add('crc32c', 'hash-wasm', () => hwCrc.init().update(buf).digest('binary'));
    if (typeof nodeRs === 'string') failed('crc32c', '@node-rs/crc32', size, nodeRs);
    else add('crc32c', '@node-rs/crc32', () => nodeRs.crc32c(buf));
    if (typeof sse4 === 'string') failed('crc32c', 'sse4_crc32', size, sse4);
    else add('crc32c', 'sse4_crc32', () => sse4.calculate(buf));
    add('xxh3', 'wasm', () => xxh3(buf));
    add('xxh3', 'wasm-slab', () => xxh3(slab.bytes));
    add('xxh3', 'hash-wasm', () => hwXxh3.init().update(buf).digest('binary'));
    add('xxh3', 'xxhash-wasm', () => xxhw.h64Raw(buf)); // XXH64: xxhash-wasm has no XXH3
    add('copy', 'Buffer.copy', () => buf.copy(slabCopyTarget(size), 0));
  }

  // Parity over 4 sources.
  for (const size of [MiB, 16 * MiB]) {
    const srcs = Array.from({ length: 4 }, () => randomBuffer(size));
    const dst = Buffer.alloc(size);
    const q = Buffer.alloc(size);
    const slabSrcs = srcs.map((s) => { const k = allocBuffer(size); k.bytes.set(s); return k; });
    const slabP = allocBuffer(size);
    const slabQ = allocBuffer(size);
    const bytes = 4 * size;
    cases.push({ kernel: 'xor', impl: 'wasm', size, bytes, fn: () => xorInto(dst, srcs) });
    cases.push({ kernel: 'xor', impl: 'wasm-slab', size, bytes, fn: () => xorInto(slabP.bytes, slabSrcs.map((k) => k.bytes)) });
    cases.push({ kernel: 'raid6-pq', impl: 'wasm', size, bytes, fn: () => raid6GenPQ(srcs, dst, q) });
    cases.push({
      kernel: 'raid6-pq', impl: 'wasm-slab', size, bytes,
      fn: () => raid6GenPQ(slabSrcs.map((k) => k.bytes), slabP.bytes, slabQ.bytes),
    });
    if (size === MiB) {
      cases.push({ kernel: 'xor', impl: 'js', size, bytes, fn: () => refParity.xorInto(dst, srcs) });
      cases.push({ kernel: 'raid6-pq', impl: 'js', size, bytes, fn: () => refParity.raid6GenPQ(srcs, dst, q, size) });
    }
    cases.push({ kernel: 'copy', impl: 'Buffer.copy', size, bytes: size, fn: () => srcs[0]!.copy(dst, 0) });
  }

  // A 32 MiB write-intent bitmap (1 TiB at 4 KiB per bit) with one bit set at the end.
  {
    const size = 32 * MiB;
    const bits = size * 8;
    const plain = Buffer.alloc(size);
    plain[size - 1] = 0x80;
    const slab = allocBuffer(size);
    slab.bytes[size - 1] = 0x80;
    const add = (kernel: string, impl: string, fn: () => unknown): void => {
      cases.push({ kernel, impl, size, bytes: size, fn });
    };
    add('popcount', 'wasm-slab', () => countSet(slab.bytes));
    add('popcount', 'wasm', () => countSet(plain));
    add('popcount', 'js', () => refBitmap.countSet(plain, 0, bits));
    add('find-next-set', 'wasm-slab', () => findNextSet(slab.bytes));
    add('find-next-set', 'wasm', () => findNextSet(plain));
    add('find-next-set', 'js', () => refBitmap.findNextSet(plain, 0, bits));
    const target = Buffer.alloc(size);
    add('copy', 'Buffer.copy', () => plain.copy(target, 0));
  }

  if (kernelImpl() !== 'wasm') {
    out(opts.json ? JSON.stringify({ note: 'TWINDISK_NO_WASM=1: the "wasm" rows run the TypeScript reference' }) : 'note: TWINDISK_NO_WASM=1');
  }
  const emit = (row: KernelRow): void => {
    if (opts.json) out(JSON.stringify(row));
    else out(`${row.kernel.padEnd(14)} ${row.impl.padEnd(15)} ${String(row.size).padStart(9)}  ${row.gbps === null ? `n/a (${row.error ?? ''})` : row.gbps.toFixed(2) + ' GB/s'}`);
  };
  for (const r of rows) emit(r);

  // benny announces each suite with console.log; keep stdout for result lines. Each case runs in
  // `rounds` passes over the whole list and keeps its best pass, so a burst of load from neighbours on
  // a shared machine (which hits ALU-bound loops like CRC32C hardest) does not decide a ratio.
  const log = console.log;
  console.log = (...args: unknown[]) => { if (!opts.json) process.stderr.write(args.join(' ') + '\n'); };
  const best = new Array<number>(cases.length).fill(0);
  try {
    for (let round = 0; round < rounds; round++) {
      for (let i = 0; i < cases.length; i++) {
        const c = cases[i]!;
        const summary = await benny.suite(
          `${c.kernel} ${c.impl} ${c.size}`,
          benny.add(c.impl, c.fn),
          benny.configure({ cases: { maxTime, minSamples: 3, delay: 0.005 } }),
        );
        best[i] = Math.max(best[i]!, summary.results[0]?.ops ?? 0);
      }
    }
  } finally {
    console.log = log;
  }
  cases.forEach((c, i) => emit({ kernel: c.kernel, impl: c.impl, size: c.size, gbps: Number(((best[i]! * c.bytes) / 1e9).toFixed(3)) }));
}

const copyTargets = new Map<number, Buffer>();
/** A reusable destination for the copy baseline. */
function slabCopyTarget(size: number): Buffer {
  let t = copyTargets.get(size);
  if (!t) copyTargets.set(size, (t = Buffer.alloc(size)));
  return t;
}

/** A one-line description of this machine for bench/RESULTS.md. */
export function machineLine(): string {
  const cpus = os.cpus();
  return `${cpus[0]?.model ?? 'unknown CPU'}, ${cpus.length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  // `... --json | head` closes stdout early: stop quietly instead of dying on EPIPE.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => { if (err.code === 'EPIPE') process.exit(0); throw err; });
  if (!args.includes('--json')) process.stderr.write(`${machineLine()}\n`);
  await runKernelBench({ json: args.includes('--json'), quick: args.includes('--quick') });
}
