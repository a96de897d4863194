// Tests of the md version-1 superblock codec: round trips, the checksum, each refusal, helpers and a seeded fuzz.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  MD_DISK_ROLE_FAULTY, MD_DISK_ROLE_JOURNAL, MD_DISK_ROLE_SPARE, MD_FEATURE_BAD_BLOCKS, MD_FEATURE_BITMAP_OFFSET,
  MD_FEATURE_JOURNAL, MD_FEATURE_MULTIPLE_PPLS, MD_FEATURE_NEW_OFFSET, MD_FEATURE_PPL, MD_FEATURE_RAID0_LAYOUT,
  MD_FEATURE_RECOVERY_OFFSET, MD_FEATURE_RESHAPE_ACTIVE, MD_SB_1_MAX_DEV,
} from '../../../engine/raid/md-constants.js';
import {
  MdFormatError, decodeMdSuperblock, encodeMdSuperblock, mdArrayMismatch, mdDeviceRole, mdDevflagNames, mdFeatureNames,
  mdRoleName, mdSuperOffset, mdSuperblockBytes, mdSuperblockChecksum, mdTime, mdTimeSeconds, mdUuidString, mdadmBitmapSpace,
  mdadmDataOffset, parseMdUuid, type MdFormatErrorCode, type MdSuperblockFields,
} from '../../../engine/raid/md-superblock.js';
import { ARRAY_UUID, MEMBER_SECTORS, patched, sampleSuperblock, seededRandom } from './md-fixtures.js';

