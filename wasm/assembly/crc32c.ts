// CRC32C (Castagnoli, reflected polynomial 0x82F63B78) by slicing-by-16 over two interleaved streams.
//
// WebAssembly has no CRC32 or carry-less-multiply instruction, so the kernel uses tables: T[k][b] is the
// CRC register contribution of byte b followed by k zero bytes. One step folds 16 bytes with 16 table
// lookups whose addresses use the load instruction's constant offset, so each lookup is shift, mask, load.
// A single stream is bound by its dependency chain (crc -> xor -> 4 lookups -> xor tree -> crc), so input
// is taken in 1 KiB blocks whose two halves are hashed side by side and joined with a "feed 512 zero
// bytes" operator (a GF(2) 32x32 matrix, applied with four 256-entry tables built at instantiation).

const POLY: u32 = 0x82f63b78;

/** 16 tables of 256 u32: T[k] at TABLES + k * 1024. */
const TABLES: usize = memory.data(16 * 256 * 4, 64);
/** Scratch for the combine operator: four 256-entry tables (one per byte of the CRC register). */
const SHIFT_TABLES: usize = memory.data(4 * 256 * 4, 64);
/** Scratch for the GF(2) matrices used to build the shift operator (two 32-word matrices). */
const MATRIX_A: usize = memory.data(32 * 4, 16);
const MATRIX_B: usize = memory.data(32 * 4, 16);

function buildTables(): void {
  for (let b: u32 = 0; b < 256; b++) {
    let c = b;
    for (let j = 0; j < 8; j++) c = (c >>> 1) ^ (POLY & (0 - (c & 1)));
    store<u32>(TABLES + ((<usize>b) << 2), c);
  }
  for (let k: usize = 1; k < 16; k++) {
    for (let b: usize = 0; b < 256; b++) {
      const prev = load<u32>(TABLES + ((k - 1) << 10) + (b << 2));
      store<u32>(TABLES + (k << 10) + (b << 2), (prev >>> 8) ^ load<u32>(TABLES + ((prev & 0xff) << 2)));
    }
  }
}
buildTables();

/**
 * One 16-byte slicing step at `p` with register `crc`: the first four bytes are mixed with the register
 * and split with shifts; the other twelve are loaded as single bytes, which costs a load instead of two
 * ALU operations (the kernel is bound by ALU throughput, not by loads).
 */
// @ts-ignore: decorator
@inline function step16(p: usize, crc: u32): u32 {
  const w0 = load<u32>(p) ^ crc;
  return load<u32>((w0 << 2) & 0x3fc, TABLES + (15 << 10)) ^
    load<u32>((w0 >>> 6) & 0x3fc, TABLES + (14 << 10)) ^
    load<u32>((w0 >>> 14) & 0x3fc, TABLES + (13 << 10)) ^
    load<u32>((w0 >>> 22) & 0x3fc, TABLES + (12 << 10)) ^
    load<u32>((<usize>load<u8>(p, 4)) << 2, TABLES + (11 << 10)) ^
    load<u32>((<usize>load<u8>(p, 5)) << 2, TABLES + (10 << 10)) ^
    load<u32>((<usize>load<u8>(p, 6)) << 2, TABLES + (9 << 10)) ^
    load<u32>((<usize>load<u8>(p, 7)) << 2, TABLES + (8 << 10)) ^
    load<u32>((<usize>load<u8>(p, 8)) << 2, TABLES + (7 << 10)) ^
    load<u32>((<usize>load<u8>(p, 9)) << 2, TABLES + (6 << 10)) ^
    load<u32>((<usize>load<u8>(p, 10)) << 2, TABLES + (5 << 10)) ^
    load<u32>((<usize>load<u8>(p, 11)) << 2, TABLES + (4 << 10)) ^
    load<u32>((<usize>load<u8>(p, 12)) << 2, TABLES + (3 << 10)) ^
    load<u32>((<usize>load<u8>(p, 13)) << 2, TABLES + (2 << 10)) ^
    load<u32>((<usize>load<u8>(p, 14)) << 2, TABLES + (1 << 10)) ^
    load<u32>((<usize>load<u8>(p, 15)) << 2, TABLES + (0 << 10));
}

/** Bytewise tail: the raw (non-inverted) register over `len` bytes. */
function crcBytes(crc: u32, ptr: usize, len: usize): u32 {
  for (let i: usize = 0; i < len; i++) {
    crc = (crc >>> 8) ^ load<u32>(TABLES + (((crc ^ <u32>load<u8>(ptr + i)) & 0xff) << 2));
  }
  return crc;
}

