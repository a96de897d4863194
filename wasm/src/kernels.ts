// The typed façade over the kernels: callers pass Uint8Arrays, never pointers. Arrays that are views of
// wasm memory (KernelBuffer.bytes, Slab buffers) are used in place; any other array is streamed through
// a fixed staging area in chunks. With TWINDISK_NO_WASM=1 every call goes to the plain TypeScript
// references in ./reference/, which the tests also use as the oracle.
import { kernelModule, MAX_SOURCES, RUN_BATCH, STAGING_BYTES, type KernelModule } from './memory.js';
import * as refCrc from './reference/crc32c.js';
import * as refXxh from './reference/xxh3.js';
import * as refBitmap from './reference/bitmap.js';
import * as refParity from './reference/parity.js';

/** Which implementation serves the calls: 'wasm', or 'reference' under TWINDISK_NO_WASM=1. */
export function kernelImpl(): 'wasm' | 'reference' {
  return kernelModule() ? 'wasm' : 'reference';
}

type Mode = 'r' | 'w' | 'rw';

/**
 * Runs `fn` over byte columns [start, start + len) of `bufs`, all addressed at the same offsets. `fn`
 * gets one pointer per buffer (already advanced to the chunk) and the chunk length; it may return true
 * to stop early. Buffers outside wasm memory are copied into staging ('r', 'rw') and back ('w', 'rw').
 */
function columns(
  mod: KernelModule, bufs: readonly Uint8Array[], modes: readonly Mode[], start: number, len: number,
  fn: (ptrs: number[], clen: number, off: number) => boolean | void,
): void {
  const foreign: number[] = [];
  for (let i = 0; i < bufs.length; i++) if (!mod.owns(bufs[i]!)) foreign.push(i);
  if (foreign.length === 0) {
    fn(bufs.map((b) => b.byteOffset + start), len, 0);
    return;
  }
  const chunk = Math.max(64, Math.floor(STAGING_BYTES / foreign.length / 64) * 64);
  const slot = new Map<number, number>();
  foreign.forEach((bi, k) => slot.set(bi, mod.staging + k * chunk));
  for (let off = 0; off < len || (len === 0 && off === 0); off += chunk) {
    const clen = Math.min(chunk, len - off);
    const u8 = mod.u8;
    const ptrs = bufs.map((b, i) => {
      const s = slot.get(i);
      if (s === undefined) return b.byteOffset + start + off;
      if (modes[i] !== 'w') u8.set(b.subarray(start + off, start + off + clen), s);
      return s;
    });
    const stop = fn(ptrs, clen, off);
    for (const i of foreign) {
      if (modes[i] !== 'r') bufs[i]!.set(u8.subarray(slot.get(i)!, slot.get(i)! + clen), start + off);
    }
    if (stop === true || len === 0) return;
  }
}

// ---------------------------------------------------------------------------------------------- CRC32C

/**
 * CRC32C (Castagnoli) of `data`, continuing from `crc`, the finished CRC of the bytes before (0 to
 * start). crc32c(b, crc32c(a)) equals crc32c(a ++ b). CRC32C of the ASCII "123456789" is 0xE3069283.
 */
export function crc32c(data: Uint8Array, crc = 0): number {
  const mod = kernelModule();
  if (!mod) return refCrc.crc32c(data, crc);
  const x = mod.exports;
  if (mod.owns(data)) return x.crc32cUpdate(crc, data.byteOffset, data.length) >>> 0;
  if (data.length <= STAGING_BYTES) {
    mod.u8.set(data, mod.staging);
    return x.crc32cUpdate(crc, mod.staging, data.length) >>> 0;
  }
  let c = crc >>> 0;
  columns(mod, [data], ['r'], 0, data.length, ([p], clen) => {
    c = mod.exports.crc32cUpdate(c, p!, clen) >>> 0;
  });
  return c;
}

// ------------------------------------------------------------------------------------------------ XXH3

