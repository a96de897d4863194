// XXH3-64 (xxHash 0.8), bit-exact with the reference implementation, with a SIMD128 long-input loop.
//
// Inputs up to 240 bytes take the scalar short paths of the reference. Longer inputs run the
// "accumulate 512 / scramble" loop over 8 u64 accumulators held in four v128 locals; the 32x32->64
// multiply of each lane uses i64x2.extmul_low_i32x4_u after gathering the low and high halves.
// The long path is also exported in three steps (init, whole 1 KiB blocks, digest) over a state block
// in wasm memory, so the host can stream input: in pieces (scatter-gather lists), or from outside wasm
// memory through a bounded staging area.

const PRIME32_1: u64 = 0x9e3779b1;
const PRIME32_2: u64 = 0x85ebca77;
const PRIME32_3: u64 = 0xc2b2ae3d;
const PRIME64_1: u64 = 0x9e3779b185ebca87;
const PRIME64_2: u64 = 0xc2b2ae3d27d4eb4f;
const PRIME64_3: u64 = 0x165667b19e3779f9;
const PRIME64_4: u64 = 0x85ebca77c2b2ae63;
const PRIME64_5: u64 = 0x27d4eb2f165667c5;
const PRIME_MX1: u64 = 0x165667919e3779f9;
const PRIME_MX2: u64 = 0x9fb21c651e98df25;

const SECRET_SIZE: usize = 192;
const STRIPE_LEN: usize = 64;
const STRIPES_PER_BLOCK: usize = (SECRET_SIZE - STRIPE_LEN) / 8; // 16
const BLOCK_LEN: usize = STRIPE_LEN * STRIPES_PER_BLOCK; // 1024
const MIDSIZE_MAX: usize = 240;

/** The default secret, kSecret. */
const K_SECRET: usize = memory.data<u8>([
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
], 64);

/**
 * A long-path state block: the 8 accumulators at 0, a pointer to the secret at 64 (kSecret, or the
 * secret derived from a non-zero seed, kept at 128). The host allocates one per streaming hasher;
 * one-shot calls use STATIC_STATE.
 */
const XXH3_STATE_SIZE: usize = 128 + SECRET_SIZE;
const STATIC_STATE: usize = memory.data(<i32>XXH3_STATE_SIZE, 64);
/** Accumulators a digest works on, so that digesting leaves the state as it was. */
const DIGEST_ACC: usize = memory.data(64, 64);

// @ts-ignore: decorator
@inline function rotl64(x: u64, r: u64): u64 {
  return rotl<u64>(x, r);
}

/** Low and high halves of the 128-bit product, xored together. */
function mul128Fold64(lhs: u64, rhs: u64): u64 {
  const loLo = (lhs & 0xffffffff) * (rhs & 0xffffffff);
  const hiLo = (lhs >> 32) * (rhs & 0xffffffff);
  const loHi = (lhs & 0xffffffff) * (rhs >> 32);
  const hiHi = (lhs >> 32) * (rhs >> 32);
  const cross = (loLo >> 32) + (hiLo & 0xffffffff) + loHi;
  const upper = (hiLo >> 32) + (cross >> 32) + hiHi;
  const lower = (cross << 32) | (loLo & 0xffffffff);
  return lower ^ upper;
}

function xxh64Avalanche(h: u64): u64 {
  h ^= h >> 33;
  h *= PRIME64_2;
  h ^= h >> 29;
  h *= PRIME64_3;
  h ^= h >> 32;
  return h;
}

function avalanche(h: u64): u64 {
  h ^= h >> 37;
  h *= PRIME_MX1;
  h ^= h >> 32;
  return h;
}

function rrmxmx(h: u64, len: u64): u64 {
  h ^= rotl64(h, 49) ^ rotl64(h, 24);
  h *= PRIME_MX2;
  h ^= (h >> 35) + len;
  h *= PRIME_MX2;
  return h ^ (h >> 28);
}

// @ts-ignore: decorator
@inline function mix16B(input: usize, secret: usize, seed: u64): u64 {
  return mul128Fold64(load<u64>(input) ^ (load<u64>(secret) + seed), load<u64>(input, 8) ^ (load<u64>(secret, 8) - seed));
}

