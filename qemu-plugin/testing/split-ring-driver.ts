// The driver's side of a split virtqueue over a byte array of "guest memory": what a guest kernel does, for tests and benchmarks.
import {
  DESC_SIZE, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
} from '../virtio/constants.js';
import { ringSizes } from '../virtio/virtqueue.js';

/** A buffer of a request, in guest-physical terms. */
export interface DriverBuffer {
  gpa: number;
  len: number;
  /** Device-writable. */
  write: boolean;
}

export interface DriverRingLayout {
  size: number;
  /** Guest-physical addresses (offsets into `mem`) of the three ring parts. */
  desc: number;
  avail: number;
  used: number;
}

/** Lays out a ring of `size` entries at `base` (16-byte aligned); returns the layout and the bytes it takes. */
export function layoutRing(base: number, size: number): { layout: DriverRingLayout; bytes: number } {
  const s = ringSizes(size);
  const desc = base;
  const avail = desc + s.desc;
  const used = (avail + s.avail + 3) & ~3;
  return { layout: { size, desc, avail, used }, bytes: used + s.used - base };
}

/**
 * A split-ring driver. It keeps a free list of descriptors, adds chains (direct, or through an
 * indirect table it is given room for), publishes them, decides kicks with EVENT_IDX, and reaps used
 * elements. Raw setters let tests build malformed rings on purpose.
 */
export class SplitRingDriver {
  readonly dv: DataView;
  /** For the ring indices, read and written with Atomics: a full barrier, as virtio_mb() in Linux. */
  private readonly u16: Uint16Array;
  private freeHead = 0;
  private numFree: number;
  private availIdx = 0;
  private kickedAt = 0;
  private lastUsed = 0;
  private readonly chainLen: Uint16Array;

  /**
   * @param mem guest memory; gpa N is mem[N]
   * @param indirectArea gpa of room for `size` indirect tables of `maxIndirect` descriptors (0: none)
   */
  constructor(
    readonly mem: Uint8Array,
    readonly layout: DriverRingLayout,
    readonly eventIdx: boolean,
    private readonly indirectArea = 0,
    private readonly maxIndirect = 0,
  ) {
    this.dv = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
    this.u16 = new Uint16Array(mem.buffer, mem.byteOffset, mem.byteLength >>> 1);
    const n = layout.size;
    this.numFree = n;
    this.chainLen = new Uint16Array(n);
    mem.fill(0, layout.desc, layout.used + ringSizes(n).used);
    for (let i = 0; i < n; i++) this.dv.setUint16(layout.desc + i * DESC_SIZE + 14, (i + 1) % n, true);
  }

  get free(): number {
    return this.numFree;
  }

  /** Writes descriptor `i` of the ring's table (or of a table at `table`). */
  setDesc(i: number, addr: number, len: number, flags: number, next: number, table = this.layout.desc): void {
    const d = table + i * DESC_SIZE;
    this.dv.setUint32(d, addr % 4294967296, true);
    this.dv.setUint32(d + 4, Math.floor(addr / 4294967296), true);
    this.dv.setUint32(d + 8, len, true);
    this.dv.setUint16(d + 12, flags, true);
    this.dv.setUint16(d + 14, next, true);
  }

  /** Puts `head` in the available ring (not yet published). */
  pushAvailRaw(head: number): void {
    const L = this.layout;
    this.dv.setUint16(L.avail + 4 + 2 * (this.availIdx % L.size), head, true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
  }

  /** Sets the available index the device sees (tests use it to corrupt the ring). */
  setAvailIdxRaw(idx: number): void {
    this.availIdx = idx & 0xffff;
    this.publish();
  }

  /**
   * Adds a chain; returns its head, or -1 when there are not enough free descriptors. With
   * `indirect`, the chain goes into its own indirect table and takes one ring descriptor.
   */
  add(bufs: DriverBuffer[], indirect = false): number {
    const need = indirect ? 1 : bufs.length;
    if (need > this.numFree || bufs.length === 0) return -1;
    const head = this.freeHead;
    if (indirect) {
      if (!this.indirectArea || bufs.length > this.maxIndirect) throw new Error('no room for an indirect table of that length');
      const table = this.indirectArea + head * this.maxIndirect * DESC_SIZE;
      bufs.forEach((b, i) => this.setDesc(i, b.gpa, b.len, (b.write ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < bufs.length ? VIRTQ_DESC_F_NEXT : 0), i + 1, table));
      const next = this.nextOf(head);
      this.setDesc(head, table, bufs.length * DESC_SIZE, VIRTQ_DESC_F_INDIRECT, next);
      this.freeHead = next;
    } else {
      let i = head;
      let last = head;
      for (let k = 0; k < bufs.length; k++) {
        const b = bufs[k]!;
        const next = this.nextOf(i);
        this.setDesc(i, b.gpa, b.len, (b.write ? VIRTQ_DESC_F_WRITE : 0) | (k + 1 < bufs.length ? VIRTQ_DESC_F_NEXT : 0), next);
        last = i;
        i = next;
      }
      this.freeHead = i;
      // Keep the free-list link of the chain's tail for when the chain is returned.
      this.dv.setUint16(this.layout.desc + last * DESC_SIZE + 14, i, true);
    }
    this.numFree -= need;
    this.chainLen[head] = need;
    this.pushAvailRaw(head);
    return head;
  }

  private nextOf(i: number): number {
    return this.dv.getUint16(this.layout.desc + i * DESC_SIZE + 14, true);
  }

  /** Makes added chains visible to the device. */
  publish(): void {
    Atomics.store(this.u16, (this.layout.avail + 2) >>> 1, this.availIdx);
  }

  /** Publishes, and tells whether the device asked to be kicked (always true without EVENT_IDX). */
  publishAndCheckKick(): boolean {
    this.publish();
    const old = this.kickedAt;
    const now = this.availIdx;
    this.kickedAt = now;
    if (!this.eventIdx) return now !== old;
    const ev = Atomics.load(this.u16, (this.layout.used + 4 + 8 * this.layout.size) >>> 1);
    return ((now - ev - 1) & 0xffff) < ((now - old) & 0xffff);
  }

  /** Reaps one used element: `{ id, len }` of a completed chain, or null. Its descriptors return to the free list. */
  reap(): { id: number; len: number } | null {
    const L = this.layout;
    const usedIdx = Atomics.load(this.u16, (L.used + 2) >>> 1);
    if (usedIdx === this.lastUsed) return null;
    const e = L.used + 4 + 8 * (this.lastUsed % L.size);
    const id = this.dv.getUint32(e, true);
    const len = this.dv.getUint32(e + 4, true);
    this.lastUsed = (this.lastUsed + 1) & 0xffff;
    if (id < L.size && this.chainLen[id]) {
      // The chain's descriptors (or its one indirect descriptor) go back on the free list.
      let tail = id;
      const n = this.chainLen[id]!;
      for (let k = 1; k < n; k++) tail = this.nextOf(tail);
      this.dv.setUint16(L.desc + tail * DESC_SIZE + 14, this.freeHead, true);
      this.freeHead = id;
      this.numFree += n;
      this.chainLen[id] = 0;
    }
    if (this.eventIdx) Atomics.store(this.u16, (L.avail + 4 + 2 * L.size) >>> 1, this.lastUsed); // used_event
    return { id, len };
  }
}
