// Frames that change this node's disk on behalf of a peer: replicated writes, trims and flushes from a Primary, and peer reads.
import { EIO } from '../os.js';
import { AckKind, DATA_FUA, FrameType, MAX_PAYLOAD, TRIM_ZEROES } from './frames.js';
import type { Resource } from './resource.js';
import { Peer } from './peer.js';

/** The parts of [start, end) outside every range in `ranges` (sorted, merged). */
export function outside(start: number, end: number, ranges: [number, number][]): [number, number][] {
  const sorted = [...ranges].sort((x, y) => x[0] - y[0]);
  const out: [number, number][] = [];
  let pos = start;
  for (const [a, b] of sorted) {
    if (b <= pos) continue;
    if (a >= end) break;
    if (a > pos) out.push([pos, a]);
    pos = Math.max(pos, b);
  }
  if (pos < end) out.push([pos, end]);
  return out;
}

/** Applies a Primary's writes on this node (DRBD's receiver side of the request path) and serves peers' reads. */
export class Receiver {
  constructor(private readonly r: Resource) {}

  /** A write that reached this node from `from` is marked toward every disk peer that is not replicating with it. */
  markAbsent(from: Peer, offset: number, length: number): void {
    const md = this.r.md;
    if (!md) return;
    for (const q of this.r.peers) {
      if (q !== from && q.hasDisk && !q.replicating) {
        md.setOutOfSync(q.id, offset, length);
        this.absentMarks = true;
      }
    }
  }

  /** markAbsent set bits since the last periodic bitmap flush. */
  absentMarks = false;

  // ---------------------------------------------------------------------------------------------
  // Replicated writes arriving from the Primary

  /**
   * Replicated writes, trims and flushes that wait, in arrival order, because one of them overlaps a
   * resync answer still being written (ResyncDriver.writing): the newer data must land last, and
   * whatever arrived after them (a flush covers the writes before it) waits behind them.
   */
  private readonly waiting: { offset: number; length: number; run: () => void }[] = [];

  /** A resync answer was written: the waiting writes that no longer overlap one run, in order. */
  resyncWritten(): void {
    while (this.waiting.length > 0) {
      const w = this.waiting[0]!;
      if (w.length > 0 && this.r.resync.writingOverlaps(w.offset, w.length)) return;
      this.waiting.shift();
      this.r.safely(w.run);
    }
  }

  /** Whether an operation on [offset, offset + length) (0: a flush) must wait: behind a resync write it overlaps, or behind what already waits. */
  private mustWait(offset: number, length: number): boolean {
    return this.waiting.length > 0 || (length > 0 && this.r.resync.writingOverlaps(offset, length));
  }

  onData(p: Peer, seq: number, offset: number, flags: number, data: Uint8Array): void {
    if (!this.mustWait(offset, data.length)) return this.applyData(p, seq, offset, flags, data);
    this.waiting.push({ offset, length: data.length, run: () => this.applyData(p, seq, offset, flags, data) });
  }

  private applyData(p: Peer, seq: number, offset: number, flags: number, data: Uint8Array): void {
    this.r.lastAppWrite = Date.now();
    p.stats.dataBytesReceived += data.length;
    // Every write is acknowledged (protocol B: on receipt; A and C: once written), so the sender knows what it may mark.
    const ack = this.r.cfg.protocol === 'B' ? AckKind.Received : AckKind.Written;
    let status = 0;
    const keep = this.concurrentWrites(p, offset, data.length);
    if (keep.length > 0) {
      // Both Primaries wrote these bytes at once: the lower node id's write wins on both nodes. Ours
      // is on our disk and on its way to the peer, which applies it over its own; of the peer's write
      // only the bytes outside ours are applied here.
      this.r.stats.writeConflicts++;
      this.r.log.warn(`concurrent writes from ${this.r.me.name} and ${p.name} to the same blocks: keeping ${this.r.me.name}'s (lower node id)`, { offset, length: data.length });
    }
    if (!this.r.disk || offset < 0 || offset + data.length > this.r.size) {
      status = -EIO;
    } else {
      try {
        this.r.resync.writeTouchesResync(offset, data.length);
        if (keep.length === 0) this.r.disk.write(data, data.length, offset);
        else for (const [a, b] of outside(offset, offset + data.length, keep)) this.r.disk.write(data.subarray(a - offset, b - offset), b - a, a);
        if (flags & DATA_FUA) this.r.disk.sync();
        this.receivedInSync(p, offset, data.length);
        this.markAbsent(p, offset, data.length);
      } catch (e) {
        this.r.detach(e as Error);
        status = -EIO;
      }
    }
    p.link?.send({ type: FrameType.Ack, seq, kind: ack, status });
  }

