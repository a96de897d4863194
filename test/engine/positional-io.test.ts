// Tests of full-length positional I/O: whole transfers at offsets, end of file, errors as -errno, zeroing ranges.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { NativeBuffer } from '../../engine/os.js';
import { preadFull, preadUpTo, pwriteFull, syncData, transferFullAt, zeroRange } from '../../engine/positional-io.js';

function tmpFile(bytes: Buffer): { p: string; fd: number } {
  const p = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-pio-')), 'f');
  fs.writeFileSync(p, bytes);
  return { p, fd: fs.openSync(p, 'r+') };
}

test('pwriteFull / preadFull move whole ranges at offsets; reading past the end is -EIO, preadUpTo says how much there was', () => {
  const { p, fd } = tmpFile(Buffer.alloc(8192));
  const src = Buffer.from(Array.from({ length: 3000 }, (_, i) => i & 255));
  assert.equal(pwriteFull(fd, src, 100, 2000, 4000), 0);
  assert.ok(fs.readFileSync(p).subarray(4000, 6000).equals(src.subarray(100, 2100)));
  const out = Buffer.alloc(2010);
  assert.equal(preadFull(fd, out, 10, 2000, 4000), 0);
  assert.ok(out.subarray(10).equals(src.subarray(100, 2100)));
  assert.equal(preadFull(fd, out, 0, 1000, 7692), -5, 'EIO: the file ends 500 bytes in');
  assert.equal(preadUpTo(fd, out, 0, 1000, 7692), 500);
  assert.equal(syncData(fd), 0);
  fs.closeSync(fd);
  assert.equal(preadFull(fd, out, 0, 1, 0), -9, 'EBADF as a status, not an exception');
});

test('transferFullAt reads and writes by address', () => {
  const { p, fd } = tmpFile(Buffer.alloc(4096));
  const nb = new NativeBuffer(1024);
  nb.u8.fill(0x3c);
  assert.equal(transferFullAt(fd, nb.addr, 1024, 512, true), 0);
  assert.ok(fs.readFileSync(p).subarray(512, 1536).every((b) => b === 0x3c));
  nb.u8.fill(0);
  assert.equal(transferFullAt(fd, nb.addr, 1024, 512, false), 0);
  assert.ok(nb.u8.every((b) => b === 0x3c));
  assert.equal(transferFullAt(fd, nb.addr, 1024, 4000, false), -5, 'EIO past the end of the file');
  nb.free();
  fs.closeSync(fd);
});

test('zeroRange zeroes exactly its range, with and without unmapping', () => {
  const { p, fd } = tmpFile(Buffer.alloc(1 << 20, 0xee));
  assert.equal(zeroRange(fd, 4096, 8192, true), 0);
  assert.equal(zeroRange(fd, 65536, 4096, false), 0);
  const f = fs.readFileSync(p);
  assert.ok(f.subarray(4096, 12288).every((b) => b === 0) && f.subarray(65536, 69632).every((b) => b === 0));
  assert.equal(f[4095], 0xee);
  assert.equal(f[12288], 0xee);
  assert.equal(f[69632], 0xee);
  assert.equal(f.length, 1 << 20, 'the size is kept');
  fs.closeSync(fd);
});
