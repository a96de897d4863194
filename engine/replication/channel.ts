// A shared-memory request channel between a queue worker (the guest's side) and the replication engine on the main thread.
//
// Queue workers run a synchronous poll() loop and cannot host network links, so a replicated volume is
// served in two halves: the worker copies each write into a slot of a SharedArrayBuffer and posts the
// slot's index on a submission ring; the main thread (which owns the peer links, the metadata and the
// activity log) executes it and posts the index back on a completion ring. Wake-ups: the worker rings a
// doorbell word the main thread waits on with Atomics.waitAsync (no system call), the main thread writes
// the worker's eventfd once per batch (the worker sleeps in poll() on it). One copy per write is the
// price of replication anyway: the bytes must leave guest memory for the network.
//
// The slots' data live in a memfd both threads map, not in the SharedArrayBuffer that holds the
// control words: V8 copies into and out of a SharedArrayBuffer about 20 times slower than between
// ordinary ArrayBuffers (measured here: ~1.5 GB/s against ~30 GB/s for 1 MiB), and every byte of a
// replicated write is copied in once and sent from there. Each slot keeps HEADROOM bytes in front of
// its data, where the engine writes a frame header so the slot itself goes out on the wire.
import { close, mapShared, memfd, unmap, type Mapping } from '../os.js';

/** Operations carried by the channel. */
export const enum ChannelOp {
  Read = 1,
  Write = 2,
  Flush = 3,
  Discard = 4,
  WriteZeroes = 5,
}

/** Flags of a slot's request. */
export const CH_FUA = 1;
export const CH_UNMAP = 2;

/** Bytes of data one slot carries; larger requests are split over several slots. */
export const CHUNK = 256 * 1024;
/** Slots per channel (requests in flight per queue worker). */
export const SLOTS = 64;
/** Bytes before each slot's data, free for a frame header. */
export const HEADROOM = 64;

// Int32 control words.
const SQ_HEAD = 0; // next submission the main thread takes
const SQ_TAIL = 1; // next submission the worker posts
const CQ_HEAD = 2; // next completion the worker takes
const CQ_TAIL = 3; // next completion the main thread posts
const DOORBELL = 4; // bumped by the worker after posting submissions
/**
 * Nonzero when the worker may serve reads from its local disk itself (local disk UpToDate and no
 * resync): the number of the disk attachment, which changes when `twindisk attach` takes a (maybe
 * replaced) disk back, so the worker reopens the file instead of reading a detached one.
 */
const LOCAL_READS = 5;
/**
 * 1 while the worker is awake and will look at the completion ring before it sleeps: completions then
 * need no eventfd write (a system call, and a wake-up). The worker clears it, then checks the ring,
 * before it blocks; the main thread posts, then reads it (both sequentially consistent: one of the two
 * sees the other). 0, the default, means always wake: a consumer that never says it is awake is woken.
 */
const WORKER_AWAKE = 6;
/**
 * Nonzero when the worker may write the local disk itself (a Primary alone: no peer connected, every
 * absent peer's writes already tracked under a new generation): the disk attachment's number, as for
 * LOCAL_READS. It then completes the write at once and posts only its range on the marks ring; the
 * engine applies the out-of-sync marks later (the activity log covers the extents meanwhile, see
 * hot-extents.ts).
 */
const LOCAL_WRITES = 7;
/** The marks ring: next mark the engine takes, next the worker posts. */
const MQ_HEAD = 8;
const MQ_TAIL = 9;
/**
 * Nonzero while the worker is inside a local write (between reading LOCAL_WRITES and posting its
 * mark): the engine, having cleared LOCAL_WRITES, waits for it to drop before it applies the marks.
 */
const FAST_BUSY = 10;
const CTL_WORDS = 12;
/** Entries of the marks ring (offset, length). */
export const MARKS = 1024;

/** Layout of a channel's control words (SharedArrayBuffer) and slot data (memfd mapping), shared by both ends. */
class Layout {
  readonly ctl: Int32Array;
  readonly sq: Int32Array;
  readonly cq: Int32Array;
  /** Per slot: op, flags, status. */
  readonly slotI32: Int32Array;
  /** Per slot: offset, length. */
  readonly slotF64: Float64Array;
  /** The marks ring: offset, length per entry. */
  readonly marks: Float64Array;
  /** Slot i's HEADROOM + chunk bytes start at i * stride. */
  readonly data: Buffer;
  readonly stride: number;

