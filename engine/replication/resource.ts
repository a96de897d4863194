// One node's view of a replicated resource: roles, the replicated write path, peer handshakes, resync, verify, quorum.
//
// Runs on the node's main thread. Guest I/O arrives from queue workers through ChannelHosts; peers
// arrive as PeerLinks from a transport. Everything here is event-driven and synchronous per event:
// the local disk is written with one system call on the page cache, frames are queued on links, and
// a request completes when every copy it waits for is acknowledged (protocol C: written on every
// connected peer's disk; B: received by every peer; A: sent).
import { xxh3, findNextSet } from '../../wasm/index.js';
import { Logger } from '../log.js';
import { EIO, EINVAL } from '../os.js';
import { ChannelOp, CH_FUA, CH_UNMAP, HEADROOM, type ChannelHost, type ChannelRequest } from './channel.js';
import { DATA_HEADER, RESYNC_DATA_HEADER, writeDataHeader, writeResyncDataHeader } from './wire.js';
import { quorumVotes, type NodeConfig, type ResourceConfig } from './config.js';
import {
  AckKind, DATA_FUA, ErrorCode, FrameType, MAX_PAYLOAD, STATE_CRASHED_PRIMARY, STATE_DISCARD_MY_DATA, STATE_WANT_RESYNC,
  TRIM_DISCARD, TRIM_ZEROES, TRIM_ZEROES_UNMAP,
  type DiskState, type Frame, type Generations, type Role, type StateFrame,
} from './frames.js';
import { refuseFrame, type Replication } from './frame-rules.js';
import { decideResync, hex, resolveSplitBrain, type NodeView } from './handshake.js';
import type { LinkControl, LinkHandler, PeerLink } from './link.js';
import { DiskIoError, LocalDisk, type Fault } from './local-disk.js';
import { Metadata, MetadataError, newGeneration } from './metadata.js';

export type Connection = 'StandAlone' | 'Connecting' | 'Connected';
export type { Replication } from './frame-rules.js';

/**
 * Requests a resync target keeps in flight (many, for scattered blocks: each is a round trip), the
 * bytes they may ask for together, and the largest one.
 */
const RESYNC_DEPTH = 64;
const RESYNC_INFLIGHT_BYTES = 8 << 20;
/** Answers up to this size get a buffer of their own; larger ones reuse a pooled buffer. */
const RESYNC_SMALL_ANSWER = 64 << 10;
/** Large resync answer buffers a SyncSource keeps for reuse (8 MiB in flight, and spares). */
const RESYNC_FRAME_POOL = 16;
const RESYNC_MAX_REQUEST = 1024 * 1024;
/** Guest writes within this window make the resync controller fall back to c-min-rate. */
const APP_ACTIVE_MS = 100;
const VERIFY_CHUNK = 1 << 20;
const VERIFY_DEPTH = 4;
/** Verify hashes 4 KiB blocks (volume sizes are multiples of 4 KiB; bitmaps are at least that coarse). */
const VERIFY_BLOCK = 4096;

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
  /** The local copy is still to be written (see `writeDeferred`): the request waits for it too. */
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

interface ResyncRequest {
  offset: number;
  length: number;
  /** A guest write touched the range after the request was sent: its answer is stale. */
  stale: boolean;
}

/** A resync in progress toward or from one peer. */
class Resync {
  cursor = 0;
  readonly inflight = new Map<number, ResyncRequest>();
  inflightBytes = 0;
  startedAt = Date.now();
  totalBits = 0;
  bytesSent = 0;
  bytesReceived = 0;
  bytesSkipped = 0;
  /** Bits already done when this run started (a resumed resync). */
  doneAtStart = 0;
  tokens = 0;
  lastRefill = Date.now();
  constructor(readonly asTarget: boolean, readonly full: boolean, readonly checksums: boolean) {}
}

interface VerifyRun {
  offset: number;
  inflight: number;
  outOfSyncBlocks: number;
  startedAt: number;
  finishedAt: number;
  resyncAfter: boolean;
}

/** One other node of the resource, as this node sees it. */
export class Peer {
  link: PeerLink | null = null;
  /** Administratively connected (`connect`) or not (`disconnect`). */
  enabled = true;
  state: StateFrame | null = null;
  replication: Replication = 'Off';
  resync: Resync | null = null;
  verify: VerifyRun | null = null;
  lastVerify: VerifyRun | null = null;
  splitBrain: string | null = null;
  /** Handshake progress: our bitmap sent, theirs fully received. */
  bitmapSent = false;
  bitmapReceived = false;
  pendingResync: { asTarget: boolean; full: boolean } | null = null;
  /** Resync requests of ours that a new handshake abandoned: their answers may still arrive, and are dropped. */
  readonly abandonedResync = new Set<number>();
  /** Resync traffic of the last finished resync, for status and tests. */
  lastResync: { bytesSent: number; bytesReceived: number; bytesSkipped: number; seconds: number; full: boolean; asTarget: boolean } | null = null;
  stats = { dataBytesSent: 0, dataBytesReceived: 0, readsServed: 0 };
  constructor(readonly cfg: NodeConfig) {}
  get id(): number { return this.cfg.id; }
  get name(): string { return this.cfg.name; }
  get hasDisk(): boolean { return this.cfg.disk !== null; }
  get connection(): Connection { return this.link ? 'Connected' : this.enabled ? 'Connecting' : 'StandAlone'; }
  /** Writes reach this peer's disk (it takes part in replication). */
  get replicating(): boolean {
    return this.link !== null && this.hasDisk
      && (this.replication === 'WFBitMap' || this.replication === 'Established' || this.replication === 'SyncSource' || this.replication === 'SyncTarget')
      && this.state !== null && this.state.disk !== 'Diskless' && this.state.disk !== 'Failed';
  }
  get upToDate(): boolean {
    return this.link !== null && this.replication === 'Established' && this.state?.disk === 'UpToDate';
  }
}

/** Why a role change was refused, in words a user can act on. */
export class RoleError extends Error {}

export interface ResourceOptions {
  cfg: ResourceConfig;
  me: NodeConfig;
  log?: Logger;
}

export interface PeerStatus {
  id: number;
  connection: Connection;
  replication: Replication;
  role: Role | 'Unknown';
  disk: DiskState | 'DUnknown';
  outOfSyncBytes: number;
  splitBrain?: string;
  resync?: { asTarget: boolean; full: boolean; checksums: boolean; percent: number; doneBytes: number; totalBytes: number; rateBytesPerSec: number; etaSeconds: number | null; bytesSent: number; bytesReceived: number };
  lastResync?: Peer['lastResync'];
  verify?: { running: boolean; percent: number; outOfSyncBlocks: number; outOfSyncBytes: number };
  stats: Peer['stats'];
}

export interface ResourceStatus {
  resource: string;
  node: string;
  role: Role;
  disk: DiskState;
  size: number;
  quorum: boolean;
  votes: { have: number; needed: number };
  clients: number;
  generation: string;
  stats: Resource['stats'];
  peers: Record<string, PeerStatus>;
  /** The transport's counters (connections, handshakes refused, timed out...), added by the daemon. */
  links?: Record<string, number>;
}

/**
 * The replication engine of one node. Construct, `attach()` the local disk (unless diskless), hand
 * peer links to it (it is the transport's LinkHandler) and serve guest requests from channels.
 */
export class Resource implements LinkHandler {
  readonly cfg: ResourceConfig;
  readonly me: NodeConfig;
  readonly log: Logger;
  readonly peers: Peer[];
  private readonly byId = new Map<number, Peer>();
  role: Role = 'Secondary';
  md: Metadata | null = null;
  disk: LocalDisk | null = null;
  diskState: DiskState = 'Diskless';
  /** Usable size in bytes; for a diskless node learnt from the first peer with a disk. */
  size = 0;
  private seq = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly reads = new Map<number, PendingRead>();
  private readonly channels: ChannelHost[] = [];
  private suspended: ChannelRequest[] = [];
  private held: ChannelRequest[] = [];
  /** Local copies of this turn's writes, written once their frames have left (writeDeferred). */
  private deferred: DeferredWrite[] = [];
  /** Writes finished while the quorum was lost under suspend-io: completed when it returns. */
  private heldCompletions: { p: Pending; st: number }[] = [];
  private clients = 0;
  /** Disks attached so far: names the current one for the workers' local reads (updateLocalReads). */
  private attachments = 0;
  private lastAppWrite = 0;
  private resyncTimer: NodeJS.Timeout | null = null;
  private bitmapTimer: NodeJS.Timeout | null = null;
  /** A SyncTarget's data sync for its bitmap write-back is running (persistResyncProgress). */
  private progressSyncing = false;
  private readonly sizeWaiters: (() => void)[] = [];
  private readonly scratch = Buffer.alloc(MAX_PAYLOAD);
  /** Frame buffers for resync answers (see onResyncRequest). */
  private readonly resyncFrames: Buffer[] = [];
  /**
   * Local I/O errors: `localReadErrors` counts failed reads (served by a peer instead), `localWriteErrors`
   * failed writes, trims, flushes and metadata updates (each detaches the disk).
   */
  readonly stats = { localReadErrors: 0, readsRepaired: 0, localWriteErrors: 0, writes: 0, reads: 0, flushes: 0, writeConflicts: 0, framesRefused: 0 };
  /** The transport's administrative side (set by the daemon). */
  linkControl: LinkControl | null = null;
  /** Called when role, disk, connection or sync state change (the daemon logs status and wakes waiters). */
  onChange: (() => void) | null = null;

