// Tests of the metadata format: layout arithmetic and the unit, superblock, bitmap page and transaction codecs.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  AL_MAX_EXTENTS, AL_TX_UNITS, BITMAP_PAGE_BYTES, FLAG_PRIMARY, MAX_HISTORY, MD_FORMAT_VERSION, MD_UNIT, MetadataError,
  checkGenerations, decodeBitmapPage, decodeSuperblock, decodeTransaction, encodeBitmapPage, encodeSuperblock,
  encodeTransaction, layoutOf, metadataSize, superblockDamage, superblockProblem, unitView, type Superblock,
} from '../../../engine/replication/md-format.js';
import { crc32c } from '../../../wasm/index.js';
import { MAX_NODES } from '../../../engine/replication/frames.js';
import { MiB } from './md-fixtures.js';

test('metadataSize counts units: AL ring, bitmap pages per peer, two superblocks', () => {
  assert.equal(metadataSize(64 * MiB, 2), MD_UNIT * (64 + 2 * 1 + 2));
  assert.equal(metadataSize(64 * MiB, 0), MD_UNIT * (64 + 2));
  const pages = Math.ceil(2 ** 40 / 4096 / 8 / BITMAP_PAGE_BYTES);
  assert.equal(pages, 8323);
  assert.equal(metadataSize(2 ** 40, 1), MD_UNIT * (64 + pages + 2));
  assert.equal(metadataSize(2 ** 40, 3, 65536, 8), MD_UNIT * (8 + 3 * Math.ceil(2 ** 40 / 65536 / 8 / BITMAP_PAGE_BYTES) + 2));
  assert.throws(() => metadataSize(MiB, 1, 2048), MetadataError);
  assert.throws(() => metadataSize(MiB, 1, 4096 * 3), MetadataError);
  assert.throws(() => metadataSize(MiB, 1, 4096, 5), MetadataError);
  assert.throws(() => metadataSize(MiB, MAX_NODES), MetadataError);
});

/** A superblock for 64 MiB of external metadata data with peers 1 and 2. */
function superblock(): Superblock {
  const dataSize = 64 * MiB;
  return {
    seq: 7, mdId: 0x1122334455667788n, nodeId: 0, flags: FLAG_PRIMARY, dataSize, granularity: 4096,
    alExtentSize: 4 * MiB, alExtents: 1237, alSlots: 64, disk: 'UpToDate', peerIds: [1, 2], promotedAt: 1_700_000_000_000,
    areaOffset: 0, areaSize: metadataSize(dataSize, 2), resyncFrom: 0xabcn << 8n, resyncTotal: 99, staleFrom: 0, staleTo: 0,
    gens: { current: 0x10n, bitmap: Array.from({ length: MAX_NODES }, (_, i) => BigInt(i) << 4n), history: [0x20n, 0x30n] },
  };
}

test('superblock codec: round trip, slot check, damage reasons, another format version', () => {
  const sb = superblock();
  const u = new Uint8Array(MD_UNIT);
  encodeSuperblock(u, unitView(u), sb, 1);
  assert.deepEqual(decodeSuperblock(u, 1), sb);
  assert.equal(decodeSuperblock(u, 0), null, 'a superblock sits in the slot it names');
  assert.equal(superblockDamage(u, 0), "holds slot 1's superblock");
  assert.equal(superblockProblem(sb, sb.areaSize), null);
  assert.match(superblockProblem(sb, sb.areaSize + MD_UNIT)!, /recorded at 0/);
  assert.match(superblockProblem({ ...sb, peerIds: [1, 1] }, sb.areaSize)!, /peer list/);
  const torn = u.slice();
  torn[500]! ^= 1;
  assert.equal(decodeSuperblock(torn, 1), null);
  assert.equal(superblockDamage(torn, 1), 'checksum mismatch');
  assert.equal(superblockDamage(new Uint8Array(MD_UNIT), 1), null, 'never written is not damage');
  assert.equal(superblockDamage(new Uint8Array(MD_UNIT).fill(7), 1), 'no superblock header');
  // Another version with a valid CRC is recognised as such, not as damage.
  const other = u.slice();
  const dv = unitView(other);
  dv.setUint16(6, MD_FORMAT_VERSION + 1, true); // header: version at 6, CRC at 24 over [0, 24) and [28, 4096)
  dv.setUint32(24, crc32c(other.subarray(28), crc32c(other.subarray(0, 24))), true);
  assert.equal(decodeSuperblock(other, 1), 'version');
});

