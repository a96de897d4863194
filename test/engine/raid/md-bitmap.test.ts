// Tests of the md bitmap superblock codec (md_bitmap_read_sb's checks), its sizing and where mdadm puts it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  BITMAP_MAGIC, BITMAP_STALE, BITMAP_SUPER_BYTES, MD_FEATURE_BITMAP_OFFSET, MDADM_BITMAP_OFFSET_V1_2,
} from '../../../engine/raid/md-constants.js';
import {
  decodeMdBitmapSuper, encodeMdBitmapSuper, mdBitmapBitAddress, mdBitmapBits, mdBitmapBytes, mdBitmapChunkOf,
  mdBitmapSector, mdBitmapSpace, mdBitmapStale, mdBitmapSyncSize, mdadmBitmapChunk, newMdBitmapSuper, type MdBitmapSuper,
} from '../../../engine/raid/md-bitmap.js';
import { MdFormatError, decodeMdSuperblock, encodeMdSuperblock, mdadmBitmapSpace, parseMdUuid, type MdFormatErrorCode } from '../../../engine/raid/md-superblock.js';
import { ARRAY_UUID, MEMBER_SECTORS, sampleSuperblock, seededRandom } from './md-fixtures.js';

const uuid = parseMdUuid(ARRAY_UUID);
const sample = (over: Partial<MdBitmapSuper> = {}): MdBitmapSuper => ({
  ...newMdBitmapSuper({ setUuid: uuid, syncSize: 200704n, chunkSize: 64 << 20 }), events: 42n, eventsCleared: 40n, ...over,
});

function refuses(bytes: Uint8Array, code: MdFormatErrorCode, msg: RegExp, array?: { setUuid: Uint8Array; events: bigint }): void {
  assert.throws(() => decodeMdBitmapSuper(bytes, array), (e: unknown) => {
    assert.ok(e instanceof MdFormatError, String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, msg);
    return true;
  });
}

test('bitmap superblock: round trip, 256 bytes, magic "bitm", fields at the kernel\'s offsets', () => {
  const bm = sample({ state: 1 << BITMAP_STALE, daemonSleep: 7, writeBehind: 256, sectorsReserved: 256, nodes: 4, version: 5, clusterName: 'c1' });
  const b = encodeMdBitmapSuper(bm);
  assert.equal(b.length, BITMAP_SUPER_BYTES);
  assert.equal(new TextDecoder().decode(b.subarray(0, 4)), 'bitm');
  const dv = new DataView(b.buffer);
  assert.equal(dv.getUint32(0, true), BITMAP_MAGIC);
  assert.equal(dv.getUint32(4, true), 5);
  assert.deepEqual(b.subarray(8, 24), uuid);
  assert.equal(dv.getBigUint64(24, true), 42n);
  assert.equal(dv.getBigUint64(32, true), 40n);
  assert.equal(dv.getBigUint64(40, true), 200704n);
  assert.equal(dv.getUint32(48, true), 2);
  assert.equal(dv.getUint32(52, true), 64 << 20);
  assert.equal(dv.getUint32(56, true), 7);
  assert.equal(dv.getUint32(60, true), 256);
  assert.equal(dv.getUint32(64, true), 256);
  assert.equal(dv.getUint32(68, true), 4);
  assert.equal(String.fromCharCode(b[72]!, b[73]!), 'c1');
  assert.ok(b.subarray(136).every((x) => x === 0));
  assert.deepEqual(decodeMdBitmapSuper(b, { setUuid: uuid, events: 42n }), bm);
  assert.throws(() => encodeMdBitmapSuper(sample({ uuid: new Uint8Array(4) })), /16 bytes/);
  assert.throws(() => encodeMdBitmapSuper(sample({ clusterName: 'x'.repeat(65) })), /at most 64/);
  assert.throws(() => encodeMdBitmapSuper(sample({ events: -1n })), /events -1/);
});

