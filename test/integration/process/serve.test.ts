// `twindisk serve` driven by the TypeScript vhost-user front-end: real sockets, fds and shared memory, good and bad input.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { HEADER_SIZE, Req } from '../../../qemu-plugin/vhost-user/constants.js';
import { encodeRequest, u64Payload } from '../../../qemu-plugin/vhost-user/message.js';
import {
  VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
} from '../../../qemu-plugin/virtio/constants.js';
import { VhostUserFrontend } from '../../../qemu-plugin/testing/vhost-user-frontend.js';
import { attach as attachSocket } from '../../harness/blk-client.js';
import { serve, tmpDir, type Served } from '../../harness/serve.js';

const dir = tmpDir();
const running: Served[] = [];
after(async () => {
  for (const s of running) await s.stop('SIGKILL');
});

async function start(name: string, args: string[] = [], size = 8 << 20): Promise<Served> {
  const image = path.join(dir, `${name}.img`);
  if (!fs.existsSync(image)) fs.writeFileSync(image, Buffer.alloc(size));
  const s = await serve({ image, socket: path.join(dir, `${name}.sock`), args, dir });
  running.push(s);
  return s;
}

function attach(s: Served, queues = 1) {
  return attachSocket(s.socket, queues);
}

test('two queues: data written through one is in the file and reads back through the other', async () => {
  const s = await start('mq', ['--queues', '2']);
  const a = attach(s, 2);
  const cfg = a.fe.getConfig(60);
  assert.equal(cfg.readBigUInt64LE(0), BigInt((8 << 20) / 512), 'capacity');
  assert.equal(cfg.readUInt16LE(34), 2, 'num_queues');
  for (let i = 0; i < 65536; i++) a.data(0, 65536)[i] = (i * 13) & 255;
  assert.equal(a.run(0, VIRTIO_BLK_T_OUT, 2048, 65536).status, VIRTIO_BLK_S_OK);
  assert.equal(a.run(1, VIRTIO_BLK_T_FLUSH, 0, 0).status, VIRTIO_BLK_S_OK);
  const f = fs.readFileSync(s.image);
  assert.ok(f.subarray(2048 * 512, 2048 * 512 + 65536).equals(Buffer.from(a.data(0, 65536))));
  assert.equal(f[2048 * 512 - 1], 0);
  // And the reverse: bytes put in the file appear in a guest read.
  const fd = fs.openSync(s.image, 'r+');
  fs.writeSync(fd, Buffer.from('written behind the guest'), 0, 24, 4096);
  fs.closeSync(fd);
  const r = a.run(1, VIRTIO_BLK_T_IN, 8, 4096);
  assert.equal(r.status, VIRTIO_BLK_S_OK);
  assert.equal(Buffer.from(a.data(1, 24)).toString(), 'written behind the guest');
  a.fe.close();
});

test('read-only: writes fail with IOERR and the file is unchanged', async () => {
  const s = await start('ro', ['--read-only']);
  const a = attach(s);
  a.data(0, 4096).fill(1);
  assert.equal(a.run(0, VIRTIO_BLK_T_OUT, 0, 4096).status, VIRTIO_BLK_S_IOERR);
  assert.ok(fs.readFileSync(s.image).every((b) => b === 0));
  await s.waitLog(/write to a read-only disk/);
  a.fe.close();
});

