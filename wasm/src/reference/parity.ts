// Plain TypeScript parity: XOR of N blocks and RAID-6 P+Q over GF(2^8) (generator 2, polynomial 0x11d),
// with recovery of up to two missing blocks, following H. Peter Anvin, "The mathematics of RAID-6".

/** GF(2^8) exponentials of the generator 2 (doubled so exp[log a + log b] needs no reduction). */
export const GF_EXP: Uint8Array = new Uint8Array(512);
/** GF(2^8) discrete logarithms base 2 (GF_LOG[0] is unused). */
export const GF_LOG: Uint8Array = new Uint8Array(256);
{
  let x = 1;
  for (let i = 0; i < 255; i++) {
    GF_EXP[i] = x;
    GF_EXP[i + 255] = x;
    GF_LOG[x] = i;
    x <<= 1;
    if (x & 0x100) x ^= 0x11d;
  }
}

/** Product of two GF(2^8) elements. */
export function gfMul(a: number, b: number): number {
  return a === 0 || b === 0 ? 0 : GF_EXP[GF_LOG[a]! + GF_LOG[b]!]!;
}

/** Multiplicative inverse of a non-zero GF(2^8) element. */
export function gfInv(a: number): number {
  return GF_EXP[255 - GF_LOG[a]!]!;
}

/** 2^n in GF(2^8) for any integer n (negative n gives the inverse power). */
export function gfPow2(n: number): number {
  return GF_EXP[((n % 255) + 255) % 255]!;
}

/** dst = xor of all sources (each at least dst.length bytes). */
export function xorInto(dst: Uint8Array, sources: readonly Uint8Array[]): void {
  const len = dst.length;
  const first = sources[0]!;
  for (let i = 0; i < len; i++) dst[i] = first[i]!;
  for (let s = 1; s < sources.length; s++) {
    const src = sources[s]!;
    for (let i = 0; i < len; i++) dst[i]! ^= src[i]!;
  }
}

/** P = xor of the data blocks, Q = sum of 2^i * D_i; null data blocks count as zeros. */
export function raid6GenPQ(data: readonly (Uint8Array | null)[], p: Uint8Array | null, q: Uint8Array | null, len: number): void {
  const coef = data.map((_, z) => gfPow2(z));
  for (let i = 0; i < len; i++) {
    let wp = 0;
    let wq = 0;
    for (let z = 0; z < data.length; z++) {
      const d = data[z];
      if (!d) continue;
      wp ^= d[i]!;
      wq ^= gfMul(coef[z]!, d[i]!);
    }
    if (p) p[i] = wp;
    if (q) q[i] = wq;
  }
}

/**
 * Rebuilds the blocks listed in `failed` (one or two indices: 0..n-1 data, n for P, n+1 for Q) of the
 * stripe `blocks` = [D_0 .. D_n-1, P, Q]. The failed blocks' contents are ignored and overwritten.
 */
export function raid6Recover(blocks: readonly Uint8Array[], failed: readonly number[]): void {
  const n = blocks.length - 2;
  const len = blocks[0]!.length;
  const p = blocks[n]!;
  const q = blocks[n + 1]!;
  const bad = [...new Set(failed)].sort((a, b) => a - b);
  const dataOf = (skip: readonly number[]): (Uint8Array | null)[] =>
    blocks.slice(0, n).map((b, i) => (skip.includes(i) ? null : b));
  if (bad.length === 0) return;
  const [x, y] = bad as [number, number | undefined];
  if (y === undefined) {
    if (x === n) raid6GenPQ(dataOf([]), p, null, len);
    else if (x === n + 1) raid6GenPQ(dataOf([]), null, q, len);
    else {
      const dx = blocks[x]!;
      for (let i = 0; i < len; i++) {
        let v = p[i]!;
        for (let z = 0; z < n; z++) if (z !== x) v ^= blocks[z]![i]!;
        dx[i] = v;
      }
    }
    return;
  }
  if (x === n) { // P and Q
    raid6GenPQ(dataOf([]), p, q, len);
  } else if (y === n) { // data x and P: x from Q, then P
    const qx = new Uint8Array(len);
    raid6GenPQ(dataOf([x]), null, qx, len);
    const c = gfPow2(-x);
    const dx = blocks[x]!;
    for (let i = 0; i < len; i++) dx[i] = gfMul(c, q[i]! ^ qx[i]!);
    raid6GenPQ(dataOf([]), p, null, len);
  } else if (y === n + 1) { // data x and Q: x from P, then Q
    const dx = blocks[x]!;
    for (let i = 0; i < len; i++) {
      let v = p[i]!;
      for (let z = 0; z < n; z++) if (z !== x) v ^= blocks[z]![i]!;
      dx[i] = v;
    }
    raid6GenPQ(dataOf([]), null, q, len);
  } else { // two data blocks
    const pxy = new Uint8Array(len);
    const qxy = new Uint8Array(len);
    raid6GenPQ(dataOf([x, y]), pxy, qxy, len);
    const { a, b } = raid6Coefficients(x, y);
    const dx = blocks[x]!;
    const dy = blocks[y]!;
    for (let i = 0; i < len; i++) {
      const pd = p[i]! ^ pxy[i]!;
      const qd = q[i]! ^ qxy[i]!;
      dx[i] = gfMul(a, pd) ^ gfMul(b, qd);
      dy[i] = pd ^ dx[i]!;
    }
  }
}

/** Coefficients A and B of two-data recovery (x < y): Dx = A (P + Pxy) + B (Q + Qxy). */
export function raid6Coefficients(x: number, y: number): { a: number; b: number } {
  const gyx = gfPow2(y - x);
  const inv = gfInv(gyx ^ 1);
  return { a: gfMul(gyx, inv), b: gfMul(gfPow2(-x), inv) };
}
