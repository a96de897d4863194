// virtio-blk's request handler for any transport: pop a chain, parse it, check it against the disk, execute it on a Backend, complete it.
import type { Backend, Completion } from '../../engine/backend.js';
import { copyToVector } from '../../engine/iovec.js';
import { MAX_DISCARD_SECTORS, MAX_DISCARD_SEG, SEG_MAX } from './blk-config.js';
import { BlkOp, BlkRequest, parseBlkRequest } from './blk-request.js';
import { BlkQueueStats, STAT_DISCARD, STAT_FLUSH, STAT_OTHER, STAT_READ, STAT_WRITE, STAT_WRITE_ZEROES } from './blk-stats.js';
import {
  BLK_DISCARD_SEGMENT_SIZE, SECTOR_SIZE, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
} from './constants.js';
import type { GuestMemory } from './memory.js';
import { DrainStop, type DeviceSettings, type QueueContext, type QueueHandler, type RejectLog } from './queue-handler.js';
import { Chain, Virtqueue } from './virtqueue.js';

/**
 * Most request slots one queue allocates (~17 KiB each: two vectors of SEG_MAX segments). Slots are
 * made as requests in flight first need them, so a synchronous back-end uses one and a 32768-entry
 * queue costs nothing up front; beyond this many in flight, the queue waits for completions.
 */
export const MAX_SLOTS = 256;

/**
 * One request slot: the chain a request was popped into, the request parsed from it, and the
 * completion the back-end calls. Slots are reused, so requests allocate nothing.
 */
class BlkSlot implements Completion {
  readonly chain: Chain;
  readonly req = new BlkRequest();
  /** Bytes written into device-writable buffers, not counting the status byte. */
  written = 0;
  busy = false;
  /** Writethrough: a back-end to flush once the operation succeeded, before the request completes. */
  flushAfter: Backend | null = null;
  /** With statistics: the request's row in them (STAT_*; -1: not counted) and its start time. */
  stat = -1;
  t0 = 0;

  constructor(private readonly vq: Virtqueue, maxSegments: number, private readonly stats: BlkQueueStats | null) {
    this.chain = new Chain(maxSegments);
  }

  /** Back-end completion: 0 or -errno. */
  complete(status: number): void {
    const b = this.flushAfter;
    this.flushAfter = null;
    if (b !== null && status === 0) return b.flush(this);
    this.finish(status === 0 ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR, status === 0 ? this.written : 0);
  }

  /** Writes the status byte and records the used element (the host publishes it). */
  finish(status: number, written: number): void {
    let len = 0;
    const r = this.req;
    if (r.statusBuf !== null) {
      r.statusBuf[r.statusOff] = status;
      len = written + 1;
    }
    // Logging (live migration): the pages this request wrote, before its used element is published.
    // A read's buffers are marked whole, since a failed read may have written part of them.
    const log = this.vq.dirtyLog;
    if (log !== null) log.markRequest(r.data === this.chain.wr ? r.data : null, r.statusBuf, r.statusOff);
    if (this.stat >= 0) {
      const ok = status === VIRTIO_BLK_S_OK;
      this.stats!.end(this.stat, this.t0, ok ? statBytes(r) : 0, ok);
      this.stat = -1;
    }
    r.statusBuf = null;
    r.data = null;
    this.busy = false;
    this.vq.pushUsed(this.chain.head, len);
  }
}

/** The statistics row of a parsed request. */
function statRow(op: BlkOp): number {
  switch (op) {
    case BlkOp.Read: return STAT_READ;
    case BlkOp.Write: return STAT_WRITE;
    case BlkOp.Flush: return STAT_FLUSH;
    case BlkOp.Discard: return STAT_DISCARD;
    case BlkOp.WriteZeroes: return STAT_WRITE_ZEROES;
    default: return STAT_OTHER;
  }
}

/** Bytes a successful request moved (discard, write-zeroes: the range it covered). */
function statBytes(r: BlkRequest): number {
  switch (r.op) {
    case BlkOp.Read:
    case BlkOp.Write: return r.data!.bytes;
    case BlkOp.Discard:
    case BlkOp.WriteZeroes: return r.segSectors * SECTOR_SIZE;
    default: return 0;
  }
}

/** virtio-blk settings: the disk's serial (GET_ID, at most 20 bytes) and the guest-visible write cache. */
export interface BlkSettings {
  serial: string;
  /** false makes every write durable before it completes (writethrough). */
  writeback: boolean;
}

