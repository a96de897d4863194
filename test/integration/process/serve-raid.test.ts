// `twindisk serve --raid` driven by the TypeScript vhost-user front-end: I/O on an md array, degraded serving, SIGKILL and the bitmap-limited resync.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import type { RaidStatus } from '../../../engine/raid/array-status.js';
import { randomBytes } from 'node:crypto';
import { VIRTIO_BLK_S_OK, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_OUT } from '../../../qemu-plugin/virtio/constants.js';
import { attach, readBack, writeRandom, type BlkClient } from '../../harness/blk-client.js';
import { freePort, iscsiUrl, qemuIo } from '../../harness/iscsi.js';
import { cli, runCli, runCliOk, tmpDir, type Served } from '../../harness/serve.js';

const dir = tmpDir('twindisk-serve-raid-');
const running: Served[] = [];
after(async () => {
  for (const s of running) await s.stop('SIGKILL');
});

const KiB = 1024;
const CHUNK = 64 * KiB;
/** Array bytes of one raid5 stripe over 4 members. */
const STRIPE = 3 * CHUNK;

function at(...names: string[]): string[] {
  return names.map((n) => path.join(dir, n));
}

/** Starts `twindisk serve --raid` on `members` and waits until it listens. */
async function serveRaid(members: string[], socket: string, args: string[] = []): Promise<Served> {
  const child = spawn(process.execPath, [cli, 'serve', '--raid', members.join(','), '--socket', socket, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  const s: Served = {
    child, socket, image: members.join(','), dir,
    log: () => log,
    waitLog: async (re, ms = 20_000) => {
      const t0 = Date.now();
      while (!re.test(log)) {
        if (Date.now() - t0 > ms) throw new Error(`serve --raid did not log ${re} within ${ms} ms:\n${log}`);
        if (child.exitCode !== null) throw new Error(`serve --raid exited (${child.exitCode}) before logging ${re}:\n${log}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      return new Promise((r) => child.once('exit', (code) => r(code)));
    },
  };
  running.push(s);
  await s.waitLog(/listening/);
  return s;
}

/** A CLI run that must succeed; its stdout. */
const twindisk = runCliOk;

async function status(members: string[]): Promise<RaidStatus> {
  return JSON.parse(await twindisk('raid', 'status', '--json', ...members)) as RaidStatus;
}

/** Writes random data at each offset (acknowledged), remembered in `shadow`. */
function writeAll(g: BlkClient, shadow: Map<number, Buffer>, offsets: number[], len: number): void {
  for (const off of offsets) shadow.set(off, writeRandom(g, off, len));
}

function verifyAll(g: BlkClient, shadow: Map<number, Buffer>): void {
  for (const [off, bytes] of shadow) assert.ok(readBack(g, off, bytes.length).equals(bytes), `data at ${off}`);
}

async function create(members: string[]): Promise<void> {
  await twindisk('raid', 'create', '--level', '5', '--chunk', '64K', '--bitmap-chunk', '64K', '--assume-clean', '--size', '16M', ...members);
}

test('raid5 over two queues: writes and reads, a clean stop, a clean check, the data after a restart', async () => {
  const m = at('q-a.img', 'q-b.img', 'q-c.img', 'q-d.img');
  await create(m);
  const sock = path.join(dir, 'q.sock');
  const s = await serveRaid(m, sock, ['--queues', '2']);
  await s.waitLog(/array assembled level=raid5 .* slots=.*q-a\.img,.*q-d\.img .*clean=true degraded=0/);
  const g = attach(sock, 2);
  const cfg = g.fe.getConfig(60);
  assert.equal(cfg.readBigUInt64LE(0), BigInt((45 << 20) / 512), 'capacity: 3 data members of 15 MiB');
  const shadow = new Map<number, Buffer>();
  // A full stripe, partial stripes across chunk edges, and the last block.
  writeAll(g, shadow, [0, 5 * STRIPE + 4096, 7 * STRIPE - 512, (45 << 20) - 4096], 4096);
  writeAll(g, shadow, [STRIPE], STRIPE);
  writeAll(g, shadow, [20 * STRIPE + 1024], 128 * KiB);
  assert.equal(g.run(1, VIRTIO_BLK_T_FLUSH, 0, 0).status, VIRTIO_BLK_S_OK);
  verifyAll(g, shadow);
  g.fe.close();
  assert.equal(await s.stop('SIGTERM'), 0);
  const st = await status(m);
  assert.equal(st.state, 'clean', 'a clean stop records the array clean');
  assert.equal(st.bitmap!.dirtyChunks, 0);
  assert.match(await twindisk('raid', 'check', ...m), /^check: 0 mismatched sectors/m);

  const s2 = await serveRaid(m, sock);
  const g2 = attach(sock);
  verifyAll(g2, shadow);
  g2.fe.close();
  await s2.stop('SIGTERM');
});

test('a missing member: served degraded, reads rebuilt from parity; then rebuilt offline and served whole', async () => {
  const m = at('d-a.img', 'd-b.img', 'd-c.img', 'd-d.img');
  await create(m);
  const sock = path.join(dir, 'd.sock');
  let s = await serveRaid(m, sock);
  let g = attach(sock);
  const shadow = new Map<number, Buffer>();
  writeAll(g, shadow, [0, 3 * STRIPE + 8192, 30 * STRIPE], 64 * KiB);
  g.fe.close();
  await s.stop('SIGTERM');

  fs.renameSync(m[2]!, `${m[2]}.gone`); // the disk holding slot 2 is gone
  s = await serveRaid(m, sock);
  await s.waitLog(/member .*d-c\.img does not exist: the array is assembled without it/);
  await s.waitLog(/serving degraded: 1 of 4 slots not in sync/);
  g = attach(sock);
  verifyAll(g, shadow);
  writeAll(g, shadow, [STRIPE, 40 * STRIPE + 512], 32 * KiB); // writes while degraded
  verifyAll(g, shadow);
  g.fe.close();
  await s.stop('SIGTERM');
  const degraded = await status(at('d-a.img', 'd-b.img', 'd-d.img'));
  assert.deepEqual([degraded.state, degraded.mdstat], ['clean', '[4/3] [UU_U]']);
  assert.ok(degraded.bitmap!.dirtyChunks > 0, 'the bits of writes made while degraded stay set until the slot is rebuilt');

  await twindisk('raid', 'add', '--slot', '2', '--size', '16M', path.join(dir, 'd-new.img'), ...at('d-a.img', 'd-b.img', 'd-d.img'));
  const whole = at('d-a.img', 'd-b.img', 'd-new.img', 'd-d.img');
  const st = await status(whole);
  assert.deepEqual([st.mdstat, st.bitmap!.dirtyChunks], ['[4/4] [UUUU]', 0]);
  assert.match(await twindisk('raid', 'check', ...whole), /^check: 0 mismatched sectors/m);
  s = await serveRaid(whole, sock);
  g = attach(sock);
  verifyAll(g, shadow);
  g.fe.close();
  await s.stop('SIGTERM');
});

test('SIGKILL during writes: the bitmap says what to resync; the restart resyncs only that, while serving; every acknowledged write is there', async (t) => {
  const m = at('k-a.img', 'k-b.img', 'k-c.img', 'k-d.img');
  await create(m);
  const sock = path.join(dir, 'k.sock');
  const s = await serveRaid(m, sock);
  const g = attach(sock);
  const shadow = new Map<number, Buffer>();
  const stripes = [1, 2, 17, 33, 120];
  writeAll(g, shadow, stripes.map((x) => x * STRIPE + 4096), 8192);
  // Then 8 writes in flight at once (stripes 150, 152, ...), and SIGKILL while they run, as soon as the
  // first one's bitmap bit is on disk (before its data may go to the members); within the bitmap's 5 s
  // delay, so every bit set so far is still set.
  const q = g.fe.queues[0]!;
  const blk = g.blks[0]!;
  const inflight = new Map<number, { off: number; bytes: Buffer }>();
  for (let i = 0; i < 8; i++) {
    const off = (150 + 2 * i) * STRIPE + 512;
    const bytes = randomBytes(64 * KiB);
    g.fe.mem.set(bytes, blk.dataGpa(i));
    blk.submit(i, VIRTIO_BLK_T_OUT, off / 512, bytes.length, 2);
    inflight.set(i, { off, bytes });
  }
  if (q.driver.publishAndCheckKick()) g.fe.kick(q);
  // What the guest saw acknowledged before the kill must survive; the rest may or may not.
  let acked = 0;
  const take = (): void => {
    for (let c = blk.reap(); c; c = blk.reap()) {
      assert.equal(c.status, VIRTIO_BLK_S_OK);
      const w = inflight.get(c.slot)!;
      shadow.set(w.off, w.bytes);
      acked++;
    }
  };
  // The bitmap: 8 sectors after the superblock at 4 KiB, its bits after its 256-byte header; bit k is stripe row k.
  const bitOnDisk = (k: number): boolean => {
    const b = Buffer.alloc(1);
    const f = fs.openSync(m[0]!, 'r');
    fs.readSync(f, b, 0, 1, 8192 + 256 + (k >> 3));
    fs.closeSync(f);
    return (b[0]! & (1 << (k & 7))) !== 0;
  };
  for (let i = 0; i < 5000 && !bitOnDisk(150); i++) await new Promise((r) => setTimeout(r, 1));
  await s.stop('SIGKILL');
  take();
  t.diagnostic(`${acked} of the 8 writes in flight were acknowledged before the kill`);
  g.fe.close();

  const st = await status(m);
  assert.equal(st.state, 'dirty', 'no clean shutdown');
  assert.equal(st.resync.needed, true);
  const dirty = st.resync.regions.flatMap((r) => Array.from({ length: r.arrayLength / STRIPE }, (_, k) => r.arrayOffset / STRIPE + k));
  assert.equal(st.bitmap!.dirtyChunks, dirty.length, 'one 64 KiB bitmap chunk (one stripe row) per stripe written');
  t.diagnostic(`dirty stripes after the kill: ${dirty.join(', ')}`);
  for (const x of stripes) assert.ok(dirty.includes(x), `stripe ${x} is dirty`);
  for (const x of dirty) assert.ok(stripes.includes(x) || (x >= 150 && x < 166 && x % 2 === 0), `stripe ${x} was written`);
  // A write torn by the crash: parity of stripe 17 (left-symmetric: on member 3 - 17 % 4 = 2) was not written.
  const fd = fs.openSync(m[2]!, 'r+');
  fs.writeSync(fd, Buffer.alloc(4096, 0x5a), 0, 4096, st.dataOffset + 17 * CHUNK);
  fs.closeSync(fd);

  const s2 = await serveRaid(m, sock);
  await s2.waitLog(new RegExp(`resync started while serving: ${st.resync.regions.length} region\\(s\\)`));
  await s2.waitLog(/resync finished/);
  const line = /resync finished regions=(\d+) arrayBytes=(\d+) bytesRead=(\d+) mismatches=(\d+)/.exec(s2.log());
  assert.ok(line, s2.log());
  const [regions, arrayBytes, bytesRead, mismatches] = line.slice(1).map(Number);
  assert.equal(regions, st.resync.regions.length);
  assert.equal(arrayBytes, dirty.length * STRIPE);
  assert.equal(bytesRead, dirty.length * 4 * CHUNK, 'read the dirty stripes on every member, and nothing else');
  assert.ok(bytesRead < (60 << 20) / 10, 'a small part of the members');
  assert.ok(mismatches! >= 8, `the torn 4 KiB of parity (and any write torn by the kill) rewritten: ${mismatches}`);
  const g2 = attach(sock);
  verifyAll(g2, shadow);
  g2.fe.close();
  assert.equal(await s2.stop('SIGTERM'), 0);
  const after = await status(m);
  assert.deepEqual([after.state, after.resync.needed, after.bitmap!.dirtyChunks], ['clean', false, 0]);
  assert.match(await twindisk('raid', 'check', ...m), /^check: 0 mismatched sectors/m);
});

test('over iSCSI and vhost-user at once: QEMU\'s initiator writes, the vhost-user front-end reads the same bytes', async () => {
  const m = at('i-a.img', 'i-b.img', 'i-c.img', 'i-d.img');
  await create(m);
  const port = await freePort();
  const iqn = 'iqn.2026-12.io.twindisk:raid-test';
  const sock = path.join(dir, 'i.sock');
  const s = await serveRaid(m, sock, ['--iscsi', `127.0.0.1:${port}`, '--target-name', iqn]);
  await s.waitLog(/iSCSI target iqn\.2026-12\.io\.twindisk:raid-test LUN 0 on/);
  const w = await qemuIo(iscsiUrl(port, iqn), ['write -P 0xa5 1M 256k', 'write -P 0x5a -f 3584 512', 'flush', 'read -P 0xa5 1M 256k']);
  assert.equal(w.code, 0, w.stdout + w.stderr);
  assert.doesNotMatch(w.stdout, /Pattern verification failed|error/i, w.stdout);
  const g = attach(sock);
  assert.ok(readBack(g, 1 << 20, 256 * KiB).every((b) => b === 0xa5));
  assert.ok(readBack(g, 3584, 512).every((b) => b === 0x5a));
  g.fe.close();
  await s.stop('SIGTERM');
  assert.match(await twindisk('raid', 'check', ...m), /^check: 0 mismatched sectors/m);
});

test('serve --raid refuses a member of another array, naming it, and writes nothing', async () => {
  const x = at('f-a.img', 'f-b.img', 'f-c.img');
  const y = at('f-x.img', 'f-y.img', 'f-z.img');
  await twindisk('raid', 'create', '--level', '5', '--assume-clean', '--size', '8M', ...x);
  await twindisk('raid', 'create', '--level', '5', '--assume-clean', '--size', '8M', ...y);
  const before = [x[0]!, y[1]!].map((f) => fs.readFileSync(f));
  const r = await runCli('serve', '--raid', [x[0], y[1], x[2]].join(','), '--socket', path.join(dir, 'f.sock'));
  assert.equal(r.status, 1);
  assert.match(r.stderr, /f-y\.img: belongs to array [0-9a-f:]{35} not [0-9a-f:]{35}: give only the members of one array/);
  assert.ok([x[0]!, y[1]!].every((f, i) => fs.readFileSync(f).equals(before[i]!)), 'nothing written');
  const u = await runCli('serve', '--raid', x.join(','), '--image', 'z.img', '--socket', 'z.sock');
  assert.equal(u.status, 2);
  assert.match(u.stderr, /serve takes --image FILE or --raid MEMBER,\.\.\., not both/);
});
