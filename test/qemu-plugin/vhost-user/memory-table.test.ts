// Guest memory tables against `twindisk serve`, from the TypeScript front-end: regions above 4 GiB and larger than one view, buffers crossing pieces and regions, hot-plugged and removed regions, bad regions refused.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { BlkDriver } from '../../../qemu-plugin/testing/blk-driver.js';
import { VhostUserFrontend } from '../../../qemu-plugin/testing/vhost-user-frontend.js';
import { EFD_CLOEXEC, MFD_CLOEXEC, close, eventfd, ftruncate, memfdCreate } from '../../../qemu-plugin/os.js';
import { ProtocolFeature, Req, bit } from '../../../qemu-plugin/vhost-user/constants.js';
import { VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from '../../../qemu-plugin/virtio/constants.js';
import { serve, tmpDir, type Served } from '../../harness/serve.js';

const GiB = 2 ** 30;
const MiB = 2 ** 20;
const dir = tmpDir();
const running: Served[] = [];
after(async () => {
  for (const s of running) await s.stop('SIGKILL');
});

async function start(name: string, size = 16 * MiB): Promise<Served> {
  const image = path.join(dir, `${name}.img`);
  fs.writeFileSync(image, Buffer.alloc(size));
  const s = await serve({ image, socket: path.join(dir, `${name}.sock`), dir });
  running.push(s);
  return s;
}

/** Runs one request in `slot` and waits for it (the front-end blocks: the back-end is another process). */
function run(fe: VhostUserFrontend, blk: BlkDriver, slot: number, type: number, sector: number, len: number) {
  const q = fe.queues[0]!;
  blk.submit(slot, type, sector, len);
  if (q.driver.publishAndCheckKick()) fe.kick(q);
  for (let i = 0; i < 200; i++) {
    const c = blk.reap();
    if (c) return c;
    fe.waitCall(q, 50);
  }
  throw new Error('request did not complete within 10 s');
}

function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (i * 131 + seed * 17 + (i >> 12)) & 255;
  return b;
}

/** The memfds of the back-end process's mappings, by name (`/memfd:NAME (deleted)` in /proc/PID/maps). */
function mappedMemfds(s: Served): string[] {
  const maps = fs.readFileSync(`/proc/${s.child.pid}/maps`, 'utf8');
  return [...new Set([...maps.matchAll(/\/memfd:(\S+)/g)].map((m) => m[1]!))];
}

function memfd(name: string, size: number): number {
  const fd = memfdCreate(name, MFD_CLOEXEC);
  assert.ok(fd >= 0 && ftruncate(fd, size) === 0);
  return fd;
}

test('an 8 GiB guest\'s layout: 6 GiB above 4 GiB at an offset of the same memfd; a buffer crossing a 2 GiB piece boundary', async () => {
  const s = await start('high');
  const fe = VhostUserFrontend.connect(s.socket);
  try {
    fe.setup({ numQueues: 1, queueSize: 64, memSize: 8 * MiB, highMem: { gpa: 4 * GiB, size: 6 * GiB } });
    await s.waitLog(/guest memory mapped|queue 0 started/);
    // Slot 0: 4 MiB from 1 MiB before the region's 2 GiB mark (3 MiB past it: beyond a view's overlap).
    const blk = new BlkDriver(fe.queues[0]!.driver, fe.dataBase, 2, 4 * MiB, 4 * GiB + 2 * GiB - MiB);
    const data = pattern(4 * MiB, 1);
    fe.view(blk.dataGpa(0), 4 * MiB).set(data);
    assert.equal(run(fe, blk, 0, VIRTIO_BLK_T_OUT, 2048, 4 * MiB).status, VIRTIO_BLK_S_OK);
    assert.ok(fs.readFileSync(s.image).subarray(MiB, 5 * MiB).equals(data), 'the write carried the guest\'s bytes, in order');
    fe.view(blk.dataGpa(0), 4 * MiB).fill(0);
    const r = run(fe, blk, 0, VIRTIO_BLK_T_IN, 2048, 4 * MiB);
    assert.equal(r.status, VIRTIO_BLK_S_OK);
    assert.equal(r.len, 4 * MiB + 1);
    assert.ok(Buffer.from(fe.view(blk.dataGpa(0), 4 * MiB)).equals(data), 'the read landed in the guest\'s buffer');
    // Slot 1, 3 GiB further up (above 6 GiB guest-physical): a second piece boundary region-wise.
    const far = new BlkDriver(fe.queues[0]!.driver, fe.dataBase, 1, MiB, 4 * GiB + 4 * GiB - 4096);
    fe.view(far.dataGpa(0), MiB).set(pattern(MiB, 2));
    assert.equal(run(fe, far, 0, VIRTIO_BLK_T_OUT, 0, MiB).status, VIRTIO_BLK_S_OK);
    assert.ok(fs.readFileSync(s.image).subarray(0, MiB).equals(pattern(MiB, 2)));
  } finally {
    fe.close();
  }
});

