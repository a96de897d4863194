// Tests of the pure virtio-blk request parser: chains built by a mock driver in, typed requests out, nothing executed.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BlkOp, BlkRequest, parseBlkRequest } from '../../../qemu-plugin/virtio/blk-request.js';
import {
  VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
} from '../../../qemu-plugin/virtio/constants.js';
import type { DriverBuffer } from '../../../qemu-plugin/testing/split-ring-driver.js';
import { Chain } from '../../../qemu-plugin/virtio/virtqueue.js';
import { mockGuest } from './mock.js';

/** Writes a header (type, sector as a bigint) at guest address `at`. */
function header(mem: Uint8Array, at: number, type: number, sector: bigint): void {
  const dv = new DataView(mem.buffer, at, 16);
  dv.setUint32(0, type, true);
  dv.setUint32(4, 0xdead, true); // reserved: ignored
  dv.setBigUint64(8, sector, true);
}

/** Adds `bufs` as one chain, pops it and parses it. */
function parse(setup: (g: ReturnType<typeof mockGuest>) => DriverBuffer[]) {
  const g = mockGuest({ size: 8 });
  g.driver.add(setup(g));
  g.driver.publish();
  const c = new Chain(16);
  assert.equal(g.vq.pop(c), true);
  const r = new BlkRequest();
  parseBlkRequest(c, g.gm, r);
  return { g, c, r };
}

test('a read: sector from the header, data = the writable bytes before the status byte', () => {
  const { g, c, r } = parse((g) => {
    header(g.mem, g.data, VIRTIO_BLK_T_IN, 123456789012n);
    return [{ gpa: g.data, len: 16, write: false }, { gpa: g.data + 4096, len: 4096, write: true }, { gpa: g.data + 64, len: 1, write: true }];
  });
  assert.equal(r.op, BlkOp.Read);
  assert.equal(r.sector, 123456789012);
  assert.equal(r.data, c.wr);
  assert.equal(r.data!.bytes, 4096, 'the status byte is not data');
  assert.equal(r.statusBuf, g.gm.regions[0]!.u8);
  assert.equal(r.statusOff, g.data + 64);
  assert.equal(c.rd.bytes, 0, 'the header is consumed');
});

test('a write whose header shares a descriptor with its data; the status byte at the end of a data buffer', () => {
  const { g, r } = parse((g) => {
    header(g.mem, g.data, VIRTIO_BLK_T_OUT, 8n);
    return [{ gpa: g.data, len: 16 + 512, write: false }, { gpa: g.data + 8192, len: 1, write: true }];
  });
  assert.equal(r.op, BlkOp.Write);
  assert.equal(r.sector, 8);
  assert.deepEqual([r.data!.count, r.data!.offs[0], r.data!.bytes], [1, g.data + 16, 512]);
  assert.equal(r.statusOff, g.data + 8192);
});

test('a header split over three descriptors is read through the scratch buffer', () => {
  const { r } = parse((g) => {
    header(g.mem, g.data, VIRTIO_BLK_T_IN, 2n ** 40n + 5n);
    return [
      { gpa: g.data, len: 3, write: false }, { gpa: g.data + 3, len: 9, write: false }, { gpa: g.data + 12, len: 4, write: false },
      { gpa: g.data + 4096, len: 513, write: true },
    ];
  });
  assert.equal(r.op, BlkOp.Read);
  assert.equal(r.sector, 2 ** 40 + 5);
  assert.equal(r.data!.bytes, 512);
  assert.equal(r.statusOff, r.data!.offs[0]! + 512);
});

test('flush, GET_ID, unknown types, and a sector of 2^53 or more', () => {
  const kinds: [number, BlkOp][] = [[VIRTIO_BLK_T_FLUSH, BlkOp.Flush], [VIRTIO_BLK_T_GET_ID, BlkOp.GetId], [77, BlkOp.Unsupported]];
  for (const [type, op] of kinds) {
    const { r } = parse((g) => {
      header(g.mem, g.data, type, 0n);
      return [{ gpa: g.data, len: 16, write: false }, { gpa: g.data + 4096, len: 21, write: true }];
    });
    assert.equal(r.op, op, `type ${type}`);
    assert.equal(r.type, type);
  }
  const { r } = parse((g) => {
    header(g.mem, g.data, VIRTIO_BLK_T_IN, 2n ** 53n);
    return [{ gpa: g.data, len: 16, write: false }, { gpa: g.data + 4096, len: 513, write: true }];
  });
  assert.equal(r.sector, -1, 'no disk is that large: the executor refuses it');
});

test('discard and write-zeroes: the first segment is decoded; how many may come is not the parser\'s call', () => {
  for (const type of [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES]) {
    const { r } = parse((g) => {
      header(g.mem, g.data, type, 0n);
      const seg = new DataView(g.mem.buffer, g.data + 512, 32);
      seg.setBigUint64(0, 4096n, true);
      seg.setUint32(8, 64, true);
      seg.setUint32(12, 1, true);
      return [{ gpa: g.data, len: 16, write: false }, { gpa: g.data + 512, len: 32, write: false }, { gpa: g.data + 64, len: 1, write: true }];
    });
    assert.equal(r.op, type === VIRTIO_BLK_T_DISCARD ? BlkOp.Discard : BlkOp.WriteZeroes);
    assert.deepEqual([r.segSector, r.segSectors, r.segFlags, r.data!.bytes], [4096, 64, 1, 32]);
  }
});

test('malformed: no status byte, a short header, a broken chain (its status byte located only when safe)', () => {
  const none = parse((g) => [{ gpa: g.data, len: 16, write: false }]).r;
  assert.deepEqual([none.op, none.statusBuf], [BlkOp.Malformed, null]);
  assert.match(none.error!, /no writable status byte/);
  const short = parse((g) => [{ gpa: g.data, len: 15, write: false }, { gpa: g.data + 64, len: 1, write: true }]);
  assert.equal(short.r.op, BlkOp.Malformed);
  assert.match(short.r.error!, /shorter than 16/);
  assert.equal(short.r.statusOff, short.g.data + 64, 'the status byte is reported');
  const outside = parse((g) => [
    { gpa: g.data, len: 16, write: false }, { gpa: 0xfff00000, len: 512, write: true }, { gpa: g.data + 64, len: 1, write: true },
  ]);
  assert.equal(outside.r.op, BlkOp.Malformed);
  assert.match(outside.r.error!, /outside guest memory/);
  assert.equal(outside.r.statusOff, outside.g.data + 64);
});