  constructor(opts: ResourceOptions) {
    this.cfg = opts.cfg;
    this.me = opts.me;
    this.log = opts.log ?? new Logger(`${opts.cfg.resource}/${opts.me.name}`);
    this.peers = opts.cfg.nodes.filter((n) => n.id !== opts.me.id).map((n) => new Peer(n));
    for (const p of this.peers) this.byId.set(p.id, p);
  }

  // ---------------------------------------------------------------------------------------------
  // Local disk

  /** Opens the local disk and its metadata; applies a crashed Primary's activity log. */
  attach(md: Metadata): void {
    this.attachments++;
    this.md = md;
    this.size = md.dataSize;
    this.disk = new LocalDisk(this.me.disk!, md.dataSize);
    this.diskState = md.disk;
    const rep = md.openReport;
    if (rep.crashedPrimary || rep.alExtentsRecovered.length > 0 || rep.alLost) {
      md.applyAlToBitmaps();
      const what = rep.crashedPrimary ? 'this node crashed while Primary'
        : rep.alLost ? 'the activity log is unreadable' : 'this node stopped with writes in its activity log';
      this.log.warn(`${what}: the extents of its activity log are marked out of sync toward every peer`, {
        extents: rep.alLost ? 'all' : rep.alExtentsRecovered.length,
      });
    }
    if (rep.badPages > 0) this.log.warn('bitmap pages failed their checksum and were set to all out-of-sync (a full resync of their range follows)', { pages: rep.badPages });
    // The primary flag stays set until this node is in sync with a peer again: until then every
    // start must still say it crashed as Primary (it decides the resync direction).
    if (rep.crashedPrimary) for (const p of this.peers) if (p.hasDisk) this.crashPeers.add(p.id);
    // Periodic write-back without fdatasync: with internal metadata an fdatasync also flushes every
    // dirty data page of the file, which would stall resync and guest writes once a second.
    // A Secondary's marks toward absent peers have no activity log behind them: those are synced.
    if (this.bitmapTimer) clearInterval(this.bitmapTimer);
    this.bitmapTimer = setInterval(() => this.safely(() => {
      const sync = this.role === 'Secondary' && this.absentMarks;
      this.absentMarks = false;
      if (this.disk && this.md && this.peers.some((p) => p.resync?.asTarget)) return this.persistResyncProgress(sync);
      this.md?.flushBitmaps(sync);
    }), 1000);
    this.bitmapTimer.unref();
    this.log.info('disk attached', { disk: this.me.disk, size: this.size, state: this.diskState, generation: hex(md.gens.current) });
  }

