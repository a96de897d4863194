// Bitmap kernels for the write-intent bitmap: find next set/clear bit, count, set/clear ranges, OR.
//
// Bit i of a bitmap is bit (i & 7) of byte (i >> 3), so a little-endian u64 load sees bit i of the map
// as bit (i & 63) of word (i >> 6), the layout of Linux's bitmaps on x86. Ranges are [from, end) in bits;
// nothing past byte ceil(end / 8) is read or written. Scans of empty (or full) space go 64 bytes per
// step with SIMD, which keeps huge, mostly-empty bitmaps at memory speed.

/**
 * Index of the first bit in [from, end) that differs from `inv` (0 finds set bits, all-ones finds
 * clear bits), or `end` when there is none.
 */
// @ts-ignore: decorator
@inline function findNext(p: usize, from: u32, end: u32, inv: u64): u32 {
  if (from >= end) return end;
  const endWords = <usize>(end >>> 6);
  let w = <usize>(from >>> 6);
  let start = from;
  if (w < endWords) {
    let x = (load<u64>(p + (w << 3)) ^ inv) & (~(<u64>0) << (<u64>(from & 63)));
    if (x != 0) return <u32>(w << 6) + <u32>ctz<u64>(x);
    w++;
    const vinv = i64x2.splat(<i64>inv);
    while (w + 8 <= endWords) {
      const q = p + (w << 3);
      const v = v128.or(v128.or(v128.load(q), v128.load(q, 16)), v128.or(v128.load(q, 32), v128.load(q, 48)));
      const u = v128.and(v128.and(v128.load(q), v128.load(q, 16)), v128.and(v128.load(q, 32), v128.load(q, 48)));
      // A set bit exists when the OR is non-zero; a clear bit when the AND is not all ones.
      if (inv == 0 ? v128.any_true(v) : v128.any_true(v128.xor(u, vinv))) break;
      w += 8;
    }
    while (w < endWords) {
      x = load<u64>(p + (w << 3)) ^ inv;
      if (x != 0) return <u32>(w << 6) + <u32>ctz<u64>(x);
      w++;
    }
    start = <u32>(endWords << 6);
  }
  // Fewer than 64 bits remain: go byte by byte.
  const invByte = <u32>(inv & 0xff);
  for (let b = start >>> 3; b <= (end - 1) >>> 3; b++) {
    let x = (<u32>load<u8>(p + <usize>b) ^ invByte) & 0xff;
    if (b == start >>> 3) x &= (0xff << (start & 7)) & 0xff;
    const r = (b << 3) + <u32>ctz<u32>(x | 0x100);
    if (r < (b << 3) + 8) return r < end ? r : end;
  }
  return end;
}

/** First set bit in [from, end) of the bitmap at `p`, or `end`. */
export function bitmapFindNextSet(p: usize, from: u32, end: u32): u32 {
  return findNext(p, from, end, 0);
}

/** First clear bit in [from, end) of the bitmap at `p`, or `end`. */
export function bitmapFindNextClear(p: usize, from: u32, end: u32): u32 {
  return findNext(p, from, end, ~(<u64>0));
}

/** Number of set bits in [from, end). */
export function bitmapPopcount(p: usize, from: u32, end: u32): u32 {
  if (from >= end) return 0;
  let count: u64 = 0;
  const endWords = <usize>(end >>> 6);
  let w = <usize>(from >>> 6);
  let start = from;
  if (w < endWords) {
    count += popcnt<u64>(load<u64>(p + (w << 3)) & (~(<u64>0) << (<u64>(from & 63))));
    w++;
    while (w + 8 <= endWords) {
      const q = p + (w << 3);
      count += popcnt<u64>(load<u64>(q)) + popcnt<u64>(load<u64>(q, 8)) +
        popcnt<u64>(load<u64>(q, 16)) + popcnt<u64>(load<u64>(q, 24)) +
        popcnt<u64>(load<u64>(q, 32)) + popcnt<u64>(load<u64>(q, 40)) +
        popcnt<u64>(load<u64>(q, 48)) + popcnt<u64>(load<u64>(q, 56));
      w += 8;
    }
    while (w < endWords) {
      count += popcnt<u64>(load<u64>(p + (w << 3)));
      w++;
    }
    start = <u32>(endWords << 6);
  }
  for (let b = start >>> 3; b <= (end - 1) >>> 3; b++) {
    let x = <u32>load<u8>(p + <usize>b);
    if (b == start >>> 3) x &= (0xff << (start & 7)) & 0xff;
    if (b == (end - 1) >>> 3) x &= 0xff >>> (7 - ((end - 1) & 7));
    count += <u64>popcnt<u32>(x);
  }
  return <u32>count;
}

