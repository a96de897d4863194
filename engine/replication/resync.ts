// Resync (DRBD's sender side): the SyncTarget's requests and rate control, the SyncSource's answers, progress persistence.
import { xxh3 } from '../../wasm/index.js';
import { RESYNC_DATA_HEADER, writeResyncDataHeader } from './wire.js';
import { ErrorCode, FrameType, MAX_PAYLOAD, type Generations } from './frames.js';
import type { Resource, StateChange } from './resource.js';
import { Peer, Resync } from './peer.js';

/**
 * Requests a resync target keeps in flight (many, for scattered blocks: each is a round trip), the
 * bytes they may ask for together, and the largest one.
 */
const RESYNC_DEPTH = 64;
const RESYNC_INFLIGHT_BYTES = 8 << 20;
/**
 * Bytes of answers being written to the disk at once, apart from those in flight on the link: the two
 * stages take about as long each (12-25 ms per MiB here), and one budget for both left each half idle.
 */
const RESYNC_WRITING_BYTES = 8 << 20;
/** Answers of this size and up are written on libuv's pool; smaller ones on the engine's thread. */
const RESYNC_POOL_WRITE = 64 << 10;
/** Answers up to this size get a buffer of their own; larger ones reuse a pooled buffer. */
const RESYNC_SMALL_ANSWER = 64 << 10;
/** Large resync answer buffers a SyncSource keeps for reuse (8 MiB in flight, and spares). */
const RESYNC_FRAME_POOL = 16;
/**
 * Answers of one 4 KiB block (a partial resync of scattered blocks) also reuse buffers: a fresh 4 KiB +
 * header buffer is one allocation outside Node's pool per answer, 20 % of a SyncSource's time per request.
 */
const RESYNC_BLOCK = 4096;
const RESYNC_BLOCK_POOL = 128;
const RESYNC_MAX_REQUEST = 1024 * 1024;
/** Guest writes within this window make the resync controller fall back to c-min-rate. */
const APP_ACTIVE_MS = 100;

/** Runs the resyncs of one node with its peers, as SyncTarget (it asks) or SyncSource (it answers). */
export class ResyncDriver {
  constructor(private readonly r: Resource) {}
  resyncTimer: NodeJS.Timeout | null = null;
  /** A SyncTarget's data sync for its bitmap write-back is running (persistResyncProgress). */
  progressSyncing = false;
  /** Frame buffers for resync answers (see onResyncRequest). */
  private readonly resyncFrames: Buffer[] = [];
  private readonly blockFrames: Buffer[] = [];

