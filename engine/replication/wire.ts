// Replication frame codec: a typed frame (frames.ts) to one little-endian binary message and back. No I/O here.
//
// Every frame starts with a 1-byte FrameType, followed by a fixed layout per type (u64 fields carry numbers
// below 2^53 or bigint generation ids); payloads, strings and lists come last. The layout of each type is
// written above its encoder. The decoder checks sizes before reading and refuses anything malformed with
// a WireError; the encoder refuses values the decoder would refuse (RangeError: a bug of the caller).
import { createHmac, timingSafeEqual } from 'node:crypto';
import {
  AckKind, DISK_CODES, FrameType, MAX_FRAME, MAX_HISTORY, MAX_NODES, MAX_PAYLOAD, RESIZE_DONE, RESIZE_GROW, ROLE_CODES,
  TRIM_DISCARD, TRIM_ZEROES_UNMAP, type ResizeAckFrame, type ResizeFrame,
  type AckFrame, type AuthFrame, type BitmapFrame, type ChecksumRequestFrame, type DataFrame, type ErrorFrame,
  type FlushFrame, type Frame, type Generations, type HelloFrame, type PingFrame, type PongFrame, type ReadReplyFrame,
  type ReadRequestFrame, type ResyncDataFrame, type ResyncDoneFrame, type ResyncInSyncFrame, type ResyncRequestFrame,
  type StateFrame, type TrimFrame, type VerifyReplyFrame, type VerifyRequestFrame,
} from './frames.js';

/** Size of the HELLO nonce and of the AUTH MAC (HMAC-SHA256). */
export const NONCE_SIZE = 32;
export const MAC_SIZE = 32;
/** Longest resource name, in UTF-8 bytes. */
export const MAX_RESOURCE_NAME = 64;
/** Longest ERROR message, in UTF-8 bytes; longer messages are truncated when encoding. */
export const MAX_ERROR_MESSAGE = 1024;
export { MAX_HISTORY } from './frames.js';
/** Most hashes in one VERIFY_REPLY (and blocks in one VERIFY_REQUEST). */
export const MAX_VERIFY_HASHES = 2048;
/** VERIFY_REQUEST block sizes: powers of two in this range. */
export const MIN_VERIFY_BLOCK = 512;
export const MAX_VERIFY_BLOCK = 1 << 20;
/**
 * Domain separation of the AUTH MACs, one label per direction: a MAC the dialler sends never verifies as the
 * acceptor's, and the other way round. NUL-terminated, so neither label is a prefix of the other.
 */
const AUTH_LABELS = { dialler: 'twindisk-auth-v2 dialler->acceptor\0', acceptor: 'twindisk-auth-v2 acceptor->dialler\0' } as const;

/** Generations on the wire: current, one bitmap generation per node, history count, history entries. */
const GENS_SIZE = 8 + 8 * MAX_NODES + 1;

/** Bytes of each frame type before its variable part (payload, string, list); the whole frame for fixed ones. */
const FIXED_SIZE: Record<number, number> = {
  [FrameType.Hello]: 38,
  [FrameType.Auth]: 1 + MAC_SIZE,
  [FrameType.State]: 40 + GENS_SIZE,
  [FrameType.Bitmap]: 18,
  [FrameType.Data]: 21,
  [FrameType.Ack]: 14,
  [FrameType.Flush]: 9,
  [FrameType.Trim]: 26,
  [FrameType.ResyncRequest]: 25,
  [FrameType.ResyncData]: 17,
  [FrameType.ResyncInSync]: 25,
  [FrameType.ReadRequest]: 25,
  [FrameType.ReadReply]: 13,
  [FrameType.VerifyRequest]: 29,
  [FrameType.VerifyReply]: 15,
  [FrameType.Ping]: 9,
  [FrameType.Pong]: 9,
  [FrameType.Error]: 5,
  [FrameType.ChecksumRequest]: 33,
  [FrameType.ResyncDone]: 1 + GENS_SIZE,
  [FrameType.Resize]: 18,
  [FrameType.ResizeAck]: 15,
};

const FRAME_NAMES: Record<number, string> = {
  [FrameType.Hello]: 'HELLO', [FrameType.Auth]: 'AUTH', [FrameType.State]: 'STATE', [FrameType.Bitmap]: 'BITMAP',
  [FrameType.Data]: 'DATA', [FrameType.Ack]: 'ACK', [FrameType.Flush]: 'FLUSH', [FrameType.Trim]: 'TRIM',
  [FrameType.ResyncRequest]: 'RS_REQUEST', [FrameType.ResyncData]: 'RS_DATA', [FrameType.ResyncInSync]: 'RS_IN_SYNC',
  [FrameType.ReadRequest]: 'READ_REQUEST', [FrameType.ReadReply]: 'READ_REPLY', [FrameType.VerifyRequest]: 'VERIFY_REQUEST',
  [FrameType.VerifyReply]: 'VERIFY_REPLY', [FrameType.Ping]: 'PING', [FrameType.Pong]: 'PONG', [FrameType.Error]: 'ERROR',
  [FrameType.ChecksumRequest]: 'CSUM_REQUEST', [FrameType.ResyncDone]: 'RS_DONE',
  [FrameType.Resize]: 'RESIZE', [FrameType.ResizeAck]: 'RESIZE_ACK',
};

