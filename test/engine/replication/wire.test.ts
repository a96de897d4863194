// Tests of the replication frame codec: every frame type round-trips, every malformation is refused, and a fuzz run.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';
import {
  AckKind, ErrorCode, FrameType, MAX_FRAME, MAX_NODES, MAX_PAYLOAD, TRIM_ZEROES_UNMAP, WIRE_VERSION, type Frame, type Generations,
} from '../../../engine/replication/frames.js';
import { WireError, authMac, decodeFrame, encodeFrame, frameName, verifyAuth } from '../../../engine/replication/wire.js';

const MAX_SAFE = Number.MAX_SAFE_INTEGER; // 2^53 - 1
const U64_MAX = 0xffff_ffff_ffff_ffffn;

/** Bytes 0, 1, 2, ... (mod 256). */
function bytes(n: number, start = 0): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (start + i) & 0xff;
  return b;
}

function gens(history: number): Generations {
  const bitmap: bigint[] = [];
  for (let i = 0; i < MAX_NODES; i++) bitmap.push(i === 0 ? 0n : i === 31 ? U64_MAX : BigInt(i) * 0x0101_0101_0101n);
  return { current: 0x8000_0000_0000_0001n, bitmap, history: Array.from({ length: history }, (_, i) => U64_MAX - BigInt(i)) };
}

/** Encodes, decodes from a plain Uint8Array copy (so payload views compare equal to Uint8Array inputs), re-encodes. */
function roundTrip(f: Frame): Frame {
  const enc = encodeFrame(f);
  assert.ok(Buffer.isBuffer(enc));
  const copy = new Uint8Array(enc);
  const dec = decodeFrame(copy);
  assert.deepEqual(dec, f, `${frameName(f.type)} did not round-trip`);
  assert.ok(encodeFrame(dec).equals(enc), `${frameName(f.type)} re-encoded differently`);
  return dec;
}

/** A valid frame of each type, for the malformation tests and as fuzz seeds. */
function samples(): Frame[] {
  return [
    { type: FrameType.Hello, version: WIRE_VERSION, nodeId: 3, resource: 'r0', nonce: bytes(32) },
    { type: FrameType.Auth, mac: bytes(32, 7) },
    { type: FrameType.State, role: 'Primary', disk: 'UpToDate', size: 1 << 30, flags: 1, gens: gens(2), promotedAt: 1_700_000_000_000, outOfSyncBits: 12, quorum: true, resyncFrom: 0x8877665544332210n },
    { type: FrameType.Bitmap, offset: 64, totalBits: 1000, last: false, bits: bytes(16) },
    { type: FrameType.Data, seq: 1, offset: 4096, flags: 1, data: bytes(40) },
    { type: FrameType.Ack, seq: 1, kind: AckKind.Written, status: -5 },
    { type: FrameType.Flush, seq: 2 },
    { type: FrameType.Trim, seq: 3, offset: 0, length: 1 << 20, mode: 2 },
    { type: FrameType.ResyncRequest, seq: 4, offset: 8192, length: 4096 },
    { type: FrameType.ResyncData, seq: 4, offset: 8192, data: bytes(24) },
    { type: FrameType.ResyncInSync, seq: 5, offset: 0, length: 4096 },
    { type: FrameType.ReadRequest, seq: 6, offset: 512, length: 512 },
    { type: FrameType.ReadReply, seq: 6, status: 0, data: bytes(20) },
    { type: FrameType.VerifyRequest, seq: 7, offset: 0, length: 8192, blockSize: 4096 },
    { type: FrameType.VerifyReply, seq: 7, status: 0, hashes: [1n, U64_MAX] },
    { type: FrameType.Ping, seq: 8 },
    { type: FrameType.Pong, seq: 8 },
    { type: FrameType.Error, code: ErrorCode.SplitBrain, message: 'split brain détecté' },
    { type: FrameType.ChecksumRequest, seq: 9, offset: 4096, length: 4096, hash: 0xdead_beef_0000_0001n },
    { type: FrameType.ResyncDone, gens: gens(1) },
  ];
}

