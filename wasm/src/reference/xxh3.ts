// Plain TypeScript XXH3-64 (xxHash 0.8) with BigInt arithmetic, written straight from the reference C code.

const M64 = (1n << 64n) - 1n;
const PRIME32_1 = 0x9e3779b1n;
const PRIME32_2 = 0x85ebca77n;
const PRIME32_3 = 0xc2b2ae3dn;
const PRIME64_1 = 0x9e3779b185ebca87n;
const PRIME64_2 = 0xc2b2ae3d27d4eb4fn;
const PRIME64_3 = 0x165667b19e3779f9n;
const PRIME64_4 = 0x85ebca77c2b2ae63n;
const PRIME64_5 = 0x27d4eb2f165667c5n;
const PRIME_MX1 = 0x165667919e3779f9n;
const PRIME_MX2 = 0x9fb21c651e98df25n;

/** The default 192-byte secret, kSecret. */
const K_SECRET = Uint8Array.from([
  0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
  0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
  0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
  0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
  0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
  0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
  0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
  0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
  0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
  0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
  0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
  0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
]);

function r64(b: Uint8Array, i: number): bigint {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(i, true);
}
function r32(b: Uint8Array, i: number): bigint {
  return BigInt(new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(i, true));
}
const mul = (a: bigint, b: bigint): bigint => (a * b) & M64;
const add = (a: bigint, b: bigint): bigint => (a + b) & M64;
const sub = (a: bigint, b: bigint): bigint => (a - b) & M64;
const rotl = (x: bigint, r: bigint): bigint => ((x << r) | (x >> (64n - r))) & M64;
function bswap64(x: bigint): bigint {
  let r = 0n;
  for (let i = 0n; i < 8n; i++) r |= ((x >> (8n * i)) & 0xffn) << (8n * (7n - i));
  return r;
}
function bswap32(x: bigint): bigint {
  return ((x & 0xffn) << 24n) | ((x & 0xff00n) << 8n) | ((x >> 8n) & 0xff00n) | ((x >> 24n) & 0xffn);
}
function mul128Fold64(a: bigint, b: bigint): bigint {
  const p = a * b;
  return (p & M64) ^ (p >> 64n);
}
function xxh64Avalanche(h: bigint): bigint {
  h ^= h >> 33n;
  h = mul(h, PRIME64_2);
  h ^= h >> 29n;
  h = mul(h, PRIME64_3);
  return h ^ (h >> 32n);
}
function avalanche(h: bigint): bigint {
  h ^= h >> 37n;
  h = mul(h, PRIME_MX1);
  return h ^ (h >> 32n);
}
function rrmxmx(h: bigint, len: bigint): bigint {
  h ^= rotl(h, 49n) ^ rotl(h, 24n);
  h = mul(h, PRIME_MX2);
  h ^= add(h >> 35n, len);
  h = mul(h, PRIME_MX2);
  return h ^ (h >> 28n);
}
function mix16B(d: Uint8Array, i: number, s: Uint8Array, si: number, seed: bigint): bigint {
  return mul128Fold64(r64(d, i) ^ add(r64(s, si), seed), r64(d, i + 8) ^ sub(r64(s, si + 8), seed));
}

