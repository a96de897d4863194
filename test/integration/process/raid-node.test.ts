// A replicated node whose disk is an md array (`"disk": { "raid": ... }`): created by create-md, losing and regaining a member while a client writes, crashing, and checked against its peer and against md's own scrub.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import type { ServedRaidStatus } from '../../../engine/raid/membership.js';
import { SAFE_MODE_MS } from '../../../engine/raid/raid-volume.js';
import type { ResourceStatus } from '../../../engine/replication/resource.js';
import { VIRTIO_BLK_S_OK, VIRTIO_BLK_T_FLUSH } from '../../../qemu-plugin/virtio/constants.js';
import { attach, readBack, writeRandom, type BlkClient } from '../../harness/blk-client.js';
import { clusterFactory, sleep, type Cluster, type TestNode } from '../../harness/cluster.js';
import { runCli, runCliOk } from '../../harness/serve.js';
import { scrape, value } from '../../harness/prometheus.js';
import { after } from 'node:test';

const make = clusterFactory(after);
const KiB = 1024;
const MiB = 1024 * KiB;

type RaidNodeStatus = ResourceStatus & { raid?: ServedRaidStatus };

function ctl(n: TestNode): string {
  return path.join(n.cluster.dir, `.${n.cluster.resourceName}.${n.name}.ctl`);
}

const SIZE = 16 * MiB;

/** Writes random blocks at `offsets` and into `model`, the volume as the client wrote it (zeroes at first). */
function writeAll(g: BlkClient, model: Buffer, offs: number[], len: number): void {
  for (const off of offs) writeRandom(g, off, len).copy(model, off);
}

/** Reads the whole volume and compares it with `model`. */
function verifyAll(g: BlkClient, model: Buffer): void {
  const step = 128 * KiB;
  for (let off = 0; off < SIZE; off += step) assert.ok(readBack(g, off, step).equals(model.subarray(off, off + step)), `bytes at ${off}`);
}

/** Scattered offsets (block aligned) across the volume: partial stripes, whole stripes, chunk edges. */
function offsets(size: number, n: number, len: number, seed: number): number[] {
  const out: number[] = [];
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    out.push(Math.floor((x / 2 ** 31) * ((size - len) / 4096)) * 4096);
  }
  return out;
}

/** Verify from `from` toward `peer` finds no block out of sync. */
async function verifyClean(from: TestNode, peer: string): Promise<void> {
  await from.call({ cmd: 'verify' });
  const v = await from.waitStatus((s) => s.peers[peer]?.verify?.running === false, 'verify done', 60_000);
  assert.equal(v.peers[peer]!.verify!.outOfSyncBlocks, 0, 'verify found blocks that differ between the array and the peer');
}

async function setup(): Promise<{ c: Cluster; alpha: TestNode; beta: TestNode; g: BlkClient }> {
  const c = await make({
    nodes: { alpha: { disk: true, socket: true, metrics: true, raid: { level: 'raid5', members: 3, chunk: '64K' } }, beta: { disk: true } },
    size: SIZE,
  });
  await c.startAll();
  const alpha = c.node('alpha');
  const beta = c.node('beta');
  await alpha.waitStatus((s) => s.peers.beta?.replication === 'Established', 'connected');
  await alpha.waitLog(/vhost-user: listening/);
  return { c, alpha, beta, g: attach(alpha.socket) };
}