test('hot-plug: added regions are used at once, a buffer may cross two of them; removed ones are unmapped; bad ones refused with nothing mapped', async () => {
  const s = await start('slots');
  const fe = VhostUserFrontend.connect(s.socket);
  try {
    fe.setup({ numQueues: 1, queueSize: 64, memSize: 8 * MiB, protocolFeatures: bit(ProtocolFeature.CONFIGURE_MEM_SLOTS) });
    assert.ok(fe.protocolFeatures & bit(ProtocolFeature.CONFIGURE_MEM_SLOTS), 'CONFIGURE_MEM_SLOTS is offered');
    assert.equal(fe.request(Req.GET_MAX_MEM_SLOTS, undefined, [], { reply: true })!.readBigUInt64LE(0), 32n);
    // Two touching regions above 4 GiB, hot-plugged while a write is in flight.
    const pre = new BlkDriver(fe.queues[0]!.driver, fe.dataBase, 1, 64 * 1024);
    fe.view(pre.dataGpa(0), 65536).set(pattern(65536, 3));
    const q = fe.queues[0]!;
    pre.submit(0, VIRTIO_BLK_T_OUT, 4096, 65536);
    if (q.driver.publishAndCheckKick()) fe.kick(q);
    const a = fe.addRegion(4 * GiB, GiB, { name: 'twindisk-dimm-a' });
    const b = fe.addRegion(5 * GiB, 64 * MiB, { name: 'twindisk-dimm-b' });
    for (let i = 0; i < 100 && !pre.reap(); i++) fe.waitCall(q, 100);
    assert.ok(fs.readFileSync(s.image).subarray(4096 * 512, 4096 * 512 + 65536).equals(pattern(65536, 3)), 'the write in flight completed');
    assert.deepEqual(mappedMemfds(s).filter((n) => n.startsWith('twindisk-dimm')).sort(), ['twindisk-dimm-a', 'twindisk-dimm-b']);
    const blk = new BlkDriver(q.driver, fe.dataBase, 1, 2 * MiB, 5 * GiB - MiB);
    const data = pattern(2 * MiB, 4);
    fe.view(blk.dataGpa(0), MiB).set(data.subarray(0, MiB));
    fe.view(5 * GiB, MiB).set(data.subarray(MiB));
    assert.equal(run(fe, blk, 0, VIRTIO_BLK_T_OUT, 0, 2 * MiB).status, VIRTIO_BLK_S_OK);
    assert.ok(fs.readFileSync(s.image).subarray(0, 2 * MiB).equals(data), 'a buffer across two regions wrote both halves');
    // Many slots: sixteen more small regions, the last one used.
    const small = Array.from({ length: 16 }, (_, i) => fe.addRegion(8 * GiB + i * 4 * MiB, 2 * MiB, { name: `twindisk-dimm-s${i}` }));
    const last = new BlkDriver(q.driver, fe.dataBase, 1, 4096, 8 * GiB + 15 * 4 * MiB + MiB);
    fe.view(last.dataGpa(0), 4096).fill(0x5c);
    assert.equal(run(fe, last, 0, VIRTIO_BLK_T_OUT, 8, 4096).status, VIRTIO_BLK_S_OK);
    assert.equal(fs.readFileSync(s.image)[8 * 512], 0x5c);
    small.forEach((r) => fe.removeRegion(r));
    // Removing region B: it is unmapped, and a buffer reaching into it fails instead of touching it.
    fe.removeRegion(b);
    assert.deepEqual(mappedMemfds(s).filter((n) => n.startsWith('twindisk-dimm')), ['twindisk-dimm-a']);
    assert.equal(run(fe, blk, 0, VIRTIO_BLK_T_IN, 0, 2 * MiB).status, VIRTIO_BLK_S_IOERR);
    await s.waitLog(/outside guest memory/);
    // Bad regions: a file shorter than the region, an fd that cannot be mapped, an overlap.
    const short = memfd('twindisk-dimm-short', MiB);
    assert.throws(() => fe.addRegion(12 * GiB, 2 * MiB, { fd: short }), /back-end failed request 37/);
    const efd = eventfd(0, EFD_CLOEXEC);
    assert.throws(() => fe.addRegion(12 * GiB, 2 * MiB, { fd: efd }), /back-end failed request 37/);
    assert.ok(!mappedMemfds(s).includes('twindisk-dimm-short'), 'the refused region is not mapped');
    await s.waitLog(/holds 1048576 bytes/);
    // The table is intact: region A still serves.
    const inA = new BlkDriver(q.driver, fe.dataBase, 1, 4096, 4 * GiB + 12345 * 4096);
    fe.view(inA.dataGpa(0), 4096).fill(0x77);
    assert.equal(run(fe, inA, 0, VIRTIO_BLK_T_OUT, 16, 4096).status, VIRTIO_BLK_S_OK);
    assert.equal(fs.readFileSync(s.image)[16 * 512], 0x77);
    fe.removeRegion(a);
    assert.deepEqual(mappedMemfds(s).filter((n) => n.startsWith('twindisk-dimm')), []);
  } finally {
    fe.close();
  }
});

