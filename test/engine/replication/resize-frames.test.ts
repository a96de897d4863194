// The online resize's frames: RESIZE and RESIZE_ACK round trips, malformed ones refused, and when a peer may send them.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FrameType, RESIZE_DONE, RESIZE_GROW, WIRE_VERSION } from '../../../engine/replication/frames.js';
import { refuseFrame, type FrameContext } from '../../../engine/replication/frame-rules.js';
import { WireError, decodeFrame, encodeFrame } from '../../../engine/replication/wire.js';

test('RESIZE and RESIZE_ACK round trip; the wire version says they exist', () => {
  assert.equal(WIRE_VERSION, 3);
  for (const phase of [RESIZE_GROW, RESIZE_DONE]) {
    const f = { type: FrameType.Resize, seq: 7, size: 48 << 20, phase } as const;
    assert.deepEqual(decodeFrame(encodeFrame(f)), f);
  }
  const a = { type: FrameType.ResizeAck, seq: 7, status: -5, message: 'beta cannot grow: disk full ✗' } as const;
  assert.deepEqual(decodeFrame(encodeFrame(a)), a);
  const long = decodeFrame(encodeFrame({ ...a, message: 'x'.repeat(5000) }));
  assert.equal(long.type === FrameType.ResizeAck && long.message.length, 1024);
});

test('malformed RESIZE frames are refused', () => {
  const good = encodeFrame({ type: FrameType.Resize, seq: 1, size: 1 << 20, phase: RESIZE_GROW });
  const badPhase = Buffer.from(good);
  badPhase[17] = 9;
  assert.throws(() => decodeFrame(badPhase), /unknown phase 9/);
  const unaligned = Buffer.from(good);
  unaligned.writeUInt32LE((1 << 20) + 512, 9);
  assert.throws(() => decodeFrame(unaligned), /multiple of 4096/);
  assert.throws(() => decodeFrame(good.subarray(0, 17)), WireError);
  assert.throws(() => decodeFrame(Buffer.concat([good, Buffer.from([0])])), /trailing/);
  const ack = encodeFrame({ type: FrameType.ResizeAck, seq: 1, status: 0, message: 'ok' });
  assert.throws(() => decodeFrame(ack.subarray(0, ack.length - 1)), WireError);
  assert.throws(() => encodeFrame({ type: FrameType.Resize, seq: 1, size: 4096, phase: 3 }), RangeError);
});

test('RESIZE only on an established link; RESIZE_ACK after the peer\'s state', () => {
  const ctx = (replication: FrameContext['replication'], peerState = true): FrameContext => ({
    peerState, replication, peerRole: 'Secondary', myRole: 'Primary', myDisk: true, allowTwoPrimaries: false, staleResyncAnswers: false,
  });
  assert.equal(refuseFrame(FrameType.Resize, ctx('Established')), null);
  for (const r of ['SyncSource', 'SyncTarget', 'WFBitMap', 'Handshake'] as const) assert.match(refuseFrame(FrameType.Resize, ctx(r))!, /RESIZE refused/);
  assert.equal(refuseFrame(FrameType.ResizeAck, ctx('SyncTarget')), null);
  assert.match(refuseFrame(FrameType.ResizeAck, ctx('Handshake', false))!, /before the peer's first STATE/);
});
