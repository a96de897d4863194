// LocalDisk.writeAsync: resync answers written on libuv's pool, large aligned ones with O_DIRECT through
// page-aligned staging buffers, the rest through the page cache; every byte lands where it was sent.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { LocalDisk } from '../../../engine/replication/local-disk.js';
import { seededRandom } from '../../harness/random.js';

const dir = fs.mkdtempSync(path.join(tmpdir(), 'twindisk-localdisk-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

const SIZE = 32 << 20;

function image(name: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, '');
  fs.truncateSync(file, SIZE);
  return file;
}

/** Whether this directory's file system takes O_DIRECT opens (tmpfs before Linux 6.6 does not). */
function directSupported(file: string): boolean {
  try {
    fs.closeSync(fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_DIRECT));
    return true;
  } catch {
    return false;
  }
}

function writeAsync(disk: LocalDisk, buf: Uint8Array, offset: number): Promise<void> {
  return new Promise((resolve, reject) => disk.writeAsync(buf, buf.length, offset, (err) => (err ? reject(err) : resolve())));
}

test('writeAsync: concurrent answers of every size land byte for byte; large aligned ones go direct', async () => {
  const file = image('mixed.img');
  const disk = new LocalDisk(file, SIZE);
  const shadow = new Uint8Array(SIZE);
  const rnd = seededRandom(7);
  const sizes = [4096, 64 << 10, 256 << 10, 1 << 20, 12288, 1 << 20];
  const writes: Promise<void>[] = [];
  // More writes in flight than staging buffers: the overflow goes buffered, none is lost.
  for (let i = 0; i < 40; i++) {
    const len = sizes[i % sizes.length]!;
    const offset = Math.floor(rnd() * ((SIZE - len) / 4096)) * 4096;
    const buf = new Uint8Array(len);
    for (let j = 0; j < len; j += 512) buf.fill((i * 7 + j) & 255, j, j + 512);
    shadow.set(buf, offset);
    writes.push(writeAsync(disk, buf, offset));
    await (i % 8 === 7 ? Promise.all(writes.splice(0)) : Promise.resolve());
  }
  await Promise.all(writes);
  const back = new Uint8Array(SIZE);
  disk.read(back, SIZE, 0);
  assert.ok(Buffer.compare(back, shadow) === 0, 'the disk holds every byte written, newest last');
  if (directSupported(file)) assert.ok(disk.asyncWrites.direct > 0, `aligned answers of 64 KiB and up went O_DIRECT (${JSON.stringify(disk.asyncWrites)})`);
  assert.ok(disk.asyncWrites.buffered > 0, '4 KiB and unaligned-size answers went through the page cache');
  disk.close();
});

test('writeAsync: a block in the page cache is not left stale by a direct write over it', async () => {
  const file = image('coherent.img');
  const disk = new LocalDisk(file, SIZE);
  disk.write(new Uint8Array(1 << 20).fill(1), 1 << 20, 0); // cached and dirty
  await writeAsync(disk, new Uint8Array(1 << 20).fill(2), 0);
  const back = new Uint8Array(1 << 20);
  disk.read(back, back.length, 0);
  assert.ok(back.every((b) => b === 2), 'a read after the direct write sees its bytes');
  disk.close();
});

test('writeAsync: closing the disk with writes on the pool lets them finish, then frees their buffers', async () => {
  const file = image('close.img');
  const disk = new LocalDisk(file, SIZE);
  const done = [0, 1, 2, 3].map((i) => writeAsync(disk, new Uint8Array(1 << 20).fill(10 + i), i << 20));
  disk.close();
  await Promise.all(done);
  const fd = fs.openSync(file, 'r');
  const back = Buffer.alloc(4 << 20);
  fs.readSync(fd, back, 0, back.length, 0);
  fs.closeSync(fd);
  for (let i = 0; i < 4; i++) assert.equal(back[(i << 20) + 4095], 10 + i, `write ${i} landed`);
});

test('writeAsync: an injected write fault fails the answer and writes nothing', async () => {
  const file = image('fault.img');
  const disk = new LocalDisk(file, SIZE);
  disk.inject({ kind: 'write', offset: 4 << 20, length: 4096 });
  await assert.rejects(writeAsync(disk, new Uint8Array(1 << 20).fill(9), 4 << 20), /errno 5/);
  const back = new Uint8Array(1 << 20);
  disk.read(back, back.length, 4 << 20);
  assert.ok(back.every((b) => b === 0));
  disk.close();
});
