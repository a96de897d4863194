// virtio-blk: the device's features and config space, and one request handler for any transport (parse, check, execute).
import type { Backend, BackendInfo, Completion } from '../../engine/backend.js';
import {
  BLK_CONFIG_SIZE, BLK_DISCARD_SEGMENT_SIZE, BLK_HEADER_SIZE, CFG_BLK_SIZE, CFG_CAPACITY, CFG_DISCARD_SECTOR_ALIGNMENT,
  CFG_MAX_DISCARD_SECTORS, CFG_MAX_DISCARD_SEG, CFG_MAX_WRITE_ZEROES_SECTORS, CFG_MAX_WRITE_ZEROES_SEG, CFG_MIN_IO_SIZE,
  CFG_NUM_QUEUES, CFG_OPT_IO_SIZE, CFG_PHYSICAL_BLOCK_EXP, CFG_SEG_MAX, CFG_WRITEBACK, CFG_WRITE_ZEROES_MAY_UNMAP, SECTOR_SIZE,
  VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
} from './constants.js';
import type { GuestMemory } from './memory.js';
import { Chain, Virtqueue } from './virtqueue.js';

/** Segments per request twindisk advertises (seg_max); requests are at most this many data segments. */
export const SEG_MAX = 254;
/** Largest discard / write-zeroes request, in sectors (32 MiB), and segments per such request. */
export const MAX_DISCARD_SECTORS = 65536;
export const MAX_DISCARD_SEG = 1;

/** Feature bits (as a mask) a virtio-blk device over `info` offers. */
export function blkFeatureBits(info: BackendInfo, numQueues: number): number[] {
  const f = [2 /* SEG_MAX */, 6 /* BLK_SIZE */, 9 /* FLUSH */, 10 /* TOPOLOGY */, 11 /* CONFIG_WCE */];
  if (numQueues > 1) f.push(12 /* MQ */);
  if (info.readOnly) f.push(5 /* RO */);
  if (info.canDiscard) f.push(13 /* DISCARD */);
  if (info.canWriteZeroes) f.push(14 /* WRITE_ZEROES */);
  return f;
}

export interface BlkConfigParams {
  info: BackendInfo;
  numQueues: number;
  writeback: boolean;
}

/** Encodes struct virtio_blk_config (little-endian, BLK_CONFIG_SIZE bytes). */
export function encodeBlkConfig(p: BlkConfigParams): Uint8Array {
  const b = new Uint8Array(BLK_CONFIG_SIZE);
  const dv = new DataView(b.buffer);
  const sectors = p.info.size / SECTOR_SIZE;
  dv.setUint32(CFG_CAPACITY, sectors % 4294967296, true);
  dv.setUint32(CFG_CAPACITY + 4, Math.floor(sectors / 4294967296), true);
  dv.setUint32(CFG_SEG_MAX, SEG_MAX, true);
  dv.setUint32(CFG_BLK_SIZE, p.info.blockSize, true);
  dv.setUint8(CFG_PHYSICAL_BLOCK_EXP, 0);
  dv.setUint16(CFG_MIN_IO_SIZE, 1, true);
  dv.setUint32(CFG_OPT_IO_SIZE, 0, true);
  dv.setUint8(CFG_WRITEBACK, p.writeback ? 1 : 0);
  dv.setUint16(CFG_NUM_QUEUES, p.numQueues, true);
  const align = p.info.blockSize / SECTOR_SIZE;
  if (p.info.canDiscard) {
    dv.setUint32(CFG_MAX_DISCARD_SECTORS, MAX_DISCARD_SECTORS, true);
    dv.setUint32(CFG_MAX_DISCARD_SEG, MAX_DISCARD_SEG, true);
    dv.setUint32(CFG_DISCARD_SECTOR_ALIGNMENT, align, true);
  }
  if (p.info.canWriteZeroes) {
    dv.setUint32(CFG_MAX_WRITE_ZEROES_SECTORS, MAX_DISCARD_SECTORS, true);
    dv.setUint32(CFG_MAX_WRITE_ZEROES_SEG, MAX_DISCARD_SEG, true);
    dv.setUint8(CFG_WRITE_ZEROES_MAY_UNMAP, p.info.canDiscard ? 1 : 0);
  }
  return b;
}

/** Counters a queue keeps; the worker reports them. */
export interface BlkStats {
  reads: number;
  writes: number;
  flushes: number;
  discards: number;
  writeZeroes: number;
  errors: number;
  malformed: number;
}

