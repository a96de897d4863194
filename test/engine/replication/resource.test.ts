// Failure scenarios of the replication engine with in-memory links: no acknowledged write lost, no false "in sync".
import assert from 'node:assert/strict';
import { Metadata } from '../../../engine/replication/metadata.js';
import { test } from 'node:test';
import { EIO } from '../../../engine/os.js';
import { ChannelOp } from '../../../engine/replication/channel.js';
import { Resource } from '../../../engine/replication/resource.js';
import {
  assertConverged, byteAt, connect, disconnect, link, makeConfig, makeNodes, read, restart, settle, simulatedTime, submit, until, write,
} from './sim.js';

simulatedTime();

/** Connects every pair of `nodes`. */
function mesh(...nodes: Resource[]): void {
  for (let i = 0; i < nodes.length; i++) for (let j = i + 1; j < nodes.length; j++) connect(nodes[i]!, nodes[j]!);
}

/** A resource of `n` nodes (n0..), every pair connected and past its handshake. */
async function meshed(n: number, o: Parameters<typeof makeConfig>[1] = {}): Promise<Resource[]> {
  const nodes = makeNodes(makeConfig(n, o));
  mesh(...nodes);
  await settle(50);
  return nodes;
}

/** Two nodes of a resource (n0, n1), connected and past their handshake. */
async function connectedPair(o: Parameters<typeof makeConfig>[1] = {}): Promise<Resource[]> {
  const nodes = makeNodes(makeConfig(2, o));
  connect(nodes[0]!, nodes[1]!);
  await settle(30);
  return nodes;
}

/** Two connected nodes of a resource with allow-two-primaries, both promoted. */
async function twoPrimaries(): Promise<Resource[]> {
  const nodes = await connectedPair({ allowTwoPrimaries: true });
  nodes[0]!.promote(false);
  await settle(10);
  nodes[1]!.promote(false);
  return nodes;
}

test('protocol C: a write completes when both disks hold it; a Secondary is written, never promoted behind a Primary', async () => {
  const [a, b] = await connectedPair();
  a!.promote(false);
  await settle(10);
  assert.throws(() => b!.promote(false), /n0 is Primary/);
  assert.equal(await write(a!, 4096, 8192, 3), 0);
  assert.equal(byteAt(b!, 4096), 3);
  assert.equal(byteAt(b!, 4096 + 8191), 3);
  assertConverged([a!, b!]);
});

test('a write the peer missed while away is resynced from the bitmap; only those blocks travel', async () => {
  const [a, b] = await connectedPair();
  a!.promote(false);
  disconnect(a!, b!);
  for (let i = 0; i < 5; i++) assert.equal(await write(a!, i * 65536, 4096, 10 + i), 0);
  assert.equal(a!.status().peers.n1!.outOfSyncBytes, 5 * 4096);
  connect(a!, b!);
  await settle(100);
  const s = a!.status().peers.n1!;
  assert.equal(s.replication, 'Established');
  assert.equal(s.lastResync!.bytesSent, 5 * 4096);
  for (let i = 0; i < 5; i++) assert.equal(byteAt(b!, i * 65536), 10 + i);
  assertConverged([a!, b!]);
});

test('diskless Primary: writes a disk peer missed are tracked by the other disk peer; a write with no copy left fails', async () => {
  const [a, b, c] = await meshed(3, { diskless: [0] });
  a!.promote(false);
  await settle(20);
  disconnect(a!, c!); disconnect(b!, c!);
  assert.equal(await write(a!, 0, 4096, 7), 0);
  await settle(20);
  connect(b!, c!); connect(a!, c!);
  await settle(200);
  assert.equal(byteAt(c!, 0), 7, 'c got the write it missed');
  assertConverged([a!, b!, c!]);
  assert.equal((await read(a!, 0, 4096)).data[0], 7);
  // Every disk peer drops while a write is in flight: no copy survives, the guest is told.
  const p = write(a!, 4096, 4096, 9);
  disconnect(a!, b!); disconnect(a!, c!);
  assert.equal(await p, -EIO);
});