test('SET_MEM_TABLE with one bad region is refused whole: the old table stays and serves, the good regions are not mapped', async () => {
  const s = await start('badtable');
  const fe = VhostUserFrontend.connect(s.socket);
  try {
    fe.setup({ numQueues: 1, queueSize: 64, memSize: 8 * MiB });
    const good = memfd('twindisk-table-good', 4 * MiB);
    const bad = memfd('twindisk-table-bad', MiB);
    const table = Buffer.alloc(8 + 3 * 32);
    table.writeUInt32LE(3, 0);
    const put = (i: number, gpa: number, size: number, uaddr: number) => {
      table.writeBigUInt64LE(BigInt(gpa), 8 + 32 * i);
      table.writeBigUInt64LE(BigInt(size), 16 + 32 * i);
      table.writeBigUInt64LE(BigInt(uaddr), 24 + 32 * i);
    };
    put(0, 0, 8 * MiB, fe.regions[0]!.addr);
    put(1, 4 * GiB, 4 * MiB, 0x7e0000000000);
    put(2, 5 * GiB, 2 * MiB, 0x7e0100000000);
    assert.throws(() => fe.ackedRequest(Req.SET_MEM_TABLE, table, [fe.memFd, good, bad]), /back-end failed request 5/);
    close(good);
    close(bad);
    assert.deepEqual(mappedMemfds(s).filter((n) => n.startsWith('twindisk-table')), [], 'nothing of the refused table is mapped');
    const blk = new BlkDriver(fe.queues[0]!.driver, fe.dataBase, 1, 4096);
    fe.view(blk.dataGpa(0), 4096).fill(0x31);
    assert.equal(run(fe, blk, 0, VIRTIO_BLK_T_OUT, 0, 4096).status, VIRTIO_BLK_S_OK);
    assert.equal(fs.readFileSync(s.image)[0], 0x31);
  } finally {
    fe.close();
  }
});