function len1to3(input: usize, len: usize, secret: usize, seed: u64): u64 {
  const c1 = <u32>load<u8>(input);
  const c2 = <u32>load<u8>(input + (len >> 1));
  const c3 = <u32>load<u8>(input + len - 1);
  const combined = (c1 << 16) | (c2 << 24) | c3 | (<u32>len << 8);
  const bitflip = (<u64>(load<u32>(secret) ^ load<u32>(secret, 4))) + seed;
  return xxh64Avalanche((<u64>combined) ^ bitflip);
}

function len4to8(input: usize, len: usize, secret: usize, seed: u64): u64 {
  seed ^= (<u64>bswap<u32>(<u32>seed)) << 32;
  const input1 = <u64>load<u32>(input);
  const input2 = <u64>load<u32>(input + len - 4);
  const bitflip = (load<u64>(secret, 8) ^ load<u64>(secret, 16)) - seed;
  const input64 = input2 + (input1 << 32);
  return rrmxmx(input64 ^ bitflip, <u64>len);
}

function len9to16(input: usize, len: usize, secret: usize, seed: u64): u64 {
  const bitflip1 = (load<u64>(secret, 24) ^ load<u64>(secret, 32)) + seed;
  const bitflip2 = (load<u64>(secret, 40) ^ load<u64>(secret, 48)) - seed;
  const lo = load<u64>(input) ^ bitflip1;
  const hi = load<u64>(input + len - 8) ^ bitflip2;
  return avalanche(<u64>len + bswap<u64>(lo) + hi + mul128Fold64(lo, hi));
}

function len17to128(input: usize, len: usize, secret: usize, seed: u64): u64 {
  let acc = <u64>len * PRIME64_1;
  if (len > 32) {
    if (len > 64) {
      if (len > 96) {
        acc += mix16B(input + 48, secret + 96, seed);
        acc += mix16B(input + len - 64, secret + 112, seed);
      }
      acc += mix16B(input + 32, secret + 64, seed);
      acc += mix16B(input + len - 48, secret + 80, seed);
    }
    acc += mix16B(input + 16, secret + 32, seed);
    acc += mix16B(input + len - 32, secret + 48, seed);
  }
  acc += mix16B(input, secret, seed);
  acc += mix16B(input + len - 16, secret + 16, seed);
  return avalanche(acc);
}

function len129to240(input: usize, len: usize, secret: usize, seed: u64): u64 {
  let acc = <u64>len * PRIME64_1;
  const rounds = len >> 4;
  for (let i: usize = 0; i < 8; i++) acc += mix16B(input + 16 * i, secret + 16 * i, seed);
  acc = avalanche(acc);
  for (let i: usize = 8; i < rounds; i++) acc += mix16B(input + 16 * i, secret + 16 * (i - 8) + 3, seed);
  acc += mix16B(input + len - 16, secret + 136 - 17, seed);
  return avalanche(acc);
}

/** Writes the secret for `seed` at `dst` (kSecret itself for seed 0). */
function initSecret(dst: usize, seed: u64): void {
  for (let i: usize = 0; i < SECRET_SIZE; i += 16) {
    store<u64>(dst + i, load<u64>(K_SECRET + i) + seed);
    store<u64>(dst + i, load<u64>(K_SECRET + i, 8) - seed, 8);
  }
}

// Two 16-byte lanes of a stripe are accumulated together: the low and high u32 halves of both lanes'
// data^key are gathered with one two-input shuffle each, then multiplied with extmul_low (first lane)
// and extmul_high (second lane), which needs half the shuffles of one lane at a time.

/** Low u32 halves of the four u64s in k0, k1. */
// @ts-ignore: decorator
@inline function halvesLo(k0: v128, k1: v128): v128 {
  return i32x4.shuffle(k0, k1, 0, 2, 4, 6);
}

/** High u32 halves of the four u64s in k0, k1. */
// @ts-ignore: decorator
@inline function halvesHi(k0: v128, k1: v128): v128 {
  return i32x4.shuffle(k0, k1, 1, 3, 5, 7);
}

/** acc + product + data with its two u64 lanes swapped. */
// @ts-ignore: decorator
@inline function accAdd(acc: v128, product: v128, data: v128): v128 {
  return i64x2.add(acc, i64x2.add(product, i64x2.shuffle(data, data, 1, 0)));
}

