// Online resize on the vhost-user side: the back-end request codec, SET_BACKEND_REQ_FD's checks, and the back-end channel against a fake front-end.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import koffi from 'koffi';
import { Logger } from '../../../engine/log.js';
import { NativeBuffer, close, read, write } from '../../../qemu-plugin/os.js';
import { BackendChannel } from '../../../qemu-plugin/vhost-user/backend-channel.js';
import { BackendReq, HEADER_SIZE, Req } from '../../../qemu-plugin/vhost-user/constants.js';
import {
  ProtocolError, decodeBackendReply, decodeHeader, decodeMessage, encodeBackendRequest, encodeReply, encodeRequest, u64Payload,
} from '../../../qemu-plugin/vhost-user/message.js';

const libc = koffi.load('libc.so.6');
const socketpair = libc.func('int socketpair(int domain, int type, int protocol, uintptr_t sv)');

/** A connected pair of Unix stream sockets: [back-end end, front-end end]. */
function pair(): [number, number] {
  const sv = new NativeBuffer(8);
  assert.equal(socketpair(1, 1 | 0o2000000, 0, sv.addr), 0);
  const fds: [number, number] = [sv.dv.getInt32(0, true), sv.dv.getInt32(4, true)];
  sv.free();
  return fds;
}

function readMsg(fd: number, n: number): Buffer {
  const b = new NativeBuffer(n);
  let got = 0;
  while (got < n) {
    const k = read(fd, b.addr + got, n - got);
    assert.ok(k > 0, 'front-end end closed');
    got += k;
  }
  const out = Buffer.from(b.u8);
  b.free();
  return out;
}

function writeMsg(fd: number, bytes: Uint8Array): void {
  const b = new NativeBuffer(bytes.length);
  b.u8.set(bytes);
  assert.equal(write(fd, b.addr, bytes.length), bytes.length);
  b.free();
}

const log = new Logger('test');

test('encodeBackendRequest: CONFIG_CHANGE_MSG is a bare header, NEED_REPLY when asked', () => {
  const m = encodeBackendRequest(BackendReq.CONFIG_CHANGE_MSG);
  assert.deepEqual([...m], [2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
  const n = encodeBackendRequest(BackendReq.CONFIG_CHANGE_MSG, undefined, true);
  assert.equal(n.readUInt32LE(4), 0x1 | 0x8);
  assert.throws(() => encodeBackendRequest(BackendReq.CONFIG_CHANGE_MSG, new Uint8Array(5000)), RangeError);
});

test('decodeBackendReply: the u64 status of the right request, anything else refused', () => {
  assert.equal(decodeBackendReply(encodeReply(BackendReq.CONFIG_CHANGE_MSG, u64Payload(0)), BackendReq.CONFIG_CHANGE_MSG), 0n);
  assert.equal(decodeBackendReply(encodeReply(BackendReq.CONFIG_CHANGE_MSG, u64Payload(1)), BackendReq.CONFIG_CHANGE_MSG), 1n);
  assert.throws(() => decodeBackendReply(encodeReply(BackendReq.IOTLB_MSG, u64Payload(0)), BackendReq.CONFIG_CHANGE_MSG), /reply is for BACKEND_IOTLB_MSG/);
  assert.throws(() => decodeBackendReply(encodeReply(BackendReq.CONFIG_CHANGE_MSG, new Uint8Array(4)), BackendReq.CONFIG_CHANGE_MSG), /expected 8/);
  // A request (no REPLY flag) is not an answer.
  assert.throws(() => decodeBackendReply(encodeRequest(BackendReq.CONFIG_CHANGE_MSG, u64Payload(0)), BackendReq.CONFIG_CHANGE_MSG), ProtocolError);
});

test('SET_BACKEND_REQ_FD: exactly one fd and no payload, else a protocol error', () => {
  const decode = (bytes: Buffer, fds: number[]) => decodeMessage(decodeHeader(bytes.subarray(0, HEADER_SIZE)), bytes.subarray(HEADER_SIZE), fds);
  assert.deepEqual(decode(encodeRequest(Req.SET_BACKEND_REQ_FD, undefined, true), [9]).body, { kind: 'none' });
  assert.throws(() => decode(encodeRequest(Req.SET_BACKEND_REQ_FD), []), /0 fds, expected 1/);
  assert.throws(() => decode(encodeRequest(Req.SET_BACKEND_REQ_FD), [9, 10]), /2 fds, expected 1/);
  assert.throws(() => decode(encodeRequest(Req.SET_BACKEND_REQ_FD, u64Payload(0)), [9]), /expected 0/);
});

test('back-end channel with REPLY_ACK: waits for the answer without holding the event loop, fails on non-zero', async () => {
  const [be, fe] = pair();
  const ch = new BackendChannel(be, true, log);
  let loopRan = false;
  const sent = ch.send(BackendReq.CONFIG_CHANGE_MSG);
  // The front-end (QEMU) reads the config space on the main socket before it answers: the loop must run meanwhile.
  await new Promise((r) => setTimeout(r, 50));
  loopRan = true;
  const req = readMsg(fe, HEADER_SIZE);
  assert.deepEqual(decodeHeader(req), { request: BackendReq.CONFIG_CHANGE_MSG, flags: 0x9, size: 0 });
  writeMsg(fe, encodeReply(BackendReq.CONFIG_CHANGE_MSG, u64Payload(0)));
  await sent;
  assert.ok(loopRan);
  const failed = ch.send(BackendReq.CONFIG_CHANGE_MSG);
  await new Promise((r) => setTimeout(r, 20)); // the send runs after the previous one settled
  readMsg(fe, HEADER_SIZE);
  writeMsg(fe, encodeReply(BackendReq.CONFIG_CHANGE_MSG, u64Payload(1)));
  await assert.rejects(failed, /answered 1/);
  ch.close();
  close(fe);
});

test('back-end channel: no answer is a timeout, and the late answer is discarded before the next request', async () => {
  const [be, fe] = pair();
  const ch = new BackendChannel(be, true, log, 300);
  await assert.rejects(ch.send(BackendReq.CONFIG_CHANGE_MSG), /no answer from the front-end within 0.3 s/);
  readMsg(fe, HEADER_SIZE);
  writeMsg(fe, encodeReply(BackendReq.CONFIG_CHANGE_MSG, u64Payload(7))); // late
  const next = ch.send(BackendReq.CONFIG_CHANGE_MSG);
  await new Promise((r) => setTimeout(r, 20));
  readMsg(fe, HEADER_SIZE);
  writeMsg(fe, encodeReply(BackendReq.CONFIG_CHANGE_MSG, u64Payload(0)));
  await next;
  ch.close();
  close(fe);
});

test('back-end channel without REPLY_ACK: sent, not waited for; a closed front-end end fails the send', async () => {
  const [be, fe] = pair();
  const ch = new BackendChannel(be, false, log);
  await ch.send(BackendReq.CONFIG_CHANGE_MSG);
  assert.equal(decodeHeader(readMsg(fe, HEADER_SIZE)).flags, 0x1);
  close(fe);
  await assert.rejects(ch.send(BackendReq.CONFIG_CHANGE_MSG), /failed/);
  ch.close();
  await assert.rejects(ch.send(BackendReq.CONFIG_CHANGE_MSG), /closed/);
});
