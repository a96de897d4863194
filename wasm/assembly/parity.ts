// Parity kernels: XOR of N sources, and RAID-6 P+Q over GF(2^8) (generator 2, polynomial 0x11d, as
// Linux md and dm-raid use) with the multiply-by-constant step of two-failure recovery.
//
// Source lists arrive as arrays of u32 pointers in wasm memory. A null (0) source pointer in the RAID-6
// syndrome stands for a block of zeros, which is how recovery computes the partial syndromes of the
// surviving disks. Multiplying by 2 is a byte-wise shift plus a conditional xor with 0x1d; multiplying by
// an arbitrary constant uses two 16-entry nibble tables with i8x16.swizzle, as Linux's recov_ssse3 does.

/** dst = a ^ b over len bytes. */
function xor2(dst: usize, a: usize, b: usize, len: usize): void {
  let i: usize = 0;
  for (; i + 32 <= len; i += 32) {
    v128.store(dst + i, v128.xor(v128.load(a + i), v128.load(b + i)));
    v128.store(dst + i, v128.xor(v128.load(a + i, 16), v128.load(b + i, 16)), 16);
  }
  for (; i < len; i++) store<u8>(dst + i, load<u8>(a + i) ^ load<u8>(b + i));
}

/** dst = a ^ b ^ c over len bytes. */
function xor3(dst: usize, a: usize, b: usize, c: usize, len: usize): void {
  let i: usize = 0;
  for (; i + 32 <= len; i += 32) {
    v128.store(dst + i, v128.xor(v128.xor(v128.load(a + i), v128.load(b + i)), v128.load(c + i)));
    v128.store(dst + i, v128.xor(v128.xor(v128.load(a + i, 16), v128.load(b + i, 16)), v128.load(c + i, 16)), 16);
  }
  for (; i < len; i++) store<u8>(dst + i, load<u8>(a + i) ^ load<u8>(b + i) ^ load<u8>(c + i));
}

/** dst = a ^ b ^ c ^ d over len bytes. */
function xor4(dst: usize, a: usize, b: usize, c: usize, d: usize, len: usize): void {
  let i: usize = 0;
  for (; i + 32 <= len; i += 32) {
    v128.store(dst + i, v128.xor(v128.xor(v128.load(a + i), v128.load(b + i)), v128.xor(v128.load(c + i), v128.load(d + i))));
    v128.store(dst + i, v128.xor(v128.xor(v128.load(a + i, 16), v128.load(b + i, 16)),
      v128.xor(v128.load(c + i, 16), v128.load(d + i, 16))), 16);
  }
  for (; i < len; i++) store<u8>(dst + i, load<u8>(a + i) ^ load<u8>(b + i) ^ load<u8>(c + i) ^ load<u8>(d + i));
}

/** Sources beyond four are folded in chunks of this many bytes, so dst stays in L1 between passes. */
const XOR_CHUNK: usize = 8192;

/** dst = xor of the `n` sources whose pointers are the u32s at `srcs`, over `len` bytes (n >= 1). */
export function xorBlocks(dst: usize, srcs: usize, n: u32, len: usize): void {
  const s0 = <usize>load<u32>(srcs);
  if (n == 1) { memory.copy(dst, s0, len); return; }
  const s1 = <usize>load<u32>(srcs, 4);
  if (n == 2) { xor2(dst, s0, s1, len); return; }
  const s2 = <usize>load<u32>(srcs, 8);
  if (n == 3) { xor3(dst, s0, s1, s2, len); return; }
  const s3 = <usize>load<u32>(srcs, 12);
  if (n == 4) { xor4(dst, s0, s1, s2, s3, len); return; }
  for (let off: usize = 0; off < len; off += XOR_CHUNK) {
    const clen = min(XOR_CHUNK, len - off);
    const d = dst + off;
    xor4(d, s0 + off, s1 + off, s2 + off, s3 + off, clen);
    let j: u32 = 4;
    while (j < n) {
      const left = n - j;
      const a = <usize>load<u32>(srcs + (<usize>j << 2)) + off;
      if (left == 1) { xor2(d, d, a, clen); j += 1; continue; }
      const b = <usize>load<u32>(srcs + (<usize>j << 2), 4) + off;
      if (left == 2) { xor3(d, d, a, b, clen); j += 2; continue; }
      const c = <usize>load<u32>(srcs + (<usize>j << 2), 8) + off;
      xor4(d, d, a, b, c, clen);
      j += 3;
    }
  }
}

/** Multiplies each byte by 2 in GF(2^8) mod 0x11d. */
// @ts-ignore: decorator
@inline function mul2(v: v128): v128 {
  const hi = i8x16.lt_s(v, i8x16.splat(0));
  return v128.xor(i8x16.add(v, v), v128.and(hi, i8x16.splat(0x1d)));
}

// @ts-ignore: decorator
@inline function mul2Byte(x: u32): u32 {
  return ((x << 1) ^ (x & 0x80 ? 0x1d : 0)) & 0xff;
}

/** Loads 16 bytes of a source, or zeros for a null source. */
// @ts-ignore: decorator
@inline function loadSrc(s: usize, off: usize): v128 {
  return s != 0 ? v128.load(s + off) : i64x2.splat(0);
}

/**
 * RAID-6 syndromes of `n` data blocks (u32 pointers at `srcs`, 0 = zeros) over `len` bytes:
 * P = xor of all, Q = sum of g^i * D_i (Horner from the last disk). A null `p` or `q` is not written.
 */
