// Inflight I/O tracking for split rings (vhost-user INFLIGHT_SHMFD): which requests a crashed back-end had popped but not completed.
//
// The region is shared memory the front-end keeps across back-end restarts and hands back with
// SET_INFLIGHT_FD. Its layout is the back-end's own (QEMU treats it as opaque); twindisk uses the
// libvhost-user split layout: a 16-byte header per queue (features u64, version u16, desc_num u16,
// last_batch_head u16, used_idx u16), then desc_num entries of 16 bytes (inflight u8, padding[5],
// next u16, counter u64).

export const INFLIGHT_VERSION = 1;
const HEADER = 16;
const ENTRY = 16;
const ALIGN = 64;

/** Bytes one queue's region takes for a ring of `queueSize` entries. */
export function inflightQueueSize(queueSize: number): number {
  return Math.ceil((HEADER + ENTRY * queueSize) / ALIGN) * ALIGN;
}

/**
 * One queue's inflight region. `popped` marks a chain in flight; `completed` remembers heads whose
 * used elements are written; `published` clears them once the used index covering them is visible.
 * A crash between publishing and clearing is repaired from the used ring at the next start.
 */
export class InflightRegion {
  private readonly dv: DataView;
  private counter = 0;
  private readonly done: Uint16Array;
  private nDone = 0;

  constructor(mem: Uint8Array, readonly size: number) {
    if (mem.length < inflightQueueSize(size)) throw new Error(`inflight region of ${mem.length} bytes is too small for a ${size}-entry ring`);
    this.dv = new DataView(mem.buffer, mem.byteOffset, mem.length);
    this.done = new Uint16Array(size);
  }

  /** A region never used for this ring (or for a ring of another size) starts empty. */
  private fresh(): boolean {
    return this.dv.getUint16(8, true) !== INFLIGHT_VERSION || this.dv.getUint16(10, true) !== this.size;
  }

  /**
   * Prepares the region at ring start and returns the heads to resubmit, oldest first. `usedIdx`
   * is the used ring's index now, `usedIds(i)` the head stored in used element i (mod size).
   * Returns `lastAvail`, the available index after the popped-but-unfinished requests.
   */
  recover(usedIdx: number, usedIds: (i: number) => number): { resubmit: number[]; lastAvail: number } {
    const dv = this.dv;
    if (this.fresh()) {
      new Uint8Array(dv.buffer, dv.byteOffset, inflightQueueSize(this.size)).fill(0);
      dv.setUint16(8, INFLIGHT_VERSION, true);
      dv.setUint16(10, this.size, true);
      dv.setUint16(14, usedIdx, true);
      return { resubmit: [], lastAvail: -1 };
    }
    // Completions published before the crash but not yet cleared here.
    for (let i = dv.getUint16(14, true); i !== usedIdx; i = (i + 1) & 0xffff) {
      const head = usedIds(i % this.size);
      if (head < this.size) dv.setUint8(HEADER + head * ENTRY, 0);
    }
    dv.setUint16(14, usedIdx, true);
    const open: { head: number; counter: number }[] = [];
    for (let h = 0; h < this.size; h++) {
      const e = HEADER + h * ENTRY;
      if (dv.getUint8(e) === 1) open.push({ head: h, counter: Number(dv.getBigUint64(e + 8, true)) });
    }
    open.sort((a, b) => a.counter - b.counter);
    this.counter = open.length ? open[open.length - 1]!.counter + 1 : 0;
    return { resubmit: open.map((o) => o.head), lastAvail: (usedIdx + open.length) & 0xffff };
  }

  /** Marks the chain at `head` in flight (call before acting on it). */
  popped(head: number): void {
    const e = HEADER + head * ENTRY;
    const c = this.counter++;
    this.dv.setUint32(e + 8, c % 4294967296, true);
    this.dv.setUint32(e + 12, Math.floor(c / 4294967296), true);
    this.dv.setUint8(e, 1);
  }

  /** Remembers that `head`'s used element is written (not yet published). */
  completed(head: number): void {
    if (head < this.size && this.nDone < this.done.length) this.done[this.nDone++] = head;
  }

  /** After the used index `usedIdx` is published: the remembered heads are no longer in flight. */
  published(usedIdx: number): void {
    for (let i = 0; i < this.nDone; i++) this.dv.setUint8(HEADER + this.done[i]! * ENTRY, 0);
    this.nDone = 0;
    this.dv.setUint16(14, usedIdx, true);
  }
}
