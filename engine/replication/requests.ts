// The path of a guest request on the node that serves it: reads, replicated writes, flushes and trims, and their completion.
import { EIO, EINVAL } from '../os.js';
import { ChannelOp, CH_FUA, CH_UNMAP, HEADROOM, type ChannelRequest } from './channel.js';
import { DATA_HEADER, writeDataHeader } from './wire.js';
import { DATA_FUA, FrameType, TRIM_DISCARD, TRIM_ZEROES, TRIM_ZEROES_UNMAP } from './frames.js';
import type { NodeDisk } from './node-disk.js';
import type { Resource } from './resource.js';
import type { PeerLink } from './link.js';
import { Peer } from './peer.js';

/** An operation waiting for peers: a guest request, or a local callback. */
interface Pending {
  req: ChannelRequest | null;
  /** Peers (bit = node id) whose acknowledgement is awaited. */
  mask: number;
  /** Copies known good so far (the local disk, peers that acknowledged with status 0). */
  ok: number;
  /** The DATA frame was sent from the channel slot itself (its bytes must outlive the sockets that carry them). */
  inPlace: boolean;
  /** Range to mark out of sync toward a peer that fails or drops it (writes and trims). */
  offset: number;
  length: number;
  marks: boolean;
  /** The local copy is still to be written (see `endBatch`): the request waits for it too. */
  localPending: boolean;
  fua: boolean;
}

/** A local write deferred to the end of the batch, after its DATA frames have left. */
interface DeferredWrite {
  seq: number;
  data: Uint8Array;
  offset: number;
  length: number;
  fua: boolean;
}

interface PendingRead {
  req: ChannelRequest;
  peerId: number;
  offset: number;
  length: number;
  /** For a local read error: rewrite the good data locally once it arrives. */
  repair: boolean;
}

/**
 * Guest I/O of one node (DRBD's drbd_req.c): routes each request from a queue worker's channel, sends
 * writes to the replicating peers while the local copy is written, and completes each request when the
 * protocol's acknowledgements are in.
 */
export class RequestPath {
  constructor(private readonly r: Resource) {}
  readonly pending = new Map<number, Pending>();
  readonly reads = new Map<number, PendingRead>();
  suspended: ChannelRequest[] = [];
  private held: ChannelRequest[] = [];
  /** Writes of this batch to extents not in the activity log: activated together, then replicated (endBatch). */
  private cold: ChannelRequest[] = [];
  /** Local copies of this turn's writes, written once their frames have left (endBatch). */
  private deferred: DeferredWrite[] = [];
  /** Guest reads of this batch on a disk that takes batches (NodeDisk.readBatch): read at its end. */
  private deferredReads: ChannelRequest[] = [];
  /** Writes finished while the quorum was lost under suspend-io: completed when it returns. */
  heldCompletions: { p: Pending; st: number }[] = [];

  /** Guest writes waiting for an overlapping resync write to complete (see request). */
  private behindResync: ChannelRequest[] = [];

  private mustWaitForResync(r: ChannelRequest): boolean {
    if (this.r.resync.writingOverlaps(r.offset, Math.max(1, r.length))) return true;
    for (const w of this.behindResync) if (r.offset < w.offset + Math.max(1, w.length) && w.offset < r.offset + Math.max(1, r.length)) return true;
    return false;
  }

  /** A resync answer was written: guest writes that waited for it go on, in order. */
  resyncWritten(): void {
    if (this.behindResync.length === 0) return;
    const list = this.behindResync;
    this.behindResync = [];
    for (const r of list) this.request(r);
    this.endBatch();
  }

  /** Whether writes are held for a peer's handshake. */
  get holding(): boolean {
    return this.held.length > 0;
  }

  /**
   * A queue worker wrote [offset, offset + length) to the local disk itself and completed it (a
   * Primary alone, see Resource.updateFastPaths): the write reached no peer, so it is marked out of
   * sync toward every disk peer, and its activity-log extents, pinned until now, are released.
   */
  readonly localWriteMarked = (offset: number, length: number): void => {
    const r = this.r;
    r.stats.writes++;
    r.stats.workerWrites++;
    const md = r.md;
    if (md) {
      if (!md.alTouch(offset, length)) r.log.error('a queue worker wrote outside the activity log (a bug): its extents are activated now', { offset, length });
      for (const p of r.peers) if (p.hasDisk) md.setOutOfSync(p.id, offset, length);
    }
    r.hot?.unpin(offset, length);
  };