const XXH3_BLOCK = 1024;

/** XXH3-64 of `data` with `seed` (default 0n), bit-exact with xxHash's XXH3_64bits_withSeed. */
export function xxh3(data: Uint8Array, seed = 0n): bigint {
  const mod = kernelModule();
  if (!mod) return refXxh.xxh3(data, seed);
  const s = BigInt.asUintN(64, seed);
  const x = mod.exports;
  if (mod.owns(data)) return BigInt.asUintN(64, x.xxh3(data.byteOffset, data.length, s));
  const len = data.length;
  const stage = mod.staging + 64; // 64 bytes of room before: the last stripe may reach back
  if (len <= STAGING_BYTES) {
    mod.u8.set(data, stage);
    return BigInt.asUintN(64, x.xxh3(stage, len, s));
  }
  // Whole 1 KiB blocks through staging, then the tail with the 64 bytes before it.
  const state = x.xxh3StaticState();
  x.xxh3StateInit(state, s);
  const nBlocks = Math.floor((len - 1) / XXH3_BLOCK);
  stagedBlocks(mod, state, data, 0, nBlocks);
  const tailStart = nBlocks * XXH3_BLOCK;
  const from = Math.max(0, tailStart - 64);
  mod.u8.set(data.subarray(from, len), stage - (tailStart - from));
  return BigInt.asUintN(64, x.xxh3StateDigest(state, stage, len - tailStart, BigInt(len)));
}

/** Feeds `nBlocks` whole blocks of `data` from byte `start` to an XXH3 state, in place or staged. */
function stagedBlocks(mod: KernelModule, state: number, data: Uint8Array, start: number, nBlocks: number): void {
  const x = mod.exports;
  if (mod.owns(data)) {
    x.xxh3StateBlocks(state, data.byteOffset + start, nBlocks);
    return;
  }
  const perChunk = Math.floor(STAGING_BYTES / XXH3_BLOCK);
  for (let b = 0; b < nBlocks; b += perChunk) {
    const n = Math.min(perChunk, nBlocks - b);
    const at = start + b * XXH3_BLOCK;
    mod.u8.set(data.subarray(at, at + n * XXH3_BLOCK), mod.staging);
    x.xxh3StateBlocks(state, mod.staging, n);
  }
}

/**
 * XXH3-64 over input that arrives in pieces (a scatter-gather list, a stream): update() any number of
 * times, then digest(), which equals xxh3() of the concatenation and leaves the hasher able to go on.
 * Its state lives in wasm memory: creating one allocates (and may grow memory, like allocBuffer), so
 * keep hashers and reset() them. With TWINDISK_NO_WASM=1 it gathers the input and hashes it at digest().
 */
export class Xxh3Stream {
  private readonly mod: KernelModule | null;
  /** Wasm state: XXH3 state block, then 64 bytes of prefix, then the pending block. */
  private readonly region: number;
  private readonly state: number;
  private readonly pending: number;
  private pendingLen = 0;
  private total = 0;
  private seed = 0n;
  private gathered: Uint8Array[] = [];
  private disposed = false;

  /** A hasher for XXH3-64 with `seed` (default 0n). */
  constructor(seed = 0n) {
    this.mod = kernelModule();
    if (this.mod) {
      const stateSize = this.mod.exports.xxh3StateSize();
      this.region = this.mod.alloc(stateSize + 64 + XXH3_BLOCK);
      this.state = this.region;
      this.pending = this.region + stateSize + 64;
    } else {
      this.region = this.state = this.pending = 0;
    }
    this.reset(seed);
  }

  /** Starts over, for a new input with `seed` (default: 0n). */
  reset(seed = 0n): this {
    this.checkLive();
    this.seed = BigInt.asUintN(64, seed);
    this.pendingLen = 0;
    this.total = 0;
    this.gathered = [];
    this.mod?.exports.xxh3StateInit(this.state, this.seed);
    return this;
  }