test('three nodes: writes a Secondary receives are marked toward a peer it cannot reach', async () => {
  const [a, b, c] = await meshed(3);
  a!.promote(false);
  await settle(20);
  disconnect(a!, c!); disconnect(b!, c!);
  assert.equal(await write(a!, 0, 4096, 1), 0);
  await settle(20);
  a!.demote();
  await settle(20);
  b!.promote(false);
  assert.equal(await write(b!, 8192, 4096, 2), 0);
  await settle(20);
  b!.demote();
  await settle(20);
  disconnect(a!, b!);
  connect(a!, c!);
  await settle(300);
  assert.equal(byteAt(c!, 0), 1);
  assert.equal(byteAt(c!, 8192), 2, 'the write made on b while c was away reached c through a');
  assertConverged([a!, b!, c!]);
});

test('a link dropping mid-write: the write completes on the Primary, is marked, and wins over the peer\'s old data', async () => {
  const [b, a] = await connectedPair(); // b has the lower id
  a!.promote(false);
  const p = write(a!, 0, 4096, 5);
  disconnect(a!, b!);
  assert.equal(await p, 0);
  a!.demote();
  connect(a!, b!);
  await settle(150);
  assert.equal(byteAt(b!, 0), 5);
  assertConverged([a!, b!]);
});

for (const protocol of ['A', 'B'] as const) {
  test(`protocol ${protocol}: a write in flight when the link drops is marked and resynced`, async () => {
    const [a, b] = await connectedPair({ protocol });
    a!.promote(false);
    link(a!, b!).delay = 50;
    const p = write(a!, 0, 4096, 5);
    if (protocol === 'A') assert.equal(await p, 0, 'protocol A completes at once');
    disconnect(a!, b!);
    assert.equal(await p, 0);
    assert.equal(await write(a!, 65536, 4096, 6), 0);
    connect(a!, b!);
    await settle(150);
    assert.equal(byteAt(b!, 0), 5);
    assert.equal(byteAt(b!, 65536), 6);
    assertConverged([a!, b!]);
  });
}

test('a crashed Primary resyncs its activity log with every disk peer, not just the first to return', async () => {
  const cfg = makeConfig(3);
  const nodes = makeNodes(cfg); // n0 (c), n1 (b), n2 (a): a has the highest id
  const [c, b] = [nodes[0]!, nodes[1]!];
  let a = nodes[2]!;
  mesh(a, b, c);
  await settle(50);
  a.promote(false);
  await settle(20);
  link(a, c).delay = 10_000; // reaches b, not c; never acknowledged
  void write(a, 0, 4096, 9);
  await settle(30);
  a = restart(cfg, a);
  connect(a, b);
  await settle(100);
  connect(a, c);
  await settle(150);
  assert.equal(byteAt(a, 0), byteAt(b, 0));
  assert.equal(byteAt(a, 0), byteAt(c, 0));
  assertConverged([a, b, c]);
});

test('an Inconsistent node (interrupted resync) is never a SyncSource', async () => {
  const [a, b, c] = await meshed(3);
  a!.promote(false);
  await settle(20);
  disconnect(a!, c!); disconnect(b!, c!);
  await write(a!, 0, 4096, 1);
  disconnect(a!, b!);
  await write(a!, 8192, 4096, 2);
  await write(a!, 16384, 4096, 3);
  const l = connect(a!, b!);
  l.delay = 5;
  link(b!, a!).delay = 5;
  for (let i = 0; i < 200 && b!.diskState !== 'Inconsistent'; i++) await settle(1);
  disconnect(a!, b!);
  assert.equal(b!.diskState, 'Inconsistent');
  connect(b!, c!);
  await settle(150);
  assert.equal(c!.diskState, 'UpToDate', 'c keeps its older but consistent data');
  assert.equal(byteAt(c!, 0), 0);
  assert.equal(b!.diskState, 'Inconsistent');
  assertConverged([a!, b!, c!]);
});

