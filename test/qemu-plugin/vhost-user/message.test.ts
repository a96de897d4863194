// Tests of the vhost-user message codec: every request shape, size and fd checks, and a fuzz run.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HEADER_SIZE, Req } from '../../../qemu-plugin/vhost-user/constants.js';
import {
  ProtocolError, configPayload, decodeHeader, decodeMessage, decodeReplyHeader, encodeReply, encodeRequest, statePayload, u64Payload,
} from '../../../qemu-plugin/vhost-user/message.js';

function decode(bytes: Buffer, fds: number[] = []) {
  const h = decodeHeader(bytes.subarray(0, HEADER_SIZE));
  return decodeMessage(h, bytes.subarray(HEADER_SIZE), fds);
}

function memTable(n: number): Buffer {
  const b = Buffer.alloc(8 + 32 * n);
  b.writeUInt32LE(n, 0);
  for (let i = 0; i < n; i++) {
    b.writeBigUInt64LE(BigInt(i * 0x100000), 8 + 32 * i);
    b.writeBigUInt64LE(0x100000n, 16 + 32 * i);
    b.writeBigUInt64LE(BigInt(0x7f0000000000 + i * 0x100000), 24 + 32 * i);
  }
  return b;
}

test('header: version, reply flag and size are checked', () => {
  const ok = encodeRequest(Req.GET_FEATURES);
  assert.deepEqual(decodeHeader(ok), { request: 1, flags: 1, size: 0 });
  const badVersion = Buffer.from(ok);
  badVersion.writeUInt32LE(2, 4);
  assert.throws(() => decodeHeader(badVersion), /protocol version 2/);
  const reply = Buffer.from(ok);
  reply.writeUInt32LE(5, 4);
  assert.throws(() => decodeHeader(reply), /reply sent as a request/);
  const huge = Buffer.from(ok);
  huge.writeUInt32LE(1 << 20, 8);
  assert.throws(() => decodeHeader(huge), /exceeds/);
  assert.throws(() => decodeHeader(ok.subarray(0, 11)), /truncated/);
});

test('requests without payload refuse one, u64 and state payloads decode', () => {
  assert.equal(decode(encodeRequest(Req.GET_FEATURES)).body.kind, 'none');
  assert.throws(() => decode(encodeRequest(Req.GET_FEATURES, Buffer.alloc(8))), ProtocolError);
  const f = decode(encodeRequest(Req.SET_FEATURES, u64Payload(0x1_4000_0000n)));
  assert.deepEqual(f.body, { kind: 'u64', value: 0x1_4000_0000n });
  assert.throws(() => decode(encodeRequest(Req.SET_FEATURES, Buffer.alloc(4))), /expected 8/);
  const s = decode(encodeRequest(Req.SET_VRING_NUM, statePayload(1, 256)));
  assert.deepEqual(s.body, { kind: 'state', index: 1, num: 256 });
});

test('vring fd messages need exactly one fd unless the no-fd bit is set', () => {
  const m = decode(encodeRequest(Req.SET_VRING_KICK, u64Payload(3)), [7]);
  assert.deepEqual(m.body, { kind: 'vringFd', index: 3, noFd: false });
  assert.deepEqual(m.fds, [7]);
  assert.throws(() => decode(encodeRequest(Req.SET_VRING_KICK, u64Payload(3))), /0 fds, expected 1/);
  assert.deepEqual(decode(encodeRequest(Req.SET_VRING_CALL, u64Payload(0x100))).body, { kind: 'vringFd', index: 0, noFd: true });
  assert.throws(() => decode(encodeRequest(Req.SET_VRING_CALL, u64Payload(0x100)), [5]), /1 fds, expected 0/);
  assert.throws(() => decode(encodeRequest(Req.SET_VRING_CALL, u64Payload(0x200)), [5]), /reserved bits/);
});