test('generations: checkGenerations bounds the history at MAX_HISTORY and wants u64 values', () => {
  const g = superblock().gens;
  checkGenerations(g);
  assert.throws(() => checkGenerations({ ...g, history: new Array(MAX_HISTORY + 1).fill(2n) }), MetadataError);
  assert.throws(() => checkGenerations({ ...g, current: 1n << 64n }), MetadataError);
  assert.throws(() => checkGenerations({ ...g, bitmap: g.bitmap.slice(1) }), MetadataError);
});

test('bitmap page codec: the page, peer and metadata id must match', () => {
  const map = new Uint8Array(BITMAP_PAGE_BYTES + 10);
  map[BITMAP_PAGE_BYTES + 3] = 0x5a;
  const u = new Uint8Array(MD_UNIT);
  encodeBitmapPage(u, map, 4, 1, 9, 77n);
  const body = decodeBitmapPage(u, 4, 1, 77n)!;
  assert.equal(body.length, BITMAP_PAGE_BYTES);
  assert.equal(body[3], 0x5a);
  assert.ok(body.subarray(10).every((b) => b === 0), 'past the end of the map: zero');
  assert.equal(decodeBitmapPage(u, 5, 1, 77n), null, 'another peer');
  assert.equal(decodeBitmapPage(u, 4, 0, 77n), null, 'another page');
  assert.equal(decodeBitmapPage(u, 4, 1, 78n), null, 'another create-md');
});

test('transaction codec: extents span both units, oldest first; counts and extents are checked', () => {
  const tx = new Uint8Array(AL_TX_UNITS * MD_UNIT);
  const views = [0, 1].map((k) => unitView(tx.subarray(k * MD_UNIT, (k + 1) * MD_UNIT)));
  const extents = Array.from({ length: AL_MAX_EXTENTS }, (_, i) => (i * 7919) % 5000);
  extents[AL_MAX_EXTENTS - 1] = 4999; // the last extent of a 5000-extent volume, in the second unit
  encodeTransaction(tx, views, extents, 42, 3, 5n);
  assert.deepEqual(decodeTransaction(tx, 3, 5n, AL_MAX_EXTENTS, 5000), { seq: 42, extents });
  assert.equal(decodeTransaction(tx, 2, 5n, AL_MAX_EXTENTS, 5000), null, 'another ring slot');
  assert.equal(decodeTransaction(tx, 3, 5n, AL_MAX_EXTENTS - 1, 5000), null, 'more extents than alExtents');
  assert.equal(decodeTransaction(tx, 3, 5n, AL_MAX_EXTENTS, 4999), null, 'an extent past the volume');
  const torn = tx.slice();
  torn[MD_UNIT + 100]! ^= 0xff;
  assert.equal(decodeTransaction(torn, 3, 5n, AL_MAX_EXTENTS, 5000), null, 'a torn second unit voids the transaction');
});

test('layoutOf: superblocks at the end, the ring first, then each peer\'s pages', () => {
  const sb = superblock();
  const l = layoutOf(sb, 'x.md');
  assert.deepEqual(l.superblocks, [sb.areaSize - 2 * MD_UNIT, sb.areaSize - MD_UNIT]);
  assert.equal(l.alOffset, 0);
  assert.equal(l.pagesPerPeer, 1);
  assert.deepEqual(l.bitmapOffsets, [64 * MD_UNIT, 65 * MD_UNIT]);
});