test('untrusted frames at the wrong time change nothing', async () => {
  const cfg = makeConfig(2);
  const [a, b] = makeNodes(cfg);
  const l = connect(a!, b!);
  await settle(30);
  const before = byteAt(a!, 0);
  const { FrameType } = await import('../../../engine/replication/frames.js');
  // Resync data without a request, a read reply nobody asked for, a bitmap outside a handshake.
  l.send({ type: FrameType.ResyncData, seq: 99, offset: 0, data: Buffer.alloc(4096, 0xee) });
  l.send({ type: FrameType.ReadReply, seq: 12345, status: 0, data: Buffer.alloc(512) });
  l.send({ type: FrameType.Bitmap, offset: 0, totalBits: 256, last: true, bits: Buffer.alloc(32, 0xff) });
  await settle(30);
  assert.equal(byteAt(a!, 0), before);
  assert.equal(byteAt(b!, 0), before);
  assert.equal(b!.status().peers.n0!.outOfSyncBytes, 0);
  // An unsolicited resync request is refused with a closed link, not served.
  l.send({ type: FrameType.ResyncRequest, seq: 1, offset: 0, length: 4096 });
  await settle(30);
  assert.equal(a!.status().peers.n1!.connection, 'Connecting');
});

test('checksum-based resync (csums-alg xxh3) sends only blocks whose content differs', async () => {
  const [a, b] = await connectedPair({ csumsAlg: 'xxh3' });
  a!.promote(false);
  disconnect(a!, b!);
  // Four blocks rewritten with the bytes they already held (zeroes), three really changed.
  for (let i = 0; i < 4; i++) assert.equal(await write(a!, i * 4096, 4096, 0), 0);
  for (let i = 10; i < 13; i++) assert.equal(await write(a!, i * 4096, 4096, 0x77), 0);
  assert.equal(a!.status().peers.n1!.outOfSyncBytes, 7 * 4096);
  connect(a!, b!);
  await settle(150);
  const r = a!.status().peers.n1!.lastResync!;
  assert.equal(r.bytesSent, 3 * 4096 + 0, 'only the changed blocks travel');
  assert.equal(r.bytesSkipped, 4 * 4096);
  assert.equal(byteAt(b!, 11 * 4096), 0x77);
  assertConverged([a!, b!]);
});

test('online verify finds blocks that differ behind the engine\'s back and marks them; a resync repairs them', async () => {
  const [a, b] = await connectedPair();
  // Corrupt two blocks on b directly (a bit rot the engine did not see).
  b!.disk!.write(Buffer.alloc(4096, 0x33), 4096, 5 * 4096);
  b!.disk!.write(Buffer.alloc(512, 0x44), 512, 9 * 4096 + 512);
  a!.startVerify(true);
  for (let i = 0; i < 100 && (a!.status().peers.n1!.verify?.running ?? true); i++) await settle(10);
  assert.equal(a!.status().peers.n1!.verify!.outOfSyncBlocks, 2);
  for (let i = 0; i < 100 && a!.status().peers.n1!.outOfSyncBytes !== 0; i++) await settle(10);
  await settle(50);
  assert.equal(byteAt(b!, 5 * 4096), 0);
  assert.equal(byteAt(b!, 9 * 4096 + 512), 0);
  a!.startVerify(false);
  for (let i = 0; i < 100 && (a!.status().peers.n1!.verify?.running ?? true); i++) await settle(10);
  assert.equal(a!.status().peers.n1!.verify!.outOfSyncBlocks, 0);
});

test('a node resyncing from a Secondary while the Primary writes partial blocks to it ends with the Primary\'s data', async () => {
  const [p, s, t] = await meshed(3, { resyncRate: 1 << 20, cMinRate: 1 << 20 });
  p!.promote(false);
  await settle(20);
  disconnect(p!, t!); disconnect(s!, t!);
  assert.equal(await write(p!, 0, 4096, 1), 0); // t misses it; s follows the new generation
  await settle(20);
  connect(p!, t!); connect(s!, t!);
  await settle(50);
  link(p!, s!).delay = 2500; // s receives the Primary's writes late
  const OFF = 900 * 1024;
  assert.equal(await write(p!, OFF, 512, 0xab), 0); // a partial 4 KiB block
  await settle(3500);
  assert.equal(byteAt(p!, OFF), 0xab);
  assert.equal(byteAt(t!, OFF), 0xab, 't holds the Primary\'s write');
  assertConverged([p!, s!, t!]);
});