export function raid6GenPQ(srcs: usize, n: u32, len: usize, p: usize, q: usize): void {
  const last = <usize>(n - 1) << 2;
  let off: usize = 0;
  for (; off + 32 <= len; off += 32) {
    const sl = <usize>load<u32>(srcs + last);
    let wp0 = loadSrc(sl, off);
    let wp1 = loadSrc(sl, off + 16);
    let wq0 = wp0;
    let wq1 = wp1;
    for (let z = <isize>n - 2; z >= 0; z--) {
      const s = <usize>load<u32>(srcs + (<usize>z << 2));
      wq0 = mul2(wq0);
      wq1 = mul2(wq1);
      if (s != 0) {
        const d0 = v128.load(s + off);
        const d1 = v128.load(s + off, 16);
        wp0 = v128.xor(wp0, d0);
        wp1 = v128.xor(wp1, d1);
        wq0 = v128.xor(wq0, d0);
        wq1 = v128.xor(wq1, d1);
      }
    }
    if (p != 0) { v128.store(p + off, wp0); v128.store(p + off, wp1, 16); }
    if (q != 0) { v128.store(q + off, wq0); v128.store(q + off, wq1, 16); }
  }
  for (; off < len; off++) {
    const sl = <usize>load<u32>(srcs + last);
    let wp: u32 = sl != 0 ? <u32>load<u8>(sl + off) : 0;
    let wq = wp;
    for (let z = <isize>n - 2; z >= 0; z--) {
      const s = <usize>load<u32>(srcs + (<usize>z << 2));
      wq = mul2Byte(wq);
      if (s != 0) {
        const d = <u32>load<u8>(s + off);
        wp ^= d;
        wq ^= d;
      }
    }
    if (p != 0) store<u8>(p + off, wp);
    if (q != 0) store<u8>(q + off, wq);
  }
}

/** Product of two GF(2^8) elements mod 0x11d (scalar, for building tables). */
function gfMul(a: u32, b: u32): u32 {
  let r: u32 = 0;
  while (b != 0) {
    if (b & 1) r ^= a;
    a = mul2Byte(a);
    b >>= 1;
  }
  return r;
}

/** Nibble tables for multiplying by c: TAB_LO[i] = c * i, TAB_HI[i] = c * (i << 4). */
const MUL_TABLES: usize = memory.data(64, 16);

function buildMulTables(base: usize, c: u32): void {
  for (let i: u32 = 0; i < 16; i++) {
    store<u8>(base + <usize>i, gfMul(c, i));
    store<u8>(base + 16 + <usize>i, gfMul(c, i << 4));
  }
}

// @ts-ignore: decorator
@inline function mulConst(v: v128, lo: v128, hi: v128): v128 {
  const mask = i8x16.splat(0x0f);
  return v128.xor(i8x16.swizzle(lo, v128.and(v, mask)), i8x16.swizzle(hi, i16x8.shr_u(v128.andnot(v, mask), 4)));
}

/** dst = c * (a ^ b) over len bytes (a, b may alias dst). */
export function raid6MulXor(dst: usize, a: usize, b: usize, c: u32, len: usize): void {
  buildMulTables(MUL_TABLES, c);
  const lo = v128.load(MUL_TABLES);
  const hi = v128.load(MUL_TABLES, 16);
  let i: usize = 0;
  for (; i + 16 <= len; i += 16) {
    v128.store(dst + i, mulConst(v128.xor(v128.load(a + i), v128.load(b + i)), lo, hi));
  }
  for (; i < len; i++) {
    const x = <u32>(load<u8>(a + i) ^ load<u8>(b + i));
    store<u8>(dst + i, load<u8>(MUL_TABLES + <usize>(x & 15)) ^ load<u8>(MUL_TABLES + 16 + <usize>(x >> 4)));
  }
}

/**
 * Two-data-failure recovery step. On entry dx holds Pxy (P of the survivors) and dy holds Qxy (their Q);
 * on exit dx = A * (P ^ Pxy) ^ B * (Q ^ Qxy) and dy = (P ^ Pxy) ^ dx, the two missing blocks.
 */
export function raid6Recover2(p: usize, q: usize, dx: usize, dy: usize, coefA: u32, coefB: u32, len: usize): void {
  buildMulTables(MUL_TABLES, coefA);
  buildMulTables(MUL_TABLES + 32, coefB);
  const aLo = v128.load(MUL_TABLES);
  const aHi = v128.load(MUL_TABLES, 16);
  const bLo = v128.load(MUL_TABLES, 32);
  const bHi = v128.load(MUL_TABLES, 48);
  let i: usize = 0;
  for (; i + 16 <= len; i += 16) {
    const px = v128.xor(v128.load(p + i), v128.load(dx + i));
    const qx = v128.xor(v128.load(q + i), v128.load(dy + i));
    const x = v128.xor(mulConst(px, aLo, aHi), mulConst(qx, bLo, bHi));
    v128.store(dx + i, x);
    v128.store(dy + i, v128.xor(px, x));
  }
  for (; i < len; i++) {
    const px = <u32>(load<u8>(p + i) ^ load<u8>(dx + i));
    const qx = <u32>(load<u8>(q + i) ^ load<u8>(dy + i));
    const x = gfMul(coefA, px) ^ gfMul(coefB, qx);
    store<u8>(dx + i, x);
    store<u8>(dy + i, px ^ x);
  }
}
