// The queue worker's half of a replicated volume: a Backend that hands requests to the replication engine through a channel.
import type { AsyncBackend, BackendInfo, Completion } from '../backend.js';
import { FileBackend } from '../file-backend.js';
import { copyFromVector, copyToVector, type IoVector } from '../iovec.js';
import { EAGAIN, EINTR, NativeBuffer, errno, read } from '../os.js';
import { CH_FUA, CH_UNMAP, ChannelClient, ChannelOp, type ChannelSpec } from './channel.js';
import { HotExtents, type HotExtentsSpec } from './hot-extents.js';

/** What a queue worker needs to open its half of a replicated volume (survives postMessage). */
export interface ReplicatedSpec {
  kind: 'replicated';
  channel: ChannelSpec;
  /** The volume's usable size in bytes and the block size guests see. */
  size: number;
  blockSize: number;
  /** The local backing file, for the reads and writes the engine allows the worker to make itself; null when diskless. */
  local: { path: string } | null;
  /** The engine's map of active activity-log extents, for writes the worker makes itself (see hot-extents.ts); null: never. */
  hot: HotExtentsSpec | null;
  name: string;
}

/** Receives a local write's status synchronously (FileBackend completes before it returns). */
class SyncStatus {
  status = 0;
  complete(status: number): void { this.status = status; }
}

/** One guest request split over one or more channel slots. */
class Request {
  op: ChannelOp = ChannelOp.Read;
  iov: IoVector | null = null;
  offset = 0;
  length = 0;
  flags = 0;
  done: Completion | null = null;
  /** Bytes (or, without data, 1 unit) not yet handed to a slot. */
  posted = 0;
  outstanding = 0;
  status = 0;
}

/**
 * Serves a replicated volume from a queue worker. Writes, flushes, discards and write-zeroes go to
 * the engine (which writes the local disk, replicates to peers and keeps the activity log); reads are
 * served from the local disk in this thread while the engine says the local disk is UpToDate, and by
 * the engine otherwise (diskless node, resync in progress). Completions arrive on `eventFd`.
 */
export class ReplicatedBackend implements AsyncBackend {
  /** Replaced (never mutated) by resize(). */
  info: BackendInfo;
  readonly eventFd: number;
  private readonly ch: ChannelClient;
  private local: FileBackend | null;
  /** The disk attachment `local` was opened for (see ChannelClient.localReads and enterLocalWrite). */
  private localAttachment = 0;
  private readonly localPath: string | null;
  private readonly hot: HotExtents | null;
  private readonly localStatus = new SyncStatus();
  /** Writes made by this worker itself (tests and status). */
  localWrites = 0;
  private readonly slotReq: (Request | null)[];
  private readonly slotPos: Float64Array;
  private readonly pool: Request[] = [];
  private readonly waiting: Request[] = [];
  private inflight = 0;
  private postedSinceKick = false;
  private readonly eight = new NativeBuffer(8);

  constructor(spec: ReplicatedSpec) {
    this.ch = new ChannelClient(spec.channel);
    this.eventFd = spec.channel.eventFd;
    this.localPath = spec.local?.path ?? null;
    this.local = null;
    this.hot = spec.hot && this.localPath !== null ? new HotExtents(spec.hot) : null;
    this.slotReq = new Array<Request | null>(spec.channel.slots).fill(null);
    this.slotPos = new Float64Array(spec.channel.slots);
    this.info = {
      size: spec.size, blockSize: spec.blockSize, readOnly: false, name: spec.name,
      canFlush: true, canDiscard: true, canWriteZeroes: true,
    };
  }

  read(iov: IoVector, offset: number, done: Completion): void {
    const attachment = this.localPath !== null ? this.ch.localReads() : 0;
    if (attachment !== 0) return this.localDisk(attachment).read(iov, offset, done);
    this.submit(ChannelOp.Read, iov, offset, iov.bytes, 0, done);
  }

  write(iov: IoVector, offset: number, fua: boolean, done: Completion): void {
    if (this.hot !== null && this.writeLocally(iov, offset, fua)) return done.complete(0);
    this.submit(ChannelOp.Write, iov, offset, iov.bytes, fua ? CH_FUA : 0, done);
  }

  /**
   * A write the engine lets this worker make itself (a Primary with no peer connected, see
   * channel.ts LOCAL_WRITES): straight from the guest's buffers to the local disk, its extents pinned
   * in the activity log until the engine has applied its out-of-sync marks. False when not allowed now,
   * or when the write failed (the engine then makes it, and handles the error).
   */
  private writeLocally(iov: IoVector, offset: number, fua: boolean): boolean {
    const length = iov.bytes;
    if (length === 0 || offset + length > this.info.size) return false;
    const attachment = this.ch.enterLocalWrite();
    if (attachment === 0) return false;
    try {
      if (!this.hot!.tryPin(offset, length)) return false;
      const disk = this.localDisk(attachment);
      const st = this.localStatus;
      st.status = -1;
      disk.write(iov, offset, fua, st);
      if (st.status !== 0) {
        this.hot!.unpin(offset, length);
        return false;
      }
      this.ch.postMark(offset, length);
      this.localWrites++;
      return true;
    } finally {
      this.ch.leaveLocalWrite();
    }
  }

  flush(done: Completion): void {
    this.submit(ChannelOp.Flush, null, 0, 0, 0, done);
  }

  discard(offset: number, length: number, done: Completion): void {
    this.submit(ChannelOp.Discard, null, offset, length, 0, done);
  }