// @ts-ignore: decorator
@inline function scrambleLane(acc: v128, key: v128): v128 {
  let a = v128.xor(acc, i64x2.shr_u(acc, 47));
  a = v128.xor(a, key);
  // a * PRIME32_1 in each u64 lane: lo32 * P + ((hi32 * P) << 32)
  const p = i32x4.splat(<i32>PRIME32_1);
  const lo = i64x2.extmul_low_i32x4_u(i32x4.shuffle(a, a, 0, 2, 0, 2), p);
  const hi = i64x2.extmul_low_i32x4_u(i32x4.shuffle(a, a, 1, 3, 1, 3), p);
  return i64x2.add(lo, i64x2.shl(hi, 32));
}

/** Accumulates `nBlocks` whole 1 KiB blocks (each followed by a scramble) into the accumulators at acc. */
function longBlocks(acc: usize, input: usize, nBlocks: usize, secret: usize): void {
  let a0 = v128.load(acc);
  let a1 = v128.load(acc, 16);
  let a2 = v128.load(acc, 32);
  let a3 = v128.load(acc, 48);
  for (let b: usize = 0; b < nBlocks; b++) {
    for (let s: usize = 0; s < STRIPES_PER_BLOCK; s++) {
      const sec = secret + s * 8;
      const d0 = v128.load(input);
      const d1 = v128.load(input, 16);
      const d2 = v128.load(input, 32);
      const d3 = v128.load(input, 48);
      const k0 = v128.xor(d0, v128.load(sec));
      const k1 = v128.xor(d1, v128.load(sec, 16));
      const k2 = v128.xor(d2, v128.load(sec, 32));
      const k3 = v128.xor(d3, v128.load(sec, 48));
      const lo01 = halvesLo(k0, k1);
      const hi01 = halvesHi(k0, k1);
      const lo23 = halvesLo(k2, k3);
      const hi23 = halvesHi(k2, k3);
      a0 = accAdd(a0, i64x2.extmul_low_i32x4_u(lo01, hi01), d0);
      a1 = accAdd(a1, i64x2.extmul_high_i32x4_u(lo01, hi01), d1);
      a2 = accAdd(a2, i64x2.extmul_low_i32x4_u(lo23, hi23), d2);
      a3 = accAdd(a3, i64x2.extmul_high_i32x4_u(lo23, hi23), d3);
      input += STRIPE_LEN;
    }
    const k = secret + SECRET_SIZE - STRIPE_LEN;
    a0 = scrambleLane(a0, v128.load(k));
    a1 = scrambleLane(a1, v128.load(k, 16));
    a2 = scrambleLane(a2, v128.load(k, 32));
    a3 = scrambleLane(a3, v128.load(k, 48));
  }
  v128.store(acc, a0);
  v128.store(acc, a1, 16);
  v128.store(acc, a2, 32);
  v128.store(acc, a3, 48);
}

/** Accumulates `nStripes` stripes (no scramble) into the accumulators at acc. */
function longStripes(acc: usize, input: usize, nStripes: usize, secret: usize): void {
  let a0 = v128.load(acc);
  let a1 = v128.load(acc, 16);
  let a2 = v128.load(acc, 32);
  let a3 = v128.load(acc, 48);
  for (let s: usize = 0; s < nStripes; s++) {
    const sec = secret + s * 8;
    const d0 = v128.load(input);
    const d1 = v128.load(input, 16);
    const d2 = v128.load(input, 32);
    const d3 = v128.load(input, 48);
    const k0 = v128.xor(d0, v128.load(sec));
    const k1 = v128.xor(d1, v128.load(sec, 16));
    const k2 = v128.xor(d2, v128.load(sec, 32));
    const k3 = v128.xor(d3, v128.load(sec, 48));
    const lo01 = halvesLo(k0, k1);
    const hi01 = halvesHi(k0, k1);
    const lo23 = halvesLo(k2, k3);
    const hi23 = halvesHi(k2, k3);
    a0 = accAdd(a0, i64x2.extmul_low_i32x4_u(lo01, hi01), d0);
    a1 = accAdd(a1, i64x2.extmul_high_i32x4_u(lo01, hi01), d1);
    a2 = accAdd(a2, i64x2.extmul_low_i32x4_u(lo23, hi23), d2);
    a3 = accAdd(a3, i64x2.extmul_high_i32x4_u(lo23, hi23), d3);
    input += STRIPE_LEN;
  }
  v128.store(acc, a0);
  v128.store(acc, a1, 16);
  v128.store(acc, a2, 32);
  v128.store(acc, a3, 48);
}