/** Mask of the bits of byte `b` that lie in [from, end). */
// @ts-ignore: decorator
@inline function byteMask(b: u32, from: u32, end: u32): u32 {
  const lo = from > (b << 3) ? from - (b << 3) : 0;
  const hi = end < (b << 3) + 8 ? end - (b << 3) : 8;
  return ((0xff << lo) & (0xff >>> (8 - hi))) & 0xff;
}

/** Sets (value 1) or clears (value 0) bits [from, end). */
function fillRange(p: usize, from: u32, end: u32, value: u32): void {
  if (from >= end) return;
  const first = from >>> 3;
  const last = (end - 1) >>> 3;
  if (first == last) {
    const m = byteMask(first, from, end);
    const q = p + <usize>first;
    store<u8>(q, value ? (<u32>load<u8>(q) | m) : (<u32>load<u8>(q) & ~m));
    return;
  }
  const mf = byteMask(first, from, end);
  const ml = byteMask(last, from, end);
  const qf = p + <usize>first;
  const ql = p + <usize>last;
  store<u8>(qf, value ? (<u32>load<u8>(qf) | mf) : (<u32>load<u8>(qf) & ~mf));
  store<u8>(ql, value ? (<u32>load<u8>(ql) | ml) : (<u32>load<u8>(ql) & ~ml));
  if (last > first + 1) memory.fill(qf + 1, value ? 0xff : 0, <usize>(last - first - 1));
}

/** Sets bits [from, end). */
export function bitmapSetRange(p: usize, from: u32, end: u32): void {
  fillRange(p, from, end, 1);
}

/** Clears bits [from, end). */
export function bitmapClearRange(p: usize, from: u32, end: u32): void {
  fillRange(p, from, end, 0);
}

/** dst |= src over `nbytes` bytes. */
export function bitmapOr(dst: usize, src: usize, nbytes: usize): void {
  const end64 = dst + (nbytes & ~(<usize>63));
  const delta = src - dst;
  while (dst < end64) {
    v128.store(dst, v128.or(v128.load(dst), v128.load(dst + delta)));
    v128.store(dst, v128.or(v128.load(dst, 16), v128.load(dst + delta, 16)), 16);
    v128.store(dst, v128.or(v128.load(dst, 32), v128.load(dst + delta, 32)), 32);
    v128.store(dst, v128.or(v128.load(dst, 48), v128.load(dst + delta, 48)), 48);
    dst += 64;
  }
  const end = end64 + (nbytes & 63);
  while (dst < end) {
    store<u8>(dst, load<u8>(dst) | load<u8>(dst + delta));
    dst++;
  }
}

/**
 * Writes up to `maxRuns` runs of set bits found in [from, end) to `out` as u32 pairs (start, end) and
 * returns how many; fewer than maxRuns means the scan reached `end`. One call serves many runs, so
 * iterating short runs is not dominated by host calls.
 */
export function bitmapRuns(p: usize, from: u32, end: u32, out: usize, maxRuns: u32): u32 {
  let n: u32 = 0;
  let i = from;
  while (n < maxRuns && i < end) {
    const start = findNext(p, i, end, 0);
    if (start >= end) break;
    const stop = findNext(p, start, end, ~(<u64>0));
    store<u32>(out + (<usize>n << 3), start);
    store<u32>(out + (<usize>n << 3), stop, 4);
    n++;
    i = stop;
  }
  return n;
}
