// The table of which frames a peer may send in which state: every cell, then the same cells against a Resource over in-memory links.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AckKind, FrameType, TRIM_ZEROES, type Frame } from '../../../engine/replication/frames.js';
import { refuseFrame, type FrameContext } from '../../../engine/replication/frame-rules.js';
import type { Resource } from '../../../engine/replication/resource.js';
import { connect, disconnect, link, makeConfig, makeNodes, settle, simulatedTime, write, SIZE } from './sim.js';

simulatedTime();

/** The situations a frame can meet, from the receiver's side. */
const base: FrameContext = { peerState: true, replication: 'Established', peerRole: 'Secondary', myRole: 'Secondary', myDisk: true, allowTwoPrimaries: false, staleResyncAnswers: false };
const SITUATIONS: Record<string, FrameContext> = {
  beforeState: { ...base, peerState: false, replication: 'Handshake', peerRole: null },
  secondaryFromPrimary: { ...base, peerRole: 'Primary' },
  secondaryFromSecondary: { ...base },
  primaryFromSecondary: { ...base, myRole: 'Primary' },
  primaryFromPrimary: { ...base, myRole: 'Primary', peerRole: 'Primary' },
  primaryFromPrimaryDual: { ...base, myRole: 'Primary', peerRole: 'Primary', allowTwoPrimaries: true },
  syncSource: { ...base, myRole: 'Primary', replication: 'SyncSource' },
  syncTarget: { ...base, peerRole: 'Primary', replication: 'SyncTarget' },
  wfBitmap: { ...base, peerRole: 'Primary', replication: 'WFBitMap' },
  staleAnswers: { ...base, peerRole: 'Primary', staleResyncAnswers: true },
  disklessFromPrimary: { ...base, peerRole: 'Primary', myDisk: false },
};
const ALL = Object.keys(SITUATIONS);
const but = (...no: string[]) => ALL.filter((s) => !no.includes(s));

/** Where each frame type is allowed, written out situation by situation (the rest refuse it). */
const ALLOWED: Record<string, string[]> = {
  HELLO: [], AUTH: [], PING: [], PONG: [],
  STATE: ALL, ERROR: ALL,
  BITMAP: ['wfBitmap'],
  DATA: ['secondaryFromPrimary', 'primaryFromPrimaryDual', 'syncTarget', 'wfBitmap', 'staleAnswers'],
  ACK: but('beforeState'),
  READ_REQUEST: ['secondaryFromPrimary', 'primaryFromPrimary', 'primaryFromPrimaryDual', 'syncTarget', 'wfBitmap', 'staleAnswers', 'disklessFromPrimary'],
  READ_REPLY: but('beforeState'),
  RS_REQUEST: ['syncSource'], CSUM_REQUEST: ['syncSource'], RS_DONE: ['syncSource'],
  RS_DATA: ['syncTarget', 'staleAnswers'], RS_IN_SYNC: ['syncTarget', 'staleAnswers'],
  VERIFY_REQUEST: but('beforeState'),
  VERIFY_REPLY: but('beforeState'),
};
ALLOWED.TRIM = ALLOWED.DATA!;
ALLOWED.FLUSH = ALLOWED.DATA!;

const TYPES: Record<string, FrameType> = {
  HELLO: FrameType.Hello, AUTH: FrameType.Auth, STATE: FrameType.State, BITMAP: FrameType.Bitmap, DATA: FrameType.Data, ACK: FrameType.Ack,
  FLUSH: FrameType.Flush, TRIM: FrameType.Trim, RS_REQUEST: FrameType.ResyncRequest, RS_DATA: FrameType.ResyncData, RS_IN_SYNC: FrameType.ResyncInSync,
  READ_REQUEST: FrameType.ReadRequest, READ_REPLY: FrameType.ReadReply, VERIFY_REQUEST: FrameType.VerifyRequest, VERIFY_REPLY: FrameType.VerifyReply,
  PING: FrameType.Ping, PONG: FrameType.Pong, ERROR: FrameType.Error, CSUM_REQUEST: FrameType.ChecksumRequest, RS_DONE: FrameType.ResyncDone,
};