/**
 * Serves one virtqueue of a virtio-blk device from a Backend: pops chains, parses them
 * (`parseBlkRequest`), checks them against the disk's size, block size and capabilities, and executes
 * them. Completions become used elements; publishing them and signalling the driver is the host's.
 * Transport-neutral: vhost-user queue workers and tests (with a mock driver) drive it alike.
 */
export class BlkHandler implements QueueHandler {
  writeback: boolean;
  private readonly slots: BlkSlot[] = [];
  private readonly maxSlots: number;
  private readonly id: Uint8Array;
  private readonly sectorsPerBlock: number;

  constructor(
    readonly backend: Backend,
    readonly vq: Virtqueue,
    private readonly mem: GuestMemory,
    private readonly reject: RejectLog,
    settings: BlkSettings,
    /** Counters in shared memory the main thread reads (`--metrics`), or null: not counted. */
    private readonly stats: BlkQueueStats | null = null,
  ) {
    this.writeback = settings.writeback;
    // Header + SEG_MAX data segments + status, and room for segments split across memory regions.
    this.maxSlots = Math.min(vq.size, MAX_SLOTS);
    this.id = new Uint8Array(VIRTIO_BLK_ID_BYTES);
    this.id.set(Buffer.from(settings.serial).subarray(0, VIRTIO_BLK_ID_BYTES));
    this.sectorsPerBlock = backend.info.blockSize / SECTOR_SIZE;
  }

  /** Pops and executes requests until the ring is empty, every slot is in flight, or `budgetBytes` moved. */
  drain(budgetBytes: number): DrainStop {
    const vq = this.vq;
    let moved = 0;
    this.stats?.batch();
    for (;;) {
      const slot = this.freeSlot();
      // Every entry in flight (asynchronous back-ends): their completions resume the queue.
      if (slot === null) return DrainStop.Starved;
      if (!vq.pop(slot.chain)) return DrainStop.Empty;
      slot.busy = true;
      parseBlkRequest(slot.chain, this.mem, slot.req);
      const st = this.stats;
      if (st !== null) slot.t0 = st.begin(slot.stat = statRow(slot.req.op));
      this.execute(slot);
      moved += slot.chain.rd.bytes + slot.chain.wr.bytes;
      if (moved >= budgetBytes) return DrainStop.Budget;
    }
  }

  /** Requests handed to the back-end and not completed yet. */
  busyCount(): number {
    let n = 0;
    for (const s of this.slots) if (s.busy) n++;
    return n;
  }

  /** Takes a new write cache mode (`writeback`) from the config space. */
  configure(settings: DeviceSettings): void {
    if (typeof settings.writeback === 'boolean') this.writeback = settings.writeback;
  }

  private freeSlot(): BlkSlot | null {
    // Slots complete in any order; a linear scan from slot 0 is cheap for the common synchronous
    // case, where slot 0 is always free again.
    const s = this.slots;
    for (let i = 0; i < s.length; i++) if (!s[i]!.busy) return s[i]!;
    if (s.length === this.maxSlots) return null;
    // Header + SEG_MAX data segments + status, and room for segments split across memory regions.
    const slot = new BlkSlot(this.vq, SEG_MAX + 16, this.stats);
    s.push(slot);
    return slot;
  }

  /** Checks a parsed request against the disk and executes it; the slot completes now or when the back-end calls it. */
  private execute(slot: BlkSlot): void {
    const r = slot.req;
    slot.written = 0;
    switch (r.op) {
      case BlkOp.Malformed:
        this.reject(r.error!, slot.chain.head);
        return slot.finish(VIRTIO_BLK_S_IOERR, 0);
      case BlkOp.Read: {
        const data = r.data!;
        const off = this.checkRange(slot, r.sector, data.bytes, 'read');
        if (off < 0) return;
        slot.written = data.bytes;
        return this.backend.read(data, off, slot);
      }
      case BlkOp.Write: {
        // "A device MUST set the status byte to VIRTIO_BLK_S_IOERR for a write request if the
        // VIRTIO_BLK_F_RO feature if offered"
        if (this.backend.info.readOnly) return this.refuse(slot, 'write to a read-only disk');
        const data = r.data!;
        const off = this.checkRange(slot, r.sector, data.bytes, 'write');
        if (off < 0) return;
        return this.backend.write(data, off, !this.writeback, slot);
      }
      case BlkOp.Flush:
        return this.backend.flush(slot);
      case BlkOp.GetId:
        return slot.finish(VIRTIO_BLK_S_OK, copyToVector(this.id, r.data!, 0, VIRTIO_BLK_ID_BYTES));
      case BlkOp.Discard:
      case BlkOp.WriteZeroes:
        return this.discardOrZero(slot, r.op === BlkOp.Discard);
      case BlkOp.Unsupported:
        this.reject(`unsupported request type ${r.type}`, slot.chain.head);
        return slot.finish(VIRTIO_BLK_S_UNSUPP, 0);
    }
  }