test('allow-two-primaries: concurrent writes to one block from both Primaries end identical on both (lower node id wins)', async () => {
  const [a, b] = await twoPrimaries();
  assert.equal(a!.role, 'Primary');
  assert.equal(b!.role, 'Primary');
  // Sequential writes from either side simply replicate.
  assert.equal(await write(a!, 0, 4096, 1), 0);
  assert.equal(await write(b!, 4096, 4096, 2), 0);
  assert.equal(byteAt(b!, 0), 1);
  assert.equal(byteAt(a!, 4096), 2);
  // Both write block 8 before seeing the other's write.
  const [wa, wb] = await Promise.all([write(a!, 8 * 4096, 4096, 0xa), write(b!, 8 * 4096, 4096, 0xb)]);
  assert.equal(wa, 0);
  assert.equal(wb, 0);
  await settle(20);
  assert.equal(byteAt(a!, 8 * 4096), 0xa);
  assert.equal(byteAt(b!, 8 * 4096), 0xa, 'n0 (lower id) wins on both nodes');
  assert.equal(a!.status().stats.writeConflicts, 1);
  assertConverged([a!, b!]);
});

test('quorum: a write in flight when the Primary loses its majority fails (io-error) instead of completing on the minority', async () => {
  const [a, b, c] = await meshed(3, { quorum: 'majority' });
  a!.promote(false);
  link(a!, b!).delay = 50;
  link(a!, c!).delay = 50;
  const w = write(a!, 0, 4096, 7);
  disconnect(a!, b!); disconnect(a!, c!);
  assert.equal(await w, -EIO);
  assert.equal(a!.hasQuorum(), false);
  assert.equal(await write(a!, 4096, 4096, 8), -EIO, 'new writes fail too');
  // The majority side goes on; when the minority returns it takes the majority's data.
  a!.demote();
  b!.promote(false);
  assert.equal(await write(b!, 0, 4096, 9), 0);
  b!.demote();
  connect(a!, b!); connect(a!, c!);
  await settle(200);
  assert.equal(byteAt(a!, 0), 9);
  assertConverged([a!, b!, c!]);
});

test('quorum with a diskless tie-breaker: a write acknowledged with its vote is never lost to a node promoted later', async () => {
  const [a, b, c] = await meshed(3, { quorum: 'majority', diskless: [2] });
  a!.promote(false);
  // b drops first: a keeps the quorum with c's vote, and the write completes on a alone.
  disconnect(a!, b!); disconnect(b!, c!);
  assert.equal(await write(a!, 0, 4096, 0x42), 0);
  await settle(20);
  // Then a goes too; b comes back next to c: together a majority, but c knows b's data is older.
  disconnect(a!, c!);
  connect(b!, c!);
  await settle(30);
  assert.throws(() => b!.promote(false), /c|n2 knows a newer data generation/);
  // With a back, b resyncs and may then be promoted.
  a!.demote();
  connect(a!, b!);
  await settle(150);
  assert.equal(byteAt(b!, 0), 0x42);
  b!.promote(false);
  assert.equal(b!.role, 'Primary');
  assertConverged([a!, b!, c!]);
});

test('allow-two-primaries: partially overlapping concurrent writes and a concurrent discard converge too', async () => {
  const [a, b] = await twoPrimaries();
  // a (n0, wins) writes [4K, 12K); b writes [0, 8K) at the same time.
  await Promise.all([write(a!, 4096, 8192, 0xa), write(b!, 0, 8192, 0xb)]);
  await settle(20);
  for (const n of [a!, b!]) {
    assert.equal(byteAt(n, 0), 0xb, `${n.me.name}: b's bytes outside the overlap`);
    assert.equal(byteAt(n, 4096), 0xa, `${n.me.name}: a's bytes where they overlap`);
    assert.equal(byteAt(n, 8192), 0xa);
  }
  assertConverged([a!, b!]);
});

test('outside(): the parts of a range not covered by others', async () => {
  const { outside } = await import('../../../engine/replication/resource.js');
  assert.deepEqual(outside(0, 100, []), [[0, 100]]);
  assert.deepEqual(outside(0, 100, [[10, 20], [50, 60]]), [[0, 10], [20, 50], [60, 100]]);
  assert.deepEqual(outside(0, 100, [[50, 60], [-5, 20], [55, 70]]), [[20, 50], [70, 100]]);
  assert.deepEqual(outside(0, 100, [[0, 100]]), []);
  assert.deepEqual(outside(10, 20, [[20, 30], [0, 10]]), [[10, 20]]);
});

