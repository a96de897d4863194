// Writes a queue worker makes to the local disk itself (a Primary alone): the hot-extent map, the activity log's pins, and the engine's marks.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IoVector } from '../../../engine/iovec.js';
import { EFD_CLOEXEC, EFD_NONBLOCK, close, eventfd } from '../../../engine/os.js';
import { ChannelHost, MARKS } from '../../../engine/replication/channel.js';
import { HotExtents } from '../../../engine/replication/hot-extents.js';
import { Metadata } from '../../../engine/replication/metadata.js';
import { ReplicatedBackend } from '../../../engine/replication/replicated-backend.js';
import type { Resource } from '../../../engine/replication/resource.js';
import { MiB, external, withDir } from './md-fixtures.js';
import { assertConverged, byteAt, connect, disconnect, makeConfig, makeNodes, restart, settle } from './sim.js';

test('hot extents: a worker pins only hot extents, all or none; a pinned extent is not evicted', () => {
  const hot = HotExtents.create(4 * MiB, MiB);
  assert.equal(hot.extents, 4);
  assert.equal(hot.tryPin(0, 4096), false, 'not hot yet');
  assert.equal(hot.pins(0), 0, 'a failed pin leaves no count');
  hot.markHot(0);
  hot.markHot(1);
  assert.equal(hot.tryPin(MiB - 512, 1024), true, 'a write over two hot extents');
  assert.equal(hot.pins(0), 1);
  assert.equal(hot.pins(1), 1);
  assert.equal(hot.tryPin(2 * MiB - 512, 1024), false, 'extent 2 is cold: nothing pinned');
  assert.equal(hot.pins(1), 1);
  assert.equal(hot.pins(2), 0);
  assert.equal(hot.tryPin(3 * MiB, 2 * MiB), false, 'past the map (a grown volume): never pinned');
  assert.equal(hot.tryEvict(0), false, 'pinned: not evicted');
  assert.equal(hot.isHot(0), true);
  hot.unpin(MiB - 512, 1024);
  assert.equal(hot.tryEvict(0), true);
  assert.equal(hot.isHot(0), false);
  assert.equal(hot.tryPin(0, 512), false, 'an evicted extent takes no new write');
  assert.equal(hot.tryEvict(3), true, 'a cold extent is free to go');
  hot.cool(1);
  assert.equal(hot.isHot(1), false);
});

test('activity log with workers: eviction skips pinned extents, and when every candidate is pinned the posted marks are applied first', () => {
  withDir((dir) => {
    const md = Metadata.create(external(dir, 16 * MiB, { alExtentSize: MiB, alExtents: 2 }));
    const hot = HotExtents.create(md.dataSize, md.alExtentSize);
    let releases = 0;
    let release = () => undefined as void;
    md.useHotExtents(hot, () => { releases++; release(); });
    md.alActivate(0, 512);
    md.alActivate(MiB, 512);
    assert.equal(hot.isHot(0) && hot.isHot(1), true, 'active extents are hot once their transaction is written');
    assert.equal(hot.tryPin(0, 512), true, 'a worker writes in extent 0, the least recently used');
    md.alActivate(2 * MiB, 512);
    assert.deepEqual(md.activeExtents(), [0, 2], 'extent 1 went instead of the pinned extent 0');
    assert.equal(hot.isHot(1), false);
    assert.equal(hot.tryPin(2 * MiB, 512), true);
    assert.equal(releases, 0);
    // Both active extents pinned: the engine applies the workers' marks (here: extent 0's write) and evicts it.
    release = () => hot.unpin(0, 512);
    md.alActivate(3 * MiB, 512);
    assert.equal(releases, 1);
    assert.deepEqual(md.activeExtents(), [2, 3]);
    assert.equal(hot.pins(2), 1, 'the write still pinned kept its extent');
    md.close();
    assert.equal(hot.isHot(2) || hot.isHot(3), false, 'a closed log shares nothing');
    assert.equal(hot.pins(2), 1, 'pins outlive the metadata: the engine still releases them');
  });
});

test('a full marks ring stops local writes until the engine takes the marks', () => {
  const fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  const host = new ChannelHost(fd, () => undefined, 4);
  const be = new ReplicatedBackend({ kind: 'replicated', channel: host.spec, size: MiB, blockSize: 512, local: null, hot: null, name: 'test' });
  try {
    // The worker's end as the back-end uses it.
    const ch = (be as unknown as { ch: { enterLocalWrite(): number; postMark(o: number, l: number): void; leaveLocalWrite(): void } }).ch;
    assert.equal(ch.enterLocalWrite(), 0, 'not allowed by the engine');
    host.setLocalWrites(3);
    for (let i = 0; i < MARKS; i++) {
      assert.equal(ch.enterLocalWrite(), 3);
      ch.postMark(i * 512, 512);
      ch.leaveLocalWrite();
    }
    assert.equal(ch.enterLocalWrite(), 0, 'ring full');
    const seen: number[] = [];
    assert.equal(host.drainMarks((o) => seen.push(o)), MARKS);
    assert.deepEqual(seen.slice(0, 3), [0, 512, 1024]);
    assert.equal(ch.enterLocalWrite(), 3, 'room again');
    ch.leaveLocalWrite();
    host.setLocalWrites(0);
    assert.equal(host.waitLocalWrites(100), true);
  } finally {
    be.close();
    host.close();
    close(fd);
  }
});

/** Bytes marked out of sync toward n1 in `r`'s bitmap as it is now (status() would take the posted marks first). */
function outOfSync(r: Resource): number {
  let n = 0;
  for (const byte of r.md!.bitmap(1)) for (let b = byte; b !== 0; b &= b - 1) n++;
  return n * 4096;
}