test('create-md builds the md array from the resource file; the node serves it, and a member failed and rebuilt while the client writes loses nothing', async () => {
  const { alpha, g } = await setup();
  // create-md made three sparse members just large enough, and an array md would assemble.
  for (let k = 0; k < 3; k++) assert.ok(fs.statSync(alpha.member(k)).size < 16 * MiB, 'each member holds half the volume plus md metadata');
  const st0 = await alpha.status() as RaidNodeStatus;
  assert.equal(st0.raid?.level, 'raid5');
  assert.equal(st0.raid?.mdstat, '[3/3] [UUU]');
  assert.equal(st0.disk, 'UpToDate');

  const shadow = Buffer.alloc(SIZE);
  writeAll(g, shadow, offsets(SIZE, 40, 12 * KiB, 7), 12 * KiB);
  writeAll(g, shadow, [0, 128 * KiB, 4 * MiB], 128 * KiB); // whole stripes (2 x 64K data)

  // A member fails (as mdadm --fail would): the array goes on degraded, the node stays UpToDate and Primary.
  assert.match(await runCliOk('raid', 'fail', '--control', ctl(alpha), '--slot', '1'), /failed slot 1: recorded in the other members' superblocks/);
  const deg = await alpha.waitStatus((s) => (s as RaidNodeStatus).raid?.degraded === 1, 'array degraded');
  assert.equal(deg.disk, 'UpToDate', 'losing one member of a raid5 does not touch replication');
  assert.equal(deg.role, 'Primary');
  const text = await runCliOk('status', '--config', alpha.cluster.file, '--node', 'alpha');
  assert.match(text, /md array: raid5 \[3\/2\] \[U_U\] degraded \(1 of 3 slots out\)/);
  assert.match(text, new RegExp(`twindisk raid add --control ${ctl(alpha).replace(/[.]/g, '\\.')} --slot N NEW-MEMBER`));

  verifyAll(g, shadow); // degraded reads rebuild slot 1's chunks from parity
  writeAll(g, shadow, offsets(SIZE, 30, 8 * KiB, 99), 8 * KiB); // degraded writes
  verifyAll(g, shadow);

  // A new member is rebuilt while the client keeps writing.
  const fresh = path.join(alpha.cluster.dir, 'alpha-new.img');
  await runCliOk('raid', 'add', '--control', ctl(alpha), '--slot', '1', '--size', String(fs.statSync(alpha.member(0)).size), fresh);
  for (let i = 0; i < 5; i++) writeAll(g, shadow, offsets(SIZE, 6, 4 * KiB, 1000 + i), 4 * KiB);
  const whole = await alpha.waitStatus((s) => (s as RaidNodeStatus).raid?.degraded === 0 && (s as RaidNodeStatus).raid?.work === null, 'rebuild done', 60_000) as RaidNodeStatus;
  assert.equal(whole.raid!.mdstat, '[3/3] [UUU]');
  assert.equal(whole.raid!.lastRebuild?.ok, true);
  assert.equal(g.run(0, VIRTIO_BLK_T_FLUSH, 0, 0).status, VIRTIO_BLK_S_OK);
  verifyAll(g, shadow);
  await verifyClean(alpha, 'beta');

  // Stopped cleanly, the array is clean and md's own scrub finds parity right on the rebuilt member.
  g.fe.close();
  await alpha.stop('SIGTERM');
  const members = [alpha.member(0), fresh, alpha.member(2)];
  const check = await runCliOk('raid', 'check', ...members);
  assert.match(check, /^check: 0 mismatched sectors in 16\.0 MiB of the array/m);
  const status = JSON.parse(await runCliOk('raid', 'status', '--json', ...members)) as { state: string; degraded: number };
  assert.equal(status.state, 'clean');
  assert.equal(status.degraded, 0);
});

test('a raid node killed after its writes comes back: safe mode recorded the idle array clean (no resync), replication replays its activity log, both copies agree', async () => {
  const { alpha, g } = await setup();
  const shadow = Buffer.alloc(SIZE);
  writeAll(g, shadow, offsets(SIZE, 60, 12 * KiB, 3), 12 * KiB);
  assert.equal(g.run(0, VIRTIO_BLK_T_FLUSH, 0, 0).status, VIRTIO_BLK_S_OK);
  await sleep(SAFE_MODE_MS + 800);
  await alpha.stop('SIGKILL');
  g.fe.close();

  // md's safe mode: the array went clean once idle, so the crash left nothing for it to resync.
  const members = [0, 1, 2].map((k) => alpha.member(k));
  const after = JSON.parse(await runCliOk('raid', 'status', '--json', ...members)) as { state: string; resync: { needed: boolean } };
  assert.equal(after.state, 'clean');
  assert.equal(after.resync.needed, false);

  await alpha.start();
  await alpha.waitLog(/this node crashed while Primary/);
  await alpha.waitStatus((s) => s.peers.beta?.replication === 'Established' && s.peers.beta.outOfSyncBytes === 0, 'in sync', 60_000);
  assert.doesNotMatch(alpha.log(), /resync started while serving/, 'a clean array is not resynced');
  const g2 = attach(alpha.socket);
  verifyAll(g2, shadow);
  g2.fe.close();
  await verifyClean(alpha, 'beta');
});

test('members that fail for real (raid inject): a bad range is repaired from parity, a vanished member is failed, and when the array itself fails the node detaches and serves through its peer', async () => {
  const { alpha, g } = await setup();
  const shadow = Buffer.alloc(SIZE);
  writeAll(g, shadow, offsets(SIZE, 40, 16 * KiB, 11), 16 * KiB);
  const st = JSON.parse(await runCliOk('raid', 'status', '--json', '--control', ctl(alpha))) as ServedRaidStatus;
  // A bad sector in slot 0's data: reads there fail until md's repair rewrites it from parity.
  const inj = await runCliOk('raid', 'inject', '--control', ctl(alpha), '--slot', '0', '--read-error', `${st.dataOffset}+4096`);
  assert.match(inj, /slot 0 \(.*alpha-0\.img\): read-error at \d+\+4096; 1 fault\(s\) active/);
  verifyAll(g, shadow);
  const repaired = await alpha.status() as RaidNodeStatus;
  assert.ok(repaired.raid!.memberErrors[0]!.correctedReads > 0, 'read errors were repaired by rewriting the block');
  assert.equal(repaired.raid!.degraded, 0, 'a repaired read error does not fail the member');
  assert.equal(repaired.disk, 'UpToDate');

  // Slot 1 vanishes: its next I/O fails it, and the array goes on degraded under an UpToDate node.
  await runCliOk('raid', 'inject', '--control', ctl(alpha), '--slot', '1', '--vanish');
  writeAll(g, shadow, offsets(SIZE, 20, 8 * KiB, 12), 8 * KiB);
  const deg = await alpha.waitStatus((s) => (s as RaidNodeStatus).raid?.degraded === 1, 'slot 1 failed');
  assert.equal(deg.disk, 'UpToDate');
  verifyAll(g, shadow);
  // Prometheus sees it too (the array's status is asked at each scrape and shown at the next).
  const url = `http://127.0.0.1:${alpha.metricsPort}/metrics`;
  await scrape(url);
  const e = await scrape(url);
  const base = { resource: 'r0', node: 'alpha' };
  assert.equal(value(e, 'twindisk_raid_degraded', base), 1);
  assert.equal(value(e, 'twindisk_raid_member_state', { ...base, slot: '1', state: 'missing' }), 1);
  assert.equal(value(e, 'twindisk_raid_member_state', { ...base, slot: '0', state: 'in-sync' }), 1);
  assert.ok(value(e, 'twindisk_raid_member_errors_total', { ...base, slot: '0', kind: 'corrected_read' }) > 0);
  assert.equal(value(e, 'twindisk_disk_state', { ...base, state: 'UpToDate' }), 1);

  // Slot 2 vanishes too: a raid5 cannot lose two. The array fails its I/O, the engine detaches the
  // disk (as for a dead file) and the guest's reads and writes go on through beta.
  await runCliOk('raid', 'inject', '--control', ctl(alpha), '--slot', '2', '--vanish');
  writeAll(g, shadow, offsets(SIZE, 20, 8 * KiB, 13), 8 * KiB);
  const gone = await alpha.waitStatus((s) => s.disk === 'Diskless', 'disk detached');
  assert.equal(gone.role, 'Primary', 'still the Primary, now through its peer');
  assert.match(alpha.log(), /local disk failed .*detaching it; this node now serves I\/O through its peers/);
  verifyAll(g, shadow);
});

test('a raid node\'s resource file is checked: external metadata, layout and member count', async () => {
  const { c } = await setup();
  const file = path.join(c.dir, 'bad.json');
  const base = JSON.parse(fs.readFileSync(c.file, 'utf8')) as { nodes: Record<string, Record<string, unknown>> };
  const write = (disk: unknown, meta?: string): void => {
    const f = structuredClone(base);
    f.nodes.alpha!.disk = disk;
    if (meta === undefined) delete f.nodes.alpha!['meta-disk'];
    else f.nodes.alpha!['meta-disk'] = meta;
    fs.writeFileSync(file, JSON.stringify(f));
  };
  write({ raid: 'raid5', members: ['a.img', 'b.img', 'c.img'] });
  let r = await runCli('create-md', '--config', file, '--node', 'alpha');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /meta-disk.*an md array disk keeps its replication metadata in a file of its own: add "meta-disk": "alpha\.md"/);
  write({ raid: 'raid5', layout: 'sideways', members: ['a.img', 'b.img', 'c.img'] }, 'alpha.md');
  r = await runCli('create-md', '--config', file, '--node', 'alpha');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /layout.*sideways/);
  write({ raid: 'raid6', members: ['a.img', 'b.img', 'c.img'] }, 'alpha.md');
  r = await runCli('create-md', '--config', file, '--node', 'alpha');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /raid6 needs at least 4 members, got 3/);
  write({ raid: 'raid5', members: ['alpha-0.img', 'alpha-1.img', 'alpha-2.img'] }, 'x.md');
  // The members hold alpha's running array: locked by the node, nothing written.
  r = await runCli('create-md', '--config', file, '--node', 'alpha');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /alpha-0\.img/);
  assert.ok(!fs.existsSync(path.join(c.dir, 'x.md')), 'no metadata file left behind');
  // A member of another level than the file says is refused, naming the difference.
  await c.node('alpha').stop('SIGTERM');
  write({ raid: 'raid1', members: ['alpha-0.img', 'alpha-1.img', 'alpha-2.img'] }, 'x.md');
  r = await runCli('create-md', '--config', file, '--node', 'alpha');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /do not match the resource file: they hold a raid5 array, the resource file says raid1/);
  await sleep(0);
});