test('an Outdated minority that holds acknowledged writes does not yield to a peer that missed them', async () => {
  const [a, b, c] = await meshed(3, { quorum: 'majority' });
  a!.promote(false);
  disconnect(a!, c!); disconnect(b!, c!); // c stays UpToDate at the old generation
  assert.equal(await write(a!, 0, 4096, 0x42), 0, 'acknowledged with a and b as the quorum');
  await settle(20);
  link(a!, b!).delay = 50;
  const w = write(a!, 4096, 4096, 0x43);
  disconnect(a!, b!);
  assert.equal(await w, -EIO);
  assert.equal(a!.diskState, 'Outdated');
  a!.demote();
  connect(a!, c!);
  await settle(200);
  assert.equal(byteAt(a!, 0), 0x42, 'a keeps the acknowledged write');
  assert.equal(byteAt(c!, 0), 0x42, 'c, which missed it, receives it');
  connect(b!, c!); connect(a!, b!);
  await settle(300);
  for (const n of [a!, b!, c!]) assert.equal(byteAt(n, 0), 0x42, `${n.me.name} holds the acknowledged write`);
  assertConverged([a!, b!, c!]);
});

test('a batch of writes: frames leave first, then the local copies are written, all before a flush or read of the same batch', async () => {
  const [a, b] = await connectedPair();
  a!.promote(false);
  await settle(10);
  const events: string[] = [];
  const l = link(a!, b!) as unknown as { sendEncoded(x: Buffer): void; flush?(): void };
  const send = l.sendEncoded.bind(l);
  l.sendEncoded = (x) => { events.push('send'); send(x); };
  l.flush = () => { events.push('flush-link'); };
  const disk = a!.disk!;
  const dw = disk.write.bind(disk);
  disk.write = (buf, len, off) => { events.push(`write@${off}`); dw(buf, len, off); };
  const ds = disk.sync.bind(disk);
  disk.sync = () => { events.push('sync'); ds(); };
  // One channel batch: two writes, a read of the first and a flush, delivered in the same turn.
  const w1 = write(a!, 0, 4096, 1);
  const w2 = write(a!, 8192, 4096, 2);
  const r = read(a!, 0, 4096);
  const f = new Promise<number>((resolve) => {
    const req = { channel: { complete: (_s: number, st: number) => resolve(st) }, slot: 0, op: ChannelOp.Flush, offset: 0, length: 0, flags: 0, data: Buffer.alloc(0) };
    submit(a!, req as never);
  });
  assert.deepEqual(events, ['send', 'send', 'flush-link', 'write@0', 'write@8192', 'sync']);
  assert.deepEqual([await w1, await w2, await f], [0, 0, 0]);
  const got = await r;
  assert.equal(got.status, 0);
  assert.equal(got.data[0], 1, 'the read in the batch sees the write before it');
  assert.equal(byteAt(b!, 8192), 2);
  assertConverged([a!, b!]);
});

test('a batch of writes to cold extents costs one activity-log transaction; hot writes in the batch go first, every copy ends the same', async () => {
  const [a, b] = await connectedPair();
  a!.promote(false);
  await settle(10);
  assert.equal(await write(a!, 0, 4096, 9), 0); // extent 0 hot
  const before = a!.md!.stats.alWrites;
  // One batch: writes into five cold extents (the sim's extents are 64 KiB), one hot write, and a
  // cold write overlapping the hot one's block in another extent's range.
  const ws = [1, 2, 3, 4, 5].map((e) => write(a!, e * 65536 + 512, 4096, e));
  const hot = write(a!, 4096, 4096, 7);
  assert.deepEqual(await Promise.all([...ws, hot]), [0, 0, 0, 0, 0, 0]);
  assert.equal(a!.md!.stats.alWrites - before, 1, 'one transaction for the five cold extents');
  assert.deepEqual(a!.md!.activeExtents(), [0, 1, 2, 3, 4, 5]);
  for (const e of [1, 2, 3, 4, 5]) assert.equal(byteAt(b!, e * 65536 + 512), e);
  assert.equal(byteAt(b!, 4096), 7);
  assertConverged([a!, b!]);
  // More cold extents in one batch than the log holds (8 in the sim): one transaction per 8, all written.
  const many = Array.from({ length: 10 }, (_, i) => write(a!, (6 + i) * 65536, 512, 20 + i));
  const mid = a!.md!.stats.alWrites;
  assert.ok((await Promise.all(many)).every((st) => st === 0));
  assert.equal(a!.md!.stats.alWrites - mid, 2);
  assert.equal(byteAt(b!, 15 * 65536), 29);
  assertConverged([a!, b!]);
});

