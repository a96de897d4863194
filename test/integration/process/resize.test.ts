// `twindisk resize` of a replicated resource: every node grows its backing file and metadata, the data stays, a node that is down makes it refuse.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { after, test } from 'node:test';
import { VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_OUT } from '../../../qemu-plugin/virtio/constants.js';
import type { ResourceStatus } from '../../../engine/replication/resource.js';
import { Metadata } from '../../../engine/replication/metadata.js';
import { attach, readBack, writeRandom } from '../../harness/blk-client.js';
import { clusterFactory, type Cluster } from '../../harness/cluster.js';
import { cli } from '../../harness/serve.js';
import { readRange } from '../../../bootimg/bootdisk.js';

const cluster = clusterFactory(after);
const connected = (s: ResourceStatus, ...peers: string[]) =>
  peers.every((p) => s.peers[p]?.connection === 'Connected' && s.peers[p]?.replication === 'Established');

function resize(c: Cluster, node: string, size: number): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [cli, 'resize', '--config', c.file, '--node', node, '--size', String(size)], { encoding: 'utf8' });
  return { status: r.status, out: r.stdout + r.stderr };
}

test('resize grows both disks and their metadata under a client; the data stays and the new blocks replicate', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true, socket: true }, beta: { disk: true } } });
  await c.startAll();
  const alpha = c.node('alpha');
  const beta = c.node('beta');
  await alpha.waitStatus((s) => connected(s, 'beta'), 'alpha connected to beta');
  await alpha.waitLog(/vhost-user: listening/);
  const g = attach(alpha.socket);
  const old = c.size;
  const before = writeRandom(g, old - 65536, 65536);
  // Past the end: refused before the resize.
  assert.equal(g.run(0, VIRTIO_BLK_T_OUT, old / 512, 4096).status, VIRTIO_BLK_S_IOERR);
  const size = old + (8 << 20);
  const r = resize(c, 'beta', size); // run against the Secondary: it coordinates
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, new RegExp(`resized from ${old} to ${size} bytes on beta, alpha`));
  for (const n of [alpha, beta]) await n.waitStatus((s) => s.size === size, `${n.name} has the new size`);
  await alpha.waitLog(/front-ends take the new size/);
  // The client's queue worker takes the new size: a write past the old end now succeeds and replicates.
  const fresh = writeRandom(g, old, 131072);
  assert.ok(readBack(g, old - 65536, 65536).equals(before), 'data before the old end intact');
  assert.equal(g.run(0, VIRTIO_BLK_T_GET_ID, 0, 20).status, VIRTIO_BLK_S_OK);
  g.fe.close();
  await alpha.waitStatus((s) => s.role === 'Secondary' && s.peers.beta!.outOfSyncBytes === 0, 'alpha demoted, in sync');
  await c.stopAll('SIGTERM');
  for (const n of ['alpha', 'beta']) {
    const img = c.node(n).image;
    assert.ok(readRange(img, old - 65536, 65536).equals(before), `${n}: old data`);
    assert.ok(readRange(img, old, 131072).equals(fresh), `${n}: new blocks`);
    assert.ok(readRange(img, old + 131072, 1 << 20).every((b) => b === 0), `${n}: the rest of the new area reads zero (the old metadata area was zeroed)`);
    const md = Metadata.open({ backingFile: img, metaFile: null });
    assert.equal(md.dataSize, size, `${n}: metadata covers the new size`);
    assert.equal(md.openReport.staleRange, null);
    md.close();
  }
  // Both start again at the new size and connect.
  await c.startAll();
  await c.node('alpha').waitStatus((s) => connected(s, 'beta') && s.size === size, 'restarted at the new size');
  await c.stopAll('SIGTERM');
});

test('resize refuses, naming the node, when a node is down, and when asked to shrink; nothing changes', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true }, beta: { disk: true }, gamma: { disk: false } } });
  await c.startAll();
  const alpha = c.node('alpha');
  await alpha.waitStatus((s) => connected(s, 'beta', 'gamma'), 'all connected');
  await c.node('beta').stop('SIGKILL');
  await alpha.waitStatus((s) => s.peers.beta!.connection !== 'Connected', 'beta gone');
  const sizeBefore = fs.statSync(alpha.image).size;
  const r = resize(c, 'alpha', c.size * 2);
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /beta is not connected/);
  assert.equal(fs.statSync(alpha.image).size, sizeBefore, 'alpha did not grow');
  const s = resize(c, 'alpha', c.size - 4096);
  assert.equal(s.status, 1, s.out);
  assert.match(s.out, /only grows/);
  assert.equal((await alpha.status()).size, c.size);
  await c.stopAll('SIGTERM');
});

test('a diskless node takes part: it learns the new size', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true }, beta: { disk: true }, gamma: { disk: false } } });
  await c.startAll();
  const gamma = c.node('gamma');
  await gamma.waitStatus((s) => connected(s, 'alpha', 'beta'), 'gamma connected');
  const size = c.size + (4 << 20);
  const r = resize(c, 'gamma', size);
  assert.equal(r.status, 0, r.out);
  for (const n of ['alpha', 'beta', 'gamma']) await c.node(n).waitStatus((x) => x.size === size, `${n} at the new size`);
  await c.stopAll('SIGTERM');
});
