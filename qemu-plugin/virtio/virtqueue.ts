// A split virtqueue as the device sees it: pop descriptor chains into I/O vectors, push used elements, decide notifications.
import { IoVector } from '../../engine/iovec.js';
import {
  DESC_SIZE, MAX_INDIRECT, MAX_QUEUE_SIZE, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from './constants.js';
import type { VringLog } from './dirty-log.js';
import type { InflightRegion } from './inflight.js';
import type { GuestMemory } from './memory.js';

/** Where a ring part lives: a region index of the GuestMemory and a byte offset in it. */
export interface RingPart {
  region: number;
  off: number;
}

export interface RingLayout {
  size: number;
  desc: RingPart;
  avail: RingPart;
  used: RingPart;
}

/** Byte sizes of the three parts of a split ring of `size` entries (with the event-index words). */
export function ringSizes(size: number): { desc: number; avail: number; used: number } {
  return { desc: DESC_SIZE * size, avail: 6 + 2 * size, used: 6 + 8 * size };
}

/** A popped descriptor chain: device-readable and device-writable segments, or why it is malformed. */
export class Chain {
  head = 0;
  readonly rd: IoVector;
  readonly wr: IoVector;
  /** Why the chain is malformed (null when it is well formed). */
  error: string | null = null;
  /** With an error: where the chain's last writable byte is, to report the error there (-1: nowhere safe). */
  errRegion = -1;
  errOff = 0;

  constructor(maxSegments: number) {
    this.rd = new IoVector(maxSegments);
    this.wr = new IoVector(maxSegments);
  }
}

/** The queue's ring was corrupted by the driver; the queue stops until the front-end resets it. */
export class RingBrokenError extends Error {
  override readonly name = 'RingBrokenError';
}

/**
 * One split virtqueue over guest memory. Not thread-safe: one worker owns it. Every index read
 * from the driver is checked before use; a malformed chain becomes `Chain.error`, never an access
 * outside guest memory.
 */
export class Virtqueue {
  readonly size: number;
  lastAvail: number;
  /** While the front-end logs dirty pages (live migration): where completions and the used ring are marked. */
  dirtyLog: VringLog | null = null;
  private usedIdx: number;
  private signalledUsed: number;
  private readonly avail16: Uint16Array;
  private readonly used16: Uint16Array;
  private readonly used32: Uint32Array;
  private readonly descDv: DataView;
  private readonly descOff: number;
  private readonly usedEventI: number;
  private readonly availEventI: number;
  /** Heads a previous back-end popped and never completed (inflight tracking), served first. */
  private readonly resubmit: number[] = [];

  /**
   * @param base the ring's first available index (SET_VRING_BASE); the used index starts from the
   *   ring's current value, so requests completed before a restart are not repeated.
   */
  constructor(
    private readonly mem: GuestMemory,
    layout: RingLayout,
    base: number,
    readonly eventIdx: boolean,
    readonly indirect: boolean,
    private readonly inflight: InflightRegion | null = null,
  ) {
    const size = layout.size;
    if (!(size >= 1 && size <= MAX_QUEUE_SIZE)) throw new RingBrokenError(`queue size ${size} is outside 1..${MAX_QUEUE_SIZE}`);
    this.size = size;
    const sz = ringSizes(size);
    const part = (p: RingPart, len: number, align: number, what: string): Uint8Array => {
      const r = mem.regions[p.region];
      if (!r || p.off < 0 || p.off + len > r.size) throw new RingBrokenError(`${what} lies outside guest memory`);
      if ((r.u8.byteOffset + p.off) % align !== 0) throw new RingBrokenError(`${what} is not ${align}-byte aligned`);
      return r.u8;
    };
    part(layout.desc, sz.desc, 16, 'descriptor table');
    this.descDv = mem.regions[layout.desc.region]!.dv;
    this.descOff = layout.desc.off;
    const a = part(layout.avail, sz.avail, 2, 'available ring');
    this.avail16 = new Uint16Array(a.buffer, a.byteOffset + layout.avail.off, 3 + size);
    const u = part(layout.used, sz.used, 4, 'used ring');
    this.used16 = new Uint16Array(u.buffer, u.byteOffset + layout.used.off, 3 + 4 * size);
    this.used32 = new Uint32Array(u.buffer, u.byteOffset + layout.used.off + 4, 2 * size);
    this.usedEventI = 2 + size;
    this.availEventI = 2 + 4 * size;
    this.lastAvail = base & 0xffff;
    this.usedIdx = Atomics.load(this.used16, 1);
    this.signalledUsed = this.usedIdx;
    if (inflight) {
      // After a back-end crash the front-end's base is not to be trusted: resume after what was
      // popped, and serve again what was popped but never completed.
      const r = inflight.recover(this.usedIdx, (i) => this.used32[2 * i]!);
      if (r.lastAvail >= 0) this.lastAvail = r.lastAvail;
      this.resubmit.push(...r.resubmit);
    }
  }

  /** Requests to serve again after a back-end restart (inflight tracking). */
  get resubmitting(): number {
    return this.resubmit.length;
  }

  /** Requests the driver made available and not yet popped. */
  pending(): number {
    return ((Atomics.load(this.avail16, 1) - this.lastAvail) & 0xffff) + this.resubmit.length;
  }

  /**
   * Pops the next chain into `c`. Returns false when the ring is empty. Throws RingBrokenError
   * when the driver moved the available index by more than the queue size.
   */
  pop(c: Chain): boolean {
    if (this.resubmit.length > 0) {
      const h = this.resubmit.shift()!;
      c.head = h;
      this.walk(c, h);
      return true;
    }
    const availIdx = Atomics.load(this.avail16, 1);
    const n = (availIdx - this.lastAvail) & 0xffff;
    if (n === 0) return false;
    if (n > this.size) {
      throw new RingBrokenError(`available index ${availIdx} is ${n} entries ahead of ${this.lastAvail}, more than the queue size ${this.size}`);
    }
    const head = this.avail16[2 + (this.lastAvail % this.size)]!; // ring[] follows flags and idx
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    c.head = head;
    if (this.inflight && head < this.size) this.inflight.popped(head);
    this.walk(c, head);
    return true;
  }

  /** Records a used element (the chain's head and the bytes written into it); publish() makes it visible. */
  pushUsed(head: number, len: number): void {
    const slot = (this.usedIdx % this.size) * 2;
    this.used32[slot] = head;
    this.used32[slot + 1] = len;
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    this.inflight?.completed(head);
  }

  /** Publishes the used index (release: elements are written before it). */
  publish(): void {
    Atomics.store(this.used16, 1, this.usedIdx);
    this.inflight?.published(this.usedIdx);
  }

  /**
   * Asks the driver to kick at the next request (EVENT_IDX: avail_event = lastAvail; otherwise
   * clears VIRTQ_USED_F_NO_NOTIFY), then reports whether requests arrived meanwhile, which the
   * caller must process: "the device MUST check the ring again after writing avail_event".
   */
  armKick(): boolean {
    if (this.eventIdx) Atomics.store(this.used16, this.availEventI, this.lastAvail);
    else Atomics.store(this.used16, 0, 0);
    return this.pending() !== 0;
  }

  /**
   * Asks the driver not to kick (while the device polls the ring). With EVENT_IDX the stale
   * avail_event already does that; without it, VIRTQ_USED_F_NO_NOTIFY is set.
   */
  suppressKicks(): void {
    if (!this.eventIdx) Atomics.store(this.used16, 0, VIRTQ_USED_F_NO_NOTIFY);
  }

  /** Whether the driver wants an interrupt for the used elements published since the last call. */
  needsNotify(): boolean {
    const now = this.usedIdx;
    const old = this.signalledUsed;
    this.signalledUsed = now;
    if (now === old) return false;
    if (this.eventIdx) {
      const ev = Atomics.load(this.avail16, this.usedEventI);
      return ((now - ev - 1) & 0xffff) < ((now - old) & 0xffff);
    }
    return (Atomics.load(this.avail16, 0) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /** Walks the chain at `head` into c.rd / c.wr, checking every index, length and address. */
  private walk(c: Chain, head: number): void {
    c.rd.reset();
    c.wr.reset();
    c.error = null;
    c.errRegion = -1;
    const mem = this.mem;
    let dv = this.descDv;
    let base = this.descOff;
    let tableSize = this.size;
    let max = this.size;
    let i = head;
    let n = 0;
    let inIndirect = false;
    let seenWritable = false;
    let lastAddr = 0;
    let lastLen = 0;
    let lastWritable = false;
    for (;;) {
      if (i >= tableSize) { c.error = 'descriptor index out of range'; return; }
      if (++n > max) { c.error = 'descriptor chain loops or is longer than its table'; return; }
      const d = base + i * DESC_SIZE;
      const addr = dv.getUint32(d, true) + dv.getUint32(d + 4, true) * 4294967296;
      const len = dv.getUint32(d + 8, true);
      const flags = dv.getUint16(d + 12, true);
      const next = dv.getUint16(d + 14, true);
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.indirect) { c.error = 'indirect descriptor, but INDIRECT_DESC was not negotiated'; return; }
        // "The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag within an indirect descriptor"
        if (inIndirect) { c.error = 'indirect descriptor inside an indirect table'; return; }
        // "A driver MUST NOT set both VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT in flags"
        if (flags & VIRTQ_DESC_F_NEXT) { c.error = 'descriptor has both INDIRECT and NEXT'; return; }
        if (len === 0 || len % DESC_SIZE !== 0 || len / DESC_SIZE > MAX_INDIRECT) { c.error = 'indirect table length is invalid'; return; }
        const ri = mem.findGpaRange(addr, len);
        if (ri < 0) { c.error = 'indirect table outside guest memory'; return; }
        dv = mem.regions[ri]!.dv;
        base = mem.off;
        tableSize = max = len / DESC_SIZE;
        i = 0;
        n = 0;
        inIndirect = true;
        continue;
      }
      const writable = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      // "A driver MUST place any device-writable descriptor elements after any device-readable ones"
      if (writable) seenWritable = true;
      else if (seenWritable && c.error === null) c.error = 'device-readable descriptor after a device-writable one';
      if (c.error === null) this.addSegments(c, writable ? c.wr : c.rd, addr, len);
      lastAddr = addr;
      lastLen = len;
      lastWritable = writable;
      if (!(flags & VIRTQ_DESC_F_NEXT)) break;
      i = next;
    }
    if (c.error !== null && lastWritable && lastLen > 0) {
      const ri = mem.findGpa(lastAddr + lastLen - 1);
      if (ri >= 0) {
        c.errRegion = ri;
        c.errOff = mem.off;
      }
    }
  }

  private addSegments(c: Chain, v: IoVector, addr: number, len: number): void {
    const mem = this.mem;
    while (len > 0) {
      const ri = mem.findGpa(addr);
      if (ri < 0) { c.error = 'buffer outside guest memory'; return; }
      const r = mem.regions[ri]!;
      const off = mem.off;
      const take = Math.min(len, r.size - off);
      if (!v.push(r.u8, off, take, r.hostAddr === 0 ? 0 : r.hostAddr + off)) {
        c.error = 'request has more segments than the device accepts (seg_max)';
        return;
      }
      addr += take;
      len -= take;
    }
  }
}