test('a replicated write that reaches the SyncTarget while it still writes an older resync answer for the same block lands last', async () => {
  const [a, b] = await connectedPair();
  a!.promote(false);
  await settle(10);
  disconnect(a!, b!);
  // 64 KiB out of sync: an answer that size is written on libuv's pool (smaller ones at once).
  assert.equal(await write(a!, 65536, 65536, 1), 0);
  // The Primary writes the block again right after it answered the resync request with the old data:
  // the answer and the DATA frame reach the SyncTarget back to back, while the answer is being written.
  const answer = a!.resync.onResyncRequest.bind(a!.resync);
  let second: Promise<number> | null = null;
  a!.resync.onResyncRequest = (...args) => {
    answer(...args);
    second ??= write(a!, 65536, 4096, 2);
  };
  // The SyncTarget's disk holds its resync writes until the DATA frame has arrived.
  const disk = b!.disk!;
  const held: (() => void)[] = [];
  const writeAsync = disk.writeAsync.bind(disk);
  disk.writeAsync = (buf, len, off, done) => { held.push(() => writeAsync(buf, len, off, done)); };
  connect(a!, b!);
  await settle(30);
  assert.ok(second, 'the resync asked for the block');
  assert.ok(held.length > 0, 'the answer is being written');
  assert.equal(byteAt(b!, 65536), 0, 'the DATA frame waits for the older answer\'s write');
  disk.writeAsync = writeAsync;
  for (const h of held.splice(0)) h();
  await settle(100);
  assert.equal(await second, 0);
  assert.equal(b!.status().peers.n0!.replication, 'Established');
  assert.equal(byteAt(b!, 65536), 2, 'the newer write is on the SyncTarget');
  assert.equal(byteAt(b!, 65536 + 8192), 1, 'with the rest of the resynced range');
  assertConverged([a!, b!]);
});

test('a deferred local write that fails detaches the disk; the write completes from the peer\'s copy', async () => {
  const [a, b] = await connectedPair();
  a!.promote(false);
  await settle(10);
  a!.injectFault({ kind: 'write', offset: 4096, length: 4096 });
  const [s1, s2] = await Promise.all([write(a!, 0, 4096, 7), write(a!, 4096, 4096, 8)]);
  assert.deepEqual([s1, s2], [0, 0]);
  assert.equal(a!.diskState, 'Diskless');
  assert.equal(a!.stats.localWriteErrors, 1);
  assert.equal(byteAt(b!, 0), 7);
  assert.equal(byteAt(b!, 4096), 8);
  const back = await read(a!, 4096, 4096);
  assert.equal(back.status, 0);
  assert.equal(back.data[0], 8, 'read through the peer after the detach');
});

for (const crashed of ['target', 'source'] as const) {
  test(`a partial resync interrupted by a crash of its ${crashed} resumes: blocks already resynced are not sent again`, async () => {
    // resync-rate 1 byte/s: the SyncTarget asks for the first of the scattered blocks, then waits.
    const cfg = makeConfig(2, { resyncRate: 1, cMinRate: 1 });
    let [a, b] = makeNodes(cfg) as [Resource, Resource];
    connect(a, b);
    await settle(30);
    a.promote(false);
    disconnect(a, b);
    for (let i = 0; i < 4; i++) assert.equal(await write(a, i * 8 * 4096, 4096, 0x30 + i), 0);
    a.demote();
    connect(a, b);
    await settle(60);
    assert.equal(b.status().peers.n0!.replication, 'SyncTarget');
    assert.equal(b.status().peers.n0!.outOfSyncBytes, 3 * 4096, 'one block resynced');
    await settle(1200); // the periodic bitmap write-back records it, after the data is durable:
    await until(() => !b.resync.progressSyncing, 'the data sync of the write-back'); // (an fdatasync on libuv's pool)
    await settle(10);
    if (crashed === 'target') b = restart(cfg, b);
    else a = restart(cfg, a);
    cfg.resyncRate = cfg.cMinRate = 0;
    connect(a, b);
    await settle(150);
    const s = b.status().peers.n0!;
    assert.equal(s.replication, 'Established');
    assert.equal(b.diskState, 'UpToDate');
    assert.equal(s.lastResync!.bytesReceived, 3 * 4096, 'only the three blocks left travel');
    for (let i = 0; i < 4; i++) assert.equal(byteAt(b, i * 8 * 4096), 0x30 + i);
    assertConverged([a, b]);
  });
}