  /** Adds the next piece of input. */
  update(data: Uint8Array): this {
    this.checkLive();
    const mod = this.mod;
    if (!mod) {
      this.gathered.push(data.slice());
      return this;
    }
    const x = mod.exports;
    const len = data.length;
    let off = 0;
    this.total += len;
    while (off < len) {
      if (this.pendingLen === XXH3_BLOCK) {
        // A full pending block and more input after it: it is not the last block, so accumulate it.
        x.xxh3StateBlocks(this.state, this.pending, 1);
        mod.u8.copyWithin(this.pending - 64, this.pending + XXH3_BLOCK - 64, this.pending + XXH3_BLOCK);
        this.pendingLen = 0;
      }
      if (this.pendingLen === 0 && len - off > XXH3_BLOCK) {
        // Whole blocks straight from the input, keeping at least one byte back for digest().
        const n = Math.floor((len - off - 1) / XXH3_BLOCK);
        stagedBlocks(mod, this.state, data, off, n);
        off += n * XXH3_BLOCK;
        mod.u8.set(data.subarray(off - 64, off), this.pending - 64);
        continue;
      }
      const take = Math.min(XXH3_BLOCK - this.pendingLen, len - off);
      mod.u8.set(data.subarray(off, off + take), this.pending + this.pendingLen);
      this.pendingLen += take;
      off += take;
    }
    return this;
  }

  /** XXH3-64 of everything added since the last reset(). */
  digest(): bigint {
    this.checkLive();
    const mod = this.mod;
    if (!mod) {
      const all = new Uint8Array(this.gathered.reduce((n, g) => n + g.length, 0));
      let at = 0;
      for (const g of this.gathered) { all.set(g, at); at += g.length; }
      return refXxh.xxh3(all, this.seed);
    }
    const x = mod.exports;
    // Up to 240 bytes nothing has been accumulated yet (blocks go only once there is more than 1 KiB).
    if (this.total <= 240) return BigInt.asUintN(64, x.xxh3(this.pending, this.pendingLen, this.seed));
    return BigInt.asUintN(64, x.xxh3StateDigest(this.state, this.pending, this.pendingLen, BigInt(this.total)));
  }