/** A sample's encoding as a Buffer the test may modify. */
function sample(type: FrameType): Buffer {
  return Buffer.from(encodeFrame(samples().find((f) => f.type === type)!));
}

function refused(b: Uint8Array, re: RegExp): void {
  assert.throws(() => decodeFrame(b), (e: unknown) => {
    assert.ok(e instanceof WireError, `expected WireError, got ${String(e)}`);
    assert.match(e.message, re);
    return true;
  });
}

test('every frame type round-trips', () => {
  const all = samples();
  assert.equal(new Set(all.map((f) => f.type)).size, 20);
  for (const f of all) roundTrip(f);
});

test('edge values round-trip: largest numbers, empty and largest payloads, longest strings', () => {
  roundTrip({ type: FrameType.Hello, version: 0xffff, nodeId: MAX_NODES - 1, resource: 'é'.repeat(32), nonce: new Uint8Array(32).fill(0xff) });
  roundTrip({ type: FrameType.Hello, version: 0, nodeId: 0, resource: '', nonce: new Uint8Array(32) });
  roundTrip({ type: FrameType.Hello, version: 1, nodeId: 1, resource: '\ufeffbom', nonce: bytes(32) }); // a leading BOM is kept
  for (const disk of ['UpToDate', 'Inconsistent', 'Outdated', 'Diskless', 'Failed'] as const) {
    roundTrip({ type: FrameType.State, role: 'Secondary', disk, size: 0, flags: 0xffff_ffff, gens: gens(0), promotedAt: 0, outOfSyncBits: MAX_SAFE, quorum: false, resyncFrom: 0n });
  }
  roundTrip({ type: FrameType.State, role: 'Primary', disk: 'Diskless', size: MAX_SAFE, flags: 0, gens: gens(4), promotedAt: MAX_SAFE, outOfSyncBits: 0, quorum: true, resyncFrom: 0xffff_ffff_ffff_fffen });
  roundTrip({ type: FrameType.Bitmap, offset: 0, totalBits: 0, last: true, bits: new Uint8Array(0) });
  roundTrip({ type: FrameType.Bitmap, offset: 8, totalBits: 8 * MAX_PAYLOAD + 1, last: true, bits: bytes(MAX_PAYLOAD) });
  roundTrip({ type: FrameType.Data, seq: MAX_SAFE, offset: MAX_SAFE - MAX_PAYLOAD, flags: 0xffff_ffff, data: bytes(MAX_PAYLOAD) });
  roundTrip({ type: FrameType.Data, seq: 0, offset: 0, flags: 0, data: new Uint8Array(0) });
  roundTrip({ type: FrameType.Ack, seq: MAX_SAFE, kind: AckKind.Received, status: -0x8000_0000 });
  roundTrip({ type: FrameType.Ack, seq: 0, kind: AckKind.Written, status: 0x7fff_ffff });
  roundTrip({ type: FrameType.Flush, seq: MAX_SAFE });
  roundTrip({ type: FrameType.Trim, seq: 0, offset: 0, length: MAX_SAFE, mode: TRIM_ZEROES_UNMAP });
  roundTrip({ type: FrameType.ReadRequest, seq: 1, offset: MAX_SAFE - MAX_PAYLOAD, length: MAX_PAYLOAD });
  roundTrip({ type: FrameType.ResyncRequest, seq: MAX_SAFE, offset: 0, length: MAX_SAFE });
  roundTrip({ type: FrameType.ResyncInSync, seq: 0, offset: MAX_SAFE, length: 0 });
  roundTrip({ type: FrameType.ChecksumRequest, seq: 0, offset: 0, length: 0, hash: U64_MAX });
  roundTrip({ type: FrameType.ResyncData, seq: 1, offset: 0, data: bytes(MAX_PAYLOAD) });
  roundTrip({ type: FrameType.ReadReply, seq: 1, status: -5, data: new Uint8Array(0) });
  roundTrip({ type: FrameType.ReadReply, seq: 1, status: 0, data: bytes(MAX_PAYLOAD) });
  roundTrip({ type: FrameType.VerifyRequest, seq: 1, offset: 0, length: 2048 * 512, blockSize: 512 });
  roundTrip({ type: FrameType.VerifyRequest, seq: 1, offset: 0, length: 0, blockSize: 1 << 20 });
  roundTrip({ type: FrameType.VerifyReply, seq: 1, status: 0, hashes: Array.from({ length: 2048 }, (_, i) => BigInt(i) << 40n) });
  roundTrip({ type: FrameType.VerifyReply, seq: 1, status: -1, hashes: [] });
  roundTrip({ type: FrameType.Error, code: 0xffff, message: 'x'.repeat(1024) });
  roundTrip({ type: FrameType.Error, code: 0, message: '' });
  roundTrip({ type: FrameType.ResyncDone, gens: gens(4) });
});

