// bootimg/bootdisk.ts: the MBR bytes, the layout the marker relies on, the marker argument, the SYSLINUX configuration and `twindisk bootimg disk`'s usage errors.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import {
  DEFAULT_MARK, DEFAULT_MARK_SECTOR, DISK_SECTORS, FREE_AREA_START, PARTITION_SECTORS, PARTITION_START, markArgument, mbrSector, syslinuxConfig,
} from '../../bootimg/bootdisk.js';
import { cli } from '../harness/serve.js';

test('mbrSector: boot code, disk signature, one active LBA partition with its CHS, 0x55AA', () => {
  const code = Buffer.alloc(440, 0xfa);
  const b = mbrSector(code, [{ start: 2048, sectors: 81920, type: 0x0e, active: true }], 0x11223344);
  assert.equal(b.length, 512);
  assert.ok(b.subarray(0, 440).equals(code));
  assert.equal(b.readUInt32LE(440), 0x11223344);
  // Entry 1: active, CHS 0/32/33 (LBA 2048 in 255x63), type 0x0e, end CHS of LBA 83967 (cylinder 5, head 57, sector 52), LBA start and size.
  assert.deepEqual([...b.subarray(446, 462)], [0x80, 32, 33, 0, 0x0e, 57, 52, 5, 0x00, 0x08, 0, 0, 0x00, 0x40, 0x01, 0]);
  assert.ok(b.subarray(462, 510).every((x) => x === 0), 'entries 2..4 empty');
  assert.deepEqual([b[510], b[511]], [0x55, 0xaa]);
});

test('mbrSector: a partition past cylinder 1023 gets the CHS maximum; refuses what does not fit', () => {
  const b = mbrSector(new Uint8Array(0), [{ start: 2048, sectors: 20_000_000, type: 0x83 }]);
  assert.equal(b[446], 0, 'not active');
  assert.deepEqual([...b.subarray(451, 454)], [254, 0xff, 0xff]);
  assert.throws(() => mbrSector(new Uint8Array(441), []), /440/);
  assert.throws(() => mbrSector(new Uint8Array(0), Array(5).fill({ start: 1, sectors: 1, type: 1 })), /4 partitions/);
  assert.throws(() => mbrSector(new Uint8Array(0), [{ start: 0, sectors: 1, type: 1 }]), /partition 1/);
});

test('layout: the partition, then a free area holding the default marker, inside the disk', () => {
  assert.equal(PARTITION_START + PARTITION_SECTORS, FREE_AREA_START);
  assert.ok(FREE_AREA_START <= DEFAULT_MARK_SECTOR && DEFAULT_MARK_SECTOR < DISK_SECTORS);
});

test('markArgument: sector and hex bytes; refuses a sector in the partition or past the end, and an empty or oversized marker', () => {
  assert.equal(markArgument(100000, Buffer.from('AB')), 'twindisk.mark=100000:4142');
  assert.match(markArgument(DEFAULT_MARK_SECTOR, DEFAULT_MARK), /^twindisk\.mark=100000:[0-9a-f]{64}$/);
  assert.throws(() => markArgument(PARTITION_START, DEFAULT_MARK), /outside the free area/);
  assert.throws(() => markArgument(DISK_SECTORS, DEFAULT_MARK), /outside the free area/);
  assert.throws(() => markArgument(100000.5, DEFAULT_MARK), /outside the free area/);
  assert.throws(() => markArgument(100000, new Uint8Array(0)), /1\.\.512/);
  assert.throws(() => markArgument(100000, new Uint8Array(513)), /1\.\.512/);
});

test('syslinuxConfig: boots /vmlinuz with /initrd.img at once, with the given command line', () => {
  const c = syslinuxConfig('console=ttyS0 twindisk.mark=1:00');
  assert.match(c, /^DEFAULT twindisk$/m);
  assert.match(c, /^TIMEOUT 0$/m);
  assert.match(c, /^ {2}KERNEL \/vmlinuz$/m);
  assert.match(c, /^ {2}INITRD \/initrd\.img$/m);
  assert.match(c, /^ {2}APPEND console=ttyS0 twindisk\.mark=1:00$/m);
});

test('twindisk bootimg disk: --out is required and --mark-sector must lie in the free area (exit 2, nothing built)', () => {
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, 'bootimg', 'disk', ...args], { encoding: 'utf8', timeout: 30000 });
  const noOut = run();
  assert.equal(noOut.status, 2);
  assert.match(noOut.stderr, /bootimg disk needs --out FILE/);
  const bad = run('--out', '/nonexistent/x.img', '--mark-sector', String(PARTITION_START));
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, new RegExp(`expected a whole number ${FREE_AREA_START}\\.\\.${DISK_SECTORS - 1}`));
});
