// A guest of plain memory for tests: guest memory as an ArrayBuffer, a driver for one ring, and the device's view of it.
import { GuestMemory } from '../../../qemu-plugin/virtio/memory.js';
import { SplitRingDriver, layoutRing } from '../../../qemu-plugin/testing/split-ring-driver.js';
import { Virtqueue } from '../../../qemu-plugin/virtio/virtqueue.js';

export interface MockGuest {
  mem: Uint8Array;
  gm: GuestMemory;
  driver: SplitRingDriver;
  vq: Virtqueue;
  /** First guest-physical address free for buffers. */
  data: number;
}

/**
 * Builds guest memory of `memSize` bytes (one region at guest-physical 0, or two regions split at
 * `splitAt` to exercise buffers that cross regions), a ring of `size` entries and its device view.
 */
export function mockGuest(opts: { memSize?: number; size?: number; eventIdx?: boolean; indirect?: boolean; splitAt?: number } = {}): MockGuest {
  const memSize = opts.memSize ?? 1 << 20;
  const size = opts.size ?? 16;
  const ab = new ArrayBuffer(memSize);
  const mem = new Uint8Array(ab);
  const regions = opts.splitAt
    ? [
        { gpa: 0, size: opts.splitAt, uaddr: 0x10000000, u8: new Uint8Array(ab, 0, opts.splitAt), dv: new DataView(ab, 0, opts.splitAt), hostAddr: 0 },
        { gpa: opts.splitAt, size: memSize - opts.splitAt, uaddr: 0x10000000 + opts.splitAt, u8: new Uint8Array(ab, opts.splitAt), dv: new DataView(ab, opts.splitAt), hostAddr: 0 },
      ]
    : [{ gpa: 0, size: memSize, uaddr: 0x10000000, u8: mem, dv: new DataView(ab), hostAddr: 0 }];
  const gm = new GuestMemory(regions);
  const { layout, bytes } = layoutRing(0, size);
  const indirectArea = (bytes + 15) & ~15;
  const driver = new SplitRingDriver(mem, layout, opts.eventIdx ?? true, indirectArea, 16);
  const vq = new Virtqueue(gm, { size, desc: { region: 0, off: layout.desc }, avail: { region: 0, off: layout.avail }, used: { region: 0, off: layout.used } }, 0, opts.eventIdx ?? true, opts.indirect ?? true);
  return { mem, gm, driver, vq, data: (indirectArea + size * 16 * 16 + 4095) & ~4095 };
}
