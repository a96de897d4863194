// A virtio-blk driver on top of SplitRingDriver: request slots with header, data and status buffers in guest memory.
import { BLK_HEADER_SIZE, VIRTIO_BLK_T_IN } from '../virtio/constants.js';
import type { SplitRingDriver } from './split-ring-driver.js';

/** One request slot's buffers (guest-physical addresses). */
interface Slot {
  hdr: number;
  data: number;
  status: number;
  started: number;
  busy: boolean;
}

/**
 * Submits virtio-blk requests on one ring. Slot `i` owns a header, `maxData` bytes of data and a
 * status byte, laid out from `base`; `dataGpa(i)` tells where its data buffer is.
 */
export class BlkDriver {
  private readonly slots: Slot[];
  private readonly byHead: Int32Array;
  readonly dv: DataView;

  /**
   * @param dataAt guest-physical address of the data buffers when they live elsewhere (another
   *   region, above 4 GiB); by default they follow the headers in `ring.mem`
   */
  constructor(readonly ring: SplitRingDriver, base: number, nslots: number, readonly maxData: number, dataAt = -1) {
    const mem = ring.mem;
    this.dv = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
    const meta = (nslots * 32 + 4095) & ~4095;
    const data = dataAt >= 0 ? dataAt : base + meta;
    this.slots = Array.from({ length: nslots }, (_, i) => ({
      hdr: base + i * 32, status: base + i * 32 + 16, data: data + i * maxData, started: 0, busy: false,
    }));
    if (base + meta + (dataAt >= 0 ? 0 : nslots * maxData) > mem.length) throw new Error('guest memory too small for the request slots');
    this.byHead = new Int32Array(ring.layout.size).fill(-1);
  }

  /** Guest-physical address of slot `i`'s data buffer. */
  dataGpa(i: number): number {
    return this.slots[i]!.data;
  }

  /**
   * Queues a request in slot `i`: `type` at `sector`, with `len` data bytes split into `segments`
   * equal buffers (direct or indirect chain). Returns the chain head.
   */
  submit(i: number, type: number, sector: number, len: number, segments = 1, indirect = false, now = 0): number {
    const s = this.slots[i]!;
    const dv = this.dv;
    dv.setUint32(s.hdr, type, true);
    dv.setUint32(s.hdr + 4, 0, true);
    dv.setUint32(s.hdr + 8, sector % 4294967296, true);
    dv.setUint32(s.hdr + 12, Math.floor(sector / 4294967296), true);
    dv.setUint8(s.status, 0xff);
    const write = type === VIRTIO_BLK_T_IN || type === 8; /* GET_ID */
    const bufs = [{ gpa: s.hdr, len: BLK_HEADER_SIZE, write: false }];
    if (len > 0) {
      const seg = Math.ceil(len / segments);
      for (let o = 0; o < len; o += seg) bufs.push({ gpa: s.data + o, len: Math.min(seg, len - o), write });
    }
    bufs.push({ gpa: s.status, len: 1, write: true });
    const head = this.ring.add(bufs, indirect);
    if (head < 0) throw new Error('ring is full');
    this.byHead[head] = i;
    s.started = now;
    s.busy = true;
    return head;
  }

  /** Reaps one completion: the slot, its status byte and used length, or null. */
  reap(): { slot: number; status: number; len: number; started: number } | null {
    const u = this.ring.reap();
    if (!u) return null;
    const slot = u.id < this.byHead.length ? this.byHead[u.id]! : -1;
    if (slot < 0) throw new Error(`device returned unknown chain head ${u.id}`);
    this.byHead[u.id] = -1;
    const s = this.slots[slot]!;
    s.busy = false;
    return { slot, status: this.dv.getUint8(s.status), len: u.len, started: s.started };
  }
}
