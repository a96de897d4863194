// Replicated resources on loopback: `twindisk up` nodes as processes, a vhost-user front-end writing through the Primary.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from '../../../qemu-plugin/virtio/constants.js';
import { attach, readBack, writeRandom } from '../../harness/blk-client.js';
import type { ResourceStatus } from '../../../engine/replication/resource.js';
import { clusterFactory } from '../../harness/cluster.js';

const cluster = clusterFactory(after);
const write = writeRandom;
const read = readBack;

const connected = (s: ResourceStatus, ...peers: string[]) =>
  peers.every((p) => s.peers[p]?.connection === 'Connected' && s.peers[p]?.replication === 'Established');

test('protocol C: writes through the Primary land on every replica; auto-promote and demote follow the client', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true, socket: true, queues: 2 }, beta: { disk: true } } });
  await c.startAll();
  const alpha = c.node('alpha');
  await alpha.waitStatus((s) => connected(s, 'beta'), 'alpha connected to beta');
  await alpha.waitLog(/vhost-user: listening/);
  const g = attach(alpha.socket, 2);
  const written: [number, Buffer][] = [];
  for (let i = 0; i < 20; i++) {
    const off = ((i * 7919) % 4000) * 4096;
    written.push([off, write(g, off, 4096 * (1 + (i % 4)))]);
  }
  assert.equal(g.run(0, VIRTIO_BLK_T_FLUSH, 0, 0).status, VIRTIO_BLK_S_OK);
  const s = await alpha.status();
  assert.equal(s.role, 'Primary');
  assert.equal(s.peers.beta!.outOfSyncBytes, 0);
  // Reads come back identical.
  for (const [off, bytes] of written.slice(-5)) assert.ok(read(g, off, bytes.length).equals(bytes));
  g.fe.close();
  await alpha.waitStatus((x) => x.role === 'Secondary', 'alpha demoted after the client left');
  const a = c.data('alpha');
  const b = c.data('beta');
  assert.ok(a.equals(b), 'replicas are byte-identical');
  for (const [off, bytes] of written.slice(-10)) assert.ok(a.subarray(off, off + bytes.length).equals(bytes) || written.some(([o]) => o > off), `data at ${off}`);
  const json = JSON.parse(c.cli(['status', '--config', c.file, '--node', 'beta', '--json']));
  assert.equal(json.role, 'Secondary');
  assert.equal(json.disk, 'UpToDate');
  assert.equal(json.size, c.size);
  assert.deepEqual(Object.keys(json.peers), ['alpha']);
  assert.equal(json.peers.alpha.connection, 'Connected');
  assert.equal(json.peers.alpha.replication, 'Established');
  assert.equal(json.peers.alpha.outOfSyncBytes, 0);
  await c.stopAll('SIGTERM');
});

test('a Secondary stopped during writes resyncs only the blocks written meanwhile', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true, socket: true }, beta: { disk: true } } });
  await c.startAll();
  const alpha = c.node('alpha');
  const beta = c.node('beta');
  await alpha.waitStatus((s) => connected(s, 'beta'), 'connected');
  const g = attach(alpha.socket);
  write(g, 0, 65536);
  await beta.stop('SIGTERM');
  await alpha.waitStatus((s) => s.peers.beta!.connection !== 'Connected', 'alpha sees beta gone');
  // 37 distinct 4 KiB blocks change while beta is away.
  const changed = new Set<number>();
  for (let i = 0; i < 37; i++) {
    const block = 100 + i * 13;
    changed.add(block);
    write(g, block * 4096, 4096);
  }
  const s = await alpha.status();
  assert.equal(s.peers.beta!.outOfSyncBytes, changed.size * 4096);
  await beta.start();
  const done = await alpha.waitStatus((x) => connected(x, 'beta') && x.peers.beta!.lastResync !== undefined, 'resync finished');
  assert.equal(done.peers.beta!.lastResync!.bytesSent, changed.size * 4096, 'only the changed blocks were sent');
  assert.equal(done.peers.beta!.outOfSyncBytes, 0);
  assert.equal((await beta.status()).disk, 'UpToDate');
  g.fe.close();
  await alpha.waitStatus((x) => x.role === 'Secondary', 'demoted');
  assert.ok(c.data('alpha').equals(c.data('beta')));
});

test('the Primary killed mid-write: the Secondary is promoted and serves every acknowledged write', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true, socket: true }, beta: { disk: true, socket: true } } });
  await c.startAll();
  const alpha = c.node('alpha');
  const beta = c.node('beta');
  await alpha.waitStatus((s) => connected(s, 'beta'), 'connected');
  const g = attach(alpha.socket);
  const acked = new Map<number, Buffer>();
  for (let i = 0; i < 50; i++) {
    const off = i * 8192;
    acked.set(off, write(g, off, 8192));
  }
  // Kill the Primary with a write in flight.
  g.data(0, 8192).fill(0xaa);
  g.blks[0]!.submit(0, VIRTIO_BLK_T_OUT, 1000, 8192, 2);
  if (g.fe.queues[0]!.driver.publishAndCheckKick()) g.fe.kick(g.fe.queues[0]!);
  await alpha.stop('SIGKILL');
  g.fe.close();
  await beta.waitStatus((s) => s.peers.alpha!.connection !== 'Connected', 'beta sees alpha gone');
  const h = attach(beta.socket);
  assert.equal((await beta.status()).role, 'Primary');
  for (const [off, bytes] of acked) assert.ok(read(h, off, bytes.length).equals(bytes), `acknowledged write at ${off}`);
  // The new Primary writes; the old one comes back as Secondary and syncs from it.
  const after = write(h, 5 * 4096, 4096);
  await alpha.start();
  await beta.waitStatus((s) => connected(s, 'alpha'), 'alpha back in sync', 30000);
  h.fe.close();
  await beta.waitStatus((s) => s.role === 'Secondary', 'demoted');
  const a = c.data('alpha');
  assert.ok(a.subarray(5 * 4096, 6 * 4096).equals(after));
  assert.ok(a.equals(c.data('beta')), 'replicas identical after the crashed Primary resynced');
});

