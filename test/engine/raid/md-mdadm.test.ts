// Cross-checks the md codecs against the real mdadm: `mdadm --examine` of member files written with encodeMdSuperblock,
// `mdadm -X` of a bitmap. Needs mdadm (Debian package "mdadm"), not the md kernel module; says so loudly when missing.
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { MD_FEATURE_BITMAP_OFFSET, MD_DISK_ROLE_SPARE } from '../../../engine/raid/md-constants.js';
import { mdLayoutName, mdArraySectors, type MdGeometry, type MdRaidLevel } from '../../../engine/raid/geometry.js';
import {
  encodeMdBitmapSuper, mdBitmapBits, mdBitmapSector, mdBitmapSpace, mdBitmapSyncSize, mdadmBitmapChunk, newMdBitmapSuper,
} from '../../../engine/raid/md-bitmap.js';
import {
  encodeMdSuperblock, mdDeviceRole, mdSuperblockChecksum, mdUuidString, mdadmBitmapSpace, parseMdUuid, type MdSuperblockFields,
} from '../../../engine/raid/md-superblock.js';
import { MEMBER_SECTORS, mdadm, needMdadm, sampleSuperblock } from './md-fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'twindisk-md-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/**
 * Writes a sparse member of MEMBER_SECTORS with `sb` (encoded from `fields`) at sector 8 and, when the
 * bitmap feature is set, the bitmap superblock mdadm would write where `bitmapOffset` says: mdadm checks
 * it (magic and UUID) and otherwise reports the feature off.
 */
function writeMember(name: string, fields: MdSuperblockFields, sb: Uint8Array): string {
  const path = join(dir, name);
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, Number(MEMBER_SECTORS) * 512);
    writeSync(fd, sb, 0, sb.length, 8 * 512);
    const at = mdBitmapSector(fields);
    if (at !== null) {
      const g: MdGeometry = { level: fields.level as MdRaidLevel, layout: fields.layout, raidDisks: fields.raidDisks, chunkSectors: fields.chunkSectors, componentSectors: Number(fields.size) };
      const syncSize = mdBitmapSyncSize(g, Number(fields.size));
      const chunkSize = mdadmBitmapChunk(syncSize, mdadmBitmapSpace(MEMBER_SECTORS));
      const bm = encodeMdBitmapSuper({ ...newMdBitmapSuper({ setUuid: fields.setUuid, syncSize, chunkSize }), events: fields.events });
      writeSync(fd, bm, 0, bm.length, Number(at) * 512);
    }
  } finally {
    closeSync(fd);
  }
  return path;
}


const LEVEL_NAMES: Record<MdRaidLevel, string> = { 1: 'raid1', 4: 'raid4', 5: 'raid5', 6: 'raid6', 10: 'raid10' };

const shapes: { name: string; over: Partial<MdSuperblockFields> }[] = [
  { name: 'raid5 left-symmetric, bitmap', over: {} },
  { name: 'raid5 left-asymmetric', over: { featureMap: 0, layout: 0, devNumber: 0, devRoles: [3, 1, 2, 0] } },
  { name: 'raid6 ddf-N-continue', over: { level: 6, layout: 10, raidDisks: 5, chunkSectors: 128, devNumber: 4, devRoles: [0, 1, 2, 3, 4] } },
  { name: 'raid6 left-symmetric-6', over: { level: 6, layout: 18, raidDisks: 4, devRoles: [0, 1, 2, 3] } },
  { name: 'raid4', over: { level: 4, layout: 5, raidDisks: 3, devNumber: 1, devRoles: [0, 1, 2] } },
  { name: 'raid10 near=2, 3 members', over: { level: 10, layout: 0x102, raidDisks: 3, devNumber: 2, devRoles: [0, 1, 2] } },
  { name: 'raid10 offset=2', over: { level: 10, layout: 0x10201, raidDisks: 4, devNumber: 3 } },
  { name: 'raid1, a spare', over: { level: 1, layout: 0, chunkSectors: 0, raidDisks: 2, devNumber: 2, devRoles: [0, 1, MD_DISK_ROLE_SPARE] } },
];

