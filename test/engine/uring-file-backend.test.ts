// Tests of the io_uring file back-end: vectored writes and reads in flight together, completions via poll/waitOne.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { IoVector } from '../../engine/iovec.js';
import { NativeBuffer } from '../../engine/os.js';
import { UringFileBackend } from '../../engine/uring-file-backend.js';

test('16 writes and reads in flight at once land where asked and read back', () => {
  const img = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-uring-')), 'd.img');
  fs.writeFileSync(img, Buffer.alloc(1 << 20));
  const be = new UringFileBackend({ path: img, depth: 32 });
  const mem = new NativeBuffer(16 * 8192);
  const statuses: number[] = [];
  const done = { complete: (s: number) => statuses.push(s) };
  const vecs = Array.from({ length: 16 }, (_, i) => {
    const v = new IoVector(4);
    // Two segments per request: exercises READV/WRITEV.
    v.push(mem.u8, i * 8192, 4096, mem.addr + i * 8192);
    v.push(mem.u8, i * 8192 + 4096, 4096, mem.addr + i * 8192 + 4096);
    mem.u8.fill(i + 1, i * 8192, (i + 1) * 8192);
    return v;
  });
  vecs.forEach((v, i) => be.write(v, i * 65536, false, done));
  assert.equal(be.inFlight(), 16, 'all queued before the kick');
  be.kick();
  while (be.inFlight() > 0) be.waitOne();
  assert.deepEqual(statuses, new Array(16).fill(0));
  const f = fs.readFileSync(img);
  for (let i = 0; i < 16; i++) assert.ok(f.subarray(i * 65536, i * 65536 + 8192).every((b) => b === i + 1), `write ${i}`);
  mem.u8.fill(0);
  statuses.length = 0;
  vecs.forEach((v, i) => be.read(v, i * 65536, done));
  be.flush(done);
  be.kick();
  while (be.inFlight() > 0) be.waitOne();
  assert.deepEqual(statuses, new Array(17).fill(0));
  for (let i = 0; i < 16; i++) assert.ok(mem.u8.subarray(i * 8192, (i + 1) * 8192).every((b) => b === i + 1), `read ${i}`);
  be.close();
  mem.free();
});

test('errors come back as negative errno and reads past the end are refused before submission', () => {
  const img = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-uring-')), 'd.img');
  fs.writeFileSync(img, Buffer.alloc(65536));
  const be = new UringFileBackend({ path: img, readOnly: true, depth: 4 });
  const mem = new NativeBuffer(4096);
  const v = new IoVector(1);
  v.push(mem.u8, 0, 4096, mem.addr);
  const got: number[] = [];
  be.write(v, 0, false, { complete: (s) => got.push(s) });
  be.read(v, 65536, { complete: (s) => got.push(s) });
  be.kick();
  while (be.inFlight() > 0) be.waitOne();
  assert.deepEqual(got, [-30, -22], 'EROFS for a write to a read-only image, EINVAL past the end');
  be.close();
  mem.free();
});