/** A received frame that breaks the wire format; the link that carried it is closed. */
export class WireError extends Error {
  override readonly name = 'WireError';
}

/** Name of a frame type, for logs ("DATA", "frame type 99"). */
export function frameName(type: number): string {
  return FRAME_NAMES[type] ?? `frame type ${type}`;
}

// ---- readers: plain byte arithmetic on the input view, no allocation ----

function getU16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}

function getU32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16)) + b[o + 3]! * 0x1000000;
}

function getI32(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24);
}

/** A u64 that must be below 2^53 (offsets, lengths, sequence numbers). */
function getU53(b: Uint8Array, o: number, what: string): number {
  const lo = getU32(b, o);
  const hi = getU32(b, o + 4);
  if (hi >= 0x200000) {
    throw new WireError(`${frameName(b[0]!)} frame: ${what} 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} is not below 2^53`);
  }
  return hi * 0x100000000 + lo;
}

function getU64(b: Uint8Array, o: number): bigint {
  return BigInt(getU32(b, o)) | (BigInt(getU32(b, o + 4)) << 32n);
}

function getBool(b: Uint8Array, o: number, what: string): boolean {
  const v = b[o]!;
  if (v > 1) throw new WireError(`${frameName(b[0]!)} frame: ${what} byte is ${v}, expected 0 or 1`);
  return v === 1;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function getString(b: Uint8Array, o: number, len: number, what: string): string {
  try {
    return utf8.decode(b.subarray(o, o + len));
  } catch {
    throw new WireError(`${frameName(b[0]!)} frame: ${what} is not valid UTF-8`);
  }
}

// ---- size and range checks of a received frame ----

function truncated(b: Uint8Array, need: number): WireError {
  return new WireError(`${frameName(b[0]!)} frame truncated: ${b.length} bytes, need ${need}`);
}

/** The frame must be exactly `size` bytes. */
function expectSize(b: Uint8Array, size: number): void {
  if (b.length < size) throw truncated(b, size);
  if (b.length > size) throw new WireError(`${frameName(b[0]!)} frame has ${b.length - size} trailing bytes (${b.length}, expected ${size})`);
}

function checkPayload(b: Uint8Array, what: string, n: number): void {
  if (n > MAX_PAYLOAD) throw new WireError(`${frameName(b[0]!)} frame: ${what} of ${n} bytes exceeds ${MAX_PAYLOAD}`);
}

function checkRange(b: Uint8Array, offset: number, length: number): void {
  if (length > 2 ** 53 - offset) throw new WireError(`${frameName(b[0]!)} frame: range ${offset}+${length} ends past 2^53`);
}

// ---- writers: Buffer methods on the output, values checked first ----

function putU16(out: Buffer, o: number, v: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new RangeError(`${what} ${v} is not an integer in 0..65535`);
  out.writeUInt16LE(v, o);
}

function putU32(out: Buffer, o: number, v: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`${what} ${v} is not an integer in 0..2^32-1`);
  out.writeUInt32LE(v, o);
}

function putI32(out: Buffer, o: number, v: number, what: string): void {
  if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) throw new RangeError(`${what} ${v} is not a 32-bit signed integer`);
  out.writeInt32LE(v, o);
}

