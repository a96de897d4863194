// The keep-alive's decisions: PING each silent interval, PONG to a PING, dead after MISSED_PINGS silent intervals.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FrameType } from '../../../engine/replication/frames.js';
import { KeepAlive, MISSED_PINGS } from '../../../engine/replication/keepalive.js';

test('a PING each interval; any frame from the peer keeps the link alive; silence for MISSED_PINGS intervals kills it', () => {
  const k = new KeepAlive(2000);
  assert.deepEqual(k.tick(), { kind: 'ping', frame: { type: FrameType.Ping, seq: 0 } });
  for (let i = 1; i < MISSED_PINGS; i++) assert.equal(k.tick().kind, 'ping', `silent interval ${i}`);
  assert.deepEqual(k.tick(), { kind: 'dead', why: `timed out: no frame for ${MISSED_PINGS * 2000} ms` });
  const alive = new KeepAlive(100);
  for (let i = 0; i < 10; i++) {
    assert.equal(alive.received({ type: FrameType.Ack, seq: i, kind: 2, status: 0 }), null);
    assert.equal(alive.tick().kind, 'ping', 'a peer that keeps sending is never dead');
  }
});

test('a PING is answered with a PONG of the same seq; a PONG counts as hearing from the peer', () => {
  const k = new KeepAlive(100);
  assert.deepEqual(k.received({ type: FrameType.Ping, seq: 41 }), { type: FrameType.Pong, seq: 41 });
  k.tick();
  k.tick();
  assert.equal(k.received({ type: FrameType.Pong, seq: 1 }), null);
  for (let i = 0; i < MISSED_PINGS; i++) assert.equal(k.tick().kind, 'ping', 'the PONG reset the count');
  assert.equal(k.tick().kind, 'dead');
});