/** Starts a long-path state at `state` (XXH3_STATE_SIZE bytes, 16-aligned) with the given seed. */
export function xxh3StateInit(state: usize, seed: u64): void {
  store<u64>(state, PRIME32_3);
  store<u64>(state, PRIME64_1, 8);
  store<u64>(state, PRIME64_2, 16);
  store<u64>(state, PRIME64_3, 24);
  store<u64>(state, PRIME64_4, 32);
  store<u64>(state, PRIME32_2, 40);
  store<u64>(state, PRIME64_5, 48);
  store<u64>(state, PRIME32_1, 56);
  if (seed == 0) {
    store<u32>(state, <u32>K_SECRET, 64);
  } else {
    initSecret(state + 128, seed);
    store<u32>(state, <u32>(state + 128), 64);
  }
}

/** Feeds `nBlocks` whole 1 KiB blocks of input at `ptr` to the state. */
export function xxh3StateBlocks(state: usize, ptr: usize, nBlocks: usize): void {
  longBlocks(state, ptr, nBlocks, <usize>load<u32>(state, 64));
}

/**
 * The hash of a long input (over 240 bytes) whose whole blocks went through xxh3StateBlocks: `ptr`
 * holds the last `tailLen` bytes (1..1024, what remains after the whole blocks, never empty) and, when
 * tailLen < 64, the 64 bytes before `ptr` hold the input bytes that precede the tail. The state is left
 * unchanged, so more blocks may follow if the input goes on.
 */
export function xxh3StateDigest(state: usize, ptr: usize, tailLen: usize, totalLen: u64): u64 {
  const secret = <usize>load<u32>(state, 64);
  memory.copy(DIGEST_ACC, state, 64);
  longStripes(DIGEST_ACC, ptr, (tailLen - 1) / STRIPE_LEN, secret);
  longStripes(DIGEST_ACC, ptr + tailLen - STRIPE_LEN, 1, secret + SECRET_SIZE - STRIPE_LEN - 7);
  let result = totalLen * PRIME64_1;
  for (let i: usize = 0; i < 4; i++) {
    const s = secret + 11 + 16 * i;
    result += mul128Fold64(load<u64>(DIGEST_ACC + 16 * i) ^ load<u64>(s), load<u64>(DIGEST_ACC + 16 * i, 8) ^ load<u64>(s, 8));
  }
  return avalanche(result);
}

/** Bytes of a state block. */
export function xxh3StateSize(): usize {
  return XXH3_STATE_SIZE;
}

/** A state block inside the module, for hosts that stage one input at a time. */
export function xxh3StaticState(): usize {
  return STATIC_STATE;
}

/** XXH3-64 of `len` bytes at `ptr` with `seed` (0 for the unseeded hash). */
export function xxh3(ptr: usize, len: usize, seed: u64): u64 {
  const secret = K_SECRET;
  if (len <= 16) {
    if (len > 8) return len9to16(ptr, len, secret, seed);
    if (len >= 4) return len4to8(ptr, len, secret, seed);
    if (len > 0) return len1to3(ptr, len, secret, seed);
    return xxh64Avalanche(seed ^ (load<u64>(secret, 56) ^ load<u64>(secret, 64)));
  }
  if (len <= 128) return len17to128(ptr, len, secret, seed);
  if (len <= MIDSIZE_MAX) return len129to240(ptr, len, secret, seed);
  xxh3StateInit(STATIC_STATE, seed);
  const nBlocks = (len - 1) / BLOCK_LEN;
  xxh3StateBlocks(STATIC_STATE, ptr, nBlocks);
  return xxh3StateDigest(STATIC_STATE, ptr + nBlocks * BLOCK_LEN, len - nBlocks * BLOCK_LEN, <u64>len);
}