  request(r: ChannelRequest): void {
    if (r.op !== ChannelOp.Flush && (r.offset < 0 || r.length < 0 || r.offset + r.length > this.r.size)) {
      this.r.log.warn('refused a request past the end of the volume', { offset: r.offset, length: r.length, size: this.r.size });
      return r.channel.complete(r.slot, -EINVAL);
    }
    // A write or trim overlapping a resync answer still being written here (a SyncTarget writes them
    // on libuv's pool) waits for it, so the guest's newer data lands last; so does one overlapping such
    // a waiting request.
    if ((r.op === ChannelOp.Write || r.op === ChannelOp.Discard || r.op === ChannelOp.WriteZeroes) && this.mustWaitForResync(r)) {
      this.behindResync.push(r);
      return;
    }
    // A read, flush or trim sees the writes before it on the local disk. A disk that takes batches
    // (readBatch) has its reads deferred to the end of the batch, after the batch's writes.
    if (r.op !== ChannelOp.Write && !(r.op === ChannelOp.Read && this.r.disk?.readBatch)) this.endBatch();
    if (r.op === ChannelOp.Read) return this.guestRead(r);
    if (this.r.role !== 'Primary') return r.channel.complete(r.slot, -EIO);
    // While a peer with a disk is mid-handshake, whether it needs a write is not decided yet: hold
    // writes for that round trip, so that none is both missed by the peer and absent from the bitmaps.
    if (this.r.peers.some((p) => p.link && p.hasDisk && p.replication === 'Handshake')) {
      this.held.push(r);
      return;
    }
    if (!this.r.hasQuorum()) {
      if (this.r.cfg.onNoQuorum === 'suspend-io') {
        this.suspended.push(r);
        return;
      }
      return r.channel.complete(r.slot, -EIO);
    }
    this.r.lastAppWrite = Date.now();
    switch (r.op) {
      case ChannelOp.Write:
        // A write to an extent the activity log does not hold waits for the end of the batch, where
        // one transaction activates the extents of all such writes (see endBatch).
        if (this.r.md && !this.r.md.alTouch(r.offset, r.length)) {
          this.cold.push(r);
          return;
        }
        return this.guestWrite(r);
      case ChannelOp.Flush:
        return this.guestFlush(r);
      case ChannelOp.Discard:
      case ChannelOp.WriteZeroes:
        return this.guestTrim(r);
    }
  }

  private guestRead(r: ChannelRequest): void {
    this.r.stats.reads++;
    const syncFrom = this.r.peers.find((p) => p.replication === 'SyncTarget' && p.link);
    const localOk = this.r.disk !== null && (this.r.diskState === 'UpToDate' || (syncFrom !== undefined && !this.r.anyOutOfSync(syncFrom.id, r.offset, r.length)));
    if (localOk) {
      if (this.r.disk!.readBatch) {
        this.deferredReads.push(r);
        return;
      }
      try {
        this.r.disk!.read(r.data, r.length, r.offset);
        return r.channel.complete(r.slot, 0);
      } catch (e) {
        this.r.stats.localReadErrors++;
        this.r.log.warn(`local read failed (${(e as Error).message}): reading from a peer and rewriting the block`, { offset: r.offset, length: r.length });
        return this.remoteRead(r, r.offset, r.length, true);
      }
    }
    this.remoteRead(r, r.offset, r.length, false);
  }

  /** Reads from an UpToDate peer (the SyncSource first) and completes the request. */
  remoteRead(req: ChannelRequest, offset: number, length: number, repair: boolean): void {
    const peer = this.r.peers.find((p) => p.replication === 'SyncTarget' && p.link && p.state?.disk === 'UpToDate') ?? this.r.peers.find((p) => p.upToDate);
    if (!peer) {
      this.r.log.warn('a read found no UpToDate copy of the data (local disk not UpToDate and no UpToDate peer connected)', { offset, length });
      req.channel.complete(req.slot, -EIO);
      return;
    }
    const seq = this.r.seq++;
    this.reads.set(seq, { req, peerId: peer.id, offset, length, repair });
    peer.link!.send({ type: FrameType.ReadRequest, seq, offset, length });
  }

  private guestWrite(r: ChannelRequest): void {
    this.r.stats.writes++;
    const { offset, length } = r;
    this.replicateWrite(r, offset, length, r.data, (r.flags & CH_FUA) !== 0);
  }