  constructor(readonly sab: SharedArrayBuffer, readonly slots: number, readonly chunk: number, readonly map: Mapping) {
    let off = 0;
    this.ctl = new Int32Array(sab, off, CTL_WORDS); off += CTL_WORDS * 4;
    this.sq = new Int32Array(sab, off, slots); off += slots * 4;
    this.cq = new Int32Array(sab, off, slots); off += slots * 4;
    this.slotI32 = new Int32Array(sab, off, slots * 4); off += slots * 16;
    off = (off + 7) & ~7;
    this.slotF64 = new Float64Array(sab, off, slots * 2); off += slots * 16;
    this.marks = new Float64Array(sab, off, MARKS * 2);
    this.stride = HEADROOM + chunk;
    this.data = Buffer.from(map.ab, 0, slots * this.stride);
  }

  static controlBytes(slots: number): number {
    return ((CTL_WORDS * 4 + slots * 24 + 7) & ~7) + slots * 16 + MARKS * 16;
  }
}

/** What a worker needs to reach its channel; survives postMessage. */
export interface ChannelSpec {
  sab: SharedArrayBuffer;
  slots: number;
  chunk: number;
  /** memfd holding the slots' data (slots * (HEADROOM + chunk) bytes); each side maps it. */
  dataFd: number;
  /** eventfd the main thread writes when completions are posted (non-blocking, the worker's to poll). */
  eventFd: number;
}

/** The worker's end: takes free slots, posts requests, collects completions. Single-threaded. */
export class ChannelClient {
  private readonly l: Layout;
  private readonly free: number[];
  readonly eventFd: number;

  constructor(spec: ChannelSpec) {
    this.l = new Layout(spec.sab, spec.slots, spec.chunk, mapShared(spec.dataFd, spec.slots * (HEADROOM + spec.chunk)));
    this.free = Array.from({ length: spec.slots }, (_, i) => spec.slots - 1 - i);
    this.eventFd = spec.eventFd;
  }

  get chunk(): number { return this.l.chunk; }

  /** Nonzero (the disk attachment's number) when the worker may read from its local disk without asking the engine. */
  localReads(): number {
    return Atomics.load(this.l.ctl, LOCAL_READS);
  }

  /**
   * Enters a local write: the disk attachment to write (nonzero), or 0 when the engine does not allow
   * it now or the marks ring is full (then nothing was entered). A nonzero answer must be followed by
   * `leaveLocalWrite`, with `postMark` in between if the write was made.
   */
  enterLocalWrite(): number {
    const ctl = this.l.ctl;
    Atomics.store(ctl, FAST_BUSY, 1);
    const attachment = Atomics.load(ctl, LOCAL_WRITES);
    if (attachment === 0 || ctl[MQ_TAIL]! - Atomics.load(ctl, MQ_HEAD) >= MARKS) {
      Atomics.store(ctl, FAST_BUSY, 0);
      return 0;
    }
    return attachment;
  }

  /**
   * Posts the range of a local write for the engine's marks. The engine takes them lazily (a timer, its
   * next batch); a ring half full rings the doorbell.
   */
  postMark(offset: number, length: number): void {
    const l = this.l;
    const tail = l.ctl[MQ_TAIL]!;
    const at = (tail % MARKS) * 2;
    l.marks[at] = offset;
    l.marks[at + 1] = length;
    Atomics.store(l.ctl, MQ_TAIL, tail + 1);
    if (tail + 1 - Atomics.load(l.ctl, MQ_HEAD) === MARKS / 2) this.ring();
  }

  leaveLocalWrite(): void {
    Atomics.store(this.l.ctl, FAST_BUSY, 0);
  }

  /** A free slot's index, or -1 when every slot is in flight. */
  take(): number {
    return this.free.pop() ?? -1;
  }

  /** The slot's data area (CHUNK bytes). */
  data(slot: number): Uint8Array {
    const at = slot * this.l.stride + HEADROOM;
    return this.l.data.subarray(at, at + this.l.chunk);
  }

  /** Unmaps the slots (the main thread owns the memfd). */
  close(): void {
    unmap(this.l.map);
  }