  /**
   * The periodic bitmap write-back of a SyncTarget. It clears bits as resynced blocks arrive, and
   * those blocks must be durable before the cleared bits reach the disk: otherwise, after a power
   * loss, a stale block would count as in sync. So the dirty pages are captured, the data is synced
   * on libuv's pool (an fdatasync on the event loop would stall guest I/O while it runs), and the
   * capture is written afterwards.
   */
  persistResyncProgress(sync: boolean): void {
    const md = this.r.md!;
    const disk = this.r.disk!;
    if (sync) {
      // Marks toward an absent peer that no activity log covers: written now, after the data.
      disk.sync();
      md.flushBitmaps(true);
      return;
    }
    if (this.progressSyncing) return;
    const captured = md.captureBitmaps();
    if (captured.pages.length === 0) return;
    this.progressSyncing = true;
    disk.syncAsync((err) => {
      this.progressSyncing = false;
      if (this.r.md !== md || this.r.disk !== disk) return; // detached or closed meanwhile
      if (err) return this.r.detach(err);
      this.r.safely(() => md.writeCaptured(captured));
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Resync

  /**
   * Resync answers being written to the local disk (on libuv's pool, so the main thread goes on asking
   * and receiving while the kernel throttles the writer to the disk's writeback rate): offset, length.
   * A replicated write overlapping one waits for it (Receiver), so the newer data lands last.
   */
  private readonly writing = new Set<{ offset: number; length: number }>();

  /** Whether a resync answer being written overlaps [offset, offset + length). */
  writingOverlaps(offset: number, length: number): boolean {
    for (const w of this.writing) if (offset < w.offset + w.length && w.offset < offset + length) return true;
    return false;
  }

  /** A guest write to a range a resync request is fetching makes that answer stale (it would overwrite newer data). */
  writeTouchesResync(offset: number, length: number): void {
    for (const p of this.r.peers) {
      const rs = p.resync;
      if (!rs || !rs.asTarget) continue;
      for (const r of rs.inflight.values()) if (offset < r.offset + r.length && r.offset < offset + length) r.stale = true;
    }
  }

  /** A write now on both this node and the peers it was sent to: those blocks need no resync. */
  writeInSync(offset: number, length: number, sentTo: number): void {
    if (!this.r.md) return;
    for (const p of this.r.peers) {
      if (p.resync && (sentTo & (1 << p.id)) !== 0) this.r.md.clearInSync(p.id, offset, length);
    }
  }

  ensureResyncTimer(): void {
    if (this.resyncTimer) return;
    this.resyncTimer = setInterval(() => {
      let active = false;
      for (const p of this.r.peers) {
        if (p.resync?.asTarget) {
          active = true;
          this.r.safely(() => this.pumpResync(p));
        }
      }
      if (!active && this.resyncTimer) {
        clearInterval(this.resyncTimer);
        this.resyncTimer = null;
      }
    }, 10);
  }

  /** Resync speed now: resync-rate, or c-min-rate while the guest is writing (0 = unlimited). */
  private resyncRate(): number {
    return Date.now() - this.r.lastAppWrite < APP_ACTIVE_MS ? this.r.cfg.cMinRate : this.r.cfg.resyncRate;
  }

  /** The SyncTarget asks for the next out-of-sync runs, within the rate and depth limits. */
  pumpResync(p: Peer): void {
    const rs = p.resync;
    const md = this.r.md;
    if (!rs || !rs.asTarget || !md || !p.link) return;
    const rate = this.resyncRate();
    const now = Date.now();
    if (rate > 0) {
      rs.tokens = Math.min(rate / 10 + RESYNC_MAX_REQUEST, rs.tokens + (rate * (now - rs.lastRefill)) / 1000);
    }
    rs.lastRefill = now;
    const gran = md.granularity;
    const maxBits = Math.max(1, Math.floor(RESYNC_MAX_REQUEST / gran));
    let wrapped = false;
    while (rs.inflight.size < RESYNC_DEPTH && rs.inflightBytes < RESYNC_INFLIGHT_BYTES && rs.writingBytes < RESYNC_WRITING_BYTES && (rate === 0 || rs.tokens > 0) && p.link.buffered < 8 * RESYNC_MAX_REQUEST) {
      let run = md.nextOutOfSync(p.id, rs.cursor, maxBits);
      if (!run && !wrapped) {
        wrapped = true; // once per call: bits left behind by stale answers, or still in flight
        rs.cursor = 0;
        run = md.nextOutOfSync(p.id, 0, maxBits);
      }
      if (!run) break;
      const { start: bit, end } = run;
      // Skip ranges already being fetched.
      const offset = bit * gran;
      const length = Math.min(end * gran, this.r.size) - offset;
      rs.cursor = end;
      let busy = this.writingOverlaps(offset, length);
      for (const r of rs.inflight.values()) if (r.offset === offset) busy = true;
      if (busy) continue;
      const seq = this.r.seq++;
      rs.inflight.set(seq, { offset, length, stale: false });
      rs.inflightBytes += length;
      if (rs.checksums && this.r.disk) {
        let hash = 0n;
        try {
          this.r.disk.read(this.r.scratch, length, offset);
          hash = xxh3(this.r.scratch.subarray(0, length));
        } catch { /* unreadable here: ask for the data */ }
        p.link.send({ type: FrameType.ChecksumRequest, seq, offset, length, hash });
      } else {
        p.link.send({ type: FrameType.ResyncRequest, seq, offset, length });
      }
      rs.tokens -= length;
    }
    if (rs.inflight.size === 0 && rs.writes === 0 && !md.anyOutOfSync(p.id)) this.finishResyncAsTarget(p);
  }

  /** The SyncSource answers a request with the data, or "in sync" when the checksums match. */
  onResyncRequest(p: Peer, seq: number, offset: number, length: number, hash: bigint | null): void {
    const rs = p.resync;
    if (!rs || rs.asTarget || (this.r.diskState !== 'UpToDate' && this.r.diskState !== 'Outdated')) {
      p.link!.close(ErrorCode.Protocol, `resync request while ${this.r.me.name} is not ${p.name}'s SyncSource`);
      return;
    }
    if (!this.r.disk || offset < 0 || length <= 0 || length > MAX_PAYLOAD || offset + length > this.r.size) {
      p.link!.close(ErrorCode.Protocol, `resync request out of range (${offset}+${length})`);
      return;
    }
    // The block is read straight into a frame buffer behind its header, which goes back to the pool
    // once the socket has taken it: no copy, and no fresh megabyte (page faults) per answer.
    const pooled = length > RESYNC_SMALL_ANSWER;
    const block = length === RESYNC_BLOCK;
    const buf = pooled
      ? this.resyncFrames.pop() ?? Buffer.allocUnsafe(RESYNC_DATA_HEADER + MAX_PAYLOAD)
      : block ? this.blockFrames.pop() ?? Buffer.allocUnsafe(RESYNC_DATA_HEADER + RESYNC_BLOCK) : Buffer.allocUnsafe(RESYNC_DATA_HEADER + length);
    const release = () => {
      if (pooled && this.resyncFrames.length < RESYNC_FRAME_POOL) this.resyncFrames.push(buf);
      else if (block && this.blockFrames.length < RESYNC_BLOCK_POOL) this.blockFrames.push(buf);
    };
    const data = buf.subarray(RESYNC_DATA_HEADER, RESYNC_DATA_HEADER + length);
    try {
      this.r.disk.read(data, length, offset);
    } catch (e) {
      release();
      throw e;
    }
    if (hash !== null && hash !== 0n && xxh3(data) === hash) {
      release();
      p.link!.send({ type: FrameType.ResyncInSync, seq, offset, length });
      rs.bytesSkipped += length;
    } else {
      p.link!.sendEncoded(writeResyncDataHeader(buf, seq, offset, length), release);
      rs.bytesSent += length;
    }
    this.r.md?.clearInSync(p.id, offset, length);
  }

  onResyncAnswer(p: Peer, seq: number, offset: number, length: number, data: Uint8Array | null): void {
    if (p.abandonedResync.delete(seq)) return; // an answer to a resync an earlier handshake abandoned
    const rs = p.resync;
    if (!rs || !rs.asTarget) return;
    const r = rs.inflight.get(seq);
    if (!r) return;
    if (r.offset !== offset || r.length !== length) {
      p.link!.close(ErrorCode.Protocol, 'resync answer does not match its request');
      return;
    }
    rs.inflight.delete(seq);
    if (r.stale) {
      rs.inflightBytes -= r.length;
    } else if (!data) {
      rs.inflightBytes -= r.length;
      rs.bytesSkipped += length;
      this.r.md!.clearInSync(p.id, offset, length);
    } else {
      // Bits clear once the answer is written, and only for this same run (a new handshake may have
      // marked the range again meanwhile).
      const disk = this.r.disk!;
      const written = (err: Error | null): void => {
        if (this.r.disk !== disk) return; // detached or closed meanwhile
        this.r.safely(() => {
          if (err) throw err;
          if (p.resync === rs) {
            rs.bytesReceived += length;
            this.r.receiver.markAbsent(p, offset, length);
            this.r.md!.clearInSync(p.id, offset, length);
          }
        });
      };
      rs.inflightBytes -= length;
      if (length < RESYNC_POOL_WRITE) {
        // A small answer is written here and now: a 4 KiB write into the page cache costs less than
        // the hand-off to libuv's pool and back (a 1 % partial resync took 0.42 s through the pool).
        let err: Error | null = null;
        try { disk.write(data, length, offset); } catch (e) { err = e as Error; }
        written(err);
      } else {
        // A large one goes to libuv's pool (O_DIRECT when it is aligned), so this thread goes on asking
        // and receiving while the disk writes; overlapping writes wait for it (Receiver, RequestPath).
        const w = { offset, length };
        this.writing.add(w);
        rs.writes++;
        rs.writingBytes += length;
        disk.writeAsync(data, length, offset, (err) => {
          this.writing.delete(w);
          rs.writes--;
          rs.writingBytes -= length;
          if (this.r.disk !== disk) return;
          written(err);
          this.r.receiver.resyncWritten();
          this.r.safely(() => this.r.requests.resyncWritten());
          if (p.resync === rs) this.r.safely(() => this.pumpResync(p));
        });
      }
    }
    this.pumpResync(p);
  }

  private finishResyncAsTarget(p: Peer): void {
    const md = this.r.md!;
    const rs = p.resync!;
    const src = p.state!.gens;
    // The data first, then the bitmap that calls it in sync.
    try { this.r.disk!.sync(); } catch (e) { return this.r.detach(e as Error); }
    md.flushBitmaps();
    if (p.state!.disk !== 'UpToDate') {
      this.r.log.warn(`resync from ${p.name} ended but ${p.name} is ${p.state!.disk}: this node stays Inconsistent`);
      this.endResync(p, rs);
      return;
    }
    this.endResync(p, rs, {
      disk: 'UpToDate',
      persist: (m) => {
        m.adoptGenerations(src, this.r.generations.absentDiskPeers());
        m.setBitmapBase(p.id, 0n);
        m.resyncFrom = 0n;
        m.resyncTotal = 0;
      },
    });
    p.link!.send({ type: FrameType.ResyncDone, gens: { current: md.gens.current, bitmap: [...md.gens.bitmap], history: [...md.gens.history] } });
  }

  onResyncDone(p: Peer, gens: Generations): void {
    const rs = p.resync;
    if (!rs || rs.asTarget || !this.r.md) return;
    p.state = p.state ? { ...p.state, gens, disk: 'UpToDate' } : p.state;
    this.endResync(p, rs, {
      persist: (md) => {
        md.clearAll(p.id);
        md.setBitmapBase(p.id, 0n);
        md.flushBitmaps();
      },
    });
  }

  /** After a crash as Primary, the first peer in sync with this node settles it. */
  settledCrash(p: Peer): void {
    if (!p.hasDisk || !this.r.crashPeers.delete(p.id) || this.r.crashPeers.size > 0 || !this.r.md || this.r.role === 'Primary') return;
    this.r.changeState({ persist: (md) => { md.primary = false; } });
  }

  /** Ends the resync with `p` (back to Established), with whatever else changes with it (`change`). */
  private endResync(p: Peer, rs: Resync, change: StateChange = {}): void {
    const seconds = (Date.now() - rs.startedAt) / 1000;
    p.lastResync = { bytesSent: rs.bytesSent, bytesReceived: rs.bytesReceived, bytesSkipped: rs.bytesSkipped, seconds, full: rs.full, asTarget: rs.asTarget };
    p.resync = null;
    this.r.changeState({ ...change, replication: [[p, 'Established']] });
    this.settledCrash(p);
    this.r.log.info(`resync with ${p.name} finished`, {
      as: rs.asTarget ? 'SyncTarget' : 'SyncSource', bytesSent: rs.bytesSent, bytesReceived: rs.bytesReceived, bytesSkipped: rs.bytesSkipped, seconds: seconds.toFixed(2),
    });
  }
}
