// Tests of the newc cpio writer: its own reader, and busybox cpio extracting what it wrote.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { readCpio, writeCpio } from '../../bootimg/cpio.js';

const entries = [
  { type: 'dir' as const, path: 'etc' },
  { type: 'file' as const, path: '/etc/hello', data: Buffer.from('hello world\n'), mode: 0o640 },
  { type: 'file' as const, path: 'odd', data: Buffer.from('abc') },
  { type: 'symlink' as const, path: 'link', target: 'etc/hello' },
];

test('records are 4-byte aligned, round-trip, and end with the trailer', () => {
  const b = writeCpio(entries);
  assert.equal(b.length % 4, 0);
  assert.match(b.toString('latin1'), /TRAILER!!!/);
  const r = readCpio(b);
  assert.deepEqual(r.map((e) => e.path), ['etc', 'etc/hello', 'odd', 'link']);
  assert.equal(r[1]!.data.toString(), 'hello world\n');
  assert.equal(r[1]!.mode, 0o100640);
  assert.equal(r[3]!.mode & 0o170000, 0o120000);
  assert.equal(r[3]!.data.toString(), 'etc/hello');
});

test('busybox cpio extracts the archive', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-cpio-'));
  execFileSync('busybox', ['cpio', '-i', '-d'], { cwd: dir, input: writeCpio(entries), stdio: ['pipe', 'ignore', 'ignore'] });
  assert.equal(fs.readFileSync(path.join(dir, 'etc/hello'), 'utf8'), 'hello world\n');
  assert.equal(fs.readFileSync(path.join(dir, 'odd'), 'utf8'), 'abc');
  assert.equal(fs.readlinkSync(path.join(dir, 'link')), 'etc/hello');
  fs.rmSync(dir, { recursive: true });
});