  /** Posts a request in `slot`; the main thread sees it after `ring()`. */
  post(slot: number, op: ChannelOp, offset: number, length: number, flags: number): void {
    const l = this.l;
    l.slotI32[slot * 4] = op;
    l.slotI32[slot * 4 + 1] = flags;
    l.slotI32[slot * 4 + 2] = 0;
    l.slotF64[slot * 2] = offset;
    l.slotF64[slot * 2 + 1] = length;
    const tail = l.ctl[SQ_TAIL]!;
    l.sq[tail % l.slots] = slot;
    Atomics.store(l.ctl, SQ_TAIL, tail + 1); // publishes the slot's fields (Atomics are sequentially consistent)
  }

  /** Wakes the main thread for the requests posted since the last call. */
  ring(): void {
    Atomics.add(this.l.ctl, DOORBELL, 1);
    Atomics.notify(this.l.ctl, DOORBELL);
  }

  /** Whether a completion is ready (no system call: the busy-polling worker asks this on every spin). */
  hasCompletion(): boolean {
    return this.l.ctl[CQ_HEAD]! !== Atomics.load(this.l.ctl, CQ_TAIL);
  }

  /** Takes one completion: the slot index (its status via `status`), or -1 when none is ready. */
  nextCompletion(): number {
    const l = this.l;
    const head = l.ctl[CQ_HEAD]!;
    if (head === Atomics.load(l.ctl, CQ_TAIL)) return -1;
    const slot = l.cq[head % l.slots]!;
    Atomics.store(l.ctl, CQ_HEAD, head + 1);
    return slot;
  }

  status(slot: number): number {
    return this.l.slotI32[slot * 4 + 2]!;
  }

  /** Returns a slot whose completion was consumed. */
  release(slot: number): void {
    this.free.push(slot);
  }

  /**
   * The worker's thread is about to block on the eventfd (`sleeping`) or has woken. Before blocking it
   * says so first, then looks at the ring: false means completions are there (do not block).
   */
  idle(sleeping: boolean): boolean {
    if (!sleeping) {
      Atomics.store(this.l.ctl, WORKER_AWAKE, 1);
      return true;
    }
    Atomics.store(this.l.ctl, WORKER_AWAKE, 0);
    return !this.hasCompletion();
  }

  /** Blocks the worker until a completion is posted (for draining before memory is remapped). */
  waitCompletion(timeoutMs = 1000): void {
    const head = this.l.ctl[CQ_HEAD]!;
    Atomics.wait(this.l.ctl, CQ_TAIL, head, timeoutMs);
  }
}

/** A request as the engine sees it; `data` is a view of the slot (valid until `complete`). */
export interface ChannelRequest {
  readonly channel: ChannelHost;
  readonly slot: number;
  readonly op: ChannelOp;
  readonly offset: number;
  readonly length: number;
  readonly flags: number;
  readonly data: Buffer;
  /** The slot from its start: HEADROOM bytes free for a frame header, then `data`. */
  readonly slotBuffer: Buffer;
}

/** The main thread's end: receives requests (in posting order) and posts their completions. */
export class ChannelHost {
  private readonly l: Layout;
  private stopped = false;
  private signalPending = false;
  private readonly views: Buffer[];
  readonly spec: ChannelSpec;

  /**
   * `eventFd` is a non-blocking eventfd the worker polls; `wake(fd)` writes 1 to it (a system call
   * the caller provides, so this module stays free of FFI).
   */
  constructor(eventFd: number, private readonly wake: (fd: number) => void, slots = SLOTS, chunk = CHUNK) {
    const sab = new SharedArrayBuffer(Layout.controlBytes(slots));
    const dataFd = memfd('twindisk-channel', slots * (HEADROOM + chunk));
    let map: Mapping;
    try {
      map = mapShared(dataFd, slots * (HEADROOM + chunk));
    } catch (e) {
      close(dataFd);
      throw e;
    }
    this.l = new Layout(sab, slots, chunk, map);
    this.spec = { sab, slots, chunk, eventFd, dataFd };
    this.views = Array.from({ length: slots }, (_, i) => this.l.data.subarray(i * this.l.stride, (i + 1) * this.l.stride));
  }

  /** Lets the worker serve reads from local disk attachment `attachment` (> 0), or stops it (0). */
  setLocalReads(attachment: number): void {
    Atomics.store(this.l.ctl, LOCAL_READS, attachment);
  }

  /** Lets the worker write local disk attachment `attachment` (> 0) itself, or stops it (0: see `waitLocalWrites`). */
  setLocalWrites(attachment: number): void {
    Atomics.store(this.l.ctl, LOCAL_WRITES, attachment);
  }