  /** Writes locally and to every replicating peer; completes when the protocol's acknowledgements are in. */
  private replicateWrite(req: ChannelRequest, offset: number, length: number, data: Uint8Array, fua: boolean): void {
    this.r.generations.newGenerationIfNeeded(0);
    this.r.md?.alActivate(offset, length);
    const seq = this.r.seq++;
    // The frame is built around the payload in the channel slot (no copy), unless the request may
    // complete before the peers answer (protocol A): then the slot is reused at once, so each send copies.
    const inPlace = this.r.cfg.protocol !== 'A' || fua;
    const frame = inPlace ? writeDataHeader(req.slotBuffer, HEADROOM - DATA_HEADER, seq, offset, fua ? DATA_FUA : 0, length) : null;
    const mask = this.toDiskPeers(offset, length, (p) => {
      if (frame) p.link!.sendEncoded(frame);
      else p.link!.send({ type: FrameType.Data, seq, offset, flags: fua ? DATA_FUA : 0, data: data.subarray(0, length) });
      p.stats.dataBytesSent += length;
    });
    if (mask === 0 || !this.r.disk) {
      return this.track(req, seq, mask, this.writeLocal(data, length, offset, fua), offset, length, fua, frame !== null);
    }
    // The local copy is written after this batch's frames have left (endBatch), so the peers'
    // disks and this one work at the same time instead of one after the other (DRBD submits both at once).
    this.track(req, seq, mask, 0, offset, length, fua, frame !== null, true);
    this.deferred.push({ seq, data, offset, length, fua });
  }

  /**
   * The end of a batch of requests: activates the cold writes' extents in one activity-log transaction
   * and replicates those writes, sends the frames queued on the links, then writes the deferred local
   * copies. Called by whoever delivered the batch (the channel, once it has drained its ring; the
   * replay of held or suspended requests), and before anything that must see earlier writes on the
   * local disk (a flush, a trim, a read). No frame can be received in between: the batch and its end
   * run in one turn of the event loop.
   */
  endBatch(): void {
    while (this.cold.length > 0) {
      const cold = this.cold;
      this.cold = [];
      // As many writes as one transaction can make hot, activated together and then admitted again
      // (each check of `request` once more, now in a hot extent; an activity-log write that failed has
      // detached the disk, and the writes go on without it).
      for (let i = 0; i < cold.length;) {
        const md = this.r.md;
        let extents = 0;
        let j = i;
        for (; j < cold.length && md; j++) {
          const r = cold[j]!;
          const span = Math.floor((r.offset + r.length - 1) / md.alExtentSize) - Math.floor(r.offset / md.alExtentSize) + 1;
          if (j > i && extents + span > md.alExtents) break;
          extents += span;
        }
        if (j === i) j = cold.length;
        const group = cold.slice(i, j);
        if (md) this.r.safely(() => md.alActivateAll(group));
        for (const r of group) this.request(r);
        i = j;
      }
    }
    if (this.deferred.length > 0) {
      for (const p of this.r.peers) p.link?.flush?.();
      const batch = this.deferred;
      this.deferred = [];
      if (batch.length > 1 && this.r.disk?.writeBatch) this.writeLocalBatch(batch);
      else for (const w of batch) this.localDone(w.seq, this.writeLocal(w.data, w.length, w.offset, w.fua));
    }
    if (this.deferredReads.length > 0) this.readLocalBatch();
  }

  /** The deferred local copies of a batch in one call (NodeDisk.writeBatch), one sync after them when any is FUA. */
  private writeLocalBatch(batch: DeferredWrite[]): void {
    const disk = this.r.disk!;
    const errs = disk.writeBatch!(batch.map((w) => ({ buf: w.data, length: w.length, offset: w.offset })));
    let failed = errs.find((e) => e !== null) ?? null;
    if (failed === null && batch.some((w) => w.fua)) {
      try {
        disk.sync();
      } catch (e) {
        failed = e as Error;
      }
    }
    if (failed !== null) this.r.detach(failed);
    for (let i = 0; i < batch.length; i++) this.localDone(batch[i]!.seq, failed === null ? 1 : 0);
  }