  /**
   * Dual-primary (allow-two-primaries): a write from peer `p` that overlaps one of this node's own
   * writes still waiting for `p`'s acknowledgement was made concurrently (each side wrote before
   * seeing the other's). DRBD resolves such conflicts deterministically; here the lower node id wins.
   */
  private concurrentWrites(p: Peer, offset: number, length: number): [number, number][] {
    if (this.r.role !== 'Primary' || !this.r.cfg.allowTwoPrimaries || this.r.me.id > p.id) return [];
    const bit = 1 << p.id;
    const ranges: [number, number][] = [];
    for (const w of this.r.requests.pending.values()) {
      if (w.marks && (w.mask & bit) !== 0 && offset < w.offset + w.length && w.offset < offset + length) ranges.push([w.offset, w.offset + w.length]);
    }
    return ranges;
  }

  /**
   * A write from the Primary `from` landed here: it went to every peer the Primary replicates to, so
   * blocks this node was resyncing from such a peer (or from the Primary) are now current.
   */
  private receivedInSync(from: Peer, offset: number, length: number): void {
    if (!this.r.md) return;
    for (const q of this.r.peers) if (q.replication === 'SyncTarget' && (q === from || q.state?.role !== 'Primary')) this.r.md.clearInSync(q.id, offset, length);
  }

  onFlush(p: Peer, seq: number): void {
    if (!this.mustWait(0, 0)) return this.applyFlush(p, seq);
    this.waiting.push({ offset: 0, length: 0, run: () => this.applyFlush(p, seq) });
  }

  private applyFlush(p: Peer, seq: number): void {
    let status = 0;
    try { this.r.disk?.sync(); } catch (e) { this.r.detach(e as Error); status = -EIO; }
    p.link?.send({ type: FrameType.Ack, seq, kind: AckKind.Written, status });
  }

  onTrim(p: Peer, seq: number, offset: number, length: number, mode: number): void {
    const span = Math.max(1, length);
    if (!this.mustWait(offset, span)) return this.applyTrim(p, seq, offset, length, mode);
    this.waiting.push({ offset, length: span, run: () => this.applyTrim(p, seq, offset, length, mode) });
  }

  private applyTrim(p: Peer, seq: number, offset: number, length: number, mode: number): void {
    let status = 0;
    if (!this.r.disk || offset < 0 || offset + length > this.r.size) status = -EIO;
    else {
      try {
        this.r.resync.writeTouchesResync(offset, length);
        const keep = this.concurrentWrites(p, offset, length);
        if (keep.length > 0) this.r.stats.writeConflicts++;
        for (const [a, b] of outside(offset, offset + length, keep)) this.r.disk.trim(a, b - a, mode !== TRIM_ZEROES);
        this.receivedInSync(p, offset, length);
        this.markAbsent(p, offset, length);
      } catch (e) {
        this.r.detach(e as Error);
        status = -EIO;
      }
    }
    p.link?.send({ type: FrameType.Ack, seq, kind: AckKind.Written, status });
  }

  onReadRequest(p: Peer, seq: number, offset: number, length: number): void {
    if (!this.r.disk || this.r.diskState !== 'UpToDate' || offset < 0 || length > MAX_PAYLOAD || offset + length > this.r.size) {
      p.link!.send({ type: FrameType.ReadReply, seq, status: -EIO, data: new Uint8Array(0) });
      return;
    }
    try {
      this.r.disk.read(this.r.scratch, length, offset);
      p.stats.readsServed++;
      p.link!.send({ type: FrameType.ReadReply, seq, status: 0, data: this.r.scratch.subarray(0, length) });
    } catch (e) {
      this.r.stats.localReadErrors++;
      this.r.log.warn(`local read for ${p.name} failed: ${(e as Error).message}`);
      p.link!.send({ type: FrameType.ReadReply, seq, status: -EIO, data: new Uint8Array(0) });
    }
  }
}