/** A queue worker's back-end on this thread (as the iSCSI portal runs one), served by `r`. */
function workerOf(r: Resource) {
  const fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  let be: ReplicatedBackend | null = null;
  const host = new ChannelHost(fd, () => be?.poll());
  const serving = r.serveChannel(host);
  be = new ReplicatedBackend({
    kind: 'replicated', channel: host.spec, size: r.size, blockSize: 512, local: { path: r.me.disk! }, hot: r.hotSpec(), name: 'test',
  });
  const backend = be;
  return {
    be: backend,
    /** A guest write of `length` bytes of `fill`; resolves with its status. */
    async write(offset: number, length: number, fill: number): Promise<number> {
      const buf = Buffer.alloc(length, fill);
      const iov = new IoVector(1);
      iov.push(buf, 0, length, 0);
      const done = { status: null as number | null, complete(s: number) { this.status = s; } };
      backend.write(iov, offset, false, done);
      backend.kick();
      for (let i = 0; done.status === null; i++) {
        assert.ok(i < 5000, 'the write completed within 5 s');
        await new Promise((res) => setTimeout(res, 1));
        backend.poll();
      }
      return done.status;
    },
    async stop(): Promise<void> {
      host.stop();
      await serving;
      backend.close();
      host.close();
      close(fd);
    },
  };
}

test('a Primary alone: its worker writes the disk itself, the engine marks the writes toward the absent peer, and a resync carries them', async () => {
  const nodes = makeNodes(makeConfig(2));
  const [a, b] = nodes as [Resource, Resource];
  connect(a, b);
  await settle(50);
  a.promote(false);
  const w = workerOf(a);
  try {
    assert.equal(await w.write(0, 4096, 1), 0);
    assert.equal(w.be.localWrites, 0, 'a connected peer: the engine writes and replicates');
    assert.equal(byteAt(b, 0), 1);
    disconnect(a, b);
    assert.equal(await w.write(8192, 4096, 2), 0);
    assert.equal(w.be.localWrites, 0, 'the first write after the peer left starts a new generation in the engine');
    // Over an extent boundary (the sim's extents are 64 KiB), into extents the engine activates first, then ones already hot.
    for (const [off, fill] of [[65536 - 2048, 3], [65536 - 2048, 4], [200_704, 5], [200_704 + 4096, 6]] as const) {
      assert.equal(await w.write(off, 4096, fill), 0);
    }
    assert.ok(w.be.localWrites >= 2, `writes in hot extents were made by the worker (${w.be.localWrites})`);
    assert.equal(byteAt(a, 65536 - 2048), 4);
    assert.equal(byteAt(a, 200_704 + 4096), 6);
    assert.equal(a.status().peers.n1!.outOfSyncBytes, 5 * 4096, 'status counts every write toward the absent peer, marks posted or not');
    await settle(60); // the engine's timer takes the marks too
    for (let e = 0; e < a.hot!.extents; e++) assert.equal(a.hot!.pins(e), 0, `extent ${e} has no pin left`);
    // More writes, and the peer returns before the engine's timer took their marks: the handshake takes them first.
    assert.equal(await w.write(65536, 4096, 10), 0);
    assert.equal(await w.write(200_704 + 8192, 4096, 11), 0);
    assert.equal(outOfSync(a), 5 * 4096, 'the last two are not marked yet');
    connect(a, b);
    await settle(100);
    assert.equal(a.status().peers.n1!.replication, 'Established');
    assert.equal(byteAt(b, 65536), 10);
    assert.equal(byteAt(b, 200_704 + 8192), 11);
    assert.equal(byteAt(b, 65536 - 2048), 4);
    assert.equal(byteAt(b, 200_704 + 4096), 6);
    assertConverged([a, b]);
    assert.equal(await w.write(0, 4096, 7), 0);
    const before = w.be.localWrites;
    assert.equal(byteAt(b, 0), 7, 'connected again: replicated');
    assert.equal(w.be.localWrites, before);
  } finally {
    await w.stop();
  }
});

test('a Primary alone that crashes before the engine took its worker\'s marks: the activity log covers the writes, and the peer gets them', async () => {
  const cfg = makeConfig(2);
  const [a, b] = makeNodes(cfg) as [Resource, Resource];
  connect(a, b);
  await settle(50);
  a.promote(false);
  disconnect(a, b);
  const w = workerOf(a);
  assert.equal(await w.write(0, 4096, 1), 0); // the engine's write: new generation, extent 0 active
  assert.equal(await w.write(300_000 - (300_000 % 4096), 4096, 8), 0);
  assert.equal(w.be.localWrites, 0, 'a write into an extent not in the activity log goes through the engine');
  await settle(30);
  // The worker's writes complete at once (no timer runs in between): their marks are still on the ring.
  assert.equal(await w.write(4096, 4096, 9), 0);
  assert.equal(await w.write(8192, 4096, 9), 0);
  assert.equal(w.be.localWrites, 2);
  assert.equal(outOfSync(a), 2 * 4096, 'the worker\'s writes are not marked yet');
  await w.stop();
  const a2 = restart(cfg, a); // a crash: nothing flushed, the marks never applied
  connect(a2, b);
  await settle(100);
  assert.equal(byteAt(b, 4096), 9);
  assert.equal(byteAt(b, 8192), 9);
  assert.equal(byteAt(b, 300_000 - (300_000 % 4096)), 8);
  assertConverged([a2, b]);
});