/** Single-stream slicing-by-16 over the raw register. */
function crcRaw(crc: u32, ptr: usize, len: usize): u32 {
  const end16 = ptr + (len & ~(<usize>15));
  while (ptr < end16) {
    crc = step16(ptr, crc);
    ptr += 16;
  }
  return crcBytes(crc, ptr, len & 15);
}

/** Multiplies the GF(2) matrix at `mat` (32 column words) by vector `vec`. */
function gf2MatrixTimes(mat: usize, vec: u32): u32 {
  let sum: u32 = 0;
  let i: usize = 0;
  while (vec != 0) {
    if (vec & 1) sum ^= load<u32>(mat + (i << 2));
    vec >>>= 1;
    i++;
  }
  return sum;
}

/** dst = mat * mat (both 32-word matrices; dst must differ from mat). */
function gf2MatrixSquare(dst: usize, mat: usize): void {
  for (let n: usize = 0; n < 32; n++) store<u32>(dst + (n << 2), gf2MatrixTimes(mat, load<u32>(mat + (n << 2))));
}

/**
 * Builds SHIFT_TABLES so that shiftCrc(r) is the raw register after feeding `len` zero bytes to `r`,
 * as four byte-indexed tables (the operator is linear, so it splits per register byte).
 */
function buildShiftTables(len: usize): void {
  // The operator for one zero bit, squared up to one zero byte as in zlib's crc32_combine; then
  // "feed 8 * len zero bits" is composed by repeated squaring over the bits of len.
  let cur = MATRIX_A;
  let nxt = MATRIX_B;
  store<u32>(cur, POLY);
  let row: u32 = 1;
  for (let n: usize = 1; n < 32; n++) {
    store<u32>(cur + (n << 2), row);
    row <<= 1;
  }
  for (let i = 0; i < 3; i++) { // 1 -> 2 -> 4 -> 8 zero bits
    gf2MatrixSquare(nxt, cur);
    const t = cur;
    cur = nxt;
    nxt = t;
  }
  for (let n: usize = 0; n < 32; n++) store<u32>(OP + (n << 2), (<u32>1) << <u32>n);
  let l = len;
  while (true) {
    if (l & 1) {
      for (let n: usize = 0; n < 32; n++) store<u32>(OP + (n << 2), gf2MatrixTimes(cur, load<u32>(OP + (n << 2))));
    }
    l >>= 1;
    if (l == 0) break;
    gf2MatrixSquare(nxt, cur);
    const t = cur;
    cur = nxt;
    nxt = t;
  }
  for (let k: usize = 0; k < 4; k++) {
    const base = SHIFT_TABLES + (k << 10);
    for (let b: u32 = 0; b < 256; b++) {
      let v: u32 = 0;
      for (let n: u32 = 0; n < 8; n++) if (b & (1 << n)) v ^= load<u32>(OP + ((k * 8 + <usize>n) << 2));
      store<u32>(base + ((<usize>b) << 2), v);
    }
  }
}
/** Columns of the shift operator while it is built (image of each register bit). */
const OP: usize = memory.data(32 * 4, 16);

/** Applies the shift operator built by buildShiftTables. */
// @ts-ignore: decorator
@inline function shiftCrc(crc: u32): u32 {
  return load<u32>(SHIFT_TABLES + ((crc << 2) & 0x3fc)) ^
    load<u32>(SHIFT_TABLES + ((crc >>> 6) & 0x3fc), 1 << 10) ^
    load<u32>(SHIFT_TABLES + ((crc >>> 14) & 0x3fc), 2 << 10) ^
    load<u32>(SHIFT_TABLES + ((crc >>> 22) & 0x3fc), 3 << 10);
}

/** Each stream's share of a two-stream block; the shift tables advance a register by this many bytes. */
const STREAM_LEN: usize = 512;
buildShiftTables(STREAM_LEN);

/**
 * Continues a CRC32C: `crc` is a finished CRC (0 to start), the result is the finished CRC of the
 * previous bytes followed by `len` bytes at `ptr`.
 */
export function crc32cUpdate(crc: u32, ptr: usize, len: usize): u32 {
  let raw = ~crc;
  // Blocks of 2 * STREAM_LEN bytes: stream A continues the register over the first half while stream B
  // starts from zero over the second; over raw registers crc(A || B) = shift_|B|(crc(A)) ^ crc_0(B).
  const blockEnd = ptr + (len & ~(2 * STREAM_LEN - 1));
  while (ptr < blockEnd) {
    let a = raw;
    let b: u32 = 0;
    const endA = ptr + STREAM_LEN;
    do {
      a = step16(ptr, a);
      b = step16(ptr + STREAM_LEN, b);
      ptr += 16;
    } while (ptr < endA);
    raw = shiftCrc(a) ^ b;
    ptr += STREAM_LEN;
  }
  return ~crcRaw(raw, ptr, len & (2 * STREAM_LEN - 1));
}