test('a Primary alone whose queue worker writes the disk itself is SIGKILLed: restarted, it owes the returning peer every acknowledged write', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true, socket: true }, beta: { disk: true } } });
  await c.startAll();
  const alpha = c.node('alpha');
  const beta = c.node('beta');
  await alpha.waitStatus((s) => connected(s, 'beta'), 'connected');
  await beta.stop('SIGTERM');
  await alpha.waitStatus((s) => s.peers.beta!.connection !== 'Connected', 'alpha sees beta gone');
  const g = attach(alpha.socket);
  const acked = new Map<number, Buffer>();
  // The first writes go through the engine (a new generation, the extents into the activity log); the
  // rest, into the same extents, are made by the queue worker.
  for (let i = 0; i < 40; i++) acked.set((i % 20) * 65536, write(g, (i % 20) * 65536, 4096));
  const s = await alpha.status();
  assert.ok(s.stats.workerWrites > 0, `the queue worker wrote the disk itself (${s.stats.workerWrites} of ${s.stats.writes})`);
  assert.equal(s.peers.beta!.outOfSyncBytes, 20 * 4096, 'status counts every write toward beta');
  // More acknowledged writes, then a crash before the engine's 20 ms timer takes their marks.
  for (let i = 0; i < 20; i++) acked.set(i * 65536 + 8192, write(g, i * 65536 + 8192, 4096));
  await alpha.stop('SIGKILL');
  g.fe.close();
  await alpha.start();
  await beta.start();
  await alpha.waitStatus((x) => connected(x, 'beta') && x.peers.beta!.outOfSyncBytes === 0, 'beta resynced from alpha', 30000);
  const b = c.data('beta');
  for (const [off, bytes] of acked) assert.ok(b.subarray(off, off + bytes.length).equals(bytes), `acknowledged write at ${off} reached beta`);
  assert.ok(c.data('alpha').equals(b), 'replicas identical');
});

test('a diskless node serves a guest whose data lives on two peers', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true }, beta: { disk: true }, gamma: { disk: false, socket: true } } });
  await c.startAll();
  const gamma = c.node('gamma');
  await gamma.waitStatus((s) => connected(s, 'alpha', 'beta') && s.size === c.size, 'gamma connected to both disks');
  await gamma.waitLog(/vhost-user: listening/);
  const g = attach(gamma.socket);
  const bytes = write(g, 3 * 4096, 3 * 4096);
  assert.equal(g.run(0, VIRTIO_BLK_T_FLUSH, 0, 0).status, VIRTIO_BLK_S_OK);
  assert.ok(read(g, 3 * 4096, 3 * 4096).equals(bytes));
  const s = await gamma.status();
  assert.equal(s.disk, 'Diskless');
  assert.equal(s.role, 'Primary');
  for (const n of ['alpha', 'beta']) assert.ok(c.data(n).subarray(3 * 4096, 6 * 4096).equals(bytes), `${n} holds the data`);
  // With one disk node gone, reads and writes go on through the other.
  await c.node('alpha').stop('SIGKILL');
  await gamma.waitStatus((x) => x.peers.alpha!.connection !== 'Connected', 'alpha gone');
  const more = write(g, 0, 4096);
  assert.ok(read(g, 0, 4096).equals(more));
  // Without any disk, I/O fails rather than pretending.
  await c.node('beta').stop('SIGKILL');
  await gamma.waitStatus((x) => x.peers.beta!.connection !== 'Connected', 'beta gone');
  assert.equal(g.run(0, VIRTIO_BLK_T_IN, 0, 4096).status, VIRTIO_BLK_S_IOERR);
  g.fe.close();
});

test('a peer with the wrong secret is refused and logged', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true }, beta: { disk: true } } });
  const alpha = c.node('alpha');
  await alpha.start();
  // An impostor: beta's name and address, another secret.
  const cfg = JSON.parse(fs.readFileSync(c.file, 'utf8'));
  cfg.secret = 'not-the-secret-9Kq2Lm7Vx3Rb8Tz4'; // strong enough to load, but not the resource's
  const bad = path.join(c.dir, 'impostor.json');
  fs.writeFileSync(bad, JSON.stringify(cfg));
  const imp = c.node('beta');
  const realFile = c.file;
  (c as { file: string }).file = bad;
  await imp.start();
  (c as { file: string }).file = realFile;
  await alpha.waitLog(/authentication failed/i, 15000);
  const s = await alpha.status();
  assert.notEqual(s.peers.beta!.connection, 'Connected');
  await imp.stop();
});