test('bitmap superblock: md_bitmap_read_sb\'s refusals', () => {
  const enc = (over: Partial<MdBitmapSuper>): Uint8Array => encodeMdBitmapSuper(sample(over));
  refuses(new Uint8Array(255), 'short-buffer', /256 bytes, 255 given/);
  refuses(new Uint8Array(4096), 'bitmap-magic', /magic is 0x00000000, not 0x6d746962/);
  refuses(enc({ version: 2 }), 'bitmap-version', /version 2 is not readable: the kernel reads versions 3\.\.5/);
  refuses(enc({ version: 6 }), 'bitmap-version', /lockless/);
  assert.equal(decodeMdBitmapSuper(enc({ version: 3 })).version, 3, 'host-endian bitmaps are still read');
  refuses(enc({ chunkSize: 256 }), 'bitmap-chunk', /256 is too small/);
  refuses(enc({ chunkSize: 3 << 20 }), 'bitmap-chunk', /not a power of 2/);
  assert.equal(decodeMdBitmapSuper(enc({ chunkSize: 512 })).chunkSize, 512);
  refuses(enc({ daemonSleep: 0 }), 'bitmap-daemon-sleep', /0 seconds/);
  refuses(enc({ writeBehind: 16384 }), 'bitmap-write-behind', /16384 is out of range \(0 - 16383\)/);
  assert.equal(decodeMdBitmapSuper(enc({ writeBehind: 16383 })).writeBehind, 16383);
  refuses(enc({}), 'bitmap-uuid', /not the array's 00000000:00000000:00000000:00000000/, { setUuid: new Uint8Array(16), events: 0n });
});

test('bitmap staleness: the stale bit, or events behind the array (not in clusters)', () => {
  assert.equal(mdBitmapStale(sample(), 42n), false);
  assert.equal(mdBitmapStale(sample(), 43n), true, 'the array moved on without the bitmap');
  assert.equal(mdBitmapStale(sample({ state: 1 << BITMAP_STALE }), 0n), true);
  assert.equal(mdBitmapStale(sample({ nodes: 2, version: 5 }), 43n), false, 'clustered bitmaps have per-node events');
  assert.equal(mdBitmapStale(newMdBitmapSuper({ setUuid: uuid, syncSize: 1n, chunkSize: 4096 }), 1n), true, 'a new bitmap (events 0) is stale: first assembly resyncs');
});

test('bitmap sizing: bits, bytes, space on the member, sync size per level', () => {
  // 98 MiB per member at 64 MiB per bit: 2 bits (mdadm -X says "2 bits (chunks)").
  assert.equal(mdBitmapBits(200704n, 64 << 20), 2);
  assert.equal(mdBitmapBits(0n, 4096), 0);
  assert.equal(mdBitmapBits(8n, 4096), 1);
  assert.equal(mdBitmapBits(9n, 4096), 2);
  assert.equal(mdBitmapBits(1n << 41n, 64 << 20), 1 << 24, '1 PiB at 64 MiB per bit');
  assert.equal(mdBitmapBytes(17), 3);
  assert.equal(mdBitmapSpace(200704n, 64 << 20), 4096);
  // 30000 bits: 3750 bytes + 256 = 4006, one 4 KiB block; 32800 bits: 4100 + 256, two blocks (or 9 sectors at 512).
  assert.equal(mdBitmapSpace(30000n * 8n, 4096), 4096);
  assert.equal(mdBitmapSpace(32800n * 8n, 4096), 8192);
  assert.equal(mdBitmapSpace(32800n * 8n, 4096, 512), 4608);
  const r5 = { level: 5 as const, layout: 2, raidDisks: 4, chunkSectors: 1024 };
  assert.equal(mdBitmapSyncSize(r5, 200704 + 100), 200704n, 'raid5: member sectors in whole chunks');
  assert.equal(mdBitmapSyncSize({ level: 1, layout: 0, raidDisks: 2, chunkSectors: 0 }, 1001), 1001n, 'raid1: the member');
  assert.equal(mdBitmapSyncSize({ level: 10, layout: 0x102, raidDisks: 4, chunkSectors: 1024 }, 204800), 409600n, 'raid10: the array');
});

test('bitmap placement: 8 sectors after a 1.2 superblock; bit i is bit i%8 of byte 256 + i/8', () => {
  assert.equal(MDADM_BITMAP_OFFSET_V1_2, 8);
  const sb = decodeMdSuperblock(encodeMdSuperblock(sampleSuperblock()));
  assert.equal(mdBitmapSector(sb), 16n, 'superblock at sector 8, bitmap 8 sectors on: byte 8192 of the member');
  assert.equal(mdBitmapSector({ ...sb, featureMap: sb.featureMap & ~MD_FEATURE_BITMAP_OFFSET }), null);
  assert.equal(mdBitmapSector({ featureMap: MD_FEATURE_BITMAP_OFFSET, superOffset: 262128n, bitmapOffset: -16 }), 262112n, '1.0: before the superblock');
  assert.deepEqual(mdBitmapBitAddress(0), { byte: 256, mask: 1 });
  assert.deepEqual(mdBitmapBitAddress(13), { byte: 257, mask: 32 });
  assert.equal(mdBitmapChunkOf(0, 65536), 0);
  assert.equal(mdBitmapChunkOf(127, 65536), 0);
  assert.equal(mdBitmapChunkOf(128, 65536), 1);
});

test('mdadm\'s default bitmap chunk: fits 128 KiB of bits, never below 64 MiB', () => {
  const room = mdadmBitmapSpace(MEMBER_SECTORS); // 8 sectors
  assert.equal(mdadmBitmapChunk(200704n, room), 64 << 20);
  // 1 TiB: 128 KiB of room holds 1046528 bits, so 2 MiB chunks would do; mdadm still picks 64 MiB.
  assert.equal(mdadmBitmapChunk(1n << 31n, 256), 64 << 20);
  // 128 TiB: 2^35 + 1 bits at 4 KiB halve 16 times to fit: 256 MiB.
  assert.equal(mdadmBitmapChunk(1n << 38n, 256), 256 << 20);
  assert.equal(mdadmBitmapChunk(1n << 41n, 1000), 2 ** 31, 'room is capped at 128 KiB');
  assert.throws(() => mdadmBitmapChunk(100n, 1), /no room for a bitmap/);
});

test('fuzz: random bitmap superblocks decode cleanly or fail with MdFormatError (seeded)', () => {
  const rnd = seededRandom(0xb17);
  const base = encodeMdBitmapSuper(sample());
  let ok = 0;
  for (let i = 0; i < 2000; i++) {
    const b = base.slice();
    for (let e = 0; e < 3; e++) b[Math.floor(rnd() * 72)] = Math.floor(rnd() * 256);
    try {
      const bm = decodeMdBitmapSuper(b.subarray(0, rnd() < 0.1 ? Math.floor(rnd() * 256) : 256));
      assert.deepEqual(decodeMdBitmapSuper(encodeMdBitmapSuper(bm)), bm);
      ok++;
    } catch (e) {
      if (!(e instanceof MdFormatError)) throw e;
    }
  }
  assert.ok(ok > 100, `some stay valid (${ok})`);
});