/** Logs a rejected request; rate-limited by the caller. */
export type RejectLog = (reason: string, head: number) => void;

/**
 * One in-flight request: owns the chain it was popped into and completes it (status byte, used
 * element). Slots are preallocated per queue entry, so requests allocate nothing.
 */
export class BlkRequest implements Completion {
  readonly chain: Chain;
  /** Where the status byte goes. */
  statusBuf: Uint8Array | null = null;
  statusOff = 0;
  /** Bytes written into device-writable buffers, not counting the status byte. */
  written = 0;
  busy = false;

  constructor(private readonly handler: BlkHandler, maxSegments: number) {
    this.chain = new Chain(maxSegments);
  }

  /** Backend completion: 0 or -errno. */
  complete(status: number): void {
    if (status !== 0) this.handler.stats.errors++;
    this.finish(status === 0 ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR, status === 0 ? this.written : 0);
  }

  /** Writes the status byte and returns the chain to the driver. */
  finish(status: number, written: number): void {
    let len = 0;
    if (this.statusBuf !== null) {
      this.statusBuf[this.statusOff] = status;
      len = written + 1;
    }
    this.statusBuf = null;
    this.busy = false;
    this.handler.completed(this.chain.head, len);
  }
}

export interface BlkHandlerOptions {
  serial: string;
  /** Guest-visible write cache: false makes every write durable before it completes (writethrough). */
  writeback: boolean;
  reject: RejectLog;
  /**
   * Publishes-and-signals hook: called for completions outside `drain` (asynchronous back-ends)
   * and inside it after large transfers, so the driver can reuse buffers before the batch ends.
   * It must signal the driver only if `vq.needsNotify()`.
   */
  notify?: () => void;
}

/** Bytes moved in one drain after which completions are published and signalled early. */
export const EARLY_NOTIFY_BYTES = 256 * 1024;

/**
 * Serves one virtqueue of a virtio-blk device from a Backend: pops chains, checks them against the
 * device's limits, executes them, and completes them. Transport-neutral: vhost-user workers and
 * tests (with a mock driver) both drive it through `drain`.
 */
export class BlkHandler {
  readonly stats: BlkStats = { reads: 0, writes: 0, flushes: 0, discards: 0, writeZeroes: 0, errors: 0, malformed: 0 };
  writeback: boolean;
  private readonly slots: BlkRequest[];
  private readonly id: Uint8Array;
  private readonly hdr = new Uint8Array(BLK_DISCARD_SEGMENT_SIZE);
  private inDrain = false;
  private readonly sectorsPerBlock: number;

  constructor(
    readonly backend: Backend,
    readonly vq: Virtqueue,
    private readonly mem: GuestMemory,
    private readonly opts: BlkHandlerOptions,
  ) {
    this.writeback = opts.writeback;
    // Header + SEG_MAX data segments + status, and room for segments split across memory regions.
    const maxSegs = SEG_MAX + 16;
    this.slots = Array.from({ length: vq.size }, () => new BlkRequest(this, maxSegs));
    this.id = new Uint8Array(VIRTIO_BLK_ID_BYTES);
    this.id.set(Buffer.from(opts.serial).subarray(0, VIRTIO_BLK_ID_BYTES));
    this.sectorsPerBlock = backend.info.blockSize / SECTOR_SIZE;
  }

  /**
   * Processes every available request and publishes the completions; returns true when the
   * driver should be notified. With `arm`, it finally re-enables kicks and re-checks the ring (the
   * caller is about to sleep); without, kicks stay as they are (the caller keeps polling).
   * Throws RingBrokenError when the ring itself is corrupt.
   */
  drain(arm = true): boolean {
    const vq = this.vq;
    this.inDrain = true;
    const notify = this.opts.notify;
    let moved = 0;
    try {
      for (;;) {
        let starved = false;
        for (;;) {
          const slot = this.freeSlot();
          // Every entry in flight (asynchronous back-ends): their completions resume the queue.
          if (slot === null) { starved = true; break; }
          if (!vq.pop(slot.chain)) break;
          slot.busy = true;
          this.execute(slot);
          moved += slot.chain.rd.bytes + slot.chain.wr.bytes;
          if (moved >= EARLY_NOTIFY_BYTES && notify) {
            // Large transfers: let the driver see (and reuse) these before the rest is done.
            vq.publish();
            notify();
            moved = 0;
          }
        }
        vq.publish();
        if (starved || !arm || !vq.armKick()) break;
      }
    } finally {
      this.inDrain = false;
    }
    return vq.needsNotify();
  }

