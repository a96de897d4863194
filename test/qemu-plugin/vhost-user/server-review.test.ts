// Review findings of the vhost-user back-end, against `twindisk serve` from the TypeScript front-end: inflight areas, failed requests with replies, broken rings, memory tables on several queues, memory per queue entry.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { BlkDriver } from '../../../qemu-plugin/testing/blk-driver.js';
import { VhostUserFrontend, type FrontendQueue } from '../../../qemu-plugin/testing/vhost-user-frontend.js';
import { EFD_CLOEXEC, MFD_CLOEXEC, close, eventfd, ftruncate, mapShared, memfdCreate, unmap } from '../../../qemu-plugin/os.js';
import { Req } from '../../../qemu-plugin/vhost-user/constants.js';
import { encodeRequest, statePayload, u64Payload } from '../../../qemu-plugin/vhost-user/message.js';
import { VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from '../../../qemu-plugin/virtio/constants.js';
import { serve, tmpDir, type Served } from '../../harness/serve.js';

const MiB = 2 ** 20;
const dir = tmpDir();
const running: Served[] = [];
after(async () => {
  for (const s of running) await s.stop('SIGKILL');
});

async function start(name: string, args: string[] = []): Promise<Served> {
  const image = path.join(dir, `${name}.img`);
  fs.writeFileSync(image, Buffer.alloc(16 * MiB));
  const s = await serve({ image, socket: path.join(dir, `${name}.sock`), args, dir });
  running.push(s);
  return s;
}

/** Runs one request in `slot` of `blk` on queue `q` and waits for it. */
function run(fe: VhostUserFrontend, q: FrontendQueue, blk: BlkDriver, slot: number, type: number, sector: number, len: number) {
  blk.submit(slot, type, sector, len);
  if (q.driver.publishAndCheckKick()) fe.kick(q);
  for (let i = 0; i < 100; i++) {
    const c = blk.reap();
    if (c) return c;
    fe.waitCall(q, 100);
  }
  throw new Error('request did not complete within 10 s');
}

function alive(s: Served): boolean {
  return s.child.exitCode === null && s.child.signalCode === null;
}

/** GET_INFLIGHT_FD for one queue of `queueSize`: the area's fd and the payload to give back with SET_INFLIGHT_FD. */
function getInflight(fe: VhostUserFrontend, queueSize: number, numQueues = 1): { fd: number; payload: Buffer } {
  const p = Buffer.alloc(24);
  p.writeUInt16LE(numQueues, 16);
  p.writeUInt16LE(queueSize, 18);
  fe.sendRaw(encodeRequest(Req.GET_INFLIGHT_FD, p));
  // The reply carries the area's fd: receive it with the header.
  const { bytes, fds } = fe.readWithFds(12 + 24);
  assert.equal(fds.length, 1, 'the reply carries the area');
  return { fd: fds[0]!, payload: bytes.subarray(12) };
}

test('SET_INFLIGHT_FD while a ring runs: the ring keeps its area until it stops, nothing is unmapped under it', async () => {
  const s = await start('inflight');
  const fe = VhostUserFrontend.connect(s.socket);
  try {
    // As QEMU does: the inflight area before the rings start.
    const a1 = getInflight(fe, 64);
    fe.request(Req.SET_INFLIGHT_FD, a1.payload, [a1.fd]);
    fe.setup({ numQueues: 1, queueSize: 64, memSize: 8 * MiB });
    const q = fe.queues[0]!;
    const blk = new BlkDriver(q.driver, fe.dataBase, 4, 65536);
    for (let i = 0; i < 4; i++) assert.equal(run(fe, q, blk, 0, VIRTIO_BLK_T_OUT, i * 128, 65536).status, VIRTIO_BLK_S_OK);
    // A second area while the ring runs (a front-end that re-sends it): the running ring must not lose its own.
    const a2 = getInflight(fe, 64);
    fe.ackedRequest(Req.SET_INFLIGHT_FD, a2.payload, [a2.fd]);
    for (let i = 0; i < 32; i++) assert.equal(run(fe, q, blk, i % 4, i % 2 ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT, i * 128, 65536).status, VIRTIO_BLK_S_OK);
    assert.ok(alive(s), 'the back-end is alive');
    // The ring went on tracking in its own area (header: version 1, 64 entries, used index 36) and left the new one alone.
    const m1 = mapShared(a1.fd, 1088);
    const m2 = mapShared(a2.fd, 1088);
    const h1 = new DataView(m1.ab);
    assert.deepEqual([h1.getUint16(8, true), h1.getUint16(10, true), h1.getUint16(14, true)], [1, 64, 36], 'the first area is the running ring\'s');
    assert.ok(new Uint8Array(m2.ab).every((b) => b === 0), 'the second area is untouched while the ring runs');
    // Stopped and started again, the ring tracks in the new area.
    fe.getVringBase(0);
    const kick = eventfd(0, EFD_CLOEXEC);
    close(q.kickFd);
    q.kickFd = kick;
    fe.request(Req.SET_VRING_KICK, u64Payload(0), [kick]);
    fe.ackedRequest(Req.SET_VRING_ENABLE, statePayload(0, 1));
    assert.equal(run(fe, q, blk, 0, VIRTIO_BLK_T_IN, 0, 4096).status, VIRTIO_BLK_S_OK);
    assert.ok(alive(s));
    assert.equal(new DataView(m2.ab).getUint16(8, true), 1, 'the restarted ring tracks in the second area');
    unmap(m1);
    unmap(m2);
    close(a1.fd);
    close(a2.fd);
  } finally {
    fe.close();
  }
});

test('a failed request with a reply of its own (GET_INFLIGHT_FD) closes the connection instead of leaving the front-end waiting', async () => {
  const s = await start('noreply');
  const fe = VhostUserFrontend.connect(s.socket);
  try {
    const p = Buffer.alloc(24);
    p.writeUInt16LE(9, 16); // the device has 1 queue
    p.writeUInt16LE(64, 18);
    fe.request(Req.GET_INFLIGHT_FD, p);
    assert.equal(fe.closedByPeer(5000), true, 'the back-end closed the connection');
    await s.waitLog(/GET_INFLIGHT_FD failed: .*reply cannot tell the front-end/);
  } finally {
    fe.close();
  }
  // The next front-end is served.
  const fe2 = VhostUserFrontend.connect(s.socket);
  fe2.setup({ numQueues: 1, queueSize: 64, memSize: 8 * MiB });
  const blk = new BlkDriver(fe2.queues[0]!.driver, fe2.dataBase, 1, 4096);
  assert.equal(run(fe2, fe2.queues[0]!, blk, 0, VIRTIO_BLK_T_IN, 0, 4096).status, VIRTIO_BLK_S_OK);
  fe2.close();
});

test('GET_VRING_BASE after a ring stopped itself reports where it stopped, not the base it started from', async () => {
  const s = await start('broken');
  const fe = VhostUserFrontend.connect(s.socket);
  try {
    fe.setup({ numQueues: 1, queueSize: 64, memSize: 8 * MiB });
    const q = fe.queues[0]!;
    const blk = new BlkDriver(q.driver, fe.dataBase, 1, 4096);
    for (let i = 0; i < 5; i++) assert.equal(run(fe, q, blk, 0, VIRTIO_BLK_T_IN, 0, 4096).status, VIRTIO_BLK_S_OK);
    // The driver moves the available index a whole ring too far: the ring breaks and stops itself.
    q.driver.setAvailIdxRaw(5 + 100);
    fe.kick(q);
    await s.waitLog(/queue 0 stopped: available index/);
    assert.equal(fe.getVringBase(0), 5, 'the last available index the ring served');
  } finally {
    fe.close();
  }
});

test('a memory table one queue cannot take leaves every queue on the old table', async () => {
  const s = await start('mq', ['--queues', '2']);
  const fe = VhostUserFrontend.connect(s.socket);
  try {
    fe.setup({ numQueues: 2, queueSize: 64, memSize: 8 * MiB });
    // Queue 1 stopped, queue 0 running: a table without the rings' memory suits worker 1, not worker 0.
    fe.getVringBase(1);
    const other = memfdCreate('twindisk-other-table', MFD_CLOEXEC);
    assert.ok(other >= 0 && ftruncate(other, 4 * MiB) === 0);
    const table = Buffer.alloc(8 + 32);
    table.writeUInt32LE(1, 0);
    table.writeBigUInt64LE(BigInt(64 * MiB), 8);
    table.writeBigUInt64LE(BigInt(4 * MiB), 16);
    table.writeBigUInt64LE(0x7e0000000000n, 24);
    assert.throws(() => fe.ackedRequest(Req.SET_MEM_TABLE, table, [other]), /back-end failed request 5/);
    close(other);
    await s.waitLog(/leaves out queue 0's ring/);
    // Queue 1 starts again in the old table; both queues serve.
    const q1 = fe.queues[1]!;
    const kick = eventfd(0, EFD_CLOEXEC);
    close(q1.kickFd);
    q1.kickFd = kick;
    fe.request(Req.SET_VRING_KICK, u64Payload(1), [kick]);
    fe.ackedRequest(Req.SET_VRING_ENABLE, statePayload(1, 1));
    const b0 = new BlkDriver(fe.queues[0]!.driver, fe.dataBase, 1, 4096);
    const b1 = new BlkDriver(q1.driver, fe.dataBase + 2 * MiB, 1, 4096);
    fe.view(b0.dataGpa(0), 4096).fill(0xa0);
    fe.view(b1.dataGpa(0), 4096).fill(0xa1);
    assert.equal(run(fe, fe.queues[0]!, b0, 0, VIRTIO_BLK_T_OUT, 0, 4096).status, VIRTIO_BLK_S_OK);
    assert.equal(run(fe, q1, b1, 0, VIRTIO_BLK_T_OUT, 8, 4096).status, VIRTIO_BLK_S_OK);
    const f = fs.readFileSync(s.image);
    assert.equal(f[0], 0xa0);
    assert.equal(f[4096], 0xa1);
  } finally {
    fe.close();
  }
});

/** Resident memory of the back-end process, in bytes. */
function rss(s: Served): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${s.child.pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}

test('a 32768-entry queue costs no memory per entry: the back-end\'s RSS grows by less than 64 MiB', async () => {
  const s = await start('bigq');
  const before = rss(s);
  const fe = VhostUserFrontend.connect(s.socket);
  try {
    fe.setup({ numQueues: 1, queueSize: 32768, memSize: 8 * MiB, indirect: false, maxIndirect: 0 });
    const q = fe.queues[0]!;
    const blk = new BlkDriver(q.driver, fe.dataBase, 8, 65536);
    for (let i = 0; i < 64; i++) assert.equal(run(fe, q, blk, i % 8, VIRTIO_BLK_T_OUT, i * 128, 65536).status, VIRTIO_BLK_S_OK);
    const after = rss(s);
    const grew = after - before;
    console.log(`back-end RSS: ${(before / MiB).toFixed(1)} MiB before, ${(after / MiB).toFixed(1)} MiB with a 32768-entry queue (+${(grew / MiB).toFixed(1)} MiB)`);
    assert.ok(grew < 64 * MiB, `RSS grew by ${(grew / MiB).toFixed(1)} MiB`);
  } finally {
    fe.close();
  }
});