  /**
   * After `setLocalWrites(0)`: waits (blocking, at most `timeoutMs`) until the worker is out of any
   * local write it had started; its mark is on the ring then. False on timeout.
   */
  waitLocalWrites(timeoutMs = 10_000): boolean {
    const deadline = Date.now() + timeoutMs;
    while (Atomics.load(this.l.ctl, FAST_BUSY) !== 0) {
      if (Date.now() > deadline) return false;
      Atomics.wait(this.l.ctl, FAST_BUSY, 1, 1);
    }
    return true;
  }

  /** Applies every posted mark (`onMark` per write range); returns how many. */
  drainMarks(onMark: (offset: number, length: number) => void): number {
    const l = this.l;
    const head = l.ctl[MQ_HEAD]!;
    const tail = Atomics.load(l.ctl, MQ_TAIL);
    for (let h = head; h !== tail; h++) onMark(l.marks[(h % MARKS) * 2]!, l.marks[(h % MARKS) * 2 + 1]!);
    Atomics.store(l.ctl, MQ_HEAD, tail);
    return tail - head;
  }

  /**
   * Delivers requests to `onRequest` until `stop()`, and calls `onBatchEnd` after each batch (the
   * requests found on the ring at once); applies the posted marks (`onMark`) whenever it wakes;
   * resolves when stopped.
   */
  async serve(onRequest: (r: ChannelRequest) => void, onBatchEnd?: () => void, onMark?: (offset: number, length: number) => void): Promise<void> {
    const l = this.l;
    let seen = Atomics.load(l.ctl, DOORBELL);
    while (!this.stopped) {
      if (onMark) this.drainMarks(onMark);
      if (this.drain(onRequest) > 0) onBatchEnd?.();
      const w = Atomics.waitAsync(l.ctl, DOORBELL, seen);
      if (w.async) await w.value;
      seen = Atomics.load(l.ctl, DOORBELL);
    }
  }

  /** Delivers every request on the submission ring; returns how many. */
  private drain(onRequest: (r: ChannelRequest) => void): number {
    const l = this.l;
    for (let n = 0; ; n++) {
      const head = l.ctl[SQ_HEAD]!;
      if (head === Atomics.load(l.ctl, SQ_TAIL)) return n;
      const slot = l.sq[head % l.slots]!;
      Atomics.store(l.ctl, SQ_HEAD, head + 1);
      const length = l.slotF64[slot * 2 + 1]!;
      const op = l.slotI32[slot * 4]! as ChannelOp;
      const dataLen = op === ChannelOp.Read || op === ChannelOp.Write ? Math.min(length, l.chunk) : 0;
      const view = this.views[slot]!;
      onRequest({
        channel: this, slot, op, offset: l.slotF64[slot * 2]!, length, flags: l.slotI32[slot * 4 + 1]!,
        data: view.subarray(HEADROOM, HEADROOM + dataLen), slotBuffer: view,
      });
    }
  }

  /**
   * Posts a request's completion; the worker is woken once per turn of the event loop. Completions
   * arrive from anywhere (a peer's acknowledgement, a timer, a batch), so the end of the turn (a
   * microtask) is where they are known to be all posted: one eventfd write for all of them.
   */
  complete(slot: number, status: number): void {
    const l = this.l;
    l.slotI32[slot * 4 + 2] = status;
    const tail = l.ctl[CQ_TAIL]!;
    l.cq[tail % l.slots] = slot;
    Atomics.store(l.ctl, CQ_TAIL, tail + 1);
    if (!this.signalPending) {
      this.signalPending = true;
      queueMicrotask(() => {
        this.signalPending = false;
        Atomics.notify(l.ctl, CQ_TAIL);
        // An awake worker takes them before it sleeps (WORKER_AWAKE): no system call for it.
        if (Atomics.load(l.ctl, WORKER_AWAKE) === 0) this.wake(this.spec.eventFd);
      });
    }
  }

  /** Ends `serve` (the worker must not post more). */
  stop(): void {
    this.stopped = true;
    Atomics.add(this.l.ctl, DOORBELL, 1);
    Atomics.notify(this.l.ctl, DOORBELL);
  }

  /** Releases the slots' memory (after the worker has closed its end). */
  close(): void {
    unmap(this.l.map);
    close(this.spec.dataFd);
  }
}