  /** Requests handed to the back-end and not completed yet. */
  busyCount(): number {
    let n = 0;
    for (const s of this.slots) if (s.busy) n++;
    return n;
  }

  /**
   * Delivers asynchronous completions as one batch: `deliver` runs the back-end's completion
   * callbacks, whose used elements are published together. Returns true when the driver should
   * be notified.
   */
  completeBatch(deliver: () => void): boolean {
    const was = this.inDrain;
    this.inDrain = true;
    try {
      deliver();
    } finally {
      this.inDrain = was;
    }
    this.vq.publish();
    return this.vq.needsNotify();
  }

  /** Called by a request as it completes. */
  completed(head: number, len: number): void {
    this.vq.pushUsed(head, len);
    if (!this.inDrain) {
      this.vq.publish();
      this.opts.notify?.();
    }
  }

  private freeSlot(): BlkRequest | null {
    // Slots complete in any order; a linear scan from a rotating start is cheap for the common
    // synchronous case, where slot 0 is always free again.
    const s = this.slots;
    for (let i = 0; i < s.length; i++) if (!s[i]!.busy) return s[i]!;
    return null;
  }

  private execute(req: BlkRequest): void {
    const c = req.chain;
    const rd = c.rd;
    const wr = c.wr;
    req.statusBuf = null;
    req.written = 0;
    if (c.error !== null) {
      this.stats.malformed++;
      this.opts.reject(c.error, c.head);
      if (c.errRegion >= 0) {
        req.statusBuf = this.mem.regions[c.errRegion]!.u8;
        req.statusOff = c.errOff;
      }
      return req.finish(VIRTIO_BLK_S_IOERR, 0);
    }
    // "The final status byte is written by the device": the last byte of the writable part.
    if (wr.bytes < 1) {
      this.stats.malformed++;
      this.opts.reject('request has no writable status byte', c.head);
      return req.finish(VIRTIO_BLK_S_IOERR, 0);
    }
    const last = wr.count - 1;
    req.statusBuf = wr.bufs[last]!;
    req.statusOff = wr.offs[last]! + wr.lens[last]! - 1;
    wr.consumeBack(1);
    if (rd.bytes < BLK_HEADER_SIZE) {
      this.stats.malformed++;
      this.opts.reject('request header is shorter than 16 bytes', c.head);
      return req.finish(VIRTIO_BLK_S_IOERR, 0);
    }
    // Header: le32 type, le32 reserved, le64 sector. Read in place when the first segment holds it.
    let b: Uint8Array;
    let o: number;
    if (rd.lens[0]! >= BLK_HEADER_SIZE) {
      b = rd.bufs[0]!;
      o = rd.offs[0]!;
    } else {
      rd.gather(this.hdr, 0, BLK_HEADER_SIZE);
      b = this.hdr;
      o = 0;
    }
    const type = (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
    const sectorLo = (b[o + 8]! | (b[o + 9]! << 8) | (b[o + 10]! << 16) | (b[o + 11]! << 24)) >>> 0;
    const sectorHi = (b[o + 12]! | (b[o + 13]! << 8) | (b[o + 14]! << 16) | (b[o + 15]! << 24)) >>> 0;
    rd.consumeFront(BLK_HEADER_SIZE);
    const info = this.backend.info;
    switch (type) {
      case VIRTIO_BLK_T_IN: {
        const off = this.checkRange(req, sectorHi, sectorLo, wr.bytes, 'read');
        if (off < 0) return;
        this.stats.reads++;
        req.written = wr.bytes;
        return this.backend.read(wr, off, req);
      }
      case VIRTIO_BLK_T_OUT: {
        // "A device MUST set the status byte to VIRTIO_BLK_S_IOERR for a write request if the
        // VIRTIO_BLK_F_RO feature if offered"
        if (info.readOnly) return this.refuse(req, 'write to a read-only disk');
        const off = this.checkRange(req, sectorHi, sectorLo, rd.bytes, 'write');
        if (off < 0) return;
        this.stats.writes++;
        return this.backend.write(rd, off, !this.writeback, req);
      }
      case VIRTIO_BLK_T_FLUSH:
        this.stats.flushes++;
        return this.backend.flush(req);
      case VIRTIO_BLK_T_GET_ID: {
        const n = Math.min(VIRTIO_BLK_ID_BYTES, wr.bytes);
        let done = 0;
        for (let i = 0; i < wr.count && done < n; i++) {
          const take = Math.min(wr.lens[i]!, n - done);
          wr.bufs[i]!.set(this.id.subarray(done, done + take), wr.offs[i]!);
          done += take;
        }
        return req.finish(VIRTIO_BLK_S_OK, n);
      }
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES:
        return this.discardOrZero(req, type === VIRTIO_BLK_T_DISCARD);
      default:
        this.opts.reject(`unsupported request type ${type}`, c.head);
        return req.finish(VIRTIO_BLK_S_UNSUPP, 0);
    }
  }

  private refuse(req: BlkRequest, why: string): void {
    this.stats.errors++;
    this.opts.reject(why, req.chain.head);
    req.finish(VIRTIO_BLK_S_IOERR, 0);
  }

  /** Checks a sector range; returns its byte offset, or -1 after failing the request. */
  private checkRange(req: BlkRequest, sectorHi: number, sectorLo: number, bytes: number, what: string): number {
    const info = this.backend.info;
    if (sectorHi >= 0x200000) {
      this.refuse(req, `${what} at a sector beyond 2^53`);
      return -1;
    }
    const sector = sectorHi * 4294967296 + sectorLo;
    const off = sector * SECTOR_SIZE;
    if (bytes % info.blockSize !== 0 || sector % this.sectorsPerBlock !== 0) {
      this.refuse(req, `${what} of ${bytes} bytes at sector ${sector} is not aligned to the ${info.blockSize}-byte block size`);
      return -1;
    }
    if (off + bytes > info.size) {
      this.refuse(req, `${what} of ${bytes} bytes at sector ${sector} runs past the end of the disk (${info.size} bytes)`);
      return -1;
    }
    return off;
  }

  private discardOrZero(req: BlkRequest, isDiscard: boolean): void {
    const info = this.backend.info;
    const rd = req.chain.rd;
    const what = isDiscard ? 'discard' : 'write-zeroes';
    if (isDiscard ? !info.canDiscard : !info.canWriteZeroes) {
      if (info.readOnly) return this.refuse(req, `${what} on a read-only disk`);
      this.opts.reject(`${what} is not supported by ${info.name}`, req.chain.head);
      return req.finish(VIRTIO_BLK_S_UNSUPP, 0);
    }
    if (rd.bytes === 0 || rd.bytes % BLK_DISCARD_SEGMENT_SIZE !== 0 || rd.bytes / BLK_DISCARD_SEGMENT_SIZE > MAX_DISCARD_SEG) {
      return this.refuse(req, `${what} with ${rd.bytes} bytes of segments (1 to ${MAX_DISCARD_SEG} segments of 16 bytes allowed)`);
    }
    // Segment: le64 sector, le32 num_sectors, le32 flags.
    const s = this.hdr;
    rd.gather(s, 0, BLK_DISCARD_SEGMENT_SIZE);
    const dv = new DataView(s.buffer, s.byteOffset, BLK_DISCARD_SEGMENT_SIZE);
    const num = dv.getUint32(8, true);
    const flags = dv.getUint32(12, true);
    // "the device MUST set the status byte to VIRTIO_BLK_S_UNSUPP for discard commands if the
    // unmap flag is set" / for unknown flags
    if ((isDiscard && flags !== 0) || (flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0) {
      this.opts.reject(`${what} with unsupported flags 0x${flags.toString(16)}`, req.chain.head);
      return req.finish(VIRTIO_BLK_S_UNSUPP, 0);
    }
    if (num > MAX_DISCARD_SECTORS) return this.refuse(req, `${what} of ${num} sectors exceeds the advertised ${MAX_DISCARD_SECTORS}`);
    const off = this.checkRange(req, dv.getUint32(4, true), dv.getUint32(0, true), num * SECTOR_SIZE, what);
    if (off < 0) return;
    if (isDiscard) {
      this.stats.discards++;
      return this.backend.discard(off, num * SECTOR_SIZE, req);
    }
    this.stats.writeZeroes++;
    this.backend.writeZeroes(off, num * SECTOR_SIZE, (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0, req);
  }
}