  /** The batch's deferred guest reads in one call (NodeDisk.readBatch); a failed one is read from a peer, and rewritten. */
  private readLocalBatch(): void {
    const reads = this.deferredReads;
    this.deferredReads = [];
    const disk = this.r.disk;
    if (!disk?.readBatch) {
      for (const r of reads) this.remoteRead(r, r.offset, r.length, false); // the disk detached in this batch
      return;
    }
    const errs = disk.readBatch(reads.map((r) => ({ buf: r.data, length: r.length, offset: r.offset })));
    for (let i = 0; i < reads.length; i++) {
      const r = reads[i]!;
      const e = errs[i];
      if (!e) {
        r.channel.complete(r.slot, 0);
        continue;
      }
      this.r.stats.localReadErrors++;
      this.r.log.warn(`local read failed (${e.message}): reading from a peer and rewriting the block`, { offset: r.offset, length: r.length });
      this.remoteRead(r, r.offset, r.length, true);
    }
  }

  /** A guest write's local copy (fdatasync'ed for FUA): 1 when written, 0 without a disk or when it failed. */
  private writeLocal(data: Uint8Array, length: number, offset: number, fua: boolean): number {
    return this.localCopy((d) => {
      d.write(data, length, offset);
      if (fua) d.sync();
    });
  }

  /** The deferred local copy of operation `seq` was written (ok 1) or failed (0, the disk detached). */
  private localDone(seq: number, ok: number): void {
    const p = this.pending.get(seq);
    if (!p || !p.localPending) return;
    p.localPending = false;
    p.ok += ok;
    this.completeOnLocalCopy(p, ok);
    this.maybeDone(seq, p);
  }

  /** Runs an operation on the local disk: 1 (a good copy) when it succeeded, 0 when there is no disk or it failed (then detached). */
  private localCopy(op: (disk: NodeDisk) => void): number {
    if (!this.r.disk) return 0;
    try {
      op(this.r.disk);
      return 1;
    } catch (e) {
      this.r.detach(e as Error);
      return 0;
    }
  }

  /**
   * Sends a change of [offset, offset + length) to every replicating disk peer (`send`), marks it out
   * of sync toward the others, and keeps resyncs consistent with it. Returns the peers it went to.
   */
  private toDiskPeers(offset: number, length: number, send: (p: Peer) => void): number {
    let mask = 0;
    for (const p of this.r.peers) {
      if (!p.hasDisk) continue;
      if (p.replicating) {
        send(p);
        mask |= 1 << p.id;
      } else {
        this.r.md?.setOutOfSync(p.id, offset, length);
      }
    }
    this.r.resync.writeTouchesResync(offset, length);
    if (this.r.disk) this.r.resync.writeInSync(offset, length, mask);
    return mask;
  }

  /**
   * Waits for the peers in `mask` to acknowledge operation `seq` (every peer acknowledges, whatever
   * the protocol, so a dropped link always marks what it may have missed). Protocol A completes the
   * guest's request at once when the local disk holds it (unless FUA); B and C when the peers answer.
   * A request no copy of which survived fails with EIO.
   */
  private track(req: ChannelRequest | null, seq: number, mask: number, ok: number, offset: number, length: number, fua: boolean, inPlace = false, localPending = false): void {
    if (mask === 0 && !localPending) return this.finish(req, ok > 0 ? 0 : -EIO);
    const p: Pending = { req, mask, ok, inPlace, offset, length, marks: length > 0, localPending, fua };
    this.completeOnLocalCopy(p, ok);
    this.pending.set(seq, p);
  }

  /** Protocol A completes the guest's request once the local disk holds it (`ok` 1), unless FUA. */
  private completeOnLocalCopy(p: Pending, ok: number): void {
    if (p.req && this.r.cfg.protocol === 'A' && !p.fua && ok > 0) {
      this.finish(p.req, 0);
      p.req = null;
    }
  }

  private guestFlush(r: ChannelRequest): void {
    this.r.stats.flushes++;
    const ok = this.localCopy((d) => d.sync());
    const seq = this.r.seq++;
    let mask = 0;
    for (const p of this.r.peers) {
      if (!p.replicating) continue;
      p.link!.send({ type: FrameType.Flush, seq });
      mask |= 1 << p.id;
    }
    this.track(r, seq, mask, ok, 0, 0, true);
  }

