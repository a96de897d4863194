// `twindisk raid ...` on temporary member files: create, status, check, fail, add, replace, resync, and the errors (named member, exit code, nothing written).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import type { RaidStatus } from '../../engine/raid/array-status.js';
import { cli, tmpDir } from '../harness/serve.js';

const dir = tmpDir('twindisk-raid-cli-');

function twindisk(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 60_000, cwd: dir });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs a command that must succeed; returns its stdout. */
function ok(...args: string[]): string {
  const r = twindisk(...args);
  assert.equal(r.status, 0, `twindisk ${args.join(' ')}: exit ${r.status}\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** Runs a command that must fail with `code`, its message matching `re` and no stack trace; returns stderr. */
function fails(code: number, re: RegExp, ...args: string[]): string {
  const r = twindisk(...args);
  assert.equal(r.status, code, `twindisk ${args.join(' ')}: exit ${r.status}\n${r.stdout}${r.stderr}`);
  assert.match(r.stderr, re, `twindisk ${args.join(' ')}`);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  return r.stderr;
}

function status(...members: string[]): RaidStatus {
  return JSON.parse(ok('raid', 'status', '--json', ...members)) as RaidStatus;
}

/** A digest of each file, to show that a refused command wrote nothing. */
function digests(...files: string[]): string[] {
  return files.map((f) => createHash('sha256').update(fs.readFileSync(path.join(dir, f))).digest('hex'));
}

function checkZero(...members: string[]): void {
  assert.match(ok('raid', 'check', ...members), /^check: 0 mismatched sectors in 45\.0 MiB of the array \(read \d+ bytes\)$/m);
}

const A = ['a.img', 'b.img', 'c.img', 'd.img'];

test('raid5: create, resync, status, check, fail, status degraded, add, replace, check', () => {
  const out = ok('raid', 'create', '--level', '5', '--chunk', '64K', '--bitmap-chunk', '64K', '--size', '16M', '--name', 'vol0', ...A);
  assert.match(out, /^twindisk: created raid5 array [0-9a-f:]{35} \(name vol0\): 4 members, 45\.0 MiB, 64K chunks, left-symmetric, internal bitmap of 64K chunks$/m);
  assert.match(out, /needs its initial resync .*twindisk raid resync a\.img b\.img c\.img d\.img/);
  let s = status(...A);
  assert.equal(s.state, 'dirty');
  assert.equal(s.resync.needed, true);
  assert.equal(s.bitmap!.dirtyChunks, s.bitmap!.chunks, 'every bit set: the whole array needs its first resync');
  assert.match(ok('raid', 'resync', ...A), /^resync: read 62914560 bytes \(60\.0 MiB\) over 1 region\(s\) covering 47185920 bytes of the array; 0 mismatched sectors rewritten/m);
  s = status(...[...A].reverse()); // any order: the superblocks say the slots
  assert.deepEqual(
    { state: s.state, level: s.level, layout: s.layout, chunk: s.chunkBytes, mdstat: s.mdstat, members: s.members.map((m) => m.member), dirty: s.bitmap!.dirtyChunks, name: s.name },
    { state: 'clean', level: 'raid5', layout: 'left-symmetric', chunk: 65536, mdstat: '[4/4] [UUUU]', members: A, dirty: 0, name: 'vol0' },
  );
  assert.match(ok('raid', 'status', ...A), /State : clean\n[\s\S]*Slot {3}State {8}Member\n {7}0 {3}in sync {6}a\.img/);
  checkZero(...A);

  assert.match(ok('raid', 'fail', '--slot', '2', ...A), /^failed slot 2 \(c\.img\): recorded in the other members' superblocks \(events \d+\); the array runs degraded \[4\/3\] \[UU_U\]/m);
  s = status(...A);
  assert.equal(s.degraded, 1);
  assert.equal(s.mdstat, '[4/3] [UU_U]');
  assert.deepEqual(s.members[2], { slot: 2, state: 'missing', member: null, reason: 'c.img is faulty in the array' });
  assert.deepEqual(s.leftOut.map((l) => [l.member, l.why]), [['c.img', 'faulty']]);
  assert.match(ok('raid', 'status', ...A), /State : clean, degraded[\s\S]*degraded: rebuild with twindisk raid add --slot 2 NEW-MEMBER a\.img b\.img d\.img/);
  fails(1, /the array is degraded \[4\/3\] \[UU_U\]: slot 2 \(c\.img is faulty in the array\): check compares every member, so rebuild the missing one first/, 'raid', 'check', ...A);

  const B = ['a.img', 'b.img', 'e.img', 'd.img'];
  assert.match(ok('raid', 'add', '--slot', '2', '--size', '16M', '--rate', '200M/s', 'e.img', 'a.img', 'b.img', 'd.img'),
    /^rebuilt slot 2 onto e\.img: 15\.0 MiB in [\d.]+ s \([\d.]+ MiB\/s\); the array is whole again \[4\/4\] \[UUUU\]$/m);
  s = status(...B);
  assert.equal(s.mdstat, '[4/4] [UUUU]');
  assert.equal(s.state, 'clean');
  checkZero(...B);
  // The failed member, given again, is left out (its events are behind).
  assert.match(twindisk('raid', 'status', ...B, 'c.img').stderr, /^$/);
  assert.deepEqual(status(...B, 'c.img').leftOut.map((l) => l.member), ['c.img']);

  // replace: the slot's member is failed, and its data rebuilt onto the new one.
  const C = ['f.img', 'b.img', 'e.img', 'd.img'];
  assert.match(ok('raid', 'replace', '--slot', '0', '--size', '16M', 'f.img', ...B), /failed a\.img \(slot 0\)[\s\S]*rebuilt slot 0 onto f\.img/);
  assert.deepEqual(status(...C).members.map((m) => m.member), C);
  checkZero(...C);
  assert.match(ok('raid', 'repair', ...C), /^repair: 0 mismatched sectors in 45\.0 MiB/m);
});

test('raid1 and raid10: create --assume-clean, remove, add, check', () => {
  ok('raid', 'create', '--level', '1', '--assume-clean', '--size', '8M', 'm1.img', 'm2.img');
  const s = status('m1.img', 'm2.img');
  assert.equal(s.level, 'raid1');
  assert.equal(s.state, 'clean');
  assert.match(ok('raid', 'check', 'm1.img', 'm2.img'), /^check: 0 mismatched sectors/m);
  assert.match(ok('raid', 'remove', '--slot', '1', 'm1.img', 'm2.img'), /^removed m2\.img from slot 1 .*\[2\/1\] \[U_\]$/m);
  assert.equal(status('m1.img').mdstat, '[2/1] [U_]');
  ok('raid', 'add', '--slot', '1', '--size', '8M', 'm3.img', 'm1.img');
  assert.match(ok('raid', 'check', 'm1.img', 'm3.img'), /^check: 0 mismatched sectors/m);

  ok('raid', 'create', '--level', '10', '--layout', 'f2', '--chunk', '64K', '--size', '8M', 'r1.img', 'r2.img', 'r3.img', 'r4.img');
  ok('raid', 'resync', 'r1.img', 'r2.img', 'r3.img', 'r4.img');
  const t = status('r1.img', 'r2.img', 'r3.img', 'r4.img');
  assert.deepEqual([t.level, t.layout, t.state], ['raid10', 'far=2', 'clean']);
  assert.match(ok('raid', 'check', 'r4.img', 'r3.img', 'r2.img', 'r1.img'), /^check: 0 mismatched sectors/m);
});

test('errors name the member, exit non-zero and write nothing', () => {
  ok('raid', 'create', '--level', '5', '--chunk', '64K', '--assume-clean', '--size', '16M', 'x1.img', 'x2.img', 'x3.img');
  ok('raid', 'create', '--level', '5', '--chunk', '64K', '--assume-clean', '--size', '16M', 'y1.img', 'y2.img', 'y3.img');
  const all = ['x1.img', 'x2.img', 'x3.img', 'y1.img', 'y2.img', 'y3.img'];
  const before = digests(...all);

  // A member of another array.
  fails(1, /^twindisk: y2\.img: belongs to array [0-9a-f:]{35} not [0-9a-f:]{35}: give only the members of one array/, 'raid', 'status', 'x1.img', 'y2.img', 'x3.img');
  fails(1, /y2\.img: belongs to array/, 'raid', 'fail', '--slot', '0', 'x1.img', 'y2.img', 'x3.img');
  fails(1, /y1\.img: belongs to array/, 'raid', 'resync', 'x1.img', 'x2.img', 'y1.img');
  // Too few members to run.
  fails(1, /cannot assemble raid5 [0-9a-f:]{35}: 1 of 3 members in sync, it needs at least 2; missing slot 1 \(no member\), slot 2 \(no member\)/, 'raid', 'assemble', 'x1.img');
  // The same member twice.
  fails(2, /x2\.img is given twice/, 'raid', 'status', 'x1.img', 'x2.img', 'x2.img');
  // Not a member at all.
  fs.writeFileSync(path.join(dir, 'plain.img'), Buffer.alloc(1 << 20));
  fails(1, /plain\.img: not an md member \(no superblock magic at 4 KiB\): give the array's members/, 'raid', 'status', 'x1.img', 'plain.img');
  // A member file that is not there.
  fails(1, /gone\.img: no such file or device \(a member that is gone: leave it out/, 'raid', 'status', 'x1.img', 'gone.img');
  // Adding onto a member of another array, or into a slot in use.
  fails(1, /y1\.img holds the md superblock of another array .*--force/, 'raid', 'add', '--slot', '1', 'y1.img', 'x1.img', 'x3.img');
  fails(1, /slot 1 is held by x2\.img, in sync: replace it with twindisk raid replace --slot 1/, 'raid', 'add', '--slot', '1', '--size', '16M', 'z.img', ...all.slice(0, 3));
  assert.equal(fs.existsSync(path.join(dir, 'z.img')), false, 'the new member file made for a refused add is removed');
  // Failing a member the array cannot lose.
  ok('raid', 'fail', '--slot', '2', 'y1.img', 'y2.img', 'y3.img');
  const y = digests('y1.img', 'y2.img', 'y3.img');
  fails(1, /failing y1\.img \(slot 0\) would leave raid5 without enough members in sync/, 'raid', 'fail', '--slot', '0', 'y1.img', 'y2.img');
  assert.deepEqual(digests('y1.img', 'y2.img', 'y3.img'), y, 'nothing written');
  assert.deepEqual(digests(...all.slice(0, 3)), before.slice(0, 3), 'the x array was not touched');

  // A corrupt superblock (one byte changed: the checksum no longer matches).
  const fd = fs.openSync(path.join(dir, 'x2.img'), 'r+');
  fs.writeSync(fd, Buffer.from([0x55]), 0, 1, 4096 + 100);
  fs.closeSync(fd);
  const x = digests(...all.slice(0, 3));
  fails(1, /^twindisk: x2\.img: bad superblock checksum .*: its md metadata is damaged: leave it out/, 'raid', 'status', 'x1.img', 'x2.img', 'x3.img');
  fails(1, /x2\.img: bad superblock checksum/, 'raid', 'check', 'x1.img', 'x2.img', 'x3.img');
  assert.deepEqual(digests(...all.slice(0, 3)), x, 'nothing written');
  // Left out, the array runs degraded; the damaged member can be rebuilt onto (it holds this array's UUID).
  assert.equal(status('x1.img', 'x3.img').mdstat, '[3/2] [U_U]');
  ok('raid', 'add', '--slot', '1', 'x2.img', 'x1.img', 'x3.img');
  assert.match(ok('raid', 'check', 'x1.img', 'x2.img', 'x3.img'), /^check: 0 mismatched sectors/m);
});

test('create refuses a wrong shape, old superblocks and mismatched sizes before writing', () => {
  // A wrong member count for the level: exit 2 (the command line is wrong), no file made.
  fails(2, /^twindisk: raid6 with 3 members: raid6 needs at least 4 members, not 3/, 'raid', 'create', '--level', '6', '--size', '16M', 'w1.img', 'w2.img', 'w3.img');
  for (const f of ['w1.img', 'w2.img', 'w3.img']) assert.equal(fs.existsSync(path.join(dir, f)), false, `${f} not created`);
  fails(2, /raid create needs --level/, 'raid', 'create', 'w1.img');
  fails(2, /raid1 has no chunk size/, 'raid', 'create', '--level', '1', '--chunk', '64K', 'w1.img', 'w2.img');
  fails(2, /"zig-zag" is not a raid5 layout: use one of/, 'raid', 'create', '--level', '5', '--layout', 'zig-zag', '--size', '8M', 'w1.img', 'w2.img', 'w3.img');
  fails(2, /raid fail needs --slot N/, 'raid', 'fail', 'w1.img');
  fails(2, /option '--rate <size\/s>' argument 'fast' is invalid/, 'raid', 'resync', '--rate', 'fast', 'w1.img');
  // Members that hold an array already.
  ok('raid', 'create', '--level', '1', '--assume-clean', '--size', '8M', 'o1.img', 'o2.img');
  const before = digests('o1.img', 'o2.img');
  fails(1, /o1\.img already holds an md superblock \(array [0-9a-f:]{35}\): .* or --force to overwrite it/, 'raid', 'create', '--level', '1', 'o1.img', 'o2.img');
  assert.deepEqual(digests('o1.img', 'o2.img'), before, 'nothing written');
  // Members of different sizes.
  fs.writeFileSync(path.join(dir, 's1.img'), Buffer.alloc(8 << 20));
  fs.writeFileSync(path.join(dir, 's2.img'), Buffer.alloc(16 << 20));
  fails(1, /s2\.img has 16777216 bytes and s1\.img 8388608: the smallest member sets every member's size/, 'raid', 'create', '--level', '1', 's1.img', 's2.img');
  assert.ok(fs.readFileSync(path.join(dir, 's1.img')).every((b) => b === 0), 'nothing written');
  // A degraded create with "missing".
  ok('raid', 'create', '--level', '5', '--size', '8M', 'd1.img', 'missing', 'd3.img');
  assert.equal(status('d1.img', 'd3.img').mdstat, '[3/2] [U_U]');
});