  /** Frees the hasher's wasm memory; using it afterwards throws. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    if (this.mod) this.mod.release(this.region);
    this.gathered = [];
  }

  private checkLive(): void {
    if (this.disposed) throw new Error('Xxh3Stream used after dispose()');
  }
}

// --------------------------------------------------------------------------------------------- Bitmaps

/** Largest bitmap the kernels take: bit indices must fit in a u32 (2^32 bits, a 16 TiB disk at 4 KiB). */
const MAX_BITMAP_BYTES = 2 ** 29 - 1;

function checkRange(bitmap: Uint8Array, from: number, end: number): void {
  if (bitmap.length > MAX_BITMAP_BYTES) throw new RangeError(`bitmap of ${bitmap.length} bytes is too large`);
  if (!(Number.isInteger(from) && Number.isInteger(end) && from >= 0 && end <= bitmap.length * 8)) {
    throw new RangeError(`bit range [${from}, ${end}) outside a bitmap of ${bitmap.length * 8} bits`);
  }
}

/** Runs a bit-range kernel chunk by chunk (byte-aligned chunks); `fn` gets chunk-relative bits. */
function bitChunks(
  mod: KernelModule, bitmap: Uint8Array, mode: Mode, from: number, end: number,
  fn: (p: number, from: number, end: number, bitBase: number) => boolean | void,
): void {
  const firstByte = from >>> 3;
  const lastByte = Math.ceil(end / 8);
  columns(mod, [bitmap], [mode], firstByte, lastByte - firstByte, ([p], clen, off) => {
    const base = (firstByte + off) * 8;
    return fn(p!, Math.max(from, base) - base, Math.min(end, base + clen * 8) - base, base);
  });
}

function findNext(bitmap: Uint8Array, from: number, end: number, set: boolean): number {
  checkRange(bitmap, from, end);
  if (from >= end) return -1;
  const mod = kernelModule();
  if (!mod) return set ? refBitmap.findNextSet(bitmap, from, end) : refBitmap.findNextClear(bitmap, from, end);
  const k = set ? mod.exports.bitmapFindNextSet : mod.exports.bitmapFindNextClear;
  if (mod.owns(bitmap)) {
    const r = k(bitmap.byteOffset, from, end) >>> 0;
    return r < end ? r : -1;
  }
  let found = -1;
  bitChunks(mod, bitmap, 'r', from, end, (p, f, e, base) => {
    const r = k(p, f, e) >>> 0;
    if (r < e) { found = base + r; return true; }
    return false;
  });
  return found;
}

/** Index of the first set bit in [from, end) (end defaults to the bitmap's size), or -1. */
export function findNextSet(bitmap: Uint8Array, from = 0, end = bitmap.length * 8): number {
  return findNext(bitmap, from, end, true);
}

/** Index of the first clear bit in [from, end) (end defaults to the bitmap's size), or -1. */
export function findNextClear(bitmap: Uint8Array, from = 0, end = bitmap.length * 8): number {
  return findNext(bitmap, from, end, false);
}

/** Number of set bits in [from, end). */
export function countSet(bitmap: Uint8Array, from = 0, end = bitmap.length * 8): number {
  checkRange(bitmap, from, end);
  if (from >= end) return 0;
  const mod = kernelModule();
  if (!mod) return refBitmap.countSet(bitmap, from, end);
  if (mod.owns(bitmap)) return mod.exports.bitmapPopcount(bitmap.byteOffset, from, end) >>> 0;
  let n = 0;
  bitChunks(mod, bitmap, 'r', from, end, (p, f, e) => { n += mod.exports.bitmapPopcount(p, f, e) >>> 0; });
  return n;
}

/** Sets bits [from, end). */
export function setRange(bitmap: Uint8Array, from: number, end: number): void {
  checkRange(bitmap, from, end);
  if (from >= end) return;
  const mod = kernelModule();
  if (!mod) return refBitmap.setRange(bitmap, from, end);
  if (mod.owns(bitmap)) return mod.exports.bitmapSetRange(bitmap.byteOffset, from, end);
  bitChunks(mod, bitmap, 'rw', from, end, (p, f, e) => { mod.exports.bitmapSetRange(p, f, e); });
}

/** Clears bits [from, end). */
export function clearRange(bitmap: Uint8Array, from: number, end: number): void {
  checkRange(bitmap, from, end);
  if (from >= end) return;
  const mod = kernelModule();
  if (!mod) return refBitmap.clearRange(bitmap, from, end);
  if (mod.owns(bitmap)) return mod.exports.bitmapClearRange(bitmap.byteOffset, from, end);
  bitChunks(mod, bitmap, 'rw', from, end, (p, f, e) => { mod.exports.bitmapClearRange(p, f, e); });
}

/** dst |= src, byte for byte over src.length bytes (dst must be at least as long). */
export function orInto(dst: Uint8Array, src: Uint8Array): void {
  if (src.length > dst.length) throw new RangeError(`orInto: source of ${src.length} bytes into ${dst.length}`);
  const mod = kernelModule();
  if (!mod) return refBitmap.orInto(dst, src);
  columns(mod, [dst, src], ['rw', 'r'], 0, src.length, ([d, s], clen) => { mod.exports.bitmapOr(d!, s!, clen); });
}

/** A run of consecutive set bits [start, end). */
export interface BitRun {
  start: number;
  end: number;
}

/**
 * Iterates the runs of set bits within [from, end), in order. Bits changed during the iteration may or
 * may not be seen (clearing runs already yielded, as a resync does, is fine).
 */
export function* setRuns(bitmap: Uint8Array, from = 0, end = bitmap.length * 8): Generator<BitRun> {
  checkRange(bitmap, from, end);
  const mod = kernelModule();
  if (mod && mod.owns(bitmap)) {
    // Batches of runs per kernel call, copied out before yielding (the caller may call other kernels).
    const p = bitmap.byteOffset;
    let i = from;
    while (i < end) {
      const n = mod.exports.bitmapRuns(p, i, end, mod.runList, RUN_BATCH);
      if (n === 0) return;
      const runs = new Uint32Array(mod.memoryBuffer, mod.runList, 2 * n).slice();
      for (let k = 0; k < n; k++) yield { start: runs[2 * k]!, end: runs[2 * k + 1]! };
      if (n < RUN_BATCH) return;
      i = runs[2 * n - 1]!;
    }
    return;
  }
  let i = from;
  while (i < end) {
    const start = findNextSet(bitmap, i, end);
    if (start < 0) return;
    const stop = findNextClear(bitmap, start, end);
    const runEnd = stop < 0 ? end : stop;
    yield { start, end: runEnd };
    i = runEnd;
  }
}

// ---------------------------------------------------------------------------------------------- Parity

function checkBlocks(what: string, len: number, blocks: readonly (Uint8Array | null)[]): void {
  if (blocks.length > MAX_SOURCES) throw new RangeError(`${what}: at most ${MAX_SOURCES} blocks`);
  for (const b of blocks) {
    if (b && b.length < len) throw new RangeError(`${what}: a block of ${b.length} bytes is shorter than ${len}`);
  }
}

/** Writes the u32 pointers into the module's source list (0 for a null source). */
function writeSources(mod: KernelModule, ptrs: readonly number[]): number {
  const dv = mod.dataView;
  for (let i = 0; i < ptrs.length; i++) dv.setUint32(mod.sourceList + 4 * i, ptrs[i]!, true);
  return mod.sourceList;
}

/**
 * dst = XOR of `sources` over dst.length bytes (each source at least that long, at least one source).
 * This is RAID-4/5 parity, and also the rebuild of one missing block: XOR of parity and the survivors.
 */
export function xorInto(dst: Uint8Array, sources: readonly Uint8Array[]): void {
  if (sources.length === 0) throw new RangeError('xorInto: no sources');
  checkBlocks('xorInto', dst.length, sources);
  const mod = kernelModule();
  if (!mod) return refParity.xorInto(dst, sources);
  const modes: Mode[] = ['w', ...sources.map((): Mode => 'r')];
  columns(mod, [dst, ...sources], modes, 0, dst.length, ([d, ...s], clen) => {
    mod.exports.xorBlocks(d!, writeSources(mod, s), s.length, clen);
  });
}

/** Runs raid6GenPQ on wasm pointers for the given data (null = zeros) and optional P / Q outputs. */
function genPQ(mod: KernelModule, data: readonly (Uint8Array | null)[], p: Uint8Array | null, q: Uint8Array | null, len: number): void {
  const present = data.filter((d): d is Uint8Array => d !== null);
  const bufs = [...present, ...(p ? [p] : []), ...(q ? [q] : [])];
  const modes: Mode[] = [...present.map((): Mode => 'r'), ...(p ? ['w' as Mode] : []), ...(q ? ['w' as Mode] : [])];
  columns(mod, bufs, modes, 0, len, (ptrs, clen) => {
    let k = 0;
    const srcs = data.map((d) => (d ? ptrs[k++]! : 0));
    const pp = p ? ptrs[k++]! : 0;
    const qp = q ? ptrs[k++]! : 0;
    mod.exports.raid6GenPQ(writeSources(mod, srcs), data.length, clen, pp, qp);
  });
}

/**
 * RAID-6 syndromes of the data blocks over p.length bytes: P = XOR of all, Q = sum of 2^i * D_i in
 * GF(2^8) with polynomial 0x11d (the layout Linux md and dm-raid use). At least one data block.
 */
export function raid6GenPQ(data: readonly Uint8Array[], p: Uint8Array, q: Uint8Array): void {
  if (data.length === 0) throw new RangeError('raid6GenPQ: no data blocks');
  if (q.length !== p.length) throw new RangeError('raid6GenPQ: P and Q differ in length');
  checkBlocks('raid6GenPQ', p.length, data);
  if (data.length > 255) throw new RangeError('raid6GenPQ: GF(2^8) allows at most 255 data blocks');
  const mod = kernelModule();
  if (!mod) return refParity.raid6GenPQ(data, p, q, p.length);
  genPQ(mod, data, p, q, p.length);
}

/**
 * Rebuilds the blocks whose indices are in `failed` (one or two of them) in the stripe
 * `blocks` = [D_0, ..., D_n-1, P, Q]: index n is P and n + 1 is Q. The failed blocks are outputs (their
 * previous contents are ignored); all blocks have the same length.
 */
export function raid6Recover(blocks: readonly Uint8Array[], failed: readonly number[]): void {
  const n = blocks.length - 2;
  if (n < 1 || n > 255) throw new RangeError('raid6Recover: need 1..255 data blocks plus P and Q');
  const len = blocks[0]!.length;
  if (blocks.some((b) => b.length !== len)) throw new RangeError('raid6Recover: blocks differ in length');
  const bad = [...new Set(failed)].sort((a, b) => a - b);
  if (bad.length > 2 || bad.some((i) => !Number.isInteger(i) || i < 0 || i > n + 1)) {
    throw new RangeError(`raid6Recover: failed must list one or two indices in 0..${n + 1}`);
  }
  const mod = kernelModule();
  if (!mod) return refParity.raid6Recover(blocks, bad);
  if (bad.length === 0) return;
  const p = blocks[n]!;
  const q = blocks[n + 1]!;
  const data = blocks.slice(0, n);
  const without = (skip: readonly number[]): (Uint8Array | null)[] => data.map((d, i) => (skip.includes(i) ? null : d));
  const [x, y] = bad as [number, number | undefined];
  const xorFromP = (dx: Uint8Array): void => xorInto(dx, [p, ...data.filter((_, i) => i !== x)]);
  if (y === undefined) {
    if (x === n) genPQ(mod, data, p, null, len);
    else if (x === n + 1) genPQ(mod, data, null, q, len);
    else xorFromP(blocks[x]!);
  } else if (x === n) {
    genPQ(mod, data, p, q, len);
  } else if (y === n + 1) {
    xorFromP(blocks[x]!);
    genPQ(mod, data, null, q, len);
  } else if (y === n) {
    // Dx = 2^-x (Q ^ Qx), with Qx the Q of the other data blocks; then P afresh.
    const dx = blocks[x]!;
    genPQ(mod, without([x]), null, dx, len);
    const c = refParity.gfPow2(-x);
    columns(mod, [dx, q], ['rw', 'r'], 0, len, ([d, qq], clen) => { mod.exports.raid6MulXor(d!, qq!, d!, c, clen); });
    genPQ(mod, data, p, null, len);
  } else {
    // Pxy and Qxy into Dx and Dy, then Dx = A (P ^ Pxy) ^ B (Q ^ Qxy), Dy = (P ^ Pxy) ^ Dx.
    const dx = blocks[x]!;
    const dy = blocks[y]!;
    genPQ(mod, without([x, y]), dx, dy, len);
    const { a, b } = refParity.raid6Coefficients(x, y);
    columns(mod, [p, q, dx, dy], ['r', 'r', 'rw', 'rw'], 0, len, ([pp, qq, d1, d2], clen) => {
      mod.exports.raid6Recover2(pp!, qq!, d1!, d2!, a, b, clen);
    });
  }
}
