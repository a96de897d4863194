// Plain TypeScript bitmap operations: bit i is bit (i & 7) of byte (i >> 3); ranges are [from, end) in bits.

/** Index of the first set bit in [from, end), or -1. */
export function findNextSet(bitmap: Uint8Array, from: number, end: number): number {
  for (let i = from; i < end; ) {
    const byte = bitmap[i >> 3]! >> (i & 7);
    if (byte === 0) {
      i = ((i >> 3) + 1) * 8;
      continue;
    }
    const r = i + 31 - Math.clz32(byte & -byte);
    return r < end ? r : -1;
  }
  return -1;
}

/** Index of the first clear bit in [from, end), or -1. */
export function findNextClear(bitmap: Uint8Array, from: number, end: number): number {
  for (let i = from; i < end; ) {
    const byte = (~bitmap[i >> 3]! & 0xff) >> (i & 7);
    if (byte === 0) {
      i = ((i >> 3) + 1) * 8;
      continue;
    }
    const r = i + 31 - Math.clz32(byte & -byte);
    return r < end ? r : -1;
  }
  return -1;
}

/** Set bits in each byte value. */
const BYTE_POPCOUNT: Uint8Array = Uint8Array.from({ length: 256 }, (_, b) => {
  let n = 0;
  for (let x = b; x; x >>= 1) n += x & 1;
  return n;
});

/** Number of set bits in [from, end): bit by bit at the edges, a table lookup per whole byte. */
export function countSet(bitmap: Uint8Array, from: number, end: number): number {
  let n = 0;
  let i = from;
  for (; i < end && (i & 7) !== 0; i++) n += (bitmap[i >> 3]! >> (i & 7)) & 1;
  for (; i + 8 <= end; i += 8) n += BYTE_POPCOUNT[bitmap[i >> 3]!]!;
  for (; i < end; i++) n += (bitmap[i >> 3]! >> (i & 7)) & 1;
  return n;
}

/** Sets bits [from, end). */
export function setRange(bitmap: Uint8Array, from: number, end: number): void {
  for (let i = from; i < end; i++) bitmap[i >> 3]! |= 1 << (i & 7);
}

/** Clears bits [from, end). */
export function clearRange(bitmap: Uint8Array, from: number, end: number): void {
  for (let i = from; i < end; i++) bitmap[i >> 3]! &= ~(1 << (i & 7));
}

/** dst |= src over src.length bytes. */
export function orInto(dst: Uint8Array, src: Uint8Array): void {
  for (let i = 0; i < src.length; i++) dst[i]! |= src[i]!;
}
