// Tests of guest memory views: regions cut into pieces, lookups by guest-physical and front-end address, and chains whose buffers cross pieces and regions.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GuestMemory, MAX_VIEW_BYTES, PIECE_OVERLAP, PIECE_STRIDE, pieceLayout } from '../../../qemu-plugin/virtio/memory.js';
import { SplitRingDriver, layoutRing } from '../../../qemu-plugin/testing/split-ring-driver.js';
import { Chain, Virtqueue } from '../../../qemu-plugin/virtio/virtqueue.js';

const GiB = 2 ** 30;

test('pieces: every view fits Node 20\'s 4 GiB limit, covers its region once, and reaches into the next piece', () => {
  assert.ok(PIECE_STRIDE + PIECE_OVERLAP <= MAX_VIEW_BYTES);
  assert.deepEqual(pieceLayout(1 << 20), [{ off: 0, len: 1 << 20 }]);
  const six = pieceLayout(6 * GiB);
  assert.deepEqual(six.map((p) => p.off), [0, 2 * GiB, 4 * GiB]);
  assert.deepEqual(six.map((p) => p.len), [2 * GiB + PIECE_OVERLAP, 2 * GiB + PIECE_OVERLAP, 2 * GiB]);
  // A region just past a stride: the last piece is short, the one before reaches to the end.
  assert.deepEqual(pieceLayout(2 * GiB + 4096), [{ off: 0, len: 2 * GiB + 4096 }, { off: 2 * GiB, len: 4096 }]);
  assert.throws(() => pieceLayout(GiB, 4 * GiB, 1), /cannot be viewed/);
});

/** Two regions over one ArrayBuffer, cut into pieces of `stride` reaching `overlap` further: region A at gpa 0, region B at `bGpa` (above 4 GiB). */
function twoRegions(stride: number, overlap: number, bGpa = 2 ** 32 + 0x10000) {
  const aSize = Math.min(stride, 64 * 1024);
  const bSize = 10 * stride + 100;
  const ab = new ArrayBuffer(aSize + bSize);
  const all = new Uint8Array(ab);
  const gm = GuestMemory.fromRegions([
    { gpa: 0, size: aSize, uaddr: 0x7f0000000000, hostAddr: 0, view: (off, len) => new Uint8Array(ab, off, len) },
    { gpa: bGpa, size: bSize, uaddr: 0x7f1000000000, hostAddr: 0x10000, view: (off, len) => new Uint8Array(ab, aSize + off, len) },
  ], stride, overlap);
  /** The byte of guest-physical `gpa` in the shared buffer. */
  const at = (gpa: number) => (gpa < aSize ? gpa : aSize + gpa - bGpa);
  return { gm, all, aSize, bSize, bGpa, at };
}

test('lookups: the piece is found by division, ranges up to the overlap never cross views, gaps and ends are misses', () => {
  const stride = 4096;
  const t = twoRegions(stride, 256);
  const { gm, bGpa } = t;
  assert.equal(gm.regionCount, 2);
  assert.equal(gm.regions.length, 1 + 11, 'region A is one view, region B eleven');
  for (const gpa of [0, 100, 4095, bGpa, bGpa + 1, bGpa + stride - 1, bGpa + stride, bGpa + 7 * stride + 5, bGpa + t.bSize - 1]) {
    const i = gm.findGpa(gpa);
    assert.ok(i >= 0, `0x${gpa.toString(16)} found`);
    const v = gm.regions[i]!;
    assert.equal(v.gpa + gm.off, gpa, `0x${gpa.toString(16)}: view and offset name the same byte`);
    assert.ok(gm.off < stride || gm.regions.length === 1 || v.gpa === 0, 'offset inside the nominal piece');
    assert.equal(v.u8.byteOffset + gm.off, t.at(gpa), 'the view is over the right bytes');
  }
  for (const gpa of [4096, bGpa - 1, bGpa + t.bSize, 2 ** 52]) assert.equal(gm.findGpa(gpa), -1, `0x${gpa.toString(16)} is not guest memory`);
  // A range starting 100 bytes before a piece's end: inside the overlap (one view), beyond it (none).
  assert.ok(gm.findGpaRange(bGpa + stride - 100, 356) >= 0);
  assert.equal(gm.findGpaRange(bGpa + stride - 100, 357), -1);
  assert.equal(gm.findGpaRange(bGpa + t.bSize - 10, 11), -1, 'past the region\'s end');
  // Front-end addresses (ring parts) resolve the same way.
  const i = gm.findUaddr(0x7f1000000000 + 3 * stride - 8, 200);
  assert.equal(gm.regions[i]!.gpa + gm.off, bGpa + 3 * stride - 8);
  assert.equal(gm.regions[i]!.hostAddr + gm.off, 0x10000 + 3 * stride - 8, 'host addresses follow the view');
  assert.equal(gm.findUaddr(0x7f1000000000 + t.bSize - 4, 8), -1);
});