  writeZeroes(offset: number, length: number, mayUnmap: boolean, done: Completion): void {
    this.submit(ChannelOp.WriteZeroes, null, offset, length, mayUnmap ? CH_UNMAP : 0, done);
  }

  /**
   * The local disk as attached now, for the reads and writes the engine lets this worker make: opened
   * at the first one, reopened after `twindisk attach` (a replaced file).
   */
  private localDisk(attachment: number): FileBackend {
    if (this.local === null || this.localAttachment !== attachment) {
      this.local?.close();
      this.local = new FileBackend({ path: this.localPath!, readOnly: false, blockSize: this.info.blockSize, limit: this.info.size });
      this.localAttachment = attachment;
    }
    return this.local;
  }

  /**
   * Online resize: the engine has agreed on the volume's new size (it checks every request against it
   * too); local reads reopen the file with the new limit.
   */
  resize(size: number): void {
    this.info = { ...this.info, size };
    this.local?.close();
    this.local = null;
  }

  close(): void {
    this.local?.close();
    this.ch.close();
    this.eight.free();
  }

  /** Rings the engine's doorbell for the requests posted since the last call. */
  kick(): void {
    if (!this.postedSinceKick) return;
    this.postedSinceKick = false;
    this.ch.ring();
  }

  /** See AsyncBackend.idle: an awake worker is not woken through the eventfd (the engine skips the write). */
  idle(sleeping: boolean): boolean {
    return this.ch.idle(sleeping);
  }

  /** Requests accepted and not completed yet. */
  inFlight(): number {
    return this.inflight;
  }

  /**
   * Delivers every completion the engine has posted. Slots freed here go at once to requests that
   * were waiting for one, and those are rung: they belong to a batch that has already ended.
   */
  poll(signalled = false): void {
    // Nothing posted and not woken by it: leave the eventfd alone (reading it is a system call, and this
    // runs on every spin of the worker's busy-poll). A signal that arrives after its completions were
    // taken here (the engine writes once per turn, after posting) wakes the worker once, with nothing
    // to take: that call is `signalled` and clears it.
    if (!signalled && !this.ch.hasCompletion()) return;
    const r = read(this.eventFd, this.eight.addr, 8); // clears the eventfd (non-blocking)
    if (r < 0 && errno() !== EAGAIN && errno() !== EINTR) throw new Error(`reading the replication channel's eventfd failed: errno ${errno()}`);
    for (let slot = this.ch.nextCompletion(); slot >= 0; slot = this.ch.nextCompletion()) this.finishSlot(slot);
    if (this.waiting.length > 0) {
      this.pump();
      this.kick();
    }
  }

  /**
   * Rings for what is posted and blocks until at least one request completes, or until `giveUp()`
   * (asked after each wait of at most a second) says the other end is gone.
   */
  waitOne(giveUp?: () => boolean): void {
    if (this.inflight === 0) return;
    this.kick();
    const before = this.inflight;
    while (this.inflight === before) {
      this.ch.waitCompletion();
      this.poll();
      if (this.inflight === before && giveUp?.()) return;
    }
  }

  private submit(op: ChannelOp, iov: IoVector | null, offset: number, length: number, flags: number, done: Completion): void {
    // A request without data bytes (virtio-blk allows empty reads and writes) occupies no slot.
    if ((op === ChannelOp.Read || op === ChannelOp.Write) && length === 0) return done.complete(0);
    const q = this.pool.pop() ?? new Request();
    q.op = op; q.iov = iov; q.offset = offset; q.length = length; q.flags = flags; q.done = done;
    q.posted = 0; q.outstanding = 0; q.status = 0;
    this.inflight++;
    this.waiting.push(q);
    if (this.waiting.length === 1) this.pump();
  }

  /** Posts waiting requests' pieces into free slots, oldest request first. */
  private pump(): void {
    while (this.waiting.length > 0) {
      const q = this.waiting[0]!;
      const hasData = q.op === ChannelOp.Read || q.op === ChannelOp.Write;
      const total = hasData ? q.length : 1;
      while (q.posted < total) {
        const slot = this.ch.take();
        if (slot < 0) return;
        const pos = q.posted;
        const len = hasData ? Math.min(this.ch.chunk, q.length - pos) : q.length;
        if (q.op === ChannelOp.Write) copyFromVector(q.iov!, pos, this.ch.data(slot), len);
        this.slotReq[slot] = q;
        this.slotPos[slot] = pos;
        this.ch.post(slot, q.op, q.offset + (hasData ? pos : 0), len, q.flags);
        q.outstanding++;
        q.posted += hasData ? len : 1;
        this.postedSinceKick = true;
      }
      this.waiting.shift();
    }
  }

  private finishSlot(slot: number): void {
    const q = this.slotReq[slot]!;
    this.slotReq[slot] = null;
    const st = this.ch.status(slot);
    if (st !== 0 && q.status === 0) q.status = st;
    else if (st === 0 && q.op === ChannelOp.Read) {
      const pos = this.slotPos[slot]!;
      copyToVector(this.ch.data(slot), q.iov!, pos, Math.min(this.ch.chunk, q.length - pos));
    }
    this.ch.release(slot);
    q.outstanding--;
    const total = q.op === ChannelOp.Read || q.op === ChannelOp.Write ? q.length : 1;
    if (q.outstanding === 0 && q.posted >= total) {
      const done = q.done!;
      const status = q.status;
      q.done = null;
      q.iov = null;
      this.pool.push(q);
      this.inflight--;
      done.complete(status);
    }
  }
}
