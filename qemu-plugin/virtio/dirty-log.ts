// Dirty page logging for live migration: the pages of guest memory a device wrote, marked in the front-end's log bitmap.
//
// vhost-user "Migration": the log is shared memory (SET_LOG_BASE) holding one bit per VHOST_LOG_PAGE
// of guest-physical address space, "page = addr / VHOST_LOG_PAGE; log[page / 8] |= 1 << page % 8",
// and "use atomic operations, as the log may be concurrently manipulated": QEMU reads and clears it
// (an atomic exchange per word) while queue workers set bits. A page is marked after the device wrote
// it, so a page QEMU sent between the write and the mark is sent again; the used index that tells
// the driver about a request is published after the request's buffers are marked.
import type { IoVector } from '../../engine/iovec.js';
import type { GuestMemory } from './memory.js';

/** VHOST_LOG_PAGE: guest bytes one bit of the log stands for. */
export const LOG_PAGE_SIZE = 0x1000;

/** Bytes of log needed to cover guest-physical addresses below `end`. */
export function logBytesFor(end: number): number {
  return Math.ceil(Math.ceil(end / LOG_PAGE_SIZE) / 8);
}

/**
 * The log bitmap. `mark` sets the bits of every page a byte range touches; bits beyond the bitmap
 * (an address the front-end did not size the log for) are counted in `outside`, never written.
 */
export class DirtyLog {
  /** Marks that fell (partly) outside the bitmap. */
  outside = 0;

  constructor(readonly bits: Uint8Array) {}

  /** Marks the pages under [gpa, gpa + len). */
  mark(gpa: number, len: number): void {
    if (len <= 0) return;
    const bits = this.bits;
    let first = Math.floor(gpa / LOG_PAGE_SIZE);
    let last = Math.floor((gpa + len - 1) / LOG_PAGE_SIZE);
    const max = bits.length * 8 - 1;
    if (last > max) {
      this.outside++;
      if (first > max) return;
      last = max;
    }
    // Leading bits up to a byte boundary, whole bytes, trailing bits: a 1 MiB buffer is 32 byte stores, not 256 ORs.
    while (first <= last && (first & 7) !== 0) {
      Atomics.or(bits, first >>> 3, 1 << (first & 7));
      first++;
    }
    const wholeEnd = (last + 1) & ~7;
    // A byte with every bit set cannot lose a bit to a concurrent exchange: storing 0xff is an OR of 0xff.
    if (wholeEnd > first) {
      bits.fill(0xff, first >>> 3, wholeEnd >>> 3);
      first = wholeEnd;
    }
    for (; first <= last; first++) Atomics.or(bits, first >>> 3, 1 << (first & 7));
  }

  /** Whether the page holding `gpa` is marked (tests, diagnostics). */
  isMarked(gpa: number): boolean {
    const page = Math.floor(gpa / LOG_PAGE_SIZE);
    return page < this.bits.length * 8 && (this.bits[page >>> 3]! & (1 << (page & 7))) !== 0;
  }
}

/**
 * Told of every range a VringLog marks, at the guest-physical address it marked: a record of what the
 * device wrote during a migration, for tests and diagnosis (see queue-worker.ts, TWINDISK_DIRTY_LOG_AUDIT).
 */
export interface DirtyLogAudit {
  marked(gpa: number, len: number): void;
}

/**
 * One virtqueue's view of the log while logging is on: the log, the guest memory the ring's buffers
 * live in (to find a buffer's guest-physical address), and the used ring's log address
 * (SET_VRING_ADDR's log_guest_addr). A virtqueue carries one (`Virtqueue.dirtyLog`) or null; every
 * caller tests for null first, so logging off costs one branch.
 */
export class VringLog {
  /** Told of each range marked (null: no audit, the normal case). */
  audit: DirtyLogAudit | null = null;

  constructor(
    readonly log: DirtyLog,
    private readonly mem: GuestMemory,
    /** Guest-physical address the used ring's first byte is logged at. */
    readonly usedGpa: number,
    /** Bytes of the used ring: flags, idx, the elements and avail_event. */
    readonly usedBytes: number,
  ) {}

  /**
   * Marks the used ring: its elements, idx, flags and avail_event. Called after each publish, so
   * every write to the ring (elements, index, the flags and event words between batches) is
   * followed by a mark; the ring is a few pages, so marking all of it costs less than tracking which.
   */
  markUsed(): void {
    this.log.mark(this.usedGpa, this.usedBytes);
    this.audit?.marked(this.usedGpa, this.usedBytes);
  }

  /**
   * Marks what a request's completion wrote into guest memory: `data` (device-writable buffers,
   * or null) in full, and the status byte at `statusOff` of `statusBuf` (null: none was written).
   * Both are views of guest memory regions, as the virtqueue popped them.
   */
  markRequest(data: IoVector | null, statusBuf: Uint8Array | null, statusOff: number): void {
    if (data !== null) {
      for (let i = 0; i < data.count; i++) this.markIn(data.bufs[i]!, data.offs[i]!, data.lens[i]!);
    }
    if (statusBuf !== null) this.markIn(statusBuf, statusOff, 1);
  }

  /** Marks `len` bytes at `off` of `buf`, a view of one of the guest memory regions. */
  markIn(buf: Uint8Array, off: number, len: number): void {
    const rs = this.mem.regions;
    const at = buf.byteOffset + off;
    for (let i = 0; i < rs.length; i++) {
      const r = rs[i]!;
      const o = at - r.u8.byteOffset;
      if (r.u8.buffer === buf.buffer && o >= 0 && o < r.size) {
        this.log.mark(r.gpa + o, len);
        this.audit?.marked(r.gpa + o, len);
        return;
      }
    }
    // Not guest memory (a test's scratch buffer): nothing of the guest's changed.
  }
}