test('every local I/O error is counted: a Secondary whose disk fails a replicated write (as ENOSPC would) detaches and counts it', async () => {
  const [a, b] = await connectedPair();
  a!.promote(false);
  await settle(10);
  b!.injectFault({ kind: 'write', offset: 0, length: 4096 });
  assert.equal(await write(a!, 0, 4096, 5), 0, 'the Primary\'s copy holds it');
  assert.equal(b!.disk, null, 'detached');
  assert.equal(b!.stats.localWriteErrors, 1);
  assert.equal(b!.stats.localReadErrors, 0);
});

test('scenario links run the real link handshake: a node with another secret never links', () => {
  const cfg = makeConfig(2);
  const [a, b] = makeNodes(cfg) as [Resource, Resource];
  const impostor = new Resource({ cfg: { ...cfg, secret: 'not-the-secret' }, me: b.me });
  assert.throws(() => connect(a, impostor), /handshake n0 -> n1 failed: .*authentication failed/);
  assert.equal(a.status().peers.n1!.connection, 'Connecting', 'the engine never saw a link');
  connect(a, b);
  assert.equal(a.status().peers.n1!.connection, 'Connected');
  for (const r of [a, b]) r.close();
});

test('a guest write on a Primary SyncTarget to a block whose resync answer is still being written lands last', async () => {
  const [a, b] = await connectedPair();
  b!.promote(false);
  await settle(10);
  assert.equal(await write(b!, 16384, 4096, 1), 0);
  // b's disk is replaced while it stays Primary: the new one is resynced whole from a, with b as SyncTarget.
  b!.detach('test');
  b!.reattach(Metadata.open({ backingFile: b!.me.disk!, metaFile: b!.me.metaDisk }));
  // The SyncTarget's disk holds its resync writes until the guest's writes have been submitted.
  const disk = b!.disk!;
  const held: (() => void)[] = [];
  const writeAsync = disk.writeAsync.bind(disk);
  disk.writeAsync = (buf, len, off, done) => { held.push(() => writeAsync(buf, len, off, done)); };
  await settle(30);
  assert.equal(b!.status().peers.n0!.replication, 'SyncTarget');
  assert.equal(b!.role, 'Primary');
  assert.ok(held.length > 0, 'an answer is being written');
  const guest = write(b!, 16384, 4096, 2);
  const behind = write(b!, 16384 + 2048, 4096, 3); // overlaps the waiting write: waits too, lands after it
  await settle(30);
  assert.equal(byteAt(b!, 16384), 1, 'the guest write waits for the older answer\'s write (the disk still holds what it held)');
  disk.writeAsync = writeAsync;
  for (const h of held.splice(0)) h();
  await settle(200);
  assert.deepEqual(await Promise.all([guest, behind]), [0, 0]);
  assert.equal(b!.status().peers.n0!.replication, 'Established');
  for (const n of [a!, b!]) {
    assert.equal(byteAt(n, 16384), 2, `${n.me.name} holds the guest's write, not the older resync data`);
    assert.equal(byteAt(n, 16384 + 2048), 3, `${n.me.name} holds the later overlapping write on top`);
  }
  assertConverged([a!, b!]);
});

test('auto-demote undoes only auto-promote: the last front-end leaving demotes a node it promoted, not one promoted on request (a cluster manager)', async () => {
  const [a, b] = await connectedPair();
  a!.clientOpened(); // a guest connects: promoted by its front-end
  assert.equal(a!.role, 'Primary');
  a!.clientClosed();
  assert.equal(a!.role, 'Secondary', 'the guest left: demoted again');

  b!.promote(false); // `twindisk primary` (Pacemaker's promote)
  b!.clientOpened();
  b!.clientClosed();
  assert.equal(b!.role, 'Primary', 'promoted on request: stays Primary until demoted on request');
  b!.demote();

  a!.clientOpened(); // auto-promoted, then `primary` on request: kept
  a!.promote(false);
  a!.clientClosed();
  assert.equal(a!.role, 'Primary');
});