test('a sector past the end and a descriptor outside guest memory fail; the queue goes on', async () => {
  const s = await start('bad');
  const a = attach(s);
  assert.equal(a.run(0, VIRTIO_BLK_T_IN, (8 << 20) / 512, 512).status, VIRTIO_BLK_S_IOERR);
  const q = a.fe.queues[0]!;
  const d = q.driver;
  const hdr = a.fe.dataBase + (4 << 20);
  new DataView(a.fe.mem.buffer).setUint32(hdr, VIRTIO_BLK_T_IN, true);
  a.fe.mem[hdr + 100] = 0xff;
  // Use descriptors above the driver's free list so the driver's bookkeeping stays intact.
  d.setDesc(60, hdr, 16, VIRTQ_DESC_F_NEXT, 61);
  d.setDesc(61, 0x40000000000, 4096, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 62);
  d.setDesc(62, hdr + 100, 1, VIRTQ_DESC_F_WRITE, 0);
  d.pushAvailRaw(60);
  d.publish();
  a.fe.kick(q);
  // Wait for the status byte, not for one call of at most 2 s: under load (the process tier runs two
  // files at once) the worker may take longer to get to it.
  for (let i = 0; i < 100 && a.fe.mem[hdr + 100] === 0xff; i++) a.fe.waitCall(q, 100);
  assert.equal(a.fe.mem[hdr + 100], VIRTIO_BLK_S_IOERR);
  await s.waitLog(/rejected a request: buffer outside guest memory/);
  d.reap(); // consume the raw chain's used element
  assert.equal(a.run(0, VIRTIO_BLK_T_IN, 0, 512).status, VIRTIO_BLK_S_OK, 'queue still serves');
  a.fe.close();
});

test('malformed messages close the connection, and the daemon serves the next front-end', async () => {
  const s = await start('proto');
  const cases: [string, (fe: VhostUserFrontend) => void, RegExp][] = [
    ['bad version', (fe) => fe.sendRaw(Buffer.from([1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0])), /protocol version 2/],
    ['payload too large', (fe) => fe.sendRaw(Buffer.from([1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0])), /exceeds/],
    ['kick without fd', (fe) => fe.sendRaw(encodeRequest(Req.SET_VRING_KICK, u64Payload(0))), /0 fds, expected 1/],
    ['queue out of range', (fe) => fe.sendRaw(encodeRequest(Req.SET_VRING_NUM, Buffer.from([9, 0, 0, 0, 64, 0, 0, 0]))), /queue index 9 is out of range/],
  ];
  for (const [name, send, re] of cases) {
    const fe = VhostUserFrontend.connect(s.socket);
    send(fe);
    assert.ok(fe.closedByPeer(5000), `${name}: connection closed`);
    fe.close();
    await s.waitLog(re);
  }
  // A payload cut short by the front-end hanging up.
  const cut = VhostUserFrontend.connect(s.socket);
  cut.sendRaw(encodeRequest(Req.SET_FEATURES, u64Payload(1)).subarray(0, HEADER_SIZE + 3));
  cut.close();
  await s.waitLog(/truncated/);
  // An unsupported request with NEED_REPLY is refused with a failed ack, and the connection stays up.
  const fe = VhostUserFrontend.connect(s.socket);
  fe.request(Req.SET_PROTOCOL_FEATURES, u64Payload(1n << 3n));
  const ack = fe.request(Req.SET_VRING_ENDIAN, Buffer.alloc(8), [], { needReply: true });
  assert.equal(ack!.readBigUInt64LE(0), 1n);
  fe.close();
  const a = attach(s);
  assert.equal(a.run(0, VIRTIO_BLK_T_IN, 0, 512).status, VIRTIO_BLK_S_OK);
  a.fe.close();
  assert.equal(s.child.exitCode, null, 'daemon still running');
});

test('a corrupt available index stops only that queue', async () => {
  const s = await start('ring');
  const a = attach(s);
  const q = a.fe.queues[0]!;
  q.driver.setAvailIdxRaw(1000);
  a.fe.kick(q);
  await s.waitLog(/queue 0 stopped: available index 1000/);
  a.fe.close();
  const b = attach(s);
  assert.equal(b.run(0, VIRTIO_BLK_T_IN, 0, 512).status, VIRTIO_BLK_S_OK, 'a new connection works');
  b.fe.close();
});