function putU53(out: Buffer, o: number, v: number, what: string): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${what} ${v} is not an integer in 0..2^53-1`);
  out.writeUInt32LE(v >>> 0, o);
  out.writeUInt32LE(Math.floor(v / 0x100000000), o + 4);
}

function putU64(out: Buffer, o: number, v: bigint, what: string): void {
  if (typeof v !== 'bigint' || v < 0n || v > 0xffffffffffffffffn) throw new RangeError(`${what} ${String(v)} is not a u64 bigint`);
  out.writeBigUInt64LE(v, o);
}

function putBytes(out: Buffer, o: number, v: Uint8Array, size: number, what: string): void {
  if (!(v instanceof Uint8Array) || v.length !== size) throw new RangeError(`${what} must be ${size} bytes`);
  out.set(v, o);
}

function checkOutPayload(what: string, v: Uint8Array): void {
  if (v.length > MAX_PAYLOAD) throw new RangeError(`${what} of ${v.length} bytes exceeds ${MAX_PAYLOAD}`);
}

function checkOutRange(what: string, offset: number, length: number): void {
  if (length > 2 ** 53 - offset) throw new RangeError(`${what} range ${offset}+${length} ends past 2^53`);
}

// ---- generations: current u64 | bitmap u64 × MAX_NODES | history count u8 | history u64 × count ----

function putGens(out: Buffer, o: number, g: Generations, what: string): void {
  if (g.bitmap.length !== MAX_NODES) throw new RangeError(`${what}: ${g.bitmap.length} bitmap generations, expected ${MAX_NODES}`);
  if (g.history.length > MAX_HISTORY) throw new RangeError(`${what}: ${g.history.length} history generations, at most ${MAX_HISTORY}`);
  putU64(out, o, g.current, `${what} current generation`);
  for (let i = 0; i < MAX_NODES; i++) putU64(out, o + 8 + 8 * i, g.bitmap[i]!, `${what} bitmap generation`);
  out[o + 8 + 8 * MAX_NODES] = g.history.length;
  for (let i = 0; i < g.history.length; i++) putU64(out, o + GENS_SIZE + 8 * i, g.history[i]!, `${what} history generation`);
}

/** Decodes generations at `o`, which must end the frame. */
function getGens(b: Uint8Array, o: number): Generations {
  const current = getU64(b, o);
  const bitmap: bigint[] = [];
  for (let i = 0; i < MAX_NODES; i++) bitmap.push(getU64(b, o + 8 + 8 * i));
  const n = b[o + 8 + 8 * MAX_NODES]!;
  if (n > MAX_HISTORY) throw new WireError(`${frameName(b[0]!)} frame: ${n} history generations, at most ${MAX_HISTORY}`);
  expectSize(b, o + GENS_SIZE + 8 * n);
  const history: bigint[] = [];
  for (let i = 0; i < n; i++) history.push(getU64(b, o + GENS_SIZE + 8 * i));
  return { current, bitmap, history };
}

// ---- one encoder and one decoder per frame type ----

// HELLO: type | version u16 | nodeId u8 | nonce [32] | name length u16 | resource name (UTF-8, <= 64 bytes)
function encodeHello(f: HelloFrame): Buffer {
  const name = Buffer.from(f.resource, 'utf8');
  if (name.length > MAX_RESOURCE_NAME) throw new RangeError(`HELLO resource name of ${name.length} bytes exceeds ${MAX_RESOURCE_NAME}`);
  const out = Buffer.alloc(FIXED_SIZE[FrameType.Hello]! + name.length);
  out[0] = FrameType.Hello;
  putU16(out, 1, f.version, 'HELLO version');
  if (!Number.isInteger(f.nodeId) || f.nodeId < 0 || f.nodeId >= MAX_NODES) throw new RangeError(`HELLO node id ${f.nodeId} is not in 0..${MAX_NODES - 1}`);
  out[3] = f.nodeId;
  putBytes(out, 4, f.nonce, NONCE_SIZE, 'HELLO nonce');
  out.writeUInt16LE(name.length, 36);
  out.set(name, 38);
  return out;
}

function decodeHello(b: Uint8Array): HelloFrame {
  const nodeId = b[3]!;
  if (nodeId >= MAX_NODES) throw new WireError(`HELLO frame: node id ${nodeId} is not below ${MAX_NODES}`);
  const len = getU16(b, 36);
  if (len > MAX_RESOURCE_NAME) throw new WireError(`HELLO frame: resource name of ${len} bytes exceeds ${MAX_RESOURCE_NAME}`);
  expectSize(b, FIXED_SIZE[FrameType.Hello]! + len);
  return { type: FrameType.Hello, version: getU16(b, 1), nodeId, resource: getString(b, 38, len, 'resource name'), nonce: b.subarray(4, 36) };
}

// AUTH: type | mac [32]
function encodeAuth(f: AuthFrame): Buffer {
  const out = Buffer.alloc(FIXED_SIZE[FrameType.Auth]!);
  out[0] = FrameType.Auth;
  putBytes(out, 1, f.mac, MAC_SIZE, 'AUTH mac');
  return out;
}

function decodeAuth(b: Uint8Array): AuthFrame {
  expectSize(b, FIXED_SIZE[FrameType.Auth]!);
  return { type: FrameType.Auth, mac: b.subarray(1) };
}

// STATE: type | role u8 | disk u8 | quorum u8 | flags u32 | size u64 | promotedAt u64 | outOfSyncBits u64 | resyncFrom u64 | generations
function encodeState(f: StateFrame): Buffer {
  const role = ROLE_CODES.indexOf(f.role);
  const disk = DISK_CODES.indexOf(f.disk);
  if (role < 0) throw new RangeError(`STATE role ${String(f.role)} is unknown`);
  if (disk < 0) throw new RangeError(`STATE disk state ${String(f.disk)} is unknown`);
  const out = Buffer.alloc(FIXED_SIZE[FrameType.State]! + 8 * f.gens.history.length);
  out[0] = FrameType.State;
  out[1] = role;
  out[2] = disk;
  out[3] = f.quorum ? 1 : 0;
  putU32(out, 4, f.flags, 'STATE flags');
  putU53(out, 8, f.size, 'STATE size');
  putU53(out, 16, f.promotedAt, 'STATE promotedAt');
  putU53(out, 24, f.outOfSyncBits, 'STATE outOfSyncBits');
  putU64(out, 32, f.resyncFrom, 'STATE resyncFrom');
  putGens(out, 40, f.gens, 'STATE');
  return out;
}

function decodeState(b: Uint8Array): StateFrame {
  const role = ROLE_CODES[b[1]!];
  const disk = DISK_CODES[b[2]!];
  if (role === undefined) throw new WireError(`STATE frame: unknown role code ${b[1]}`);
  if (disk === undefined) throw new WireError(`STATE frame: unknown disk state code ${b[2]}`);
  return {
    type: FrameType.State, role, disk, quorum: getBool(b, 3, 'quorum'), flags: getU32(b, 4), size: getU53(b, 8, 'size'),
    promotedAt: getU53(b, 16, 'promotedAt'), outOfSyncBits: getU53(b, 24, 'outOfSyncBits'), resyncFrom: getU64(b, 32), gens: getGens(b, 40),
  };
}

// BITMAP: type | last u8 | offset u64 (bits, multiple of 8) | totalBits u64 | bits (<= MAX_PAYLOAD bytes)
// The bits must lie inside the bitmap: offset/8 + bytes <= ceil(totalBits/8).
function encodeBitmap(f: BitmapFrame): Buffer {
  checkOutPayload('BITMAP bits', f.bits);
  if (f.offset % 8 !== 0) throw new RangeError(`BITMAP offset ${f.offset} is not a multiple of 8`);
  if (f.offset / 8 + f.bits.length > Math.ceil(f.totalBits / 8)) {
    throw new RangeError(`BITMAP bits at ${f.offset}+${f.bits.length * 8} lie past totalBits ${f.totalBits}`);
  }
  const out = Buffer.allocUnsafe(FIXED_SIZE[FrameType.Bitmap]! + f.bits.length);
  out[0] = FrameType.Bitmap;
  out[1] = f.last ? 1 : 0;
  putU53(out, 2, f.offset, 'BITMAP offset');
  putU53(out, 10, f.totalBits, 'BITMAP totalBits');
  out.set(f.bits, 18);
  return out;
}

function decodeBitmap(b: Uint8Array): BitmapFrame {
  const last = getBool(b, 1, 'last');
  const offset = getU53(b, 2, 'offset');
  const totalBits = getU53(b, 10, 'totalBits');
  const bits = b.subarray(18);
  checkPayload(b, 'bits', bits.length);
  if (offset % 8 !== 0) throw new WireError(`BITMAP frame: offset ${offset} is not a multiple of 8`);
  if (offset / 8 + bits.length > Math.ceil(totalBits / 8)) {
    throw new WireError(`BITMAP frame: bits at ${offset}+${bits.length * 8} lie past totalBits ${totalBits}`);
  }
  return { type: FrameType.Bitmap, offset, totalBits, last, bits };
}

// DATA: type | seq u64 | offset u64 | flags u32 | data (<= MAX_PAYLOAD bytes). The hot path: one allocation.
/** Bytes of a DATA frame before its payload. */
export const DATA_HEADER = 21;

/**
 * Writes a DATA frame's header into `buf` just before a payload of `length` bytes that already sits
 * at `at + DATA_HEADER`, so a frame is sent without copying its payload. Returns the frame.
 */
export function writeDataHeader(buf: Buffer, at: number, seq: number, offset: number, flags: number, length: number): Buffer {
  if (length > MAX_PAYLOAD) throw new RangeError(`DATA payload of ${length} bytes exceeds ${MAX_PAYLOAD}`);
  checkOutRange('DATA', offset, length);
  buf[at] = FrameType.Data;
  putU53(buf, at + 1, seq, 'DATA seq');
  putU53(buf, at + 9, offset, 'DATA offset');
  putU32(buf, at + 17, flags, 'DATA flags');
  return buf.subarray(at, at + DATA_HEADER + length);
}

function encodeData(f: DataFrame): Buffer {
  checkOutPayload('DATA payload', f.data);
  const out = Buffer.allocUnsafe(DATA_HEADER + f.data.length);
  out.set(f.data, DATA_HEADER);
  return writeDataHeader(out, 0, f.seq, f.offset, f.flags, f.data.length);
}

function decodeData(b: Uint8Array): DataFrame {
  const seq = getU53(b, 1, 'seq');
  const offset = getU53(b, 9, 'offset');
  const data = b.subarray(21);
  checkPayload(b, 'payload', data.length);
  checkRange(b, offset, data.length);
  return { type: FrameType.Data, seq, offset, flags: getU32(b, 17), data };
}

// ACK: type | seq u64 | kind u8 (1 Received, 2 Written) | status i32
function encodeAck(f: AckFrame): Buffer {
  if (f.kind !== AckKind.Received && f.kind !== AckKind.Written) throw new RangeError(`ACK kind ${f.kind} is unknown`);
  const out = Buffer.allocUnsafe(FIXED_SIZE[FrameType.Ack]!);
  out[0] = FrameType.Ack;
  putU53(out, 1, f.seq, 'ACK seq');
  out[9] = f.kind;
  putI32(out, 10, f.status, 'ACK status');
  return out;
}

function decodeAck(b: Uint8Array): AckFrame {
  expectSize(b, FIXED_SIZE[FrameType.Ack]!);
  const kind = b[9]!;
  if (kind !== AckKind.Received && kind !== AckKind.Written) throw new WireError(`ACK frame: unknown kind ${kind}`);
  return { type: FrameType.Ack, seq: getU53(b, 1, 'seq'), kind, status: getI32(b, 10) };
}

// FLUSH, PING, PONG: type | seq u64
function encodeSeqOnly(type: FrameType.Flush | FrameType.Ping | FrameType.Pong, seq: number): Buffer {
  const out = Buffer.allocUnsafe(FIXED_SIZE[FrameType.Flush]!);
  out[0] = type;
  putU53(out, 1, seq, `${frameName(type)} seq`);
  return out;
}

function decodeSeqOnly(b: Uint8Array): FlushFrame | PingFrame | PongFrame {
  expectSize(b, FIXED_SIZE[FrameType.Flush]!);
  return { type: b[0]! as FrameType.Flush | FrameType.Ping | FrameType.Pong, seq: getU53(b, 1, 'seq') };
}

// TRIM: type | seq u64 | offset u64 | length u64 | mode u8 (1 discard, 2 zeroes, 3 zeroes with unmap)
function encodeTrim(f: TrimFrame): Buffer {
  if (!Number.isInteger(f.mode) || f.mode < TRIM_DISCARD || f.mode > TRIM_ZEROES_UNMAP) throw new RangeError(`TRIM mode ${f.mode} is unknown`);
  checkOutRange('TRIM', f.offset, f.length);
  const out = Buffer.allocUnsafe(FIXED_SIZE[FrameType.Trim]!);
  out[0] = FrameType.Trim;
  putU53(out, 1, f.seq, 'TRIM seq');
  putU53(out, 9, f.offset, 'TRIM offset');
  putU53(out, 17, f.length, 'TRIM length');
  out[25] = f.mode;
  return out;
}

function decodeTrim(b: Uint8Array): TrimFrame {
  expectSize(b, FIXED_SIZE[FrameType.Trim]!);
  const mode = b[25]!;
  if (mode < TRIM_DISCARD || mode > TRIM_ZEROES_UNMAP) throw new WireError(`TRIM frame: unknown mode ${mode}`);
  const offset = getU53(b, 9, 'offset');
  const length = getU53(b, 17, 'length');
  checkRange(b, offset, length);
  return { type: FrameType.Trim, seq: getU53(b, 1, 'seq'), offset, length, mode };
}

// RS_REQUEST, RS_IN_SYNC, READ_REQUEST: type | seq u64 | offset u64 | length u64
// A READ_REQUEST's length is at most MAX_PAYLOAD: its READ_REPLY must fit in one frame.
type RangeFrame = ResyncRequestFrame | ResyncInSyncFrame | ReadRequestFrame;

function encodeRange(f: RangeFrame): Buffer {
  const name = frameName(f.type);
  if (f.type === FrameType.ReadRequest && f.length > MAX_PAYLOAD) throw new RangeError(`READ_REQUEST length ${f.length} exceeds ${MAX_PAYLOAD}`);
  checkOutRange(name, f.offset, f.length);
  const out = Buffer.allocUnsafe(FIXED_SIZE[FrameType.ResyncRequest]!);
  out[0] = f.type;
  putU53(out, 1, f.seq, `${name} seq`);
  putU53(out, 9, f.offset, `${name} offset`);
  putU53(out, 17, f.length, `${name} length`);
  return out;
}

function decodeRange(b: Uint8Array): RangeFrame {
  expectSize(b, FIXED_SIZE[FrameType.ResyncRequest]!);
  const type = b[0]! as RangeFrame['type'];
  const offset = getU53(b, 9, 'offset');
  const length = getU53(b, 17, 'length');
  if (type === FrameType.ReadRequest && length > MAX_PAYLOAD) throw new WireError(`READ_REQUEST frame: length ${length} exceeds ${MAX_PAYLOAD}`);
  checkRange(b, offset, length);
  return { type, seq: getU53(b, 1, 'seq'), offset, length };
}

// CSUM_REQUEST: type | seq u64 | offset u64 | length u64 | hash u64
function encodeChecksumRequest(f: ChecksumRequestFrame): Buffer {
  checkOutRange('CSUM_REQUEST', f.offset, f.length);
  const out = Buffer.allocUnsafe(FIXED_SIZE[FrameType.ChecksumRequest]!);
  out[0] = FrameType.ChecksumRequest;
  putU53(out, 1, f.seq, 'CSUM_REQUEST seq');
  putU53(out, 9, f.offset, 'CSUM_REQUEST offset');
  putU53(out, 17, f.length, 'CSUM_REQUEST length');
  putU64(out, 25, f.hash, 'CSUM_REQUEST hash');
  return out;
}

function decodeChecksumRequest(b: Uint8Array): ChecksumRequestFrame {
  expectSize(b, FIXED_SIZE[FrameType.ChecksumRequest]!);
  const offset = getU53(b, 9, 'offset');
  const length = getU53(b, 17, 'length');
  checkRange(b, offset, length);
  return { type: FrameType.ChecksumRequest, seq: getU53(b, 1, 'seq'), offset, length, hash: getU64(b, 25) };
}

// RS_DATA: type | seq u64 | offset u64 | data (<= MAX_PAYLOAD bytes)
export const RESYNC_DATA_HEADER = 17;

/**
 * Writes an RS_DATA header at the start of `buf`, whose payload the caller put at
 * `buf[RESYNC_DATA_HEADER, RESYNC_DATA_HEADER + length)`; returns the frame (a view of `buf`).
 */
export function writeResyncDataHeader(buf: Buffer, seq: number, offset: number, length: number): Buffer {
  if (length > MAX_PAYLOAD) throw new RangeError(`RS_DATA payload of ${length} bytes exceeds ${MAX_PAYLOAD}`);
  checkOutRange('RS_DATA', offset, length);
  buf[0] = FrameType.ResyncData;
  putU53(buf, 1, seq, 'RS_DATA seq');
  putU53(buf, 9, offset, 'RS_DATA offset');
  return buf.subarray(0, RESYNC_DATA_HEADER + length);
}

function encodeResyncData(f: ResyncDataFrame): Buffer {
  checkOutPayload('RS_DATA payload', f.data);
  const out = Buffer.allocUnsafe(RESYNC_DATA_HEADER + f.data.length);
  out.set(f.data, RESYNC_DATA_HEADER);
  return writeResyncDataHeader(out, f.seq, f.offset, f.data.length);
}

function decodeResyncData(b: Uint8Array): ResyncDataFrame {
  const seq = getU53(b, 1, 'seq');
  const offset = getU53(b, 9, 'offset');
  const data = b.subarray(17);
  checkPayload(b, 'payload', data.length);
  checkRange(b, offset, data.length);
  return { type: FrameType.ResyncData, seq, offset, data };
}

// RS_DONE: type | generations
function encodeResyncDone(f: ResyncDoneFrame): Buffer {
  const out = Buffer.alloc(FIXED_SIZE[FrameType.ResyncDone]! + 8 * f.gens.history.length);
  out[0] = FrameType.ResyncDone;
  putGens(out, 1, f.gens, 'RS_DONE');
  return out;
}

function decodeResyncDone(b: Uint8Array): ResyncDoneFrame {
  return { type: FrameType.ResyncDone, gens: getGens(b, 1) };
}

// READ_REPLY: type | seq u64 | status i32 | data (<= MAX_PAYLOAD bytes)
function encodeReadReply(f: ReadReplyFrame): Buffer {
  checkOutPayload('READ_REPLY payload', f.data);
  const out = Buffer.allocUnsafe(FIXED_SIZE[FrameType.ReadReply]! + f.data.length);
  out[0] = FrameType.ReadReply;
  putU53(out, 1, f.seq, 'READ_REPLY seq');
  putI32(out, 9, f.status, 'READ_REPLY status');
  out.set(f.data, 13);
  return out;
}

function decodeReadReply(b: Uint8Array): ReadReplyFrame {
  const data = b.subarray(13);
  checkPayload(b, 'payload', data.length);
  return { type: FrameType.ReadReply, seq: getU53(b, 1, 'seq'), status: getI32(b, 9), data };
}

// VERIFY_REQUEST: type | seq u64 | offset u64 | length u64 | blockSize u32
// blockSize is a power of two in 512..1 MiB; length is a multiple of it, of at most MAX_VERIFY_HASHES blocks.
function verifyRequestProblem(length: number, blockSize: number): string | null {
  if (!Number.isInteger(blockSize) || blockSize < MIN_VERIFY_BLOCK || blockSize > MAX_VERIFY_BLOCK || (blockSize & (blockSize - 1)) !== 0) {
    return `block size ${blockSize} is not a power of two in ${MIN_VERIFY_BLOCK}..${MAX_VERIFY_BLOCK}`;
  }
  if (length % blockSize !== 0) return `length ${length} is not a multiple of the block size ${blockSize}`;
  if (length / blockSize > MAX_VERIFY_HASHES) return `length ${length} is ${length / blockSize} blocks, at most ${MAX_VERIFY_HASHES}`;
  return null;
}

function encodeVerifyRequest(f: VerifyRequestFrame): Buffer {
  const problem = verifyRequestProblem(f.length, f.blockSize);
  if (problem) throw new RangeError(`VERIFY_REQUEST ${problem}`);
  checkOutRange('VERIFY_REQUEST', f.offset, f.length);
  const out = Buffer.allocUnsafe(FIXED_SIZE[FrameType.VerifyRequest]!);
  out[0] = FrameType.VerifyRequest;
  putU53(out, 1, f.seq, 'VERIFY_REQUEST seq');
  putU53(out, 9, f.offset, 'VERIFY_REQUEST offset');
  putU53(out, 17, f.length, 'VERIFY_REQUEST length');
  out.writeUInt32LE(f.blockSize, 25);
  return out;
}

function decodeVerifyRequest(b: Uint8Array): VerifyRequestFrame {
  expectSize(b, FIXED_SIZE[FrameType.VerifyRequest]!);
  const offset = getU53(b, 9, 'offset');
  const length = getU53(b, 17, 'length');
  const blockSize = getU32(b, 25);
  const problem = verifyRequestProblem(length, blockSize);
  if (problem) throw new WireError(`VERIFY_REQUEST frame: ${problem}`);
  checkRange(b, offset, length);
  return { type: FrameType.VerifyRequest, seq: getU53(b, 1, 'seq'), offset, length, blockSize };
}

// VERIFY_REPLY: type | seq u64 | status i32 | count u16 (<= 2048) | hashes u64 × count
function encodeVerifyReply(f: VerifyReplyFrame): Buffer {
  const n = f.hashes.length;
  if (n > MAX_VERIFY_HASHES) throw new RangeError(`VERIFY_REPLY of ${n} hashes exceeds ${MAX_VERIFY_HASHES}`);
  const out = Buffer.allocUnsafe(FIXED_SIZE[FrameType.VerifyReply]! + 8 * n);
  out[0] = FrameType.VerifyReply;
  putU53(out, 1, f.seq, 'VERIFY_REPLY seq');
  putI32(out, 9, f.status, 'VERIFY_REPLY status');
  out.writeUInt16LE(n, 13);
  for (let i = 0; i < n; i++) putU64(out, 15 + 8 * i, f.hashes[i]!, 'VERIFY_REPLY hash');
  return out;
}

function decodeVerifyReply(b: Uint8Array): VerifyReplyFrame {
  const n = getU16(b, 13);
  if (n > MAX_VERIFY_HASHES) throw new WireError(`VERIFY_REPLY frame: ${n} hashes exceeds ${MAX_VERIFY_HASHES}`);
  expectSize(b, FIXED_SIZE[FrameType.VerifyReply]! + 8 * n);
  const hashes: bigint[] = [];
  for (let i = 0; i < n; i++) hashes.push(getU64(b, 15 + 8 * i));
  return { type: FrameType.VerifyReply, seq: getU53(b, 1, 'seq'), status: getI32(b, 9), hashes };
}

/** A frame's message as UTF-8, cut to MAX_ERROR_MESSAGE bytes at a character boundary. */
function messageBytes(text: string): Buffer {
  const msg = Buffer.from(text, 'utf8');
  if (msg.length <= MAX_ERROR_MESSAGE) return msg;
  let end = MAX_ERROR_MESSAGE;
  while (end > 0 && (msg[end]! & 0xc0) === 0x80) end--; // do not split a character
  return msg.subarray(0, end);
}

/**
 * A frame of `type` that ends with a message (ERROR, RESIZE_ACK): its fixed part, whose last two bytes are
 * the message length, then the message (messageBytes). The caller fills the fields before the length.
 */
function frameWithMessage(type: FrameType, text: string): Buffer {
  const msg = messageBytes(text);
  const fixed = FIXED_SIZE[type]!;
  const out = Buffer.alloc(fixed + msg.length);
  out[0] = type;
  out.writeUInt16LE(msg.length, fixed - 2);
  out.set(msg, fixed);
  return out;
}

/** The message ending frame `b` of `type` (see frameWithMessage): its length checked, then the frame's size. */
function messageOf(b: Uint8Array, type: FrameType): string {
  const fixed = FIXED_SIZE[type]!;
  const len = getU16(b, fixed - 2);
  if (len > MAX_ERROR_MESSAGE) throw new WireError(`${FRAME_NAMES[type]} frame: message of ${len} bytes exceeds ${MAX_ERROR_MESSAGE}`);
  expectSize(b, fixed + len);
  return getString(b, fixed, len, 'message');
}

// ERROR: type | code u16 | message length u16 | message (UTF-8, <= 1024 bytes; truncated at a character boundary)
function encodeError(f: ErrorFrame): Buffer {
  const out = frameWithMessage(FrameType.Error, f.message);
  putU16(out, 1, f.code, 'ERROR code');
  return out;
}

function decodeError(b: Uint8Array): ErrorFrame {
  const message = messageOf(b, FrameType.Error);
  return { type: FrameType.Error, code: getU16(b, 1), message };
}

// RESIZE: type | seq u64 | size u64 | phase u8 (1 grow, 2 done)
function encodeResize(f: ResizeFrame): Buffer {
  if (f.phase !== RESIZE_GROW && f.phase !== RESIZE_DONE) throw new RangeError(`RESIZE phase ${f.phase} is unknown`);
  const out = Buffer.allocUnsafe(FIXED_SIZE[FrameType.Resize]!);
  out[0] = FrameType.Resize;
  putU53(out, 1, f.seq, 'RESIZE seq');
  putU53(out, 9, f.size, 'RESIZE size');
  out[17] = f.phase;
  return out;
}

function decodeResize(b: Uint8Array): ResizeFrame {
  expectSize(b, FIXED_SIZE[FrameType.Resize]!);
  const phase = b[17]!;
  if (phase !== RESIZE_GROW && phase !== RESIZE_DONE) throw new WireError(`RESIZE frame: unknown phase ${phase}`);
  const size = getU53(b, 9, 'size');
  if (size === 0 || size % 4096 !== 0) throw new WireError(`RESIZE frame: size ${size} is not a positive multiple of 4096`);
  return { type: FrameType.Resize, seq: getU53(b, 1, 'seq'), size, phase };
}

// RESIZE_ACK: type | seq u64 | status i32 | message length u16 | message (UTF-8, <= 1024 bytes, truncated like ERROR's)
function encodeResizeAck(f: ResizeAckFrame): Buffer {
  const out = frameWithMessage(FrameType.ResizeAck, f.message);
  putU53(out, 1, f.seq, 'RESIZE_ACK seq');
  putI32(out, 9, f.status, 'RESIZE_ACK status');
  return out;
}

function decodeResizeAck(b: Uint8Array): ResizeAckFrame {
  const message = messageOf(b, FrameType.ResizeAck);
  return { type: FrameType.ResizeAck, seq: getU53(b, 1, 'seq'), status: getI32(b, 9), message };
}

// ---- the two entry points ----

/**
 * Encodes a frame as one binary message. Throws RangeError for a value the format cannot carry
 * (a number not below 2^53, a wrong-sized nonce, an unknown role, ...); ERROR messages are truncated instead.
 */
export function encodeFrame(f: Frame): Buffer {
  switch (f.type) {
    case FrameType.Hello: return encodeHello(f);
    case FrameType.Auth: return encodeAuth(f);
    case FrameType.State: return encodeState(f);
    case FrameType.Bitmap: return encodeBitmap(f);
    case FrameType.Data: return encodeData(f);
    case FrameType.Ack: return encodeAck(f);
    case FrameType.Flush:
    case FrameType.Ping:
    case FrameType.Pong: return encodeSeqOnly(f.type, f.seq);
    case FrameType.Trim: return encodeTrim(f);
    case FrameType.ResyncRequest:
    case FrameType.ResyncInSync:
    case FrameType.ReadRequest: return encodeRange(f);
    case FrameType.ChecksumRequest: return encodeChecksumRequest(f);
    case FrameType.ResyncData: return encodeResyncData(f);
    case FrameType.ResyncDone: return encodeResyncDone(f);
    case FrameType.ReadReply: return encodeReadReply(f);
    case FrameType.VerifyRequest: return encodeVerifyRequest(f);
    case FrameType.VerifyReply: return encodeVerifyReply(f);
    case FrameType.Error: return encodeError(f);
    case FrameType.Resize: return encodeResize(f);
    case FrameType.ResizeAck: return encodeResizeAck(f);
    default: throw new RangeError(`cannot encode ${frameName((f as { type: number }).type)}`);
  }
}

/**
 * Decodes one received message. Checks its size, every length, count, code and range before use and
 * throws WireError for anything malformed. Payloads (`data`, `bits`, `nonce`, `mac`) are views of `buf`.
 */
export function decodeFrame(buf: Uint8Array): Frame {
  if (buf.length === 0) throw new WireError('empty frame');
  if (buf.length > MAX_FRAME) throw new WireError(`${frameName(buf[0]!)} frame of ${buf.length} bytes exceeds ${MAX_FRAME}`);
  const type = buf[0]!;
  const fixed = FIXED_SIZE[type];
  if (fixed === undefined) throw new WireError(`unknown frame type ${type}`);
  if (buf.length < fixed) throw truncated(buf, fixed);
  switch (type as FrameType) {
    case FrameType.Hello: return decodeHello(buf);
    case FrameType.Auth: return decodeAuth(buf);
    case FrameType.State: return decodeState(buf);
    case FrameType.Bitmap: return decodeBitmap(buf);
    case FrameType.Data: return decodeData(buf);
    case FrameType.Ack: return decodeAck(buf);
    case FrameType.Flush:
    case FrameType.Ping:
    case FrameType.Pong: return decodeSeqOnly(buf);
    case FrameType.Trim: return decodeTrim(buf);
    case FrameType.ResyncRequest:
    case FrameType.ResyncInSync:
    case FrameType.ReadRequest: return decodeRange(buf);
    case FrameType.ChecksumRequest: return decodeChecksumRequest(buf);
    case FrameType.ResyncData: return decodeResyncData(buf);
    case FrameType.ResyncDone: return decodeResyncDone(buf);
    case FrameType.ReadReply: return decodeReadReply(buf);
    case FrameType.VerifyRequest: return decodeVerifyRequest(buf);
    case FrameType.VerifyReply: return decodeVerifyReply(buf);
    case FrameType.Error: return decodeError(buf);
    case FrameType.Resize: return decodeResize(buf);
    case FrameType.ResizeAck: return decodeResizeAck(buf);
  }
  throw new WireError(`unknown frame type ${type}`);
}

// ---- authentication ----

/** Who sends an AUTH: the node that dialled the link (the lower id) or the node that accepted it. */
export type AuthSender = 'dialler' | 'acceptor';

/** What both AUTH MACs of one handshake cover: the resource, both node ids and both HELLO nonces. */
export interface AuthTranscript {
  resource: string;
  diallerId: number;
  acceptorId: number;
  diallerNonce: Uint8Array;
  acceptorNonce: Uint8Array;
}

/**
 * The MAC of an AUTH frame (see engine/replication/session.ts for the handshake's order):
 * HMAC-SHA256(secret, label | dialler id u8 | acceptor id u8 | dialler nonce [32] | acceptor nonce [32] | resource UTF-8),
 * where the label names the sender's direction. Each MAC covers both fresh nonces, so it is good for one
 * handshake only (a recorded AUTH cannot be replayed); the direction label and both ids keep a MAC from
 * being reflected back to its sender or passed off as another node's.
 */
export function authMac(secret: string, sender: AuthSender, t: AuthTranscript): Buffer {
  const label = AUTH_LABELS[sender];
  if (label === undefined) throw new RangeError(`AUTH sender ${String(sender)} is not dialler or acceptor`);
  for (const [what, id] of [['dialler', t.diallerId], ['acceptor', t.acceptorId]] as const) {
    if (!Number.isInteger(id) || id < 0 || id >= MAX_NODES) throw new RangeError(`${what} node id ${id} is not in 0..${MAX_NODES - 1}`);
  }
  for (const [what, nonce] of [['dialler', t.diallerNonce], ['acceptor', t.acceptorNonce]] as const) {
    if (!(nonce instanceof Uint8Array) || nonce.length !== NONCE_SIZE) throw new RangeError(`${what} nonce must be ${NONCE_SIZE} bytes`);
  }
  return createHmac('sha256', secret).update(label).update(Uint8Array.of(t.diallerId, t.acceptorId))
    .update(t.diallerNonce).update(t.acceptorNonce).update(t.resource, 'utf8').digest();
}

/** Checks an AUTH MAC `sender` sent over the transcript, in constant time. */
export function verifyAuth(secret: string, sender: AuthSender, t: AuthTranscript, mac: Uint8Array): boolean {
  const expected = authMac(secret, sender, t);
  return mac.length === expected.length && timingSafeEqual(expected, mac);
}