/** Asserts that decoding throws MdFormatError with `code` and a message matching `msg`. */
function refuses(bytes: Uint8Array, code: MdFormatErrorCode, msg: RegExp, opts?: Parameters<typeof decodeMdSuperblock>[1]): void {
  assert.throws(() => decodeMdSuperblock(bytes, opts), (e: unknown) => {
    assert.ok(e instanceof MdFormatError, `expected MdFormatError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, msg);
    return true;
  });
}

const enc = (over: Partial<MdSuperblockFields> = {}): Uint8Array => encodeMdSuperblock(sampleSuperblock(over));

test('round trip: every field survives encode then decode; the checksum is computed', () => {
  const sb = sampleSuperblock({
    featureMap: MD_FEATURE_BITMAP_OFFSET | MD_FEATURE_RECOVERY_OFFSET | MD_FEATURE_RESHAPE_ACTIVE, level: 6, layout: 18,
    raidDisks: 5, bitmapOffset: -72, newLevel: 6, reshapePosition: 123456789n, deltaDisks: -1, newLayout: 2, newChunk: 256,
    recoveryOffset: (1n << 40n) + 7n, cntCorrectedRead: 9, devflags: 3, bblogShift: 1, bblogOffset: -8,
    events: 0xfedcba9876543210n, resyncOffset: 77n, ctime: mdTime(1_600_000_000, 123456), devRoles: [4, 0, 1, 2, 3, MD_DISK_ROLE_SPARE, MD_DISK_ROLE_FAULTY],
    setName: 'host-with-a-31-character-name:x',
  });
  const bytes = encodeMdSuperblock(sb);
  assert.equal(bytes.length, 512, 'mdadm writes 256 + 2 * max_dev rounded up to 512 bytes');
  const d = decodeMdSuperblock(bytes);
  assert.deepEqual(d, { ...sb, sbCsum: mdSuperblockChecksum(bytes) });
  assert.deepEqual(encodeMdSuperblock(d), bytes, 're-encoding a decoded superblock gives the same bytes');
  assert.ok(bytes.subarray(256 + 2 * 7).every((b) => b === 0xff), 'unused role slots are 0xff, as mdadm leaves them');
});

test('round trip: PPL shares the bitmap_offset bytes; sizes follow max_dev and the block size', () => {
  const sb = sampleSuperblock({ featureMap: MD_FEATURE_PPL, ppl: { offset: -2056, size: 2048 } });
  const d = decodeMdSuperblock(encodeMdSuperblock(sb));
  assert.deepEqual(d.ppl, { offset: -2056, size: 2048 });
  assert.equal(d.bitmapOffset, (2048 << 16) | (-2056 & 0xffff), 'the same four bytes, read as s32');
  assert.equal(decodeMdSuperblock(enc()).ppl, null);
  assert.equal(encodeMdSuperblock(sampleSuperblock(), { blockSize: 4096 }).length, 4096);
  assert.equal(mdSuperblockBytes(128), 512);
  assert.equal(mdSuperblockBytes(129), 1024);
  assert.equal(mdSuperblockBytes(MD_SB_1_MAX_DEV), 4096);
  const big = sampleSuperblock({ devRoles: Array.from({ length: 200 }, (_, i) => (i < 4 ? i : MD_DISK_ROLE_SPARE)), dataOffset: 2048n });
  const b = encodeMdSuperblock(big);
  assert.equal(b.length, 1024);
  assert.equal(decodeMdSuperblock(b).devRoles.length, 200);
});

test('checksum: calc_sb_1_csum over 256 + 2 * max_dev bytes, sb_csum excluded, carry folded (hand-computed)', () => {
  const b = new Uint8Array(512);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, 0xa92b4efc, true); // magic
  dv.setUint32(4, 1, true); // major_version
  dv.setUint32(216, 0xdeadbeef, true); // sb_csum: not summed
  dv.setUint32(220, 1, true); // max_dev = 1: 258 bytes, the last two a u16
  dv.setUint16(256, 3, true); // dev_roles[0] = 3
  dv.setUint16(258, 0x7777, true); // past max_dev: not summed
  // 0xa92b4efc + 1 + 1 + 3 = 0xa92b4f01, no carry
  assert.equal(mdSuperblockChecksum(b), 0xa92b4f01);
  // events' low word 0xffffffff: 0xa92b4f01 + 0xffffffff = 0x1_a92b_4f00, folded: 0xa92b4f00 + 1
  dv.setUint32(200, 0xffffffff, true);
  assert.equal(mdSuperblockChecksum(b), 0xa92b4f01);
  dv.setUint32(200, 0, true);
  // max_dev = 2, roles [3, 0xffff]: one more whole word 0xffff0003.
  // 0xa92b4efc + 1 + 2 + 0xffff0003 = 0x1_a92a_4f02, folded: 0xa92a4f02 + 1
  dv.setUint32(220, 2, true);
  dv.setUint16(258, 0xffff, true);
  assert.equal(mdSuperblockChecksum(b), 0xa92a4f03);
  assert.throws(() => mdSuperblockChecksum(b.subarray(0, 259)), MdFormatError, 'max_dev says more bytes than given');
});

test('refusals: buffer, magic, version, max_dev, super_offset, features (each names the fault)', () => {
  const good = enc();
  refuses(good.subarray(0, 255), 'short-buffer', /at least 256 bytes/);
  const longRoles = good.slice();
  new DataView(longRoles.buffer).setUint32(220, 300, true); // checked before the checksum
  refuses(longRoles, 'short-buffer', /max_dev 300 needs 856 bytes, 512 given/);
  refuses(patched(good, (dv) => dv.setUint32(0, 0x12345678, true)), 'bad-magic', /magic is 0x12345678, not 0xa92b4efc/);
  refuses(new Uint8Array(4096), 'bad-magic', /no md superblock/);
  refuses(patched(good, (dv) => dv.setUint32(4, 0, true)), 'bad-version', /major version 0/);
  const huge = new Uint8Array(8192);
  huge.set(good);
  refuses(patched(huge, (dv) => dv.setUint32(220, MD_SB_1_MAX_DEV + 1, true)), 'max-dev', /max_dev 1921 exceeds the kernel's limit of 1920/);
  refuses(enc({ superOffset: 0n }), 'super-offset', /sits at sector 0, but a 1\.2 superblock sits at sector 8/);
  assert.equal(decodeMdSuperblock(enc({ superOffset: 0n, dataOffset: 2048n }), { minorVersion: 1 }).superOffset, 0n, 'a 1.1 superblock at 0');
  refuses(good, 'super-offset', /1\.1 superblock sits at sector 0/, { minorVersion: 1 });
  refuses(enc({ featureMap: MD_FEATURE_BITMAP_OFFSET | 0x2000 }), 'unknown-features', /feature bits 0x2000 that the kernel does not know/);
  refuses(enc({ featureMap: 0x80000000 }), 'unknown-features', /0x80000000/);
  refuses(enc({ featureMap: MD_FEATURE_BITMAP_OFFSET | MD_FEATURE_RESHAPE_ACTIVE }), 'unsupported-features', /uses reshape-active, which this build does not handle/,
    { supportedFeatures: MD_FEATURE_BITMAP_OFFSET });
});

test('refusals: checksum, data_size, padding, data_offset, bad-block log', () => {
  const good = enc();
  const torn = good.slice();
  torn[40]! ^= 0x20; // one bit of the set name
  refuses(torn, 'bad-checksum', /checksum is 0x[0-9a-f]{8} but the contents sum to 0x[0-9a-f]{8}/);
  refuses(enc({ dataSize: 9n }), 'data-size', /data_size is 9 sectors, below the kernel's minimum of 10/);
  assert.equal(decodeMdSuperblock(enc({ dataSize: 10n })).dataSize, 10n);
  refuses(patched(good, (dv) => dv.setUint32(12, 1, true)), 'padding', /non-zero padding/);
  refuses(patched(good, (_dv, b) => { b[255] = 1; }), 'padding', /pad0 or pad3/);
  refuses(enc({ dataOffset: 8n }), 'data-offset', /data_offset 8 overlaps the superblock \(sectors 8\.\.8\)/);
  assert.equal(decodeMdSuperblock(enc({ dataOffset: 9n })).dataOffset, 9n, 'the sector right after a 512-byte superblock');
  refuses(enc({ dataOffset: 9n }), 'data-offset', /sectors 8\.\.15/, { logicalBlockSize: 4096 });
  refuses(enc({ featureMap: MD_FEATURE_RESHAPE_ACTIVE | MD_FEATURE_NEW_OFFSET, dataOffset: 2048n, newOffset: -2040 }), 'data-offset', /reshape moves data to sector 8/);
  assert.equal(decodeMdSuperblock(enc({ featureMap: MD_FEATURE_NEW_OFFSET, dataOffset: 2048n, newOffset: -2040 })).newOffset, -2040,
    'the new offset only counts during a reshape');
  refuses(enc({ featureMap: MD_FEATURE_BAD_BLOCKS, bblogSize: 9 }), 'bblog', /9 sectors, more than the kernel loads \(8\)/);
  refuses(enc({ featureMap: MD_FEATURE_BAD_BLOCKS, bblogOffset: 0 }), 'bblog', /offset is 0/);
  assert.equal(decodeMdSuperblock(enc({ bblogOffset: 0, bblogSize: 0 })).bblogSize, 0, 'no bad blocks: no log needed');
});

test('refusals: raid0-layout, PPL combinations, journal role, device size', () => {
  refuses(enc({ featureMap: MD_FEATURE_RAID0_LAYOUT }), 'raid0-layout', /raid0-layout feature on a level 5 array/);
  assert.equal(decodeMdSuperblock(enc({ featureMap: MD_FEATURE_RAID0_LAYOUT, level: 0, layout: 2 })).level, 0);
  const ppl = { offset: 8, size: 2048 };
  refuses(enc({ featureMap: MD_FEATURE_PPL | MD_FEATURE_BITMAP_OFFSET, ppl }), 'ppl', /partial parity log together with a bitmap or journal/);
  refuses(enc({ featureMap: MD_FEATURE_PPL | MD_FEATURE_JOURNAL, ppl }), 'ppl', /bitmap or journal/);
  refuses(enc({ featureMap: MD_FEATURE_PPL | MD_FEATURE_MULTIPLE_PPLS, ppl }), 'ppl', /both the single and the multiple/);
  refuses(enc({ devRoles: [0, 1, MD_DISK_ROLE_JOURNAL, 3] }), 'journal-role', /journal but the array has no journal feature/);
  assert.equal(mdDeviceRole(decodeMdSuperblock(enc({ featureMap: MD_FEATURE_JOURNAL, devRoles: [0, 1, MD_DISK_ROLE_JOURNAL, 3] }))), MD_DISK_ROLE_JOURNAL);
  const sb = decodeMdSuperblock(enc(), { deviceSectors: MEMBER_SECTORS });
  assert.equal(sb.dataSize, MEMBER_SECTORS - 32768n);
  refuses(enc(), 'device-too-small', /229376 sectors of data, but the member has room for 229375/, { deviceSectors: MEMBER_SECTORS - 1n });
  refuses(enc(), 'device-too-small', /room for 0 from data_offset 32768/, { deviceSectors: 100n });
  // 1.0: superblock near the end, data from sector 0 up to it.
  const end = mdSuperOffset(0, MEMBER_SECTORS);
  assert.equal(end, MEMBER_SECTORS - 16n);
  const v10 = enc({ superOffset: end, dataOffset: 0n, dataSize: end - 8n, bitmapOffset: -8 });
  assert.equal(decodeMdSuperblock(v10, { minorVersion: 0, deviceSectors: MEMBER_SECTORS }).superOffset, end);
  refuses(v10, 'super-offset', /sits at sector 262128, but a 1\.0 superblock sits at sector 262136/, { minorVersion: 0, deviceSectors: MEMBER_SECTORS + 8n });
  assert.throws(() => decodeMdSuperblock(v10, { minorVersion: 0 }), RangeError, 'a 1.0 superblock needs the device size');
});

test('encode refuses fields that do not fit, naming them', () => {
  const bad = (over: Partial<MdSuperblockFields>, msg: RegExp): void => {
    assert.throws(() => enc(over), (e: unknown) => e instanceof MdFormatError && e.code === 'bad-field' && msg.test(e.message));
  };
  bad({ setUuid: new Uint8Array(15) }, /setUuid must be 16 bytes/);
  bad({ setName: 'x'.repeat(33) }, /33 bytes: md keeps at most 32/);
  bad({ setName: 'é€' }, /U\+20ac/);
  bad({ level: 2 ** 31 }, /level 2147483648 does not fit/);
  bad({ chunkSectors: -1 }, /chunkSectors -1/);
  bad({ events: -1n }, /events -1 is not a u64/);
  bad({ resyncOffset: 1n << 64n }, /resyncOffset/);
  bad({ devRoles: [0, 0x10000] }, /devRoles\[1\] 65536/);
  bad({ devRoles: new Array<number>(MD_SB_1_MAX_DEV + 1).fill(0) }, /at most 1920/);
  bad({ featureMap: MD_FEATURE_PPL, ppl: null }, /ppl is null/);
  assert.throws(() => encodeMdSuperblock(sampleSuperblock(), { blockSize: 1000 }), /block size 1000/);
});

test('helpers: uuids, times, names, roles, offsets, array mismatch, mdadm defaults', () => {
  const u = parseMdUuid(ARRAY_UUID);
  assert.equal(mdUuidString(u), ARRAY_UUID);
  assert.deepEqual(parseMdUuid('01234567-89ab-cdef-0011-223344556677'), u);
  assert.throws(() => parseMdUuid('0123'), /not a UUID/);
  assert.equal(mdTime(5, 1), (1n << 40n) | 5n);
  assert.equal(mdTimeSeconds(mdTime(1_700_000_000, 999_999)), 1_700_000_000);
  assert.deepEqual(mdFeatureNames(MD_FEATURE_BITMAP_OFFSET | MD_FEATURE_BAD_BLOCKS | 0x80000000), ['bitmap', 'bad-blocks', '0x80000000']);
  assert.deepEqual(mdDevflagNames(3), ['write-mostly', 'failfast']);
  assert.equal(mdDeviceRole({ devNumber: 2, devRoles: [0, 1, 5] }), 5);
  assert.equal(mdDeviceRole({ devNumber: 3, devRoles: [0, 1, 5] }), MD_DISK_ROLE_SPARE, 'past max_dev: spare');
  assert.deepEqual([0, MD_DISK_ROLE_SPARE, MD_DISK_ROLE_FAULTY, MD_DISK_ROLE_JOURNAL, 0xff01].map(mdRoleName),
    ['active device 0', 'spare', 'faulty', 'journal', 'unknown role 0xff01']);
  assert.equal(mdSuperOffset(2), 8n);
  assert.equal(mdSuperOffset(1), 0n);
  assert.equal(mdSuperOffset(0, 1000n), 984n);
  assert.equal(mdSuperOffset(0, 1001n), 984n);
  const a = sampleSuperblock();
  assert.equal(mdArrayMismatch(a, sampleSuperblock({ devNumber: 0, events: 41n })), null, 'another member of the same array');
  assert.match(mdArrayMismatch(a, sampleSuperblock({ setUuid: new Uint8Array(16) }))!, /different array UUIDs/);
  assert.match(mdArrayMismatch(a, sampleSuperblock({ layout: 0 }))!, /different layouts \(2 and 0\)/);
  assert.match(mdArrayMismatch(a, sampleSuperblock({ chunkSectors: 128 }))!, /different chunk sizes \(sectors\) \(1024 and 128\)/);
  assert.match(mdArrayMismatch(a, sampleSuperblock({ level: 6 }))!, /different levels/);
  // choose_bm_space: 4 KiB up to 8 GiB, 64 KiB up to 200 GiB, 128 KiB above; nothing below 64 KiB.
  assert.equal(mdadmBitmapSpace(100n), 0);
  assert.equal(mdadmBitmapSpace(MEMBER_SECTORS), 8);
  assert.equal(mdadmBitmapSpace(20n * 1024n * 1024n * 2n), 128);
  assert.equal(mdadmBitmapSpace(300n * 1024n * 1024n * 2n), 256);
  // 128 MiB member, 512 KiB chunks: headroom halves from 128 MiB while above 0.1% and >= 2 chunks: 1 MiB.
  // 24 + 8 + 2048 sectors, rounded up to 1 MiB: 4096. raid1 (no chunk): headroom 128 KiB, rounds to 2048.
  assert.equal(mdadmDataOffset(MEMBER_SECTORS, 1024), 4096n);
  assert.equal(mdadmDataOffset(MEMBER_SECTORS, 0), 2048n);
  // 1 TiB member: headroom stays 128 MiB; 24 + 256 + 262144 rounded up: 264192.
  assert.equal(mdadmDataOffset(1n << 31n, 1024), 264192n);
});

test('fuzz: random mutations of a valid superblock decode cleanly or fail with MdFormatError (seeded)', () => {
  const rnd = seededRandom(0x5eed_1d5);
  const int = (n: number): number => Math.floor(rnd() * n);
  const base = new Uint8Array(4096);
  base.set(encodeMdSuperblock(sampleSuperblock({ devRoles: Array.from({ length: 40 }, (_, i) => (i < 4 ? i : MD_DISK_ROLE_SPARE)), dataOffset: 2048n })));
  const codes = new Map<string, number>();
  let decoded = 0;
  for (let iter = 0; iter < 3000; iter++) {
    let b = base.slice();
    const edits = 1 + int(4);
    for (let e = 0; e < edits; e++) {
      const kind = int(3);
      const at = int(300); // the header and the first roles
      if (kind === 0) b[at]! ^= 1 << int(8); // a bit flip
      else if (kind === 1) b[at] = int(256); // a random byte
      else new DataView(b.buffer).setUint32(at & ~3, [0, 0xffffffff, 1 << int(32), int(2 ** 32)][int(4)]!, true); // a random word
    }
    if (rnd() < 0.1) b = b.subarray(0, int(400)); // a short read
    // Half the time fix the checksum, so the checks after it are reached too.
    if (rnd() < 0.5 && b.length >= 256) {
      const maxDev = new DataView(b.buffer, b.byteOffset).getUint32(220, true);
      if (256 + 2 * maxDev <= b.length) b = patched(b, () => {});
    }
    try {
      const sb = decodeMdSuperblock(b, { deviceSectors: rnd() < 0.5 ? MEMBER_SECTORS : undefined });
      decoded++;
      assert.deepEqual(decodeMdSuperblock(encodeMdSuperblock(sb)), { ...sb, sbCsum: mdSuperblockChecksum(encodeMdSuperblock(sb)) },
        'what decodes re-encodes to the same superblock');
    } catch (e) {
      if (!(e instanceof MdFormatError)) throw new Error(`iteration ${iter}: not an MdFormatError: ${String(e)}`);
      assert.ok(e.message.length > 20, 'the message says something');
      codes.set(e.code, (codes.get(e.code) ?? 0) + 1);
    }
  }
  assert.ok(decoded > 50, `some mutations stay valid (${decoded})`);
  for (const c of ['bad-checksum', 'bad-magic', 'bad-version', 'short-buffer', 'max-dev', 'super-offset', 'padding', 'unknown-features', 'device-too-small'] as const) {
    assert.ok((codes.get(c) ?? 0) > 0, `fuzzing reached the ${c} check (${JSON.stringify([...codes])})`);
  }
});