test('data survives a restart; SIGTERM removes the socket; a stale socket after SIGKILL is replaced', async () => {
  const s = await start('restart');
  const a = attach(s);
  a.data(0, 4096).fill(0x77);
  assert.equal(a.run(0, VIRTIO_BLK_T_OUT, 64, 4096).status, VIRTIO_BLK_S_OK);
  a.fe.close();
  assert.equal(await s.stop('SIGTERM'), 0);
  assert.equal(fs.existsSync(s.socket), false, 'socket removed');
  const s2 = await start('restart');
  const b = attach(s2);
  assert.equal(b.run(0, VIRTIO_BLK_T_IN, 64, 4096).status, VIRTIO_BLK_S_OK);
  assert.ok(b.data(0, 4096).every((x) => x === 0x77));
  b.fe.close();
  await s2.stop('SIGKILL');
  assert.equal(fs.existsSync(s2.socket), true, 'SIGKILL leaves the socket behind');
  const s3 = await start('restart');
  const c = attach(s3);
  assert.equal(c.run(0, VIRTIO_BLK_T_IN, 64, 512).status, VIRTIO_BLK_S_OK);
  c.fe.close();
});

test('a second daemon on a live socket refuses to start', async () => {
  const s = await start('twice');
  // Another image: the same one is refused earlier, by its lock (test/integration/node-disk.test.ts).
  const other = path.join(dir, 'twice-other.img');
  fs.writeFileSync(other, Buffer.alloc(1 << 20));
  await assert.rejects(serve({ image: other, socket: s.socket, dir }), /another process is serving/);
  await assert.rejects(serve({ image: s.image, socket: path.join(dir, 'twice-2.sock'), dir }), /twice\.img is in use by twindisk serve/);
});

test('without polling (--poll-us 0) every request is still completed', async () => {
  const s = await start('nopoll', ['--poll-us', '0']);
  const a = attach(s);
  for (let i = 0; i < 50; i++) {
    a.data(0, 4096).fill(i);
    assert.equal(a.run(0, VIRTIO_BLK_T_OUT, i * 8, 4096).status, VIRTIO_BLK_S_OK);
  }
  for (let i = 0; i < 50; i++) {
    assert.equal(a.run(0, VIRTIO_BLK_T_IN, i * 8, 4096).status, VIRTIO_BLK_S_OK);
    assert.equal(a.data(0, 1)[0], i);
  }
  a.fe.close();
});

test('--aio io_uring: 32 requests in flight on two queues, FLUSH, and data in the file', async () => {
  const s = await start('uring', ['--queues', '2', '--aio', 'io_uring'], 16 << 20);
  const a = attach(s, 2);
  for (const qi of [0, 1]) {
    const q = a.fe.queues[qi]!;
    const blk = a.blks[qi]!;
    for (let i = 0; i < 8; i++) {
      a.fe.mem.fill(qi * 8 + i + 1, blk.dataGpa(i), blk.dataGpa(i) + 8192);
      blk.submit(i, VIRTIO_BLK_T_OUT, (qi * 8 + i) * 16, 8192, 2);
    }
    if (q.driver.publishAndCheckKick()) a.fe.kick(q);
  }
  for (const qi of [0, 1]) {
    let got = 0;
    for (let t = 0; got < 8 && t < 100; t++) {
      for (let c = a.blks[qi]!.reap(); c; c = a.blks[qi]!.reap()) {
        assert.equal(c.status, VIRTIO_BLK_S_OK);
        got++;
      }
      if (got < 8) a.fe.waitCall(a.fe.queues[qi]!, 100);
    }
    assert.equal(got, 8, `queue ${qi} completed all writes`);
  }
  assert.equal(a.run(0, VIRTIO_BLK_T_FLUSH, 0, 0).status, VIRTIO_BLK_S_OK);
  const f = fs.readFileSync(s.image);
  for (let k = 0; k < 16; k++) {
    const off = k * 16 * 512;
    assert.ok(f.subarray(off, off + 8192).every((b) => b === k + 1), `request ${k} landed`);
  }
  assert.equal(a.run(1, VIRTIO_BLK_T_IN, 0, 512).status, VIRTIO_BLK_S_OK);
  assert.equal(a.data(1, 1)[0], 1);
  a.fe.close();
});