for (const { name, over } of shapes) {
  test(`mdadm --examine reads a member we wrote: ${name}`, () => {
    needMdadm();
    const fields = sampleSuperblock({ events: 1234567n, ...over });
    const bytes = encodeMdSuperblock(fields);
    const ex = mdadm(['--examine', writeMember(`${name.replace(/\W+/g, '-')}.img`, fields, bytes)]);
    const level = fields.level as MdRaidLevel;
    assert.equal(ex.get('Magic'), 'a92b4efc');
    assert.equal(ex.get('Version'), '1.2');
    assert.equal(ex.get('Feature Map'), `0x${fields.featureMap.toString(16)}`);
    assert.equal(ex.get('Array UUID'), mdUuidString(fields.setUuid));
    assert.match(ex.get('Name') ?? '', new RegExp(`^${fields.setName}( |$)`), 'the name, perhaps followed by "(local to host ...)"');
    assert.equal(ex.get('Raid Level'), LEVEL_NAMES[level]);
    assert.equal(ex.get('Raid Devices'), String(fields.raidDisks));
    assert.equal(ex.get('Avail Dev Size')?.split(' ')[0], String(fields.dataSize));
    assert.equal(ex.get('Data Offset'), `${fields.dataOffset} sectors`);
    assert.equal(ex.get('Super Offset'), `${fields.superOffset} sectors`);
    assert.equal(ex.get('Events'), String(fields.events));
    assert.equal(ex.get('Checksum'), `${mdSuperblockChecksum(bytes).toString(16)} - correct`);
    assert.equal(ex.get('State'), 'clean');
    const role = mdDeviceRole(fields);
    assert.equal(ex.get('Device Role'), role === MD_DISK_ROLE_SPARE ? 'spare' : `Active device ${role}`);
    if (level === 5 || level === 6 || level === 10) assert.equal(ex.get('Layout'), mdLayoutName(level, fields.layout));
    else assert.equal(ex.get('Layout'), undefined);
    if (level !== 1) assert.equal(ex.get('Chunk Size'), `${fields.chunkSectors / 2}K`);
    if ((fields.featureMap & MD_FEATURE_BITMAP_OFFSET) !== 0) assert.equal(ex.get('Internal Bitmap'), `${fields.bitmapOffset} sectors from superblock`);
    const g: MdGeometry = { level, layout: fields.layout, raidDisks: fields.raidDisks, chunkSectors: fields.chunkSectors, componentSectors: Number(fields.size) };
    // mdadm's Array Size (KiB) is size * data members / copies, without chunk rounding: the fixture's size is whole chunks.
    assert.equal(ex.get('Array Size')?.split(' ')[0], String(mdArraySectors(g, Number(fields.size)) / 2));
  });
}

test('mdadm --examine flags a checksum we refuse, and expects the value we compute', () => {
  needMdadm();
  const fields = sampleSuperblock();
  const bytes = encodeMdSuperblock(fields);
  const good = mdSuperblockChecksum(bytes);
  bytes[40]! ^= 0x20; // one bit of the set name, checksum left as it was
  const ex = mdadm(['--examine', writeMember('torn.img', fields, bytes)]);
  assert.equal(ex.get('Checksum'), `${good.toString(16)} - expected ${mdSuperblockChecksum(bytes).toString(16)}`);
});

test('mdadm checks the bitmap superblock: without one where bitmap_offset points, it reports no bitmap', () => {
  needMdadm();
  const fields = sampleSuperblock();
  const path = join(dir, 'no-bitmap.img');
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, Number(MEMBER_SECTORS) * 512);
    const sb = encodeMdSuperblock(fields);
    writeSync(fd, sb, 0, sb.length, 8 * 512); // and nothing at sector 16
  } finally {
    closeSync(fd);
  }
  const ex = mdadm(['--examine', path]);
  assert.equal(ex.get('Feature Map'), '0x0', 'load_super1 drops the bitmap feature when the bitmap superblock is missing');
  assert.equal(ex.get('Internal Bitmap'), undefined);
});

test('mdadm -X reads a bitmap we wrote', () => {
  needMdadm();
  const uuid = parseMdUuid('00112233:44556677:8899aabb:ccddeeff');
  const syncSize = 2n * 1024n * 1024n; // 1 GiB of member
  const chunk = 1 << 20;
  const bm = encodeMdBitmapSuper({ ...newMdBitmapSuper({ setUuid: uuid, syncSize, chunkSize: chunk, daemonSleep: 7 }), events: 99n, eventsCleared: 98n });
  // A standalone bitmap file (what mdadm reads for a regular file): superblock, then the bits, 3 set.
  const bits = new Uint8Array(mdBitmapSpace(syncSize, chunk) - bm.length);
  bits[0] = 0b101;
  bits[100] = 0x80;
  const path = join(dir, 'bitmap.img');
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, bm, 0, bm.length, 0);
    writeSync(fd, bits, 0, bits.length, bm.length);
  } finally {
    closeSync(fd);
  }
  const x = mdadm(['-X', path]);
  assert.equal(x.get('Magic'), '6d746962');
  assert.equal(x.get('Version'), '4');
  assert.equal(x.get('UUID'), mdUuidString(uuid));
  assert.equal(x.get('Events'), '99');
  assert.equal(x.get('Events Cleared'), '98');
  assert.equal(x.get('State'), 'OK');
  assert.equal(x.get('Chunksize'), '1 MB');
  assert.equal(x.get('Daemon'), '7s flush period');
  assert.equal(x.get('Sync Size')?.split(' ')[0], String(syncSize / 2n));
  assert.equal(x.get('Bitmap'), `${mdBitmapBits(syncSize, chunk)} bits (chunks), 3 dirty (0.3%)`);
});
