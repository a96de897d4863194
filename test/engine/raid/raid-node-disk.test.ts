// RaidNodeDisk: an md array on its own thread as the replication engine's synchronous disk (single calls, batches, faults, close, refusals).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { FileBackend } from '../../../engine/file-backend.js';
import { Logger, setSink } from '../../../engine/log.js';
import { createArray } from '../../../engine/raid/array.js';
import { RaidNodeDisk } from '../../../engine/raid/raid-node-disk.js';
import { DiskIoError } from '../../../engine/replication/node-disk.js';
import { seededRandom } from './md-fixtures.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-raid-node-disk-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const lines: string[] = [];
setSink((level, component, msg) => lines.push(`${level} ${component}: ${msg}`));
const log = new Logger('t');
const MiB = 1 << 20;

/** Creates a raid5 of three 5 MiB member files (64 KiB chunks) and returns their paths. */
async function makeArray(tag: string): Promise<string[]> {
  const files = [0, 1, 2].map((k) => path.join(dir, `${tag}-${k}.img`));
  for (const f of files) fs.writeFileSync(f, Buffer.alloc(0)), fs.truncateSync(f, 5 * MiB);
  const array = await createArray(files.map((f) => ({ name: f, backend: new FileBackend({ path: f }) })), {
    level: 5, chunkBytes: 64 << 10, bitmap: 'internal', assumeClean: true,
  });
  array.close();
  for (const m of array.slots) m?.backend.close();
  return files;
}

const open = (members: string[]): Promise<RaidNodeDisk> => RaidNodeDisk.open({ members, log, blockSize: 512, purpose: 'test', control: '/nonexistent.ctl' });

test('single calls and batches read back what was written, across chunk and stripe edges; trim reads back zeroes', async () => {
  const disk = await open(await makeArray('io'));
  try {
    assert.equal(disk.workerFile, null, 'queue workers never open an array themselves');
    assert.equal(disk.resizable, false);
    assert.ok(disk.size >= 8 * MiB);
    const rnd = seededRandom(5);
    const shadow = Buffer.alloc(disk.size);
    for (let i = 0; i < 40; i++) {
      const len = (1 + Math.floor(rnd() * 64)) * 4096;
      const off = Math.floor(rnd() * ((disk.size - len) / 4096)) * 4096;
      const buf = Buffer.alloc(len);
      for (let k = 0; k < len; k += 4) buf.writeUInt32LE(Math.floor(rnd() * 2 ** 32), k);
      if (i % 2 === 0) disk.write(buf, len, off);
      else assert.deepEqual(disk.writeBatch([{ buf, length: len, offset: off }]), [null]);
      buf.copy(shadow, off);
    }
    disk.sync();
    // One batch of many reads, and single reads.
    const items = Array.from({ length: 20 }, (_, i) => ({ buf: Buffer.alloc(128 << 10), length: 128 << 10, offset: i * (256 << 10) }));
    assert.deepEqual(disk.readBatch(items), items.map(() => null));
    for (const it of items) assert.ok(it.buf.equals(shadow.subarray(it.offset, it.offset + it.length)), `batch read at ${it.offset}`);
    const whole = Buffer.alloc(disk.size);
    disk.read(whole, disk.size, 0);
    assert.ok(whole.equals(shadow), 'the whole array reads back as written');
    disk.trim(64 << 10, 192 << 10, true);
    shadow.fill(0, 64 << 10, 256 << 10);
    disk.read(whole, disk.size, 0);
    assert.ok(whole.equals(shadow), 'a trimmed range reads back as zeroes');
    // The pool variants settle on a later turn with the same outcome.
    const b = Buffer.alloc(4096, 7);
    await new Promise<void>((res, rej) => disk.writeAsync(b, 4096, 8192, (e) => (e ? rej(e) : res())));
    const c = Buffer.alloc(4096);
    await new Promise<void>((res, rej) => disk.readAsync(c, 4096, 8192, (e) => (e ? rej(e) : res())));
    assert.ok(c.equals(b));
  } finally {
    disk.close();
    await disk.whenClosed();
  }
});

test('faults and ranges: an injected fault fails its item only, outside the disk is EINVAL, a closed disk is EIO', async () => {
  const disk = await open(await makeArray('faults'));
  disk.inject({ kind: 'read', offset: 1 * MiB, length: 4096 });
  const items = [0, 1 * MiB, 2 * MiB].map((offset) => ({ buf: Buffer.alloc(4096), length: 4096, offset }));
  const errs = disk.readBatch(items);
  assert.equal(errs[0], null);
  assert.ok(errs[1] instanceof DiskIoError && errs[1].errno === 5, 'the faulted read fails with EIO');
  assert.equal(errs[2], null);
  assert.throws(() => disk.read(Buffer.alloc(4096), 4096, 1 * MiB), (e: unknown) => e instanceof DiskIoError && e.errno === 5);
  disk.clearFaults();
  assert.equal(disk.hasFaults, false);
  assert.throws(() => disk.write(Buffer.alloc(4096), 4096, disk.size), (e: unknown) => e instanceof DiskIoError && e.errno === 22);
  disk.close();
  await disk.whenClosed();
  assert.throws(() => disk.read(Buffer.alloc(4096), 4096, 0), (e: unknown) => e instanceof DiskIoError && e.errno === 5, 'a closed array fails calls: the engine detaches');
});

test('the array is recorded clean when the disk closes, and a member missing at open is served degraded', async () => {
  const members = await makeArray('degraded');
  let disk = await open(members);
  const buf = Buffer.alloc(256 << 10);
  for (let i = 0; i < buf.length; i++) buf[i] = (i * 7) & 255;
  disk.write(buf, buf.length, 3 * MiB);
  disk.close();
  await disk.whenClosed();
  fs.rmSync(members[1]!);
  lines.length = 0;
  disk = await open(members);
  try {
    assert.ok(lines.some((l) => /member .*degraded-1\.img does not exist/.test(l)), lines.join('\n'));
    const st = await disk.arrayStatus();
    assert.equal(st.degraded, 1);
    assert.equal(st.state, 'clean', 'closed cleanly before: no resync');
    const back = Buffer.alloc(buf.length);
    disk.read(back, back.length, 3 * MiB);
    assert.ok(back.equals(buf), 'degraded reads rebuild the missing member\'s chunks');
  } finally {
    disk.close();
    await disk.whenClosed();
  }
});

test('open refuses members that hold no array, naming them', async () => {
  const f = path.join(dir, 'blank.img');
  fs.writeFileSync(f, Buffer.alloc(4 * MiB));
  await assert.rejects(open([f]), /cannot assemble the node's md array: .*blank\.img/);
  await assert.rejects(open([path.join(dir, 'nope-0.img')]), /none of the members exists/);
});