test('SET_MEM_TABLE: region count, payload size and fd count must agree', () => {
  const m = decode(encodeRequest(Req.SET_MEM_TABLE, memTable(2)), [10, 11]);
  assert.equal(m.body.kind, 'memTable');
  if (m.body.kind === 'memTable') {
    assert.equal(m.body.regions.length, 2);
    assert.deepEqual(m.body.regions[1], { guestPhysAddr: 0x100000, memorySize: 0x100000, userspaceAddr: 0x7f0000100000, mmapOffset: 0 });
  }
  assert.throws(() => decode(encodeRequest(Req.SET_MEM_TABLE, memTable(2)), [10]), /1 fds, expected 2/);
  assert.throws(() => decode(encodeRequest(Req.SET_MEM_TABLE, memTable(2).subarray(0, 40)), [10, 11]), /expected 72/);
  assert.throws(() => decode(encodeRequest(Req.SET_MEM_TABLE, memTable(9)), new Array(9).fill(3)), /9 regions/);
  const zero = memTable(1);
  zero.writeBigUInt64LE(0n, 16);
  assert.throws(() => decode(encodeRequest(Req.SET_MEM_TABLE, zero), [3]), /size 0/);
  const wrap = memTable(1);
  wrap.writeBigUInt64LE(0xffff_ffff_ffff_f000n, 8);
  assert.throws(() => decode(encodeRequest(Req.SET_MEM_TABLE, wrap), [3]), /out of range/);
});

test('SET_VRING_ADDR and GET/SET_CONFIG decode with size checks', () => {
  const a = Buffer.alloc(40);
  a.writeUInt32LE(1, 0);
  a.writeBigUInt64LE(0x1000n, 8);
  a.writeBigUInt64LE(0x3000n, 16);
  a.writeBigUInt64LE(0x2000n, 24);
  assert.deepEqual(decode(encodeRequest(Req.SET_VRING_ADDR, a)).body, { kind: 'addr', index: 1, flags: 0, desc: 0x1000, used: 0x3000, avail: 0x2000, log: 0 });
  const cfg = configPayload(0, 0, new Uint8Array(60));
  const c = decode(encodeRequest(Req.GET_CONFIG, cfg));
  assert.equal(c.body.kind === 'config' && c.body.size, 60);
  const lying = Buffer.from(cfg);
  lying.writeUInt32LE(61, 4);
  assert.throws(() => decode(encodeRequest(Req.GET_CONFIG, lying)), /expected 73/);
  const big = Buffer.alloc(12);
  big.writeUInt32LE(1000, 4);
  assert.throws(() => decode(encodeRequest(Req.SET_CONFIG, big)), /exceeds 256/);
});

test('unknown requests decode as unknown, replies round-trip', () => {
  assert.equal(decode(encodeRequest(99, Buffer.alloc(3))).body.kind, 'unknown');
  const r = encodeReply(Req.GET_FEATURES, u64Payload(5));
  assert.deepEqual(decodeReplyHeader(r), { request: 1, flags: 5, size: 8 });
  assert.equal(r.readBigUInt64LE(12), 5n);
  assert.throws(() => decodeReplyHeader(encodeRequest(1)), /bad reply flags/);
});

test('fuzz: random and mutated messages decode or throw ProtocolError, nothing else', () => {
  let seed = 12345;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed % n;
  };
  const seeds = [
    encodeRequest(Req.SET_MEM_TABLE, memTable(3)), encodeRequest(Req.SET_VRING_ADDR, Buffer.alloc(40)),
    encodeRequest(Req.GET_CONFIG, configPayload(0, 0, new Uint8Array(8))), encodeRequest(Req.SET_VRING_KICK, u64Payload(1)),
    encodeRequest(Req.ADD_MEM_REG, Buffer.alloc(40)), encodeRequest(Req.SET_INFLIGHT_FD, Buffer.alloc(24)),
  ];
  let decoded = 0;
  let refused = 0;
  for (let i = 0; i < 20000; i++) {
    let b: Buffer;
    if (i % 2) {
      b = Buffer.alloc(12 + rnd(80));
      for (let j = 0; j < b.length; j++) b[j] = rnd(256);
      b.writeUInt32LE(rnd(45), 0);
      b.writeUInt32LE(1 | (rnd(4) === 0 ? 8 : 0), 4);
      b.writeUInt32LE(rnd(3) === 0 ? rnd(100) : b.length - 12, 8);
    } else {
      b = Buffer.from(seeds[rnd(seeds.length)]!);
      for (let k = rnd(4) + 1; k > 0; k--) b[rnd(b.length)] = rnd(256);
      if (rnd(3) === 0) b = b.subarray(0, rnd(b.length));
    }
    const fds = new Array(rnd(4)).fill(100);
    try {
      const h = decodeHeader(b);
      decodeMessage(h, b.subarray(12, 12 + h.size), fds);
      decoded++;
    } catch (e) {
      assert.ok(e instanceof ProtocolError, `unexpected ${(e as Error).name}: ${(e as Error).message}`);
      refused++;
    }
  }
  assert.ok(decoded > 100 && refused > 100, `decoded ${decoded}, refused ${refused}`);
});