function hashLong(d: Uint8Array, secret: Uint8Array): bigint {
  const acc = [PRIME32_3, PRIME64_1, PRIME64_2, PRIME64_3, PRIME64_4, PRIME32_2, PRIME64_5, PRIME32_1];
  const accumulate512 = (off: number, so: number): void => {
    for (let i = 0; i < 8; i++) {
      const v = r64(d, off + 8 * i);
      const k = v ^ r64(secret, so + 8 * i);
      acc[i ^ 1] = add(acc[i ^ 1]!, v);
      acc[i] = add(acc[i]!, (k & 0xffffffffn) * (k >> 32n));
    }
  };
  const stripesPerBlock = (secret.length - 64) / 8;
  const blockLen = 64 * stripesPerBlock;
  const len = d.length;
  const nbBlocks = Math.floor((len - 1) / blockLen);
  for (let n = 0; n < nbBlocks; n++) {
    for (let s = 0; s < stripesPerBlock; s++) accumulate512(n * blockLen + s * 64, s * 8);
    for (let i = 0; i < 8; i++) {
      let a = acc[i]!;
      a ^= a >> 47n;
      a ^= r64(secret, secret.length - 64 + 8 * i);
      acc[i] = mul(a, PRIME32_1);
    }
  }
  const nbStripes = Math.floor((len - 1 - blockLen * nbBlocks) / 64);
  for (let s = 0; s < nbStripes; s++) accumulate512(nbBlocks * blockLen + s * 64, s * 8);
  accumulate512(len - 64, secret.length - 64 - 7);
  let result = mul(BigInt(len), PRIME64_1);
  for (let i = 0; i < 4; i++) {
    result = add(result, mul128Fold64(acc[2 * i]! ^ r64(secret, 11 + 16 * i), acc[2 * i + 1]! ^ r64(secret, 11 + 16 * i + 8)));
  }
  return avalanche(result);
}

/** XXH3-64 of `data` with `seed` (0n for the unseeded hash), as an unsigned 64-bit bigint. */
export function xxh3(data: Uint8Array, seed = 0n): bigint {
  seed = BigInt.asUintN(64, seed);
  const s = K_SECRET;
  const len = data.length;
  const L = BigInt(len);
  if (len === 0) return xxh64Avalanche(seed ^ r64(s, 56) ^ r64(s, 64));
  if (len <= 3) {
    const c1 = BigInt(data[0]!), c2 = BigInt(data[len >> 1]!), c3 = BigInt(data[len - 1]!);
    const combined = (c1 << 16n) | (c2 << 24n) | c3 | (L << 8n);
    return xxh64Avalanche(combined ^ add(r32(s, 0) ^ r32(s, 4), seed));
  }
  if (len <= 8) {
    const sd = seed ^ (bswap32(seed & 0xffffffffn) << 32n);
    const input64 = add(r32(data, len - 4), r32(data, 0) << 32n);
    return rrmxmx(input64 ^ sub(r64(s, 8) ^ r64(s, 16), sd), L);
  }
  if (len <= 16) {
    const lo = r64(data, 0) ^ add(r64(s, 24) ^ r64(s, 32), seed);
    const hi = r64(data, len - 8) ^ sub(r64(s, 40) ^ r64(s, 48), seed);
    return avalanche(add(add(add(L, bswap64(lo)), hi), mul128Fold64(lo, hi)));
  }
  if (len <= 128) {
    let acc = mul(L, PRIME64_1);
    const pairs = len > 96 ? 4 : len > 64 ? 3 : len > 32 ? 2 : 1;
    for (let i = 0; i < pairs; i++) {
      acc = add(acc, mix16B(data, 16 * i, s, 32 * i, seed));
      acc = add(acc, mix16B(data, len - 16 * (i + 1), s, 32 * i + 16, seed));
    }
    return avalanche(acc);
  }
  if (len <= 240) {
    let acc = mul(L, PRIME64_1);
    for (let i = 0; i < 8; i++) acc = add(acc, mix16B(data, 16 * i, s, 16 * i, seed));
    acc = avalanche(acc);
    for (let i = 8; i < len >> 4; i++) acc = add(acc, mix16B(data, 16 * i, s, 16 * (i - 8) + 3, seed));
    acc = add(acc, mix16B(data, len - 16, s, 136 - 17, seed));
    return avalanche(acc);
  }
  if (seed === 0n) return hashLong(data, s);
  const custom = new Uint8Array(192);
  const dv = new DataView(custom.buffer);
  for (let i = 0; i < 192; i += 16) {
    dv.setBigUint64(i, add(r64(s, i), seed), true);
    dv.setBigUint64(i + 8, sub(r64(s, i + 8), seed), true);
  }
  return hashLong(data, custom);
}