test('layout: little-endian fixed headers, u64 numbers as two u32 words', () => {
  const d = encodeFrame({ type: FrameType.Data, seq: 2 ** 40 + 3, offset: 0x1234_5678_9a, flags: 1, data: bytes(3) });
  assert.equal(d.length, 21 + 3);
  assert.deepEqual([...d.subarray(0, 21)], [5, 3, 0, 0, 0, 0, 1, 0, 0, 0x9a, 0x78, 0x56, 0x34, 0x12, 0, 0, 0, 1, 0, 0, 0]);
  const a = encodeFrame({ type: FrameType.Ack, seq: 1, kind: AckKind.Received, status: -1 });
  assert.deepEqual([...a], [6, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
  const h = encodeFrame({ type: FrameType.Hello, version: 1, nodeId: 2, resource: 'ab', nonce: bytes(32) });
  assert.equal(h.length, 40);
  assert.deepEqual([...h.subarray(0, 4)], [1, 1, 0, 2]);
  assert.deepEqual([...h.subarray(36)], [2, 0, 0x61, 0x62]);
});

test('decoded payloads are views of the received message, not copies', () => {
  const msg = new Uint8Array(encodeFrame({ type: FrameType.Data, seq: 1, offset: 0, flags: 0, data: bytes(100) }));
  const f = decodeFrame(msg);
  assert.equal(f.type, FrameType.Data);
  if (f.type !== FrameType.Data) return;
  assert.equal(f.data.buffer, msg.buffer);
  assert.equal(f.data.byteOffset, 21);
  msg[21] = 0xee;
  assert.equal(f.data[0], 0xee);
  const bm = decodeFrame(new Uint8Array(encodeFrame({ type: FrameType.Bitmap, offset: 0, totalBits: 80, last: true, bits: bytes(10) })));
  assert.ok(bm.type === FrameType.Bitmap && bm.bits.byteOffset === 18);
  const rr = decodeFrame(sample(FrameType.ReadReply));
  assert.ok(rr.type === FrameType.ReadReply && Buffer.isBuffer(rr.data), 'a Buffer in gives Buffer views out');
});

test('empty, unknown, truncated, trailing and oversized frames are refused', () => {
  refused(new Uint8Array(0), /^empty frame$/);
  refused(Uint8Array.of(0), /^unknown frame type 0$/);
  refused(Uint8Array.of(99, 1, 2), /^unknown frame type 99$/);
  const data = sample(FrameType.Data);
  refused(data.subarray(0, 12), /^DATA frame truncated: 12 bytes, need 21$/);
  refused(Uint8Array.of(FrameType.Ack), /^ACK frame truncated: 1 bytes, need 14$/);
  refused(Buffer.concat([sample(FrameType.Ack), Buffer.alloc(1)]), /^ACK frame has 1 trailing bytes/);
  refused(Buffer.concat([sample(FrameType.Ping), Buffer.alloc(3)]), /^PING frame has 3 trailing bytes/);
  refused(Buffer.concat([sample(FrameType.State), Buffer.alloc(8)]), /^STATE frame has 8 trailing bytes/);
  refused(sample(FrameType.State).subarray(0, 308), /^STATE frame truncated: 308 bytes, need 321$/);
  refused(Buffer.concat([sample(FrameType.Hello), Buffer.alloc(1)]), /^HELLO frame has 1 trailing bytes/);
  refused(Buffer.concat([sample(FrameType.VerifyReply), Buffer.alloc(1)]), /trailing/);
  refused(sample(FrameType.VerifyReply).subarray(0, 30), /^VERIFY_REPLY frame truncated: 30 bytes, need 31$/);
  const huge = Buffer.alloc(MAX_FRAME + 1);
  huge[0] = FrameType.Data;
  refused(huge, new RegExp(`^DATA frame of ${MAX_FRAME + 1} bytes exceeds ${MAX_FRAME}$`));
  for (const [type, header] of [[FrameType.Data, 21], [FrameType.ResyncData, 17], [FrameType.ReadReply, 13], [FrameType.Bitmap, 18]] as const) {
    const big = Buffer.alloc(header + MAX_PAYLOAD + 1);
    big[0] = type;
    if (type === FrameType.Bitmap) big.writeUInt32LE(0xffff_ffff, 10); // totalBits large enough
    refused(big, new RegExp(`^${frameName(type)} frame: (payload|bits) of ${MAX_PAYLOAD + 1} bytes exceeds ${MAX_PAYLOAD}$`));
  }
});

test('HELLO and AUTH: node id, nonce, mac and resource name are checked', () => {
  const h = sample(FrameType.Hello);
  const badId = Buffer.from(h);
  badId[3] = MAX_NODES;
  refused(badId, /^HELLO frame: node id 32 is not below 32$/);
  const badName = Buffer.from(h);
  badName[38] = 0xff;
  refused(badName, /^HELLO frame: resource name is not valid UTF-8$/);
  const longName = Buffer.concat([h.subarray(0, 38), Buffer.alloc(65, 0x61)]);
  longName.writeUInt16LE(65, 36);
  refused(longName, /^HELLO frame: resource name of 65 bytes exceeds 64$/);
  const lying = Buffer.from(h);
  lying.writeUInt16LE(5, 36);
  refused(lying, /^HELLO frame truncated: 40 bytes, need 43$/);
  refused(h.subarray(0, 20), /^HELLO frame truncated: 20 bytes, need 38$/); // a short nonce
  const auth = sample(FrameType.Auth);
  refused(auth.subarray(0, 32), /^AUTH frame truncated: 32 bytes, need 33$/); // a 31-byte mac
  refused(Buffer.concat([auth, Buffer.alloc(1)]), /^AUTH frame has 1 trailing bytes/); // a 33-byte mac
});

test('STATE and RS_DONE: role, disk, quorum and history are checked', () => {
  const s = sample(FrameType.State);
  const role = Buffer.from(s);
  role[1] = 2;
  refused(role, /^STATE frame: unknown role code 2$/);
  const disk = Buffer.from(s);
  disk[2] = 5;
  refused(disk, /^STATE frame: unknown disk state code 5$/);
  const quorum = Buffer.from(s);
  quorum[3] = 2;
  refused(quorum, /^STATE frame: quorum byte is 2, expected 0 or 1$/);
  const hist = Buffer.concat([sample(FrameType.ResyncDone), Buffer.alloc(32)]);
  hist[1 + 8 + 8 * MAX_NODES] = 5;
  refused(hist, /^RS_DONE frame: 5 history generations, at most 4$/);
  const size = Buffer.from(s);
  size.writeUInt32LE(0x200000, 12);
  refused(size, /^STATE frame: size 0x20000040000000 is not below 2\^53$/);
});

test('numbers, codes and ranges: every limit is enforced', () => {
  const trim = sample(FrameType.Trim);
  const len = Buffer.from(trim);
  len.writeUInt32LE(0xffff_ffff, 21);
  refused(len, /^TRIM frame: length 0xffffffff.{8} is not below 2\^53$/);
  const mode = Buffer.from(trim);
  mode[25] = 4;
  refused(mode, /^TRIM frame: unknown mode 4$/);
  mode[25] = 0;
  refused(mode, /^TRIM frame: unknown mode 0$/);
  const past = Buffer.from(trim);
  past.writeUInt32LE(0xffff_ffff, 9); // offset 2^53-1, length 1 MiB
  past.writeUInt32LE(0x1f_ffff, 13);
  refused(past, /^TRIM frame: range \d+\+1048576 ends past 2\^53$/);
  const ack = sample(FrameType.Ack);
  ack[9] = 3;
  refused(ack, /^ACK frame: unknown kind 3$/);
  const seq = sample(FrameType.Ping);
  seq[8] = 0x80;
  refused(seq, /^PING frame: seq 0x8000000000000008 is not below 2\^53$/);
  const read = sample(FrameType.ReadRequest);
  read.writeUInt32LE(MAX_PAYLOAD + 1, 17);
  refused(read, /^READ_REQUEST frame: length 1048577 exceeds 1048576$/);
  const bm = sample(FrameType.Bitmap);
  bm.writeUInt32LE(12, 2);
  refused(bm, /^BITMAP frame: offset 12 is not a multiple of 8$/);
  const bmPast = sample(FrameType.Bitmap);
  bmPast.writeUInt32LE(8 * 16 + 64 - 9, 10); // totalBits one byte short of offset + bits
  refused(bmPast, /^BITMAP frame: bits at 64\+128 lie past totalBits 183$/);
  const last = sample(FrameType.Bitmap);
  last[1] = 7;
  refused(last, /^BITMAP frame: last byte is 7/);
});

test('VERIFY_REQUEST block size and length, VERIFY_REPLY hash count', () => {
  const v = sample(FrameType.VerifyRequest);
  for (const bs of [0, 256, 1000, 4097, 2 << 20, 0xffff_ffff]) {
    const b = Buffer.from(v);
    b.writeUInt32LE(bs, 25);
    refused(b, new RegExp(`^VERIFY_REQUEST frame: block size ${bs} is not a power of two in 512\\.\\.1048576$`));
  }
  const notMultiple = Buffer.from(v);
  notMultiple.writeUInt32LE(8192 + 512, 17);
  refused(notMultiple, /^VERIFY_REQUEST frame: length 8704 is not a multiple of the block size 4096$/);
  const tooMany = Buffer.from(v);
  tooMany.writeUInt32LE(2049 * 4096, 17);
  refused(tooMany, /^VERIFY_REQUEST frame: length \d+ is 2049 blocks, at most 2048$/);
  const r = Buffer.alloc(15 + 8 * 2049);
  r[0] = FrameType.VerifyReply;
  r.writeUInt16LE(2049, 13);
  refused(r, /^VERIFY_REPLY frame: 2049 hashes exceeds 2048$/);
});

test('ERROR: message length and UTF-8 are checked; long messages are truncated when encoding', () => {
  const e = Buffer.alloc(5 + 1025, 0x61);
  e[0] = FrameType.Error;
  e.writeUInt16LE(1025, 3);
  refused(e, /^ERROR frame: message of 1025 bytes exceeds 1024$/);
  const bad = Buffer.from([FrameType.Error, 1, 0, 2, 0, 0xc3, 0x28]);
  refused(bad, /^ERROR frame: message is not valid UTF-8$/);
  const surrogate = Buffer.from([FrameType.Error, 1, 0, 3, 0, 0xed, 0xa0, 0x80]); // an encoded UTF-16 surrogate
  refused(surrogate, /not valid UTF-8/);
  // 400 three-byte characters: cut at 1023 bytes, not inside a character.
  const long = encodeFrame({ type: FrameType.Error, code: ErrorCode.Protocol, message: '€'.repeat(400) });
  assert.equal(long.readUInt16LE(3), 1023);
  assert.deepEqual(decodeFrame(long), { type: FrameType.Error, code: ErrorCode.Protocol, message: '€'.repeat(341) });
  const ascii = encodeFrame({ type: FrameType.Error, code: 1, message: 'y'.repeat(5000) });
  assert.equal(ascii.length, 5 + 1024);
});

test('encoding refuses values the wire cannot carry', () => {
  const enc = (f: unknown) => () => encodeFrame(f as Frame);
  assert.throws(enc({ type: FrameType.Data, seq: 2 ** 53, offset: 0, flags: 0, data: bytes(1) }), /DATA seq 9007199254740992 is not an integer in 0\.\.2\^53-1/);
  assert.throws(enc({ type: FrameType.Data, seq: -1, offset: 0, flags: 0, data: bytes(1) }), RangeError);
  assert.throws(enc({ type: FrameType.Data, seq: 1.5, offset: 0, flags: 0, data: bytes(1) }), RangeError);
  assert.throws(enc({ type: FrameType.Data, seq: 1, offset: 0, flags: 2 ** 32, data: bytes(1) }), /DATA flags/);
  assert.throws(enc({ type: FrameType.Data, seq: 1, offset: 0, flags: 0, data: bytes(MAX_PAYLOAD + 1) }), /exceeds/);
  assert.throws(enc({ type: FrameType.Ack, seq: 1, kind: 3, status: 0 }), /ACK kind 3/);
  assert.throws(enc({ type: FrameType.Ack, seq: 1, kind: 1, status: 2 ** 31 }), /ACK status/);
  assert.throws(enc({ type: FrameType.Hello, version: 1, nodeId: 32, resource: 'r', nonce: bytes(32) }), /node id 32/);
  assert.throws(enc({ type: FrameType.Hello, version: 1, nodeId: 1, resource: 'r', nonce: bytes(31) }), /nonce must be 32 bytes/);
  assert.throws(enc({ type: FrameType.Hello, version: 1, nodeId: 1, resource: 'é'.repeat(33), nonce: bytes(32) }), /66 bytes exceeds 64/);
  assert.throws(enc({ type: FrameType.Auth, mac: bytes(33) }), /mac must be 32 bytes/);
  const state = samples()[2] as Frame & { type: FrameType.State };
  assert.throws(enc({ ...state, role: 'Leader' }), /role Leader/);
  assert.throws(enc({ ...state, disk: 'Attaching' }), /disk state Attaching/);
  assert.throws(enc({ ...state, gens: { ...state.gens, history: [1n, 2n, 3n, 4n, 5n] } }), /5 history generations/);
  assert.throws(enc({ ...state, gens: { ...state.gens, bitmap: [0n] } }), /1 bitmap generations, expected 32/);
  assert.throws(enc({ ...state, gens: { ...state.gens, current: 1n << 64n } }), /not a u64/);
  assert.throws(enc({ type: FrameType.Bitmap, offset: 4, totalBits: 100, last: false, bits: bytes(1) }), /multiple of 8/);
  assert.throws(enc({ type: FrameType.VerifyRequest, seq: 1, offset: 0, length: 4096, blockSize: 3000 }), /power of two/);
  assert.throws(enc({ type: FrameType.VerifyReply, seq: 1, status: 0, hashes: new Array(2049).fill(0n) }), /2049 hashes/);
  assert.throws(enc({ type: FrameType.ReadRequest, seq: 1, offset: 0, length: MAX_PAYLOAD + 1 }), /READ_REQUEST length/);
  assert.throws(enc({ type: FrameType.Trim, seq: 1, offset: MAX_SAFE, length: 2, mode: 1 }), /ends past 2\^53/);
  assert.throws(enc({ type: FrameType.Error, code: 70000, message: '' }), /ERROR code/);
  assert.throws(enc({ type: 99 }), /cannot encode frame type 99/);
});

test('authMac is HMAC-SHA256 over the direction label, both ids, both nonces and the resource; verifyAuth checks every part', () => {
  const t = { resource: 'r0', diallerId: 1, acceptorId: 2, diallerNonce: bytes(32, 9), acceptorNonce: bytes(32, 77) };
  const mac = authMac('s3cret', 'dialler', t);
  const expected = createHmac('sha256', 's3cret').update(Buffer.concat([
    Buffer.from('twindisk-auth-v2 dialler->acceptor\0'), Buffer.from([1, 2]), t.diallerNonce, t.acceptorNonce, Buffer.from('r0'),
  ])).digest();
  assert.ok(mac.equals(expected));
  const back = authMac('s3cret', 'acceptor', t);
  assert.ok(back.equals(createHmac('sha256', 's3cret').update(Buffer.concat([
    Buffer.from('twindisk-auth-v2 acceptor->dialler\0'), Buffer.from([1, 2]), t.diallerNonce, t.acceptorNonce, Buffer.from('r0'),
  ])).digest()));
  assert.equal(verifyAuth('s3cret', 'dialler', t, mac), true);
  assert.equal(verifyAuth('s3cret', 'acceptor', t, back), true);
  assert.equal(verifyAuth('s3cret', 'acceptor', t, mac), false, 'a MAC is not good in the other direction (reflection)');
  assert.equal(verifyAuth('wrong', 'dialler', t, mac), false);
  assert.equal(verifyAuth('s3cret', 'dialler', { ...t, diallerNonce: bytes(32, 10) }, mac), false, 'replayed against another dialler nonce');
  assert.equal(verifyAuth('s3cret', 'dialler', { ...t, acceptorNonce: bytes(32, 10) }, mac), false, 'replayed against another acceptor nonce');
  assert.equal(verifyAuth('s3cret', 'dialler', { ...t, diallerNonce: t.acceptorNonce, acceptorNonce: t.diallerNonce }, mac), false, 'nonces swapped');
  assert.equal(verifyAuth('s3cret', 'dialler', { ...t, diallerId: 0 }, mac), false);
  assert.equal(verifyAuth('s3cret', 'dialler', { ...t, diallerId: 2, acceptorId: 1 }, mac), false, 'ids swapped');
  assert.equal(verifyAuth('s3cret', 'dialler', { ...t, resource: 'r1' }, mac), false);
  assert.equal(verifyAuth('s3cret', 'dialler', t, mac.subarray(0, 31)), false);
  assert.throws(() => authMac('s', 'dialler', { ...t, acceptorId: 32 }), RangeError);
  assert.throws(() => authMac('s', 'dialler', { ...t, diallerNonce: bytes(31) }), /dialler nonce must be 32 bytes/);
  assert.throws(() => authMac('s', 'both' as 'dialler', t), RangeError);
});

test('fuzz: random and mutated frames decode or throw WireError; decoded frames re-encode to the same bytes', () => {
  let seed = 0x5eed;
  const rnd = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const seeds = samples().map((f) => encodeFrame(f));
  seeds.push(encodeFrame({ type: FrameType.State, role: 'Secondary', disk: 'Outdated', size: 0, flags: 0, gens: gens(0), promotedAt: 0, outOfSyncBits: 0, quorum: false, resyncFrom: 0n }));
  seeds.push(encodeFrame({ type: FrameType.VerifyReply, seq: 1, status: 0, hashes: [] }));
  seeds.push(encodeFrame({ type: FrameType.Error, code: 1, message: '' }));
  let decoded = 0;
  let rejected = 0;
  for (let i = 0; i < 20000; i++) {
    let b: Buffer;
    if (i % 3 === 0) {
      // Random bytes behind a mostly-valid type byte; high words of u64 fields kept small now and then.
      b = Buffer.alloc(rnd(4) === 0 ? rnd(400) : rnd(48));
      for (let j = 0; j < b.length; j++) b[j] = rnd(4) === 0 ? 0 : rnd(256);
      if (b.length) b[0] = rnd(23);
    } else {
      b = Buffer.from(seeds[rnd(seeds.length)]!);
      const op = rnd(5);
      if (op <= 2) for (let k = rnd(3) + 1; k > 0; k--) b[rnd(b.length)] = rnd(256);
      else if (op === 3) b = b.subarray(0, rnd(b.length + 1));
      else b = Buffer.concat([b, Buffer.alloc(rnd(9) + 1, rnd(256))]);
    }
    let f: Frame;
    try {
      f = decodeFrame(b);
    } catch (e) {
      assert.ok(e instanceof WireError, `unexpected ${(e as Error).name}: ${(e as Error).message} on ${b.toString('hex')}`);
      rejected++;
      continue;
    }
    decoded++;
    assert.ok(encodeFrame(f).equals(b), `${frameName(f.type)} re-encoded differently: ${b.toString('hex')}`);
  }
  assert.ok(decoded > 2000 && rejected > 2000, `decoded ${decoded}, rejected ${rejected}`);
});