test('every cell of the table: frame type x situation', () => {
  assert.equal(Object.keys(TYPES).length, 20, 'every frame type is listed');
  for (const [name, type] of Object.entries(TYPES)) {
    for (const [sit, ctx] of Object.entries(SITUATIONS)) {
      const why = refuseFrame(type, ctx);
      const allowed = ALLOWED[name]!.includes(sit);
      assert.equal(why === null, allowed, `${name} in ${sit}: expected ${allowed ? 'allowed' : 'refused'}, got ${why ?? 'allowed'}`);
      if (why !== null) assert.ok(why.startsWith(`${name} refused (`), `the reason names the frame: ${why}`);
    }
  }
  assert.match(refuseFrame(99, base)!, /unknown frame type/);
  assert.match(refuseFrame(FrameType.Data, SITUATIONS.primaryFromPrimary!)!, /^DATA refused \(this node Primary, peer Primary, replication Established\): this node is Primary and allow-two-primaries is off$/);
  assert.match(refuseFrame(FrameType.Data, SITUATIONS.beforeState!)!, /before the peer's first STATE/);
});

// ---- the same cells against real Resources over in-memory links ----

const gens = { current: 0x1234n, bitmap: new Array<bigint>(32).fill(0n), history: [] };
const payload = () => new Uint8Array(4096).fill(0xab);
/** One harmless frame of each type (unknown seqs, in-range blocks). */
const SAMPLES: Record<string, () => Frame> = {
  HELLO: () => ({ type: FrameType.Hello, version: 1, nodeId: 1, resource: 'r', nonce: new Uint8Array(32) }),
  AUTH: () => ({ type: FrameType.Auth, mac: new Uint8Array(32) }),
  PING: () => ({ type: FrameType.Ping, seq: 1 }),
  PONG: () => ({ type: FrameType.Pong, seq: 1 }),
  ERROR: () => ({ type: FrameType.Error, code: 8, message: 'test' }),
  BITMAP: () => ({ type: FrameType.Bitmap, offset: 0, totalBits: SIZE / 4096, last: false, bits: new Uint8Array(1).fill(0xff) }),
  DATA: () => ({ type: FrameType.Data, seq: 900001, offset: 0, flags: 0, data: payload() }),
  TRIM: () => ({ type: FrameType.Trim, seq: 900002, offset: 0, length: 4096, mode: TRIM_ZEROES }),
  FLUSH: () => ({ type: FrameType.Flush, seq: 900003 }),
  ACK: () => ({ type: FrameType.Ack, seq: 900004, kind: AckKind.Written, status: 0 }),
  READ_REQUEST: () => ({ type: FrameType.ReadRequest, seq: 900005, offset: 0, length: 4096 }),
  READ_REPLY: () => ({ type: FrameType.ReadReply, seq: 900006, status: 0, data: payload() }),
  RS_REQUEST: () => ({ type: FrameType.ResyncRequest, seq: 900007, offset: 0, length: 4096 }),
  CSUM_REQUEST: () => ({ type: FrameType.ChecksumRequest, seq: 900008, offset: 0, length: 4096, hash: 1n }),
  RS_DATA: () => ({ type: FrameType.ResyncData, seq: 900009, offset: 0, data: payload() }),
  RS_IN_SYNC: () => ({ type: FrameType.ResyncInSync, seq: 900010, offset: 0, length: 4096 }),
  RS_DONE: () => ({ type: FrameType.ResyncDone, gens }),
  VERIFY_REQUEST: () => ({ type: FrameType.VerifyRequest, seq: 900011, offset: 0, length: 4096, blockSize: 4096 }),
  VERIFY_REPLY: () => ({ type: FrameType.VerifyReply, seq: 900012, status: 0, hashes: [] }),
};

/** Two nodes brought into a situation; `into` receives the injected frame from `from`. */
async function situation(name: string): Promise<{ into: Resource; from: Resource; nodes: Resource[] }> {
  // resync-rate of 1 byte/s: a resync sends its first request and then waits, so it stays in progress.
  const nodes = makeNodes(makeConfig(2, { resyncRate: 1, cMinRate: 1 }));
  const [a, b] = nodes as [Resource, Resource];
  for (const r of nodes) r.disk!.write(Buffer.alloc(SIZE, 0x11), SIZE, 0);
  if (name === 'beforeState') {
    connect(a, b); // the STATEs are still on their way
    return { into: a, from: b, nodes };
  }
  connect(a, b);
  await settle(30);
  a.promote(false);
  await settle(10);
  if (name === 'primaryFromSecondary') return { into: a, from: b, nodes };
  if (name === 'secondaryFromPrimary') return { into: b, from: a, nodes };
  // A resync of scattered blocks that stays in progress.
  disconnect(a, b);
  for (let i = 0; i < 4; i++) assert.equal(await write(a, i * 8 * 4096, 4096, 0x22), 0);
  connect(a, b);
  await settle(60);
  assert.equal(a.status().peers.n1!.replication, 'SyncSource', 'a resync is in progress');
  return name === 'syncSource' ? { into: a, from: b, nodes } : { into: b, from: a, nodes };
}

const RESOURCE_SITUATIONS = ['beforeState', 'primaryFromSecondary', 'secondaryFromPrimary', 'syncSource', 'syncTarget'];

test('a Resource closes the link on every refused frame and touches nothing; allowed frames keep it', async () => {
  for (const sit of RESOURCE_SITUATIONS) {
    for (const name of Object.keys(SAMPLES)) {
      const { into, from, nodes } = await situation(sit);
      const before = Buffer.alloc(SIZE);
      into.disk!.read(before, SIZE, 0);
      const bits = into.status().peers[from.me.name]!.outOfSyncBytes;
      const refusedBefore = into.stats.framesRefused;
      into.frame(link(into, from), SAMPLES[name]!());
      const connected = into.status().peers[from.me.name]!.connection === 'Connected';
      const allowed = ALLOWED[name]!.includes(sit);
      assert.equal(connected, allowed, `${name} in ${sit}: the link should ${allowed ? 'stay' : 'close'}`);
      if (!allowed) {
        const after = Buffer.alloc(SIZE);
        into.disk!.read(after, SIZE, 0);
        assert.ok(after.equals(before), `${name} in ${sit}: the disk is untouched`);
        assert.equal(into.status().peers[from.me.name]!.outOfSyncBytes, bits, `${name} in ${sit}: the bitmap is untouched`);
        assert.equal(into.stats.framesRefused, refusedBefore + 1, 'counted');
      }
      disconnect(into, from);
      for (const r of nodes) r.close();
    }
  }
});

test('the outside test\'s case: DATA for block 0 right after authentication, into a Primary, is refused', async () => {
  const nodes = makeNodes(makeConfig(2));
  const [a, b] = nodes as [Resource, Resource];
  a.promote(true);
  connect(a, b);
  const lines: string[] = [];
  const orig = a.log.error.bind(a.log);
  a.log.error = (msg: string, ...rest: unknown[]) => { lines.push(msg); (orig as (...x: unknown[]) => void)(msg, ...rest); };
  a.frame(link(a, b), SAMPLES.DATA!());
  const got = Buffer.alloc(4096);
  a.disk!.read(got, 4096, 0);
  assert.ok(got.equals(Buffer.alloc(4096)), 'nothing written on the Primary');
  assert.notEqual(a.status().peers.n1!.connection, 'Connected');
  assert.ok(lines.some((l) => /protocol violation by n1: DATA refused .*before the peer's first STATE.*closing the link/.test(l)), lines.join('\n'));
  for (const r of nodes) r.close();
});