  /**
   * The periodic bitmap write-back of a SyncTarget. It clears bits as resynced blocks arrive, and
   * those blocks must be durable before the cleared bits reach the disk: otherwise, after a power
   * loss, a stale block would count as in sync. So the dirty pages are captured, the data is synced
   * on libuv's pool (an fdatasync on the event loop would stall guest I/O while it runs), and the
   * capture is written afterwards.
   */
  private persistResyncProgress(sync: boolean): void {
    const md = this.md!;
    const disk = this.disk!;
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
      if (this.md !== md || this.disk !== disk) return; // detached or closed meanwhile
      if (err) return this.detach(err);
      this.safely(() => md.writeCaptured(captured));
    });
  }

  /** Disk peers still owed the resync of a crashed Primary's activity log (empty: no crash pending). */
  private readonly crashPeers = new Set<number>();
  /** A diskless node's view of the generations (learnt from UpToDate peers; rotated while Primary). */
  private vgens: Generations | null = null;
  private rotatedAway = 0;

  /**
   * Detaches the local disk after an I/O error (on-io-error detach): the node goes on diskless through
   * its peers. Every such error is counted, as a read or a write error (metadata, flush and trim errors
   * count as writes).
   */
  private detach(err: Error | string): void {
    if (!this.disk) return;
    if (err instanceof DiskIoError && err.op === 'read') this.stats.localReadErrors++;
    else this.stats.localWriteErrors++;
    const why = typeof err === 'string' ? err : err.message;
    this.log.error(`local disk failed (${why}): detaching it; this node now serves I/O through its peers (fix or replace the disk, then run \`twindisk attach\`: it resyncs fully from a peer)`);
    try {
      // Whatever this disk holds from now on is stale: never trust it as UpToDate again.
      if (this.md) {
        this.md.disk = 'Inconsistent';
        this.md.close();
      }
    } catch { /* the disk is failing */ }
    this.disk.close();
    this.disk = null;
    this.md = null;
    this.diskState = 'Diskless';
    for (const p of this.peers) {
      if (p.resync || p.pendingResync) {
        p.resync = null;
        p.pendingResync = null;
        if (p.link) p.replication = 'Established';
      }
    }
    this.updateLocalReads();
    this.broadcastState();
    this.changed();
  }

  /**
   * `twindisk attach`: takes the local disk back after a detach (a repaired or replaced disk with
   * metadata, see create-md). Its data is not trusted: it is Inconsistent and every block is resynced
   * from an UpToDate peer.
   */
  reattach(md: Metadata): void {
    if (this.disk) throw new RoleError('the local disk is attached already');
    if (md.dataSize !== this.size) {
      md.close();
      throw new RoleError(`the disk has ${md.dataSize} usable bytes and the volume ${this.size}: give it the same size (create-md --size)`);
    }
    md.disk = 'Inconsistent';
    md.resyncFrom = 0n; // no resync of this disk's to resume: it is copied whole
    md.resyncTotal = 0;
    for (const p of this.peers) if (p.hasDisk) md.setAll(p.id);
    md.writeSuperblock();
    this.attach(md);
    this.broadcastState(STATE_WANT_RESYNC);
    for (const p of this.peers) if (p.link && p.state) this.handshake(p);
    this.changed();
  }

  /** Adds a test fault to the local disk (reads stop taking the workers' fast path while any is set). */
  injectFault(f: Fault | null): void {
    if (!this.disk) throw new RoleError('this node has no local disk to inject faults into');
    if (f) this.disk.inject(f);
    else this.disk.clearFaults();
    this.updateLocalReads();
  }

  // ---------------------------------------------------------------------------------------------
  // Guest I/O

  /** Registers a queue worker's channel and starts taking its requests. */
  serveChannel(ch: ChannelHost): Promise<void> {
    this.channels.push(ch);
    this.updateLocalReads();
    return ch.serve((r) => this.safely(() => this.request(r), () => r.channel.complete(r.slot, -EIO))).finally(() => {
      const i = this.channels.indexOf(ch);
      if (i >= 0) this.channels.splice(i, 1);
    });
  }

  /**
   * Runs `fn`; an I/O error of the local disk or its metadata (thrown outside the paths that handle
   * it) detaches the disk, anything else is logged; `fail` then answers whoever waits.
   */
  private safely(fn: () => void, fail: () => void = () => undefined): void {
    try {
      fn();
    } catch (e) {
      if (e instanceof DiskIoError || e instanceof MetadataError || (e as NodeJS.ErrnoException).code !== undefined) this.detach(e as Error);
      else this.log.error(`internal error: ${(e as Error).stack ?? e}`);
      fail();
    }
  }

  /** Lets workers read the local disk themselves only when it holds the newest data everywhere. */
  private updateLocalReads(): void {
    const on = this.disk !== null && this.diskState === 'UpToDate' && !this.disk.hasFaults
      && !this.peers.some((p) => p.replication === 'SyncTarget');
    for (const ch of this.channels) ch.setLocalReads(on ? this.attachments : 0);
  }

  /** Resolves once the volume's size is known (at once with a disk; diskless: when a peer with a disk connects). */
  whenSized(): Promise<void> {
    if (this.size > 0) return Promise.resolve();
    return new Promise((r) => this.sizeWaiters.push(r));
  }

  private request(r: ChannelRequest): void {
    if (r.op !== ChannelOp.Flush && (r.offset < 0 || r.length < 0 || r.offset + r.length > this.size)) {
      this.log.warn('refused a request past the end of the volume', { offset: r.offset, length: r.length, size: this.size });
      return r.channel.complete(r.slot, -EINVAL);
    }
    // A read, flush or trim sees the writes before it on the local disk.
    if (r.op !== ChannelOp.Write) this.writeDeferred();
    if (r.op === ChannelOp.Read) return this.guestRead(r);
    if (this.role !== 'Primary') return r.channel.complete(r.slot, -EIO);
    // While a peer with a disk is mid-handshake, whether it needs a write is not decided yet: hold
    // writes for that round trip, so that none is both missed by the peer and absent from the bitmaps.
    if (this.peers.some((p) => p.link && p.hasDisk && p.replication === 'Handshake')) {
      this.held.push(r);
      return;
    }
    if (!this.hasQuorum()) {
      if (this.cfg.onNoQuorum === 'suspend-io') {
        this.suspended.push(r);
        return;
      }
      return r.channel.complete(r.slot, -EIO);
    }
    this.lastAppWrite = Date.now();
    switch (r.op) {
      case ChannelOp.Write:
        return this.guestWrite(r);
      case ChannelOp.Flush:
        return this.guestFlush(r);
      case ChannelOp.Discard:
      case ChannelOp.WriteZeroes:
        return this.guestTrim(r);
    }
  }

  private guestRead(r: ChannelRequest): void {
    this.stats.reads++;
    const syncFrom = this.peers.find((p) => p.replication === 'SyncTarget' && p.link);
    const localOk = this.disk !== null && (this.diskState === 'UpToDate' || (syncFrom !== undefined && !this.anyOutOfSync(syncFrom.id, r.offset, r.length)));
    if (localOk) {
      try {
        this.disk!.read(r.data, r.length, r.offset);
        return r.channel.complete(r.slot, 0);
      } catch (e) {
        this.stats.localReadErrors++;
        this.log.warn(`local read failed (${(e as Error).message}): reading from a peer and rewriting the block`, { offset: r.offset, length: r.length });
        return this.remoteRead(r, r.offset, r.length, true);
      }
    }
    this.remoteRead(r, r.offset, r.length, false);
  }

  /** Reads from an UpToDate peer (the SyncSource first) and completes the request. */
  private remoteRead(req: ChannelRequest, offset: number, length: number, repair: boolean): void {
    const peer = this.peers.find((p) => p.replication === 'SyncTarget' && p.link && p.state?.disk === 'UpToDate') ?? this.peers.find((p) => p.upToDate);
    if (!peer) {
      this.log.warn('a read found no UpToDate copy of the data (local disk not UpToDate and no UpToDate peer connected)', { offset, length });
      req.channel.complete(req.slot, -EIO);
      return;
    }
    const seq = this.seq++;
    this.reads.set(seq, { req, peerId: peer.id, offset, length, repair });
    peer.link!.send({ type: FrameType.ReadRequest, seq, offset, length });
  }

  private guestWrite(r: ChannelRequest): void {
    this.stats.writes++;
    const { offset, length } = r;
    this.replicateWrite(r, offset, length, r.data, (r.flags & CH_FUA) !== 0);
  }

  /** Writes locally and to every replicating peer; completes when the protocol's acknowledgements are in. */
  private replicateWrite(req: ChannelRequest, offset: number, length: number, data: Uint8Array, fua: boolean): void {
    this.newGenerationIfNeeded(0);
    this.md?.alActivate(offset, length);
    const seq = this.seq++;
    // The frame is built around the payload in the channel slot (no copy), unless the request may
    // complete before the peers answer (protocol A): then the slot is reused at once, so each send copies.
    const inPlace = this.cfg.protocol !== 'A' || fua;
    const frame = inPlace ? writeDataHeader(req.slotBuffer, HEADROOM - DATA_HEADER, seq, offset, fua ? DATA_FUA : 0, length) : null;
    const mask = this.toDiskPeers(offset, length, (p) => {
      if (frame) p.link!.sendEncoded(frame);
      else p.link!.send({ type: FrameType.Data, seq, offset, flags: fua ? DATA_FUA : 0, data: data.subarray(0, length) });
      p.stats.dataBytesSent += length;
    });
    if (mask === 0 || !this.disk) {
      return this.track(req, seq, mask, this.writeLocal(data, length, offset, fua), offset, length, fua, frame !== null);
    }
    // The local copy is written after this batch's frames have left (writeDeferred), so the peers'
    // disks and this one work at the same time instead of one after the other (DRBD submits both at once).
    this.track(req, seq, mask, 0, offset, length, fua, frame !== null, true);
    this.deferred.push({ seq, data, offset, length, fua });
    if (this.deferred.length === 1) queueMicrotask(() => this.writeDeferred());
  }

  /**
   * Sends the frames queued on the links this turn, then writes the deferred local copies. Runs at the
   * end of a batch of requests, and before anything that must see earlier writes on the local disk
   * (a flush, a trim, a read). No frame can be received in between: it all happens in one turn.
   */
  private writeDeferred(): void {
    if (this.deferred.length === 0) return;
    for (const p of this.peers) p.link?.flush?.();
    const batch = this.deferred;
    this.deferred = [];
    for (const w of batch) this.localDone(w.seq, this.writeLocal(w.data, w.length, w.offset, w.fua));
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
  private localCopy(op: (disk: LocalDisk) => void): number {
    if (!this.disk) return 0;
    try {
      op(this.disk);
      return 1;
    } catch (e) {
      this.detach(e as Error);
      return 0;
    }
  }

  /**
   * Sends a change of [offset, offset + length) to every replicating disk peer (`send`), marks it out
   * of sync toward the others, and keeps resyncs consistent with it. Returns the peers it went to.
   */
  private toDiskPeers(offset: number, length: number, send: (p: Peer) => void): number {
    let mask = 0;
    for (const p of this.peers) {
      if (!p.hasDisk) continue;
      if (p.replicating) {
        send(p);
        mask |= 1 << p.id;
      } else {
        this.md?.setOutOfSync(p.id, offset, length);
      }
    }
    this.writeTouchesResync(offset, length);
    if (this.disk) this.writeInSync(offset, length, mask);
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
    if (p.req && this.cfg.protocol === 'A' && !p.fua && ok > 0) {
      this.finish(p.req, 0);
      p.req = null;
    }
  }

  private guestFlush(r: ChannelRequest): void {
    this.stats.flushes++;
    const ok = this.localCopy((d) => d.sync());
    const seq = this.seq++;
    let mask = 0;
    for (const p of this.peers) {
      if (!p.replicating) continue;
      p.link!.send({ type: FrameType.Flush, seq });
      mask |= 1 << p.id;
    }
    this.track(r, seq, mask, ok, 0, 0, true);
  }

  private guestTrim(r: ChannelRequest): void {
    const unmap = r.op === ChannelOp.Discard || (r.flags & CH_UNMAP) !== 0;
    const mode = r.op === ChannelOp.Discard ? TRIM_DISCARD : unmap ? TRIM_ZEROES_UNMAP : TRIM_ZEROES;
    this.newGenerationIfNeeded(0);
    this.md?.alActivate(r.offset, r.length);
    const ok = this.localCopy((d) => d.trim(r.offset, r.length, unmap));
    const seq = this.seq++;
    const mask = this.toDiskPeers(r.offset, r.length, (p) => p.link!.send({ type: FrameType.Trim, seq, offset: r.offset, length: r.length, mode }));
    this.track(r, seq, mask, ok, r.offset, r.length, false);
  }

  private finish(req: ChannelRequest | null, status: number): void {
    if (req) req.channel.complete(req.slot, status);
  }

  /** A peer acknowledged (or failed, or dropped) operation `seq`. */
  private settle(peer: Peer, seq: number, status: number): void {
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
      this.newGenerationIfNeeded(bit);
      this.md?.setOutOfSync(peer.id, p.offset, p.length);
    }
    this.maybeDone(seq, p);
  }

  /** Completes operation `seq` once every peer answered and the local copy (if deferred) is written. */
  private maybeDone(seq: number, p: Pending): void {
    if (p.mask !== 0 || p.localPending) return;
    this.pending.delete(seq);
    const st = p.ok > 0 ? 0 : -EIO;
    if (p.marks && !this.hasQuorum()) {
      // The write lost its peers together with the quorum: like a new write it fails (io-error),
      // or waits for the quorum to return (suspend-io); DRBD treats in-flight requests alike.
      if (this.cfg.onNoQuorum === 'suspend-io') {
        this.heldCompletions.push({ p, st });
      } else {
        // The local disk holds a write nobody was told about and the majority may move on: this
        // copy is Outdated, and resyncs from the majority when it returns.
        this.outdate('a write failed when the quorum was lost');
        this.finish(p.req, -EIO);
      }
      return;
    }
    this.finish(p.req, st);
  }

  /** Starts a new data generation before the first write that some disk peer misses (DRBD's new current UUID). */
  private newGenerationIfNeeded(extra: number): void {
    const md = this.md;
    if (!md) return this.newVolatileGeneration();
    let missing = 0;
    for (const p of this.peers) {
      if (p.hasDisk && (!p.replicating || (extra & (1 << p.id)) !== 0) && md.gens.bitmap[p.id] === 0n) missing |= 1 << p.id;
    }
    if (missing === 0) return;
    const old = md.gens.current;
    for (const p of this.peers) if (missing & (1 << p.id)) md.gens.bitmap[p.id] = old;
    md.gens.history = [old, ...md.gens.history].slice(0, 4);
    md.gens.current = newGeneration();
    md.writeSuperblock();
    this.log.info('new data generation: writes are now tracked for peers that miss them', {
      generation: hex(md.gens.current), peers: this.peers.filter((p) => missing & (1 << p.id)).map((p) => p.name).join(','),
    });
    this.broadcastState();
  }

  /**
   * A diskless Primary has no bitmaps, but its Secondaries do: it starts a new generation for them
   * (they adopt it, base their bitmaps toward the missing peers on the old one and mark the writes).
   */
  private newVolatileGeneration(): void {
    const g = this.vgens;
    if (!g || this.role !== 'Primary') return;
    let missing = 0;
    for (const p of this.peers) if (p.hasDisk && !p.replicating && (this.rotatedAway & (1 << p.id)) === 0) missing |= 1 << p.id;
    if (missing === 0) return;
    this.rotatedAway |= missing;
    g.history = [g.current, ...g.history].slice(0, 4);
    g.current = newGeneration();
    this.log.info('new data generation (diskless Primary): peers with disks track the writes the missing ones lack', { generation: hex(g.current) });
    this.broadcastState();
  }

  // ---------------------------------------------------------------------------------------------
  // Roles

  /** A front-end (vhost-user, iSCSI) opened the volume: auto-promote. Throws RoleError when it may not. */
  clientOpened(): void {
    if (this.role !== 'Primary') this.promote(false);
    this.clients++;
  }

  /** A front-end went away; the last one leaving demotes the node. */
  clientClosed(): void {
    this.clients = Math.max(0, this.clients - 1);
    if (this.clients === 0 && this.role === 'Primary') {
      try { this.demote(); } catch (e) { this.log.warn(`auto-demote failed: ${(e as Error).message}`); }
    }
  }

  /** Becomes Primary. `force`: the last survivor, or a new resource's authoritative first copy. */
  promote(force: boolean): void {
    if (this.role === 'Primary') return;
    const otherPrimary = this.peers.find((p) => p.link && p.state?.role === 'Primary');
    if (otherPrimary && !this.cfg.allowTwoPrimaries) {
      throw new RoleError(`${otherPrimary.name} is Primary: demote it first (twindisk secondary --node ${otherPrimary.name}), or set "allow-two-primaries": true for live migration`);
    }
    if (otherPrimary && this.cfg.nodes.filter((n) => n.disk !== null).length > 2) {
      // Conflicting writes are resolved between the two Primaries; a third copy could end either way.
      throw new RoleError(`${otherPrimary.name} is Primary and two Primaries are supported with at most two nodes that have disks (this resource has more)`);
    }
    if (!force && !this.hasQuorum()) {
      const v = this.votes();
      throw new RoleError(`no quorum (${v.have} of ${v.needed} votes needed): connect more nodes, or use \`twindisk primary --force\` on the last survivor`);
    }
    const mine = this.md?.gens.current ?? 0n;
    const newer = mine === 0n ? undefined : this.peers.find((p) => p.link && p.state && p.state.gens.current !== mine && p.state.gens.history.includes(mine));
    if (newer && !force) {
      throw new RoleError(`${newer.name} knows a newer data generation than this node's: resync from a node that has it first (or use primary --force to discard the newer data)`);
    }
    const localGood = this.disk !== null && this.diskState === 'UpToDate';
    const peerGood = this.peers.some((p) => p.upToDate);
    if (!localGood && !peerGood) {
      if (!force || !this.disk || !this.md) {
        throw new RoleError(this.disk
          ? `this node's data is ${this.diskState} and no UpToDate peer is connected: wait for a resync, or run \`twindisk primary --force\` on the node whose data is authoritative`
          : 'this node is diskless and no peer with UpToDate data is connected: start or connect a node with a disk');
      }
      // Declared authoritative: every peer will sync from here.
      this.md.disk = 'UpToDate';
      this.diskState = 'UpToDate';
      if (this.md.gens.current === 0n) this.md.gens.current = newGeneration();
      this.log.warn('data declared UpToDate by primary --force: peers will resync from this node', { generation: hex(this.md.gens.current) });
    }
    this.role = 'Primary';
    if (this.md) {
      this.md.primary = true;
      this.md.promotedAt = Date.now();
      this.md.writeSuperblock();
    }
    this.log.info('promoted to Primary', { force });
    this.updateLocalReads();
    this.broadcastState(force ? STATE_WANT_RESYNC : 0);
    if (force) for (const p of this.peers) if (p.link && p.replication === 'Established') this.handshake(p);
    this.changed();
  }

  /** Becomes Secondary; refused while a front-end has the volume open. */
  demote(): void {
    if (this.role === 'Secondary') return;
    if (this.clients > 0) throw new RoleError(`${this.clients} client(s) still have the volume open: stop the guest (or detach its disk) first`);
    if (this.pending.size > 0) this.log.warn('demoting with writes still waiting for peers', { pending: this.pending.size });
    try { this.disk?.sync(); } catch (e) { this.detach(e as Error); }
    this.role = 'Secondary';
    if (this.md) {
      // Nothing is in flight any more: a later crash of this Secondary owes no activity-log resync,
      // and must not be reported as a crash while Primary.
      if (this.pending.size === 0) this.md.clearActivityLog();
      else this.md.flushBitmaps();
      this.md.primary = false;
      this.md.writeSuperblock();
    }
    this.log.info('demoted to Secondary');
    this.broadcastState();
    this.changed();
  }

  // ---------------------------------------------------------------------------------------------
  // Quorum

  /** Votes: this node and every peer linked and past its handshake (a peer mid-handshake may yet be refused). */
  votes(): { have: number; needed: number } {
    return { have: 1 + this.peers.filter((p) => p.link !== null && p.replication !== 'Handshake' && p.replication !== 'Off').length, needed: quorumVotes(this.cfg) };
  }

  hasQuorum(): boolean {
    const v = this.votes();
    return v.needed === 0 || v.have >= v.needed;
  }

  /** Marks the local data Outdated (persisted): it may not be promoted and it resyncs from UpToDate peers. */
  private outdate(why: string): void {
    if (!this.md || this.diskState !== 'UpToDate') return;
    this.diskState = 'Outdated';
    this.md.disk = 'Outdated';
    this.md.writeSuperblock();
    this.log.warn(`local data marked Outdated: ${why}`);
    this.updateLocalReads();
    this.broadcastState();
  }

  /** Replays writes held during a handshake once no peer is mid-handshake. */
  private releaseHeld(): void {
    if (this.held.length === 0 || this.peers.some((p) => p.link && p.hasDisk && p.replication === 'Handshake')) return;
    const list = this.held;
    this.held = [];
    for (const r of list) this.request(r);
  }

  private quorumChanged(): void {
    if (this.hasQuorum() && this.heldCompletions.length > 0) {
      // Held writes succeed only if this copy was kept; when a peer's data replaces it, they fail.
      const replaced = this.diskState !== 'UpToDate' || this.peers.some((q) => q.replication === 'SyncTarget' || q.pendingResync?.asTarget);
      const list = this.heldCompletions;
      this.heldCompletions = [];
      for (const { p, st } of list) this.finish(p.req, replaced ? -EIO : st);
    }
    if (this.hasQuorum() && this.suspended.length > 0) {
      const list = this.suspended;
      this.suspended = [];
      this.log.info('quorum regained: resuming suspended I/O', { requests: list.length });
      for (const r of list) this.request(r);
    } else if (!this.hasQuorum() && this.role === 'Primary') {
      const v = this.votes();
      this.log.warn(`lost quorum (${v.have} of ${v.needed} votes): new writes ${this.cfg.onNoQuorum === 'suspend-io' ? 'are suspended' : 'fail'} until it returns`);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Links

  linkUp(link: PeerLink): void {
    const p = this.byId.get(link.peerId);
    if (!p) return link.close(ErrorCode.UnknownNode, `node id ${link.peerId} is not part of ${this.cfg.resource}`);
    if (!p.enabled) return link.close(ErrorCode.Disconnect, `${this.me.name} is disconnected from ${p.name} (twindisk connect to resume)`);
    p.link = link;
    p.state = null;
    p.splitBrain = null;
    p.replication = 'Handshake';
    this.log.info(`connected to ${p.name}`);
    // Writes wait while a peer is mid-handshake: one that never sends its state must not hold them.
    setTimeout(() => {
      if (p.link === link && p.replication === 'Handshake') link.close(ErrorCode.Protocol, `${p.name} sent no state within 10 s`);
    }, 10_000).unref();
    this.sendState(p);
    this.quorumChanged();
    this.changed();
  }

  linkDown(link: PeerLink, reason: string): void {
    const p = this.byId.get(link.peerId);
    if (!p || p.link !== link) return;
    p.link = null;
    const wasResync = p.resync;
    p.resync = null;
    p.verify = null;
    p.replication = 'Off';
    p.bitmapSent = p.bitmapReceived = false;
    p.pendingResync = null;
    p.abandonedResync.clear();
    this.log.warn(`lost connection to ${p.name}: ${reason}`, wasResync ? { resyncLeftBytes: this.outOfSyncBytes(p) } : {});
    // Writes waiting for it complete without it; their blocks are out of sync toward it.
    const bit = 1 << p.id;
    for (const [seq, w] of [...this.pending]) {
      if ((w.mask & bit) === 0) continue;
      if (w.inPlace && link.closed) {
        // The frame may still sit in the closing socket's queue, pointing into the channel slot: the
        // blocks are marked now, but the request (and its slot) completes only once the socket is gone.
        if (w.marks) {
          this.newGenerationIfNeeded(bit);
          this.md?.setOutOfSync(p.id, w.offset, w.length);
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
    this.md?.flushBitmaps();
    this.updateLocalReads();
    this.quorumChanged();
    this.releaseHeld();
    this.changed();
  }

  /** `twindisk disconnect`: drops the link and keeps it down. The transport is told by the daemon. */
  setEnabled(peer: Peer, on: boolean): void {
    peer.enabled = on;
    if (on) {
      peer.splitBrain = null;
      this.linkControl?.connect(peer.id);
    } else {
      if (peer.link) peer.link.close(ErrorCode.Disconnect, `${this.me.name} disconnected from ${peer.name} by request`);
      this.linkControl?.disconnect(peer.id);
    }
    this.changed();
  }

  frame(link: PeerLink, f: Frame): void {
    const p = this.byId.get(link.peerId);
    if (!p || p.link !== link) return;
    const refused = refuseFrame(f.type, {
      peerState: p.state !== null, replication: p.replication, peerRole: p.state?.role ?? null, myRole: this.role,
      myDisk: this.me.disk !== null, allowTwoPrimaries: this.cfg.allowTwoPrimaries, staleResyncAnswers: p.abandonedResync.size > 0,
    });
    if (refused !== null) {
      this.stats.framesRefused++;
      this.log.error(`protocol violation by ${p.name}: ${refused}; closing the link`);
      link.close(ErrorCode.Protocol, refused);
      return;
    }
    try {
      this.dispatch(p, f);
    } catch (e) {
      if (e instanceof DiskIoError) {
        this.detach(e);
        return;
      }
      this.log.error(`frame from ${p.name} could not be handled: ${(e as Error).stack ?? e}`);
      link.close(ErrorCode.Protocol, `internal error handling frame type ${f.type}`);
    }
  }

  private dispatch(p: Peer, f: Frame): void {
    switch (f.type) {
      case FrameType.State: return this.onState(p, f);
      case FrameType.Bitmap: return this.onBitmap(p, f.offset, f.totalBits, f.last, f.bits);
      case FrameType.Data: return this.onData(p, f.seq, f.offset, f.flags, f.data);
      case FrameType.Ack: return this.settle(p, f.seq, f.status);
      case FrameType.Flush: return this.onFlush(p, f.seq);
      case FrameType.Trim: return this.onTrim(p, f.seq, f.offset, f.length, f.mode);
      case FrameType.ReadRequest: return this.onReadRequest(p, f.seq, f.offset, f.length);
      case FrameType.ReadReply: return this.onReadReply(p, f.seq, f.status, f.data);
      case FrameType.ResyncRequest: return this.onResyncRequest(p, f.seq, f.offset, f.length, null);
      case FrameType.ChecksumRequest: return this.onResyncRequest(p, f.seq, f.offset, f.length, f.hash);
      case FrameType.ResyncData: return this.onResyncAnswer(p, f.seq, f.offset, f.data.length, f.data);
      case FrameType.ResyncInSync: return this.onResyncAnswer(p, f.seq, f.offset, f.length, null);
      case FrameType.ResyncDone: return this.onResyncDone(p, f.gens);
      case FrameType.VerifyRequest: return this.onVerifyRequest(p, f.seq, f.offset, f.length, f.blockSize);
      case FrameType.VerifyReply: return this.onVerifyReply(p, f.seq, f.status, f.hashes);
      case FrameType.Error:
        this.log.warn(`${p.name} reports: ${f.message}`);
        return;
      default:
        return p.link!.close(ErrorCode.Protocol, `unexpected frame type ${(f as Frame).type}`);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // States and handshake

  private myState(toward: Peer | null, flags = 0): StateFrame {
    const md = this.md;
    const g = md?.gens ?? this.vgens;
    return {
      type: FrameType.State, role: this.role, disk: this.diskState, size: this.disk ? this.size : 0,
      flags: flags | (toward && this.crashPeers.has(toward.id) ? STATE_CRASHED_PRIMARY : 0),
      gens: g ? { current: g.current, bitmap: [...g.bitmap], history: [...g.history] } : emptyGens(),
      promotedAt: md?.promotedAt ?? 0, outOfSyncBits: 0, quorum: this.hasQuorum(),
      resyncFrom: md && this.diskState === 'Inconsistent' ? md.resyncFrom : 0n,
    };
  }

  private sendState(p: Peer, flags = 0): void {
    const s = this.myState(p, flags | (this.discardMyData.has(p.id) ? STATE_DISCARD_MY_DATA : 0));
    s.outOfSyncBits = this.md && p.hasDisk ? this.md.outOfSyncBits(p.id) : 0;
    p.link?.send(s);
  }

  private broadcastState(flags = 0): void {
    for (const p of this.peers) if (p.link) this.sendState(p, flags);
  }

  private view(p: Peer | null, toward: Peer | null = null): NodeView {
    if (!p) {
      const s = this.myState(toward);
      return { id: this.me.id, name: this.me.name, role: s.role, disk: s.disk, flags: s.flags, gens: s.gens, promotedAt: s.promotedAt, outOfSyncBits: 0, resyncFrom: s.resyncFrom };
    }
    const s = p.state!;
    return { id: p.id, name: p.name, role: s.role, disk: s.disk, flags: s.flags, gens: s.gens, promotedAt: s.promotedAt, outOfSyncBits: s.outOfSyncBits, resyncFrom: s.resyncFrom };
  }

  private onState(p: Peer, s: StateFrame): void {
    const first = p.state === null;
    const before = p.state;
    p.state = s;
    if (this.size === 0 && s.size > 0) {
      this.size = s.size;
      this.log.info(`volume size learnt from ${p.name}`, { size: s.size });
      this.sizeWaiters.splice(0).forEach((w) => w());
    }
    if (!this.md && s.disk === 'UpToDate' && this.role !== 'Primary' && s.gens.current !== 0n
      && (!this.vgens || s.gens.history.includes(this.vgens.current))) {
      // A diskless node remembers the newest data generation it has seen (it only moves forward), so
      // a node with older data cannot be promoted behind its back (see promote).
      this.vgens = { current: s.gens.current, bitmap: new Array<bigint>(32).fill(0n), history: [...s.gens.history] };
    }
    if (s.size > 0 && this.disk && s.size !== this.size) {
      p.link!.close(ErrorCode.SizeMismatch, `${p.name}'s disk has ${s.size} usable bytes and ${this.me.name}'s ${this.size}: give both backing files the same size (and the same metadata layout)`);
      return;
    }
    if (s.role === 'Primary' && this.role === 'Primary' && !this.cfg.allowTwoPrimaries && (first || before?.role !== 'Primary')) {
      this.log.error(`${p.name} is Primary too and allow-two-primaries is off: dropping the connection (demote one of them)`);
      p.link!.close(ErrorCode.TwoPrimaries, `both ${this.me.name} and ${p.name} are Primary`);
      return;
    }
    if (first || p.replication === 'Handshake' || (s.flags & STATE_WANT_RESYNC) !== 0) {
      if ((s.flags & STATE_WANT_RESYNC) !== 0 && !first) this.sendState(p);
      this.handshake(p);
      this.releaseHeld();
    } else if (p.replication === 'Established') {
      this.adoptGeneration(p, s);
      // A peer that became UpToDate (primary --force) while we are not: resync from it.
      if (this.disk && this.diskState !== 'UpToDate' && s.disk === 'UpToDate' && before?.disk !== 'UpToDate') this.handshake(p);
    }
    this.quorumChanged();
    this.changed();
  }

  /** While in sync with a Primary, follow its new data generations. */
  private adoptGeneration(p: Peer, s: StateFrame): void {
    const md = this.md;
    if (!md || s.role !== 'Primary' || this.diskState !== 'UpToDate' || s.gens.current === md.gens.current) return;
    if (s.gens.history[0] !== md.gens.current) return;
    this.baseAbsentPeers(md.gens.current);
    md.gens.history = [md.gens.current, ...md.gens.history].slice(0, 4);
    md.gens.current = s.gens.current;
    md.writeSuperblock();
    this.broadcastState();
    this.log.debug(`following ${p.name}'s new data generation`, { generation: hex(s.gens.current) });
  }

  /**
   * Before this node leaves generation `old`, peers with disks that are away get `old` as the base of
   * this node's bitmap toward them (unless they have one): the writes this node receives from now on
   * are marked for them (`markAbsent`).
   */
  private baseAbsentPeers(old: bigint): void {
    const md = this.md;
    if (!md || old === 0n) return;
    for (const q of this.peers) if (q.hasDisk && !q.replicating && md.gens.bitmap[q.id] === 0n) md.gens.bitmap[q.id] = old;
  }

  /** A write that reached this node from `from` is marked toward every disk peer that is not replicating with it. */
  private markAbsent(from: Peer, offset: number, length: number): void {
    const md = this.md;
    if (!md) return;
    for (const q of this.peers) {
      if (q !== from && q.hasDisk && !q.replicating) {
        md.setOutOfSync(q.id, offset, length);
        this.absentMarks = true;
      }
    }
  }

  /** markAbsent set bits since the last periodic bitmap flush. */
  private absentMarks = false;

  /** Decides the resync with a peer whose state we just got, and starts the bitmap exchange. */
  private handshake(p: Peer): void {
    // A new decision replaces whatever exchange or resync was going on with this peer.
    p.bitmapSent = p.bitmapReceived = false;
    p.pendingResync = null;
    if (p.resync?.asTarget) for (const seq of p.resync.inflight.keys()) p.abandonedResync.add(seq);
    p.resync = null;
    if (!p.state) {
      this.sendState(p, STATE_WANT_RESYNC);
      p.replication = 'Handshake';
      return;
    }
    const me = this.view(null, p);
    me.outOfSyncBits = this.md && p.hasDisk ? this.md.outOfSyncBits(p.id) : 0;
    const peer = this.view(p);
    const d = decideResync(me, peer);
    let res: { kind: 'source' | 'target'; full: boolean; why: string } | null = d.kind === 'source' || d.kind === 'target' ? d : null;
    if (d.kind === 'split-brain') {
      const r = this.discardMyData.has(p.id) ? 'target'
        : (p.state.flags & STATE_DISCARD_MY_DATA) !== 0 ? 'source'
        : resolveSplitBrain(me, peer, { afterSb0pri: this.cfg.afterSb0pri, afterSb1pri: this.cfg.afterSb1pri, afterSb2pri: this.cfg.afterSb2pri });
      if (r === null) {
        p.splitBrain = d.why;
        p.replication = 'SplitBrain';
        this.log.error(`split brain detected with ${p.name}: ${d.why}. Refusing to connect. Decide which node's changes to discard: on that node run \`twindisk connect --discard-my-data\`, or configure an after-sb-0pri policy`);
        this.setEnabled(p, false);
        p.splitBrain = d.why;
        return;
      }
      this.log.warn(`split brain detected with ${p.name} (${d.why}): resolved by policy, ${r === 'target' ? `discarding ${this.me.name}'s changes` : `discarding ${p.name}'s changes`}`);
      res = { kind: r, full: false, why: 'split brain resolved by policy' };
    } else if (d.kind === 'unrelated') {
      this.log.error(`${p.name} holds unrelated data: ${d.why}. Refusing to connect; recreate the metadata of the node whose data is wrong (twindisk create-md --force) to resync it fully`);
      p.link!.close(ErrorCode.UnrelatedData, d.why);
      this.setEnabled(p, false);
      return;
    }
    this.discardMyData.delete(p.id);
    if (!res) {
      p.replication = 'Established';
      this.log.info(`${p.name} is in sync`, { peerDisk: p.state.disk, peerRole: p.state.role });
      this.rotatedAway &= ~(1 << p.id);
      if (p.hasDisk && p.state.disk !== 'Diskless' && me.outOfSyncBits === 0) this.settledCrash(p);
      this.updateLocalReads();
      this.changed();
      return;
    }
    const asTarget = res.kind === 'target';
    const sourceDisk = asTarget ? p.state.disk : this.diskState;
    if (sourceDisk !== 'UpToDate' && sourceDisk !== 'Outdated') {
      // Only whole data may be copied: an Inconsistent source would make its target "UpToDate" with
      // half a resync. (Outdated data is whole; the generations chose it as the newer copy.)
      p.replication = 'Established';
      this.log.warn(`${p.name} and ${this.me.name} differ (${res.why}) but the would-be SyncSource is ${sourceDisk}: waiting for UpToDate data (connect a node that has it, or primary --force on the authoritative one)`);
      this.changed();
      return;
    }
    this.log.info(`resync with ${p.name}: this node is ${asTarget ? 'SyncTarget' : 'SyncSource'} (${res.why})`, { full: res.full });
    p.replication = 'WFBitMap';
    p.pendingResync = { asTarget, full: res.full };
    if (this.md) {
      if (res.full) this.md.setAll(p.id);
      this.sendBitmap(p);
    }
  }

  /** `connect --discard-my-data`: the next split-brain handshake with these peers makes this node the target. */
  readonly discardMyData = new Set<number>();

  private sendBitmap(p: Peer): void {
    const bm = this.md!.bitmap(p.id);
    const total = this.md!.bits;
    const step = 64 * 1024;
    for (let off = 0; off < bm.length || off === 0; off += step) {
      const end = Math.min(bm.length, off + step);
      p.link!.send({ type: FrameType.Bitmap, offset: off * 8, totalBits: total, last: end >= bm.length, bits: bm.subarray(off, end) });
      if (end >= bm.length) break;
    }
    p.bitmapSent = true;
    this.maybeStartResync(p);
  }

  private onBitmap(p: Peer, offset: number, totalBits: number, last: boolean, bits: Uint8Array): void {
    if (!this.md || p.replication !== 'WFBitMap' || !p.pendingResync) return; // only during a bitmap exchange
    if (totalBits !== this.md.bits) {
      p.link!.close(ErrorCode.SizeMismatch, `bitmap of ${totalBits} bits does not match ${this.md.bits}`);
      return;
    }
    const bm = this.md.bitmap(p.id);
    const start = offset >>> 3;
    if (start + bits.length > bm.length) {
      p.link!.close(ErrorCode.Protocol, 'bitmap frame past the end of the bitmap');
      return;
    }
    // Both sides' changes: the union is what differs.
    for (let i = 0; i < bits.length; i++) bm[start + i]! |= bits[i]!;
    const tail = this.md.bits & 7;
    if (tail !== 0 && start + bits.length === bm.length) bm[bm.length - 1]! &= (1 << tail) - 1; // no bits past the end
    this.md.markBitmapDirty(p.id, start * 8, Math.min(this.md.bits, (start + bits.length) * 8));
    if (last) {
      p.bitmapReceived = true;
      this.maybeStartResync(p);
    }
  }

  private maybeStartResync(p: Peer): void {
    if (!p.bitmapSent || !p.bitmapReceived || !p.pendingResync) return;
    const { asTarget, full } = p.pendingResync;
    p.pendingResync = null;
    p.bitmapSent = p.bitmapReceived = false;
    const md = this.md!;
    const rs = new Resync(asTarget, full, this.cfg.csumsAlg !== null);
    rs.totalBits = md.outOfSyncBits(p.id);
    p.resync = rs;
    p.replication = asTarget ? 'SyncTarget' : 'SyncSource';
    if (asTarget) {
      // Resumable: the bitmap (both sides' marks) is made durable first, then the superblock names the
      // generation being copied. From here on the periodic write-back records progress (see
      // persistResyncProgress), so after a crash of either side only what is left is sent.
      const src = p.state!.gens;
      const resumed = md.disk === 'Inconsistent' && md.resyncFrom !== 0n && md.resyncTotal > 0
        && (md.resyncFrom === src.current || src.bitmap[this.me.id] === md.resyncFrom);
      md.resyncTotal = resumed ? Math.max(md.resyncTotal, rs.totalBits) : rs.totalBits;
      md.resyncFrom = src.current;
      rs.totalBits = md.resyncTotal;
      rs.doneAtStart = rs.totalBits - md.outOfSyncBits(p.id);
      md.flushBitmaps(true);
      this.diskState = 'Inconsistent';
      md.disk = 'Inconsistent';
      md.writeSuperblock();
      if (resumed) this.log.info(`resuming the resync from ${p.name} at ${this.resyncPercent(p.id, rs.totalBits)}%`);
      this.updateLocalReads();
      this.ensureResyncTimer();
      this.pumpResync(p);
    }
    this.changed();
  }

  // ---------------------------------------------------------------------------------------------
  // Replicated writes arriving from the Primary

  private onData(p: Peer, seq: number, offset: number, flags: number, data: Uint8Array): void {
    this.lastAppWrite = Date.now();
    p.stats.dataBytesReceived += data.length;
    // Every write is acknowledged (protocol B: on receipt; A and C: once written), so the sender knows what it may mark.
    const ack = this.cfg.protocol === 'B' ? AckKind.Received : AckKind.Written;
    let status = 0;
    const keep = this.concurrentWrites(p, offset, data.length);
    if (keep.length > 0) {
      // Both Primaries wrote these bytes at once: the lower node id's write wins on both nodes. Ours
      // is on our disk and on its way to the peer, which applies it over its own; of the peer's write
      // only the bytes outside ours are applied here.
      this.stats.writeConflicts++;
      this.log.warn(`concurrent writes from ${this.me.name} and ${p.name} to the same blocks: keeping ${this.me.name}'s (lower node id)`, { offset, length: data.length });
    }
    if (!this.disk || offset < 0 || offset + data.length > this.size) {
      status = -EIO;
    } else {
      try {
        this.writeTouchesResync(offset, data.length);
        if (keep.length === 0) this.disk.write(data, data.length, offset);
        else for (const [a, b] of outside(offset, offset + data.length, keep)) this.disk.write(data.subarray(a - offset, b - offset), b - a, a);
        if (flags & DATA_FUA) this.disk.sync();
        this.receivedInSync(p, offset, data.length);
        this.markAbsent(p, offset, data.length);
      } catch (e) {
        this.detach(e as Error);
        status = -EIO;
      }
    }
    p.link!.send({ type: FrameType.Ack, seq, kind: ack, status });
  }

  /**
   * Dual-primary (allow-two-primaries): a write from peer `p` that overlaps one of this node's own
   * writes still waiting for `p`'s acknowledgement was made concurrently (each side wrote before
   * seeing the other's). DRBD resolves such conflicts deterministically; here the lower node id wins.
   */
  private concurrentWrites(p: Peer, offset: number, length: number): [number, number][] {
    if (this.role !== 'Primary' || !this.cfg.allowTwoPrimaries || this.me.id > p.id) return [];
    const bit = 1 << p.id;
    const ranges: [number, number][] = [];
    for (const w of this.pending.values()) {
      if (w.marks && (w.mask & bit) !== 0 && offset < w.offset + w.length && w.offset < offset + length) ranges.push([w.offset, w.offset + w.length]);
    }
    return ranges;
  }

  /**
   * A write from the Primary `from` landed here: it went to every peer the Primary replicates to, so
   * blocks this node was resyncing from such a peer (or from the Primary) are now current.
   */
  private receivedInSync(from: Peer, offset: number, length: number): void {
    if (!this.md) return;
    for (const q of this.peers) if (q.replication === 'SyncTarget' && (q === from || q.state?.role !== 'Primary')) this.md.clearInSync(q.id, offset, length);
  }

  private onFlush(p: Peer, seq: number): void {
    let status = 0;
    try { this.disk?.sync(); } catch (e) { this.detach(e as Error); status = -EIO; }
    p.link!.send({ type: FrameType.Ack, seq, kind: AckKind.Written, status });
  }

  private onTrim(p: Peer, seq: number, offset: number, length: number, mode: number): void {
    let status = 0;
    if (!this.disk || offset < 0 || offset + length > this.size) status = -EIO;
    else {
      try {
        this.writeTouchesResync(offset, length);
        const keep = this.concurrentWrites(p, offset, length);
        if (keep.length > 0) this.stats.writeConflicts++;
        for (const [a, b] of outside(offset, offset + length, keep)) this.disk.trim(a, b - a, mode !== TRIM_ZEROES);
        this.receivedInSync(p, offset, length);
        this.markAbsent(p, offset, length);
      } catch (e) {
        this.detach(e as Error);
        status = -EIO;
      }
    }
    p.link!.send({ type: FrameType.Ack, seq, kind: AckKind.Written, status });
  }

  private onReadRequest(p: Peer, seq: number, offset: number, length: number): void {
    if (!this.disk || this.diskState !== 'UpToDate' || offset < 0 || length > MAX_PAYLOAD || offset + length > this.size) {
      p.link!.send({ type: FrameType.ReadReply, seq, status: -EIO, data: new Uint8Array(0) });
      return;
    }
    try {
      this.disk.read(this.scratch, length, offset);
      p.stats.readsServed++;
      p.link!.send({ type: FrameType.ReadReply, seq, status: 0, data: this.scratch.subarray(0, length) });
    } catch (e) {
      this.stats.localReadErrors++;
      this.log.warn(`local read for ${p.name} failed: ${(e as Error).message}`);
      p.link!.send({ type: FrameType.ReadReply, seq, status: -EIO, data: new Uint8Array(0) });
    }
  }

  private onReadReply(p: Peer, seq: number, status: number, data: Uint8Array): void {
    const rd = this.reads.get(seq);
    if (!rd || rd.peerId !== p.id) return;
    this.reads.delete(seq);
    if (status === 0 && data.length !== rd.length) status = -EIO;
    if (status === 0 && rd.repair && this.disk) {
      try {
        this.disk.write(data, data.length, rd.offset);
        this.stats.readsRepaired++;
        this.log.info('rewrote a block that failed to read locally with the copy from a peer', { offset: rd.offset, length: rd.length, peer: p.name });
      } catch (e) {
        this.detach(e as Error);
      }
    }
    if (status === 0) rd.req.data.set(data.subarray(0, rd.length));
    rd.req.channel.complete(rd.req.slot, status);
  }

  // ---------------------------------------------------------------------------------------------
  // Resync

  /** A guest write to a range a resync request is fetching makes that answer stale (it would overwrite newer data). */
  private writeTouchesResync(offset: number, length: number): void {
    for (const p of this.peers) {
      const rs = p.resync;
      if (!rs || !rs.asTarget) continue;
      for (const r of rs.inflight.values()) if (offset < r.offset + r.length && r.offset < offset + length) r.stale = true;
    }
  }

  /** A write now on both this node and the peers it was sent to: those blocks need no resync. */
  private writeInSync(offset: number, length: number, sentTo: number): void {
    if (!this.md) return;
    for (const p of this.peers) {
      if (p.resync && (sentTo & (1 << p.id)) !== 0) this.md.clearInSync(p.id, offset, length);
    }
  }

  private ensureResyncTimer(): void {
    if (this.resyncTimer) return;
    this.resyncTimer = setInterval(() => {
      let active = false;
      for (const p of this.peers) {
        if (p.resync?.asTarget) {
          active = true;
          this.safely(() => this.pumpResync(p));
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
    return Date.now() - this.lastAppWrite < APP_ACTIVE_MS ? this.cfg.cMinRate : this.cfg.resyncRate;
  }

  /** The SyncTarget asks for the next out-of-sync runs, within the rate and depth limits. */
  private pumpResync(p: Peer): void {
    const rs = p.resync;
    const md = this.md;
    if (!rs || !rs.asTarget || !md || !p.link) return;
    const rate = this.resyncRate();
    const now = Date.now();
    if (rate > 0) {
      rs.tokens = Math.min(rate / 10 + RESYNC_MAX_REQUEST, rs.tokens + (rate * (now - rs.lastRefill)) / 1000);
    }
    rs.lastRefill = now;
    const bm = md.bitmap(p.id);
    const gran = md.granularity;
    const maxBits = Math.max(1, Math.floor(RESYNC_MAX_REQUEST / gran));
    let wrapped = false;
    while (rs.inflight.size < RESYNC_DEPTH && rs.inflightBytes < RESYNC_INFLIGHT_BYTES && (rate === 0 || rs.tokens > 0) && p.link.buffered < 8 * RESYNC_MAX_REQUEST) {
      let bit = findNextSet(bm, rs.cursor, md.bits);
      if (bit < 0 && !wrapped) {
        wrapped = true; // once per call: bits left behind by stale answers, or still in flight
        rs.cursor = 0;
        bit = findNextSet(bm, 0, md.bits);
      }
      if (bit < 0) break;
      let end = bit + 1;
      while (end < md.bits && end - bit < maxBits && (bm[end >>> 3]! & (1 << (end & 7))) !== 0) end++;
      // Skip ranges already being fetched.
      const offset = bit * gran;
      const length = Math.min(end * gran, this.size) - offset;
      rs.cursor = end;
      let busy = false;
      for (const r of rs.inflight.values()) if (r.offset === offset) busy = true;
      if (busy) continue;
      const seq = this.seq++;
      rs.inflight.set(seq, { offset, length, stale: false });
      rs.inflightBytes += length;
      if (rs.checksums && this.disk) {
        let hash = 0n;
        try {
          this.disk.read(this.scratch, length, offset);
          hash = xxh3(this.scratch.subarray(0, length));
        } catch { /* unreadable here: ask for the data */ }
        p.link.send({ type: FrameType.ChecksumRequest, seq, offset, length, hash });
      } else {
        p.link.send({ type: FrameType.ResyncRequest, seq, offset, length });
      }
      rs.tokens -= length;
    }
    if (rs.inflight.size === 0 && findNextSet(bm, 0, md.bits) < 0) this.finishResyncAsTarget(p);
  }

  /** The SyncSource answers a request with the data, or "in sync" when the checksums match. */
  private onResyncRequest(p: Peer, seq: number, offset: number, length: number, hash: bigint | null): void {
    const rs = p.resync;
    if (!rs || rs.asTarget || (this.diskState !== 'UpToDate' && this.diskState !== 'Outdated')) {
      p.link!.close(ErrorCode.Protocol, `resync request while ${this.me.name} is not ${p.name}'s SyncSource`);
      return;
    }
    if (!this.disk || offset < 0 || length <= 0 || length > MAX_PAYLOAD || offset + length > this.size) {
      p.link!.close(ErrorCode.Protocol, `resync request out of range (${offset}+${length})`);
      return;
    }
    // The block is read straight into a frame buffer behind its header, which goes back to the pool
    // once the socket has taken it: no copy, and no fresh megabyte (page faults) per answer.
    const pooled = length > RESYNC_SMALL_ANSWER;
    const buf = pooled ? this.resyncFrames.pop() ?? Buffer.allocUnsafe(RESYNC_DATA_HEADER + MAX_PAYLOAD) : Buffer.allocUnsafe(RESYNC_DATA_HEADER + length);
    const release = () => { if (pooled && this.resyncFrames.length < RESYNC_FRAME_POOL) this.resyncFrames.push(buf); };
    const data = buf.subarray(RESYNC_DATA_HEADER, RESYNC_DATA_HEADER + length);
    try {
      this.disk.read(data, length, offset);
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
    this.md?.clearInSync(p.id, offset, length);
  }

  private onResyncAnswer(p: Peer, seq: number, offset: number, length: number, data: Uint8Array | null): void {
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
    rs.inflightBytes -= r.length;
    if (!r.stale) {
      if (data) {
        this.disk!.write(data, length, offset);
        rs.bytesReceived += length;
        this.markAbsent(p, offset, length);
      } else {
        rs.bytesSkipped += length;
      }
      this.md!.clearInSync(p.id, offset, length);
    }
    this.pumpResync(p);
  }

  private finishResyncAsTarget(p: Peer): void {
    const md = this.md!;
    const rs = p.resync!;
    const src = p.state!.gens;
    // The data first, then the bitmap that calls it in sync.
    try { this.disk!.sync(); } catch (e) { return this.detach(e as Error); }
    md.flushBitmaps();
    if (p.state!.disk !== 'UpToDate') {
      this.log.warn(`resync from ${p.name} ended but ${p.name} is ${p.state!.disk}: this node stays Inconsistent`);
      this.endResync(p, rs);
      return;
    }
    this.baseAbsentPeers(md.gens.current);
    md.gens.current = src.current;
    md.gens.history = [...src.history];
    md.gens.bitmap[p.id] = 0n;
    md.disk = 'UpToDate';
    md.resyncFrom = 0n;
    md.resyncTotal = 0;
    this.diskState = 'UpToDate';
    md.writeSuperblock();
    this.endResync(p, rs);
    p.link!.send({ type: FrameType.ResyncDone, gens: { current: md.gens.current, bitmap: [...md.gens.bitmap], history: [...md.gens.history] } });
    this.broadcastState();
  }

  private onResyncDone(p: Peer, gens: Generations): void {
    const rs = p.resync;
    if (!rs || rs.asTarget || !this.md) return;
    this.md.clearAll(p.id);
    this.md.gens.bitmap[p.id] = 0n;
    this.md.flushBitmaps();
    this.md.writeSuperblock();
    p.state = p.state ? { ...p.state, gens, disk: 'UpToDate' } : p.state;
    this.endResync(p, rs);
  }

  /** After a crash as Primary, the first peer in sync with this node settles it. */
  private settledCrash(p: Peer): void {
    if (!p.hasDisk || !this.crashPeers.delete(p.id) || this.crashPeers.size > 0 || !this.md || this.role === 'Primary') return;
    this.md.primary = false;
    this.md.writeSuperblock();
  }

  private endResync(p: Peer, rs: Resync): void {
    const seconds = (Date.now() - rs.startedAt) / 1000;
    p.lastResync = { bytesSent: rs.bytesSent, bytesReceived: rs.bytesReceived, bytesSkipped: rs.bytesSkipped, seconds, full: rs.full, asTarget: rs.asTarget };
    p.resync = null;
    p.replication = 'Established';
    this.settledCrash(p);
    this.log.info(`resync with ${p.name} finished`, {
      as: rs.asTarget ? 'SyncTarget' : 'SyncSource', bytesSent: rs.bytesSent, bytesReceived: rs.bytesReceived, bytesSkipped: rs.bytesSkipped, seconds: seconds.toFixed(2),
    });
    this.updateLocalReads();
    this.changed();
  }

  // ---------------------------------------------------------------------------------------------
  // Online verify

  /** Compares every block with each connected peer by hash; marks differing blocks out of sync. */
  startVerify(resyncAfter: boolean): string[] {
    if (!this.disk || !this.md) throw new RoleError('verify needs a local disk: run it on a node with a disk');
    if (this.diskState !== 'UpToDate') throw new RoleError(`this node's data is ${this.diskState}: verify runs between UpToDate replicas`);
    const targets = this.peers.filter((p) => p.upToDate && p.hasDisk);
    if (targets.length === 0) throw new RoleError('no UpToDate peer with a disk is connected: nothing to verify against');
    for (const p of targets) {
      if (p.verify) continue;
      p.verify = { offset: 0, inflight: 0, outOfSyncBlocks: 0, startedAt: Date.now(), finishedAt: 0, resyncAfter };
      this.log.info(`online verify with ${p.name} started`, { size: this.size });
      this.pumpVerify(p);
    }
    this.changed();
    return targets.map((p) => p.name);
  }

  private readonly verifyReqs = new Map<number, { peer: number; offset: number; length: number }>();

  private pumpVerify(p: Peer): void {
    const v = p.verify;
    if (!v || !p.link) return;
    while (v.inflight < VERIFY_DEPTH && v.offset < this.size) {
      const length = Math.min(VERIFY_CHUNK, this.size - v.offset);
      const seq = this.seq++;
      this.verifyReqs.set(seq, { peer: p.id, offset: v.offset, length });
      p.link.send({ type: FrameType.VerifyRequest, seq, offset: v.offset, length, blockSize: VERIFY_BLOCK });
      v.offset += length;
      v.inflight++;
    }
    if (v.inflight === 0 && v.offset >= this.size) {
      v.finishedAt = Date.now();
      p.lastVerify = v;
      p.verify = null;
      this.md!.flushBitmaps();
      this.log.info(`online verify with ${p.name} finished: ${v.outOfSyncBlocks} blocks (${v.outOfSyncBlocks * VERIFY_BLOCK} bytes) out of sync`, {
        seconds: ((v.finishedAt - v.startedAt) / 1000).toFixed(2),
      });
      if (v.resyncAfter && v.outOfSyncBlocks > 0) {
        this.log.info(`resyncing the blocks verify found with ${p.name}`);
        this.sendState(p, STATE_WANT_RESYNC);
        this.handshake(p);
      }
      this.changed();
    }
  }

  private hashBlocks(offset: number, length: number, blockSize: number): bigint[] {
    this.disk!.read(this.scratch, length, offset);
    const out: bigint[] = [];
    for (let o = 0; o < length; o += blockSize) out.push(xxh3(this.scratch.subarray(o, Math.min(length, o + blockSize))));
    return out;
  }

  private onVerifyRequest(p: Peer, seq: number, offset: number, length: number, blockSize: number): void {
    if (!this.disk || offset < 0 || length > MAX_PAYLOAD || offset + length > this.size) {
      p.link!.send({ type: FrameType.VerifyReply, seq, status: -EIO, hashes: [] });
      return;
    }
    let hashes: bigint[] = [];
    let status = 0;
    try { hashes = this.hashBlocks(offset, length, blockSize); } catch { status = -EIO; }
    p.link!.send({ type: FrameType.VerifyReply, seq, status, hashes });
  }

  private onVerifyReply(p: Peer, seq: number, status: number, hashes: bigint[]): void {
    const q = this.verifyReqs.get(seq);
    if (!q || q.peer !== p.id) return;
    this.verifyReqs.delete(seq);
    const v = p.verify;
    if (!v) return;
    v.inflight--;
    const gran = VERIFY_BLOCK;
    let mine: bigint[] = [];
    try { mine = this.hashBlocks(q.offset, q.length, gran); } catch { status = -EIO; }
    for (let i = 0, o = q.offset; o < q.offset + q.length; i++, o += gran) {
      if (status !== 0 || mine[i] !== hashes[i]) {
        v.outOfSyncBlocks++;
        this.md!.setOutOfSync(p.id, o, Math.min(gran, q.offset + q.length - o));
      }
    }
    this.pumpVerify(p);
  }

  // ---------------------------------------------------------------------------------------------
  // Status

  private anyOutOfSync(peerId: number, offset: number, length: number): boolean {
    const md = this.md;
    if (!md || length === 0) return false;
    const from = Math.floor(offset / md.granularity);
    const to = Math.ceil((offset + length) / md.granularity);
    return findNextSet(md.bitmap(peerId), from, to) >= 0;
  }

  /** Percent done of a resync with `total` bits out of sync at its start, one decimal. */
  private resyncPercent(peerId: number, total: number): number {
    const left = this.md ? this.md.outOfSyncBits(peerId) : 0;
    return total <= 0 ? 100 : Math.floor((1000 * Math.max(0, total - left)) / total) / 10;
  }

  private outOfSyncBytes(p: Peer): number {
    if (!this.md || !p.hasDisk) return 0;
    return Math.min(this.size, this.md.outOfSyncBits(p.id) * this.md.granularity);
  }

  status(): ResourceStatus {
    const peers: Record<string, PeerStatus> = {};
    const gran = this.md?.granularity ?? 4096;
    for (const p of this.peers) {
      const st: PeerStatus = {
        id: p.id, connection: p.connection, replication: p.link ? p.replication : 'Off',
        role: p.link && p.state ? p.state.role : 'Unknown', disk: p.link && p.state ? p.state.disk : 'DUnknown',
        outOfSyncBytes: this.outOfSyncBytes(p), stats: { ...p.stats },
      };
      if (p.splitBrain) st.splitBrain = p.splitBrain;
      const rs = p.resync;
      if (rs && this.md) {
        const left = this.md.outOfSyncBits(p.id);
        const total = Math.max(rs.totalBits, left);
        const doneBytes = (total - left) * gran;
        const secs = Math.max(0.001, (Date.now() - rs.startedAt) / 1000);
        // The rate counts what this run moved (a resumed resync starts with some done).
        const rate = Math.max(0, doneBytes - rs.doneAtStart * gran) / secs;
        st.resync = {
          asTarget: rs.asTarget, full: rs.full, checksums: rs.checksums,
          percent: this.resyncPercent(p.id, total),
          doneBytes, totalBytes: total * gran, rateBytesPerSec: Math.round(rate),
          etaSeconds: rate > 0 ? Math.round((left * gran) / rate) : null, bytesSent: rs.bytesSent, bytesReceived: rs.bytesReceived,
        };
      }
      if (p.lastResync) st.lastResync = p.lastResync;
      const v = p.verify ?? p.lastVerify;
      if (v) {
        st.verify = {
          running: p.verify !== null, percent: this.size ? Math.floor((1000 * Math.min(v.offset, this.size)) / this.size) / 10 : 100,
          outOfSyncBlocks: v.outOfSyncBlocks, outOfSyncBytes: v.outOfSyncBlocks * VERIFY_BLOCK,
        };
      }
      peers[p.name] = st;
    }
    const v = this.votes();
    return {
      resource: this.cfg.resource, node: this.me.name, role: this.role, disk: this.diskState, size: this.size,
      quorum: this.hasQuorum(), votes: v, clients: this.clients, generation: hex(this.md?.gens.current ?? 0n),
      stats: { ...this.stats }, peers,
    };
  }

  peerByName(name: string): Peer {
    const p = this.peers.find((x) => x.name === name);
    if (!p) throw new RoleError(`${name} is not a peer of ${this.me.name} in ${this.cfg.resource} (peers: ${this.peers.map((x) => x.name).join(', ')})`);
    return p;
  }

  private changed(): void {
    this.onChange?.();
  }

  /** Closes the disk without writing its metadata, as a crash would leave it (a start that failed: it never served). */
  abandon(): void {
    this.md?.abandon();
    this.md = null;
    this.close();
  }

  /** Clean shutdown: demotes (if no client), flushes metadata and closes the disk. */
  close(): void {
    this.writeDeferred();
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    if (this.bitmapTimer) clearInterval(this.bitmapTimer);
    this.resyncTimer = this.bitmapTimer = null;
    for (const ch of this.channels) ch.stop();
    if (this.md) {
      try { this.disk?.sync(); } catch { /* closing anyway */ }
      this.md.primary = false;
      this.md.close();
    }
    this.disk?.close();
    this.md = null;
    this.disk = null;
  }
}

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

function emptyGens(): Generations {
  return { current: 0n, bitmap: new Array<bigint>(32).fill(0n), history: [] };
}