  private refuse(slot: BlkSlot, why: string): void {
    this.reject(why, slot.chain.head);
    slot.finish(VIRTIO_BLK_S_IOERR, 0);
  }

  /** Checks a sector range (sector -1: 2^53 or beyond); returns its byte offset, or -1 after failing the request. */
  private checkRange(slot: BlkSlot, sector: number, bytes: number, what: string): number {
    const info = this.backend.info;
    if (sector < 0) {
      this.refuse(slot, `${what} at a sector beyond 2^53`);
      return -1;
    }
    const off = sector * SECTOR_SIZE;
    if (bytes % info.blockSize !== 0 || sector % this.sectorsPerBlock !== 0) {
      this.refuse(slot, `${what} of ${bytes} bytes at sector ${sector} is not aligned to the ${info.blockSize}-byte block size`);
      return -1;
    }
    if (off + bytes > info.size) {
      this.refuse(slot, `${what} of ${bytes} bytes at sector ${sector} runs past the end of the disk (${info.size} bytes)`);
      return -1;
    }
    return off;
  }

  private discardOrZero(slot: BlkSlot, isDiscard: boolean): void {
    const info = this.backend.info;
    const r = slot.req;
    const segBytes = r.data!.bytes;
    const what = isDiscard ? 'discard' : 'write-zeroes';
    if (isDiscard ? !info.canDiscard : !info.canWriteZeroes) {
      if (info.readOnly) return this.refuse(slot, `${what} on a read-only disk`);
      this.reject(`${what} is not supported by ${info.name}`, slot.chain.head);
      return slot.finish(VIRTIO_BLK_S_UNSUPP, 0);
    }
    if (segBytes === 0 || segBytes % BLK_DISCARD_SEGMENT_SIZE !== 0 || segBytes / BLK_DISCARD_SEGMENT_SIZE > MAX_DISCARD_SEG) {
      return this.refuse(slot, `${what} with ${segBytes} bytes of segments (1 to ${MAX_DISCARD_SEG} segments of 16 bytes allowed)`);
    }
    const num = r.segSectors;
    const flags = r.segFlags;
    // "the device MUST set the status byte to VIRTIO_BLK_S_UNSUPP for discard commands if the
    // unmap flag is set" / for unknown flags
    if ((isDiscard && flags !== 0) || (flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0) {
      this.reject(`${what} with unsupported flags 0x${flags.toString(16)}`, slot.chain.head);
      return slot.finish(VIRTIO_BLK_S_UNSUPP, 0);
    }
    if (num > MAX_DISCARD_SECTORS) return this.refuse(slot, `${what} of ${num} sectors exceeds the advertised ${MAX_DISCARD_SECTORS}`);
    const off = this.checkRange(slot, r.segSector, num * SECTOR_SIZE, what);
    if (off < 0) return;
    // Writethrough (VIRTIO_BLK_F_CONFIG_WCE, writeback = 0): like a write, a discard or write-zeroes
    // is durable before it completes.
    if (!this.writeback) slot.flushAfter = this.backend;
    if (isDiscard) return this.backend.discard(off, num * SECTOR_SIZE, slot);
    this.backend.writeZeroes(off, num * SECTOR_SIZE, (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0, slot);
  }
}

/** The QueueHandlerFactory queue workers load from this module: a BlkHandler with `serial` and `writeback` from the settings. */
export function createQueueHandler(ctx: QueueContext): QueueHandler {
  const s = ctx.settings;
  return new BlkHandler(ctx.backend, ctx.vq, ctx.mem, ctx.reject, {
    serial: typeof s.serial === 'string' ? s.serial : '',
    writeback: s.writeback !== false,
  }, ctx.stats ? new BlkQueueStats(ctx.stats) : null);
}