test('a buffer above 4 GiB crossing piece boundaries becomes one segment per view it crosses', () => {
  const stride = 4096;
  const t = twoRegions(stride, 64, 0x100000000);
  const { gm, all, bGpa } = t;
  const { layout } = layoutRing(0, 8);
  const mem = new Uint8Array(all.buffer, 0, t.aSize);
  for (let i = 0; i < all.length; i++) all[i] = (i * 7) & 255;
  const driver = new SplitRingDriver(mem, layout, true);
  const vq = new Virtqueue(gm, { size: 8, desc: { region: 0, off: layout.desc }, avail: { region: 0, off: layout.avail }, used: { region: 0, off: layout.used } }, 0, true, false);
  // 3 strides' worth starting 1000 bytes before a piece boundary: 4 pieces touched.
  const start = bGpa + 2 * stride - 1000;
  const len = 3 * stride;
  driver.add([{ gpa: 2048, len: 16, write: false }, { gpa: start, len, write: true }]);
  driver.publish();
  const c = new Chain(16);
  assert.equal(vq.pop(c), true);
  assert.equal(c.error, null);
  assert.equal(c.rd.count, 1);
  assert.equal(c.wr.count, 4);
  assert.equal(c.wr.bytes, len);
  // Each segment runs to the end of its view (into the overlap); the next starts where it stopped.
  assert.deepEqual([...c.wr.lens.subarray(0, 4)], [1000 + 64, stride, stride, stride - 1000 - 64]);
  // The segments are the guest's bytes, in order.
  const got: number[] = [];
  for (let k = 0; k < c.wr.count; k++) got.push(...c.wr.bufs[k]!.subarray(c.wr.offs[k]!, c.wr.offs[k]! + c.wr.lens[k]!));
  assert.deepEqual(got, [...all.subarray(t.at(start), t.at(start) + len)]);
  assert.equal(c.wr.addrs[0], 0x10000 + 2 * stride - 1000, 'host addresses of the first segment');
  assert.equal(c.wr.addrs[1], 0x10000 + 2 * stride + 64);
  // A buffer in the overlap stays whole: 40 bytes across a boundary.
  driver.add([{ gpa: bGpa + 5 * stride - 20, len: 40, write: false }]);
  driver.publish();
  assert.equal(vq.pop(c), true);
  assert.equal(c.rd.count, 1);
  // Past the end of region B: refused, never followed.
  driver.add([{ gpa: bGpa + t.bSize - 10, len: 20, write: false }]);
  driver.publish();
  assert.equal(vq.pop(c), true);
  assert.match(c.error ?? '', /outside guest memory/);
});

test('regions that touch: a buffer running from one into the next is split at the region boundary', () => {
  const ab = new ArrayBuffer(3 * 4096);
  const all = new Uint8Array(ab);
  const gm = GuestMemory.fromRegions([
    { gpa: 0x100000000, size: 4096, uaddr: 0x1000, hostAddr: 0, view: (off, len) => new Uint8Array(ab, off, len) },
    { gpa: 0x100001000, size: 8192, uaddr: 0x9000, hostAddr: 0, view: (off, len) => new Uint8Array(ab, 4096 + off, len) },
  ], 4096, 64);
  const i = gm.findGpa(0x100000ff0);
  assert.equal(gm.regions[i]!.size - gm.off, 16, 'region A\'s view ends at its region: no overlap into another region');
  const j = gm.findGpa(0x100001010);
  all[4096 + 16] = 0xab;
  assert.equal(gm.regions[j]!.u8[gm.off], 0xab);
});