  private guestTrim(r: ChannelRequest): void {
    const unmap = r.op === ChannelOp.Discard || (r.flags & CH_UNMAP) !== 0;
    const mode = r.op === ChannelOp.Discard ? TRIM_DISCARD : unmap ? TRIM_ZEROES_UNMAP : TRIM_ZEROES;
    this.r.generations.newGenerationIfNeeded(0);
    this.r.md?.alActivate(r.offset, r.length);
    const ok = this.localCopy((d) => d.trim(r.offset, r.length, unmap));
    const seq = this.r.seq++;
    const mask = this.toDiskPeers(r.offset, r.length, (p) => p.link!.send({ type: FrameType.Trim, seq, offset: r.offset, length: r.length, mode }));
    this.track(r, seq, mask, ok, r.offset, r.length, false);
  }

  finish(req: ChannelRequest | null, status: number): void {
    if (req) req.channel.complete(req.slot, status);
  }

  /**
   * The link to `p` went down: writes waiting for it complete without it (their blocks are marked out of
   * sync toward it), and reads it was to answer go to another peer.
   */
  peerLost(p: Peer, link: PeerLink): void {
    const bit = 1 << p.id;
    for (const [seq, w] of [...this.pending]) {
      if ((w.mask & bit) === 0) continue;
      if (w.inPlace && link.closed) {
        // The frame may still sit in the closing socket's queue, pointing into the channel slot: the
        // blocks are marked now, but the request (and its slot) completes only once the socket is gone.
        if (w.marks) {
          this.r.generations.newGenerationIfNeeded(bit);
          this.r.md?.setOutOfSync(p.id, w.offset, w.length);
        }
        void link.closed.then(() => this.settle(p, seq, -EIO));
      } else {
        this.settle(p, seq, -EIO);
      }
    }
    for (const [seq, rd] of [...this.reads]) {
      if (rd.peerId !== p.id) continue;
      this.reads.delete(seq);
      this.remoteRead(rd.req, rd.offset, rd.length, rd.repair);
    }
  }

  /** A peer acknowledged (or failed, or dropped) operation `seq`. */
  settle(peer: Peer, seq: number, status: number): void {
    const p = this.pending.get(seq);
    if (!p) return;
    const bit = 1 << peer.id;
    if ((p.mask & bit) === 0) return;
    p.mask &= ~bit;
    if (status === 0) {
      p.ok++;
    } else if (p.marks) {
      // The peer could not write it (or the link dropped): its copy is out of date there. The bits
      // need a generation to be relative to, as for a peer that is away.
      this.r.generations.newGenerationIfNeeded(bit);
      this.r.md?.setOutOfSync(peer.id, p.offset, p.length);
    }
    this.maybeDone(seq, p);
  }

  /** Completes operation `seq` once every peer answered and the local copy (if deferred) is written. */
  private maybeDone(seq: number, p: Pending): void {
    if (p.mask !== 0 || p.localPending) return;
    this.pending.delete(seq);
    const st = p.ok > 0 ? 0 : -EIO;
    if (p.marks && !this.r.hasQuorum()) {
      // The write lost its peers together with the quorum: like a new write it fails (io-error),
      // or waits for the quorum to return (suspend-io); DRBD treats in-flight requests alike.
      if (this.r.cfg.onNoQuorum === 'suspend-io') {
        this.heldCompletions.push({ p, st });
      } else {
        // The local disk holds a write nobody was told about and the majority may move on: this
        // copy is Outdated, and resyncs from the majority when it returns.
        this.r.outdate('a write failed when the quorum was lost');
        this.finish(p.req, -EIO);
      }
      return;
    }
    this.finish(p.req, st);
  }

  /** Replays writes held during a handshake once no peer is mid-handshake. */
  releaseHeld(): void {
    if (this.held.length === 0 || this.r.peers.some((p) => p.link && p.hasDisk && p.replication === 'Handshake')) return;
    const list = this.held;
    this.held = [];
    for (const r of list) this.request(r);
    this.endBatch();
  }

  onReadReply(p: Peer, seq: number, status: number, data: Uint8Array): void {
    const rd = this.reads.get(seq);
    if (!rd || rd.peerId !== p.id) return;
    this.reads.delete(seq);
    if (status === 0 && data.length !== rd.length) status = -EIO;
    if (status === 0 && rd.repair && this.r.disk) {
      try {
        this.r.disk.write(data, data.length, rd.offset);
        this.r.stats.readsRepaired++;
        this.r.log.info('rewrote a block that failed to read locally with the copy from a peer', { offset: rd.offset, length: rd.length, peer: p.name });
      } catch (e) {
        this.r.detach(e as Error);
      }
    }
    if (status === 0) rd.req.data.set(data.subarray(0, rd.length));
    rd.req.channel.complete(rd.req.slot, status);
  }
}
