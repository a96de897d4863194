// One node's view of a replicated resource: roles, the replicated write path, peer handshakes, resync, verify, quorum.
//
// Runs on the node's main thread. Guest I/O arrives from queue workers through ChannelHosts; peers
// arrive as PeerLinks from a transport. Everything here is event-driven and synchronous per event:
// the local disk is written with one system call on the page cache, frames are queued on links, and
// a request completes when every copy it waits for is acknowledged (protocol C: written on every
// connected peer's disk; B: received by every peer; A: sent).
import { Logger } from '../log.js';
import { EIO } from '../os.js';
import { type ChannelHost, type ChannelRequest } from './channel.js';
import { quorumVotes, type NodeConfig, type ResourceConfig } from './config.js';
import {
  ErrorCode, FrameType, MAX_PAYLOAD, STATE_WANT_RESYNC, type DiskState, type Frame, type Role,
} from './frames.js';
import { refuseFrame, type FrameContext, type Replication } from './frame-rules.js';
import { hex } from './handshake.js';
import { HotExtents, type HotExtentsSpec } from './hot-extents.js';
import type { LinkControl, LinkHandler, PeerLink } from './link.js';
import { LocalDisk } from './local-disk.js';
import { DiskIoError, type Fault, type NodeDisk } from './node-disk.js';
import { Metadata, MetadataError, newGeneration } from './metadata.js';
import { PeerConnections } from './connections.js';
import { GenerationTracker } from './generations.js';
import { Peer, type Connection } from './peer.js';
import { Receiver } from './receiver.js';
import { RequestPath } from './requests.js';
import { ResyncDriver } from './resync.js';
import { VolumeResize } from './resize.js';
import { RoleError, StateError, invalidChange, type NodeState } from './states.js';
import { OnlineVerify, VERIFY_BLOCK } from './verify.js';

export type { Connection } from './peer.js';
export { Peer } from './peer.js';
export type { Replication } from './frame-rules.js';
export { outside } from './receiver.js';

export { RoleError } from './states.js';

/** One change through Resource.changeState: the fields given change together. */
export interface StateChange {
  role?: Role;
  disk?: DiskState;
  /** New replication states toward peers. */
  replication?: [Peer, Replication][];
  /** STATE flags sent with the announcement (STATE_WANT_RESYNC asks the peers for a new handshake). */
  flags?: number;
  /** Metadata edits persisted in the same superblock write (generations, promotion time, resync progress). */
  persist?: (md: Metadata) => void;
  /** Announce the state to the peers even though role and disk are unchanged (new generations). */
  announce?: boolean;
}

/** A state change in words, for errors. */
function describe(c: StateChange): string {
  const parts: string[] = [];
  if (c.role) parts.push(`role ${c.role}`);
  if (c.disk) parts.push(`disk ${c.disk}`);
  for (const [p, r] of c.replication ?? []) parts.push(`${p.name} ${r}`);
  return parts.join(', ') || 'metadata only';
}

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
  verify?: { running: boolean; percent: number; outOfSyncBlocks: number; outOfSyncBytes: number; seconds: number };
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
  readonly requests = new RequestPath(this);
  readonly resync = new ResyncDriver(this);
  readonly verify = new OnlineVerify(this);
  readonly generations = new GenerationTracker(this);
  readonly receiver = new Receiver(this);
  readonly connections = new PeerConnections(this);
  readonly resizer = new VolumeResize(this);
  readonly cfg: ResourceConfig;
  readonly me: NodeConfig;
  readonly log: Logger;
  readonly peers: Peer[];
  readonly byId = new Map<number, Peer>();
  role: Role = 'Secondary';
  md: Metadata | null = null;
  disk: NodeDisk | null = null;
  diskState: DiskState = 'Diskless';
  /** Usable size in bytes; for a diskless node learnt from the first peer with a disk. */
  size = 0;
  seq = 1;
  private readonly channels: ChannelHost[] = [];
  private clients = 0;
  /** Disks attached so far: names the current one for the workers' local reads (updateLocalReads). */
  private attachments = 0;
  lastAppWrite = 0;
  private bitmapTimer: NodeJS.Timeout | null = null;
  /**
   * The active activity-log extents shared with queue workers (hot-extents.ts): made at the first
   * attach and kept, since workers hold it; null on a diskless node.
   */
  hot: HotExtents | null = null;
  /** Whether `hot` matches the attached metadata's extent size (a re-attached disk may differ). */
  private hotUsable = false;
  /** Whether queue workers may write the local disk themselves now (updateFastPaths). */
  private localWritesOn = false;
  /** Applies the workers' posted marks while they write locally (they are taken lazily). */
  private marksTimer: NodeJS.Timeout | null = null;
  readonly sizeWaiters: (() => void)[] = [];
  readonly scratch = Buffer.alloc(MAX_PAYLOAD);
  /**
   * Local I/O errors: `localReadErrors` counts failed reads (served by a peer instead), `localWriteErrors`
   * failed writes, trims, flushes and metadata updates (each detaches the disk). `workerWrites` counts
   * the writes (of `writes`) that queue workers made to the local disk themselves (a Primary alone).
   */
  readonly stats = { localReadErrors: 0, readsRepaired: 0, localWriteErrors: 0, writes: 0, reads: 0, flushes: 0, writeConflicts: 0, framesRefused: 0, workerWrites: 0 };
  /** The transport's administrative side (set by the daemon). */
  linkControl: LinkControl | null = null;
  /** Called when role, disk, connection or sync state change (the daemon logs status and wakes waiters). */
  onChange: (() => void) | null = null;
  /** Called once every node agreed on a new (larger) size: the daemon tells the front-ends (vhost-user, iSCSI). */
  onResize: ((size: number) => Promise<void>) | null = null;

  constructor(opts: ResourceOptions) {
    this.cfg = opts.cfg;
    this.me = opts.me;
    this.log = opts.log ?? new Logger(`${opts.cfg.resource}/${opts.me.name}`);
    this.peers = opts.cfg.nodes.filter((n) => n.id !== opts.me.id).map((n) => new Peer(n));
    for (const p of this.peers) this.byId.set(p.id, p);
    this.frameContext = {
      peerState: false, replication: 'Off', peerRole: null, myRole: 'Secondary',
      myDisk: this.me.disk !== null, allowTwoPrimaries: this.cfg.allowTwoPrimaries, staleResyncAnswers: false,
    };
  }

  // ---------------------------------------------------------------------------------------------
  // State changes: the one door (see states.ts for the rules)

  /** Tells the daemon that role, disk, connection or sync state changed. */
  changed(): void {
    this.onChange?.();
  }

  /**
   * The one door for state changes (role, disk state, replication toward peers): checks the new state
   * against the rules of states.ts, assigns it, then in this order persists what changed (with
   * `c.persist`'s metadata edits in the same superblock write), updates the workers' local reads,
   * announces role, disk or generations to the peers (with `c.flags`) and notifies the daemon.
   * Throws StateError, changing nothing, when the rules refuse it (a bug in the engine).
   */
  changeState(c: StateChange): void {
    const replication = new Map(c.replication ?? []);
    const before = this.nodeState(new Map());
    const after: NodeState = {
      ...before, role: c.role ?? this.role, disk: c.disk ?? this.diskState, attached: this.md !== null,
      replication: new Map(this.peers.map((p) => [p.name, replication.get(p) ?? p.replication])),
    };
    const why = invalidChange(before, after);
    if (why !== null) throw new StateError(`invalid state change (${describe(c)}): ${why}`);
    const roleChanged = after.role !== this.role;
    const diskChanged = after.disk !== this.diskState;
    this.role = after.role;
    this.diskState = after.disk;
    for (const [p, r] of replication) p.replication = r;
    const md = this.md;
    if (md && (roleChanged || (diskChanged && md.disk !== after.disk) || c.persist)) {
      if (after.disk !== 'Diskless' && after.disk !== 'Failed') md.disk = after.disk;
      if (roleChanged) md.primary = after.role === 'Primary';
      c.persist?.(md);
      md.writeSuperblock();
    }
    this.updateFastPaths();
    if (roleChanged || diskChanged || c.announce || c.flags) this.connections.broadcastState(c.flags ?? 0);
    this.changed();
  }

  /** This node's state as the rules of states.ts see it. */
  private nodeState(replication: Map<string, Replication>): NodeState {
    for (const p of this.peers) replication.set(p.name, p.replication);
    return {
      role: this.role, disk: this.diskState, attached: this.md !== null, replication, upToDatePeer: this.peers.some((p) => p.upToDate),
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Local disk

  /**
   * Opens the local disk and its metadata; applies a crashed Primary's activity log. `disk`: the disk
   * opened by the caller (an md array, opened on its own thread); the backing file by default.
   */
  attach(md: Metadata, flags = 0, disk?: NodeDisk): void {
    // An online resize interrupted after its metadata switched: the old area is zeroed before anything is served.
    if (md.openReport.staleRange) {
      this.log.warn('finishing an online resize interrupted by a crash: zeroing the old metadata area', { range: md.openReport.staleRange.join('-') });
      md.finishMove();
    }
    this.attachments++;
    this.md = md;
    this.shareHotExtents(md);
    this.size = md.dataSize;
    if (disk && disk.size < md.dataSize) {
      disk.close();
      throw new RoleError(`${disk.path} holds ${disk.size} bytes, less than the ${md.dataSize} its metadata describes: give it the same size`);
    }
    if (disk) disk.size = md.dataSize;
    this.disk = disk ?? new LocalDisk(this.me.disk!, md.dataSize);
    this.changeState({ disk: md.disk, flags });
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
      const sync = this.role === 'Secondary' && this.receiver.absentMarks;
      this.receiver.absentMarks = false;
      if (this.disk && this.md && this.peers.some((p) => p.resync?.asTarget)) return this.resync.persistResyncProgress(sync);
      this.md?.flushBitmaps(sync);
    }), 1000);
    this.bitmapTimer.unref();
    this.log.info('disk attached', { disk: this.disk.path, size: this.size, state: this.diskState, generation: hex(md.gens.current) });
  }

  /** Disk peers still owed the resync of a crashed Primary's activity log (empty: no crash pending). */
  readonly crashPeers = new Set<number>();

  /**
   * Detaches the local disk after an I/O error (on-io-error detach): the node goes on diskless through
   * its peers. Every such error is counted, as a read or a write error (metadata, flush and trim errors
   * count as writes).
   */
  detach(err: Error | string): void {
    if (!this.disk) return;
    this.stopLocalWrites();
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
    const ended: [Peer, Replication][] = [];
    for (const p of this.peers) {
      if (p.resync || p.pendingResync) {
        p.resync = null;
        p.pendingResync = null;
        if (p.link) ended.push([p, 'Established']);
      }
    }
    this.changeState({ disk: 'Diskless', replication: ended });
  }

  /**
   * `twindisk attach`: takes the local disk back after a detach (a repaired or replaced disk with
   * metadata, see create-md). Its data is not trusted: it is Inconsistent and every block is resynced
   * from an UpToDate peer.
   */
  reattach(md: Metadata, disk?: NodeDisk): void {
    if (this.disk) throw new RoleError('the local disk is attached already');
    if (md.dataSize !== this.size) {
      md.close();
      disk?.close();
      throw new RoleError(`the disk has ${md.dataSize} usable bytes and the volume ${this.size}: give it the same size (create-md --size)`);
    }
    md.disk = 'Inconsistent';
    md.resyncFrom = 0n; // no resync of this disk's to resume: it is copied whole
    md.resyncTotal = 0;
    for (const p of this.peers) if (p.hasDisk) md.setAll(p.id);
    md.writeSuperblock();
    this.attach(md, STATE_WANT_RESYNC, disk);
    for (const p of this.peers) if (p.link && p.state) this.connections.handshake(p);
    this.changed();
  }

  /** Adds a test fault to the local disk (reads stop taking the workers' fast path while any is set). */
  injectFault(f: Fault | null): void {
    if (!this.disk) throw new RoleError('this node has no local disk to inject faults into');
    if (f) this.disk.inject(f);
    else this.disk.clearFaults();
    this.updateFastPaths();
  }

  // ---------------------------------------------------------------------------------------------
  // Guest I/O

  /** Registers a queue worker's channel and starts taking its requests. */
  serveChannel(ch: ChannelHost): Promise<void> {
    this.channels.push(ch);
    this.updateFastPaths();
    const request = (r: ChannelRequest) => this.safely(() => this.requests.request(r), () => r.channel.complete(r.slot, -EIO));
    return ch.serve(request, () => this.safely(() => this.requests.endBatch()), this.requests.localWriteMarked).finally(() => {
      const i = this.channels.indexOf(ch);
      if (i >= 0) this.channels.splice(i, 1);
    });
  }

  /**
   * Runs `fn`; an I/O error of the local disk or its metadata (thrown outside the paths that handle
   * it) detaches the disk, anything else is logged; `fail` then answers whoever waits.
   */
  safely(fn: () => void, fail: () => void = () => undefined): void {
    try {
      fn();
    } catch (e) {
      if (e instanceof DiskIoError || e instanceof MetadataError || (e as NodeJS.ErrnoException).code !== undefined) this.detach(e as Error);
      else this.log.error(`internal error: ${(e as Error).stack ?? e}`);
      fail();
    }
  }

  /**
   * Lets workers read the local disk themselves only when it holds the newest data everywhere, and
   * write it themselves only on a Primary alone: no peer connected (nothing to send, no handshake to
   * order against), every absent disk peer's writes already tracked under a new generation, quorum
   * held, nothing held or suspended. Their writes' marks are applied here later (localWriteMarked).
   */
  updateFastPaths(): void {
    const reads = this.disk !== null && this.disk.workerFile !== null && this.diskState === 'UpToDate' && !this.disk.hasFaults
      && !this.peers.some((p) => p.replication === 'SyncTarget');
    for (const ch of this.channels) ch.setLocalReads(reads ? this.attachments : 0);
    const md = this.md;
    const writes = reads && md !== null && this.hotUsable && this.role === 'Primary'
      && this.peers.every((p) => p.link === null && (!p.hasDisk || md.gens.bitmap[p.id] !== 0n))
      && this.hasQuorum() && this.requests.suspended.length === 0 && !this.requests.holding;
    if (writes) {
      for (const ch of this.channels) ch.setLocalWrites(this.attachments);
      if (!this.localWritesOn) {
        this.localWritesOn = true;
        this.marksTimer = setInterval(() => this.safely(() => this.applyLocalMarks()), 20);
        this.marksTimer.unref();
      }
    } else {
      this.stopLocalWrites();
    }
  }

  /**
   * Takes the local writes back from the workers: no new one starts, the ones under way finish, and
   * every mark they posted is applied. Whatever follows (a handshake's bitmaps, a detach, a demotion)
   * sees all of them.
   */
  stopLocalWrites(): void {
    if (!this.localWritesOn) return;
    this.localWritesOn = false;
    if (this.marksTimer) clearInterval(this.marksTimer);
    this.marksTimer = null;
    for (const ch of this.channels) ch.setLocalWrites(0);
    for (const ch of this.channels) {
      if (!ch.waitLocalWrites()) this.log.error('a queue worker has been inside a local write for 10 s (a hung disk?): its mark is applied when it posts it');
    }
    this.applyLocalMarks();
  }

  /** Applies the marks of every local write the workers have posted. */
  applyLocalMarks(): void {
    let n = 0;
    for (const ch of this.channels) n += ch.drainMarks(this.requests.localWriteMarked);
    if (n > 0) this.lastAppWrite = Date.now();
  }

  /** The hot-extent map for queue workers (null: a diskless node, whose workers never write locally). */
  hotSpec(): HotExtentsSpec | null {
    return this.hot?.spec ?? null;
  }

  /** Shares `md`'s active extents with the workers (see hot-extents.ts), when its geometry fits the map they hold. */
  shareHotExtents(md: Metadata): void {
    this.hot ??= HotExtents.create(md.dataSize, md.alExtentSize);
    this.hotUsable = this.hot.extentSize === md.alExtentSize;
    if (this.hotUsable) md.useHotExtents(this.hot, () => this.applyLocalMarks());
    else this.log.info('the re-attached disk\'s activity-log extents differ from the first one\'s: queue workers leave its writes to the engine until the node restarts');
  }

  /** Resolves once the volume's size is known (at once with a disk; diskless: when a peer with a disk connects). */
  whenSized(): Promise<void> {
    if (this.size > 0) return Promise.resolve();
    return new Promise((r) => this.sizeWaiters.push(r));
  }

  // ---------------------------------------------------------------------------------------------
  // Roles

  /** A front-end (vhost-user, iSCSI) opened the volume: auto-promote. Throws RoleError when it may not. */
  clientOpened(): void {
    if (this.role !== 'Primary') this.promote(false, true);
    this.clients++;
  }

  /**
   * A front-end went away; the last one leaving demotes the node, if a front-end promoted it (DRBD's
   * auto-demote undoes only its auto-promote): a Primary made by `primary` (a cluster manager's promote)
   * stays Primary until demoted the same way.
   */
  clientClosed(): void {
    this.clients = Math.max(0, this.clients - 1);
    if (this.clients === 0 && this.role === 'Primary' && this.autoPromoted) {
      try { this.demote(); } catch (e) { this.log.warn(`auto-demote failed: ${(e as Error).message}`); }
    }
  }

  /** Whether the current Primary role came from a front-end connecting (clientOpened), not from `primary`. */
  private autoPromoted = false;

  /**
   * Becomes Primary. `force`: the last survivor, or a new resource's authoritative first copy. `auto`:
   * a front-end connecting promotes it (then the last one leaving demotes it again); a promotion on
   * request (`twindisk primary`, a cluster manager) is kept until a demotion on request.
   */
  promote(force: boolean, auto = false): void {
    if (this.role === 'Primary') {
      if (!auto) this.autoPromoted = false;
      return;
    }
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
    }
    // Declared authoritative (primary --force without UpToDate data anywhere): every peer syncs from here.
    const declared = !localGood && !peerGood;
    this.changeState({
      role: 'Primary', ...(declared ? { disk: 'UpToDate' as const } : {}), flags: force ? STATE_WANT_RESYNC : 0,
      persist: (md) => {
        if (declared && md.gens.current === 0n) md.setInitialGeneration(newGeneration());
        md.promotedAt = Date.now();
      },
    });
    this.autoPromoted = auto;
    if (declared) this.log.warn('data declared UpToDate by primary --force: peers will resync from this node', { generation: hex(this.md!.gens.current) });
    this.log.info('promoted to Primary', { force, ...(auto ? { by: 'front-end' } : {}) });
    if (force) for (const p of this.peers) if (p.link && p.replication === 'Established') this.connections.handshake(p);
  }

  /** Becomes Secondary; refused while a front-end has the volume open. */
  demote(): void {
    if (this.role === 'Secondary') return;
    if (this.clients > 0) throw new RoleError(`${this.clients} client(s) still have the volume open: stop the guest (or detach its disk) first`);
    this.stopLocalWrites();
    if (this.requests.pending.size > 0) this.log.warn('demoting with writes still waiting for peers', { pending: this.requests.pending.size });
    try { this.disk?.sync(); } catch (e) { this.detach(e as Error); }
    this.changeState({
      role: 'Secondary',
      persist: (md) => {
        // Nothing is in flight any more: a later crash of this Secondary owes no activity-log resync,
        // and must not be reported as a crash while Primary.
        if (this.requests.pending.size === 0) md.clearActivityLog();
        else md.flushBitmaps();
      },
    });
    this.autoPromoted = false;
    this.log.info('demoted to Secondary');
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
  outdate(why: string): void {
    if (!this.md || this.diskState !== 'UpToDate') return;
    this.changeState({ disk: 'Outdated' });
    this.log.warn(`local data marked Outdated: ${why}`);
  }

  quorumChanged(): void {
    if (this.hasQuorum() && this.requests.heldCompletions.length > 0) {
      // Held writes succeed only if this copy was kept; when a peer's data replaces it, they fail.
      const replaced = this.diskState !== 'UpToDate' || this.peers.some((q) => q.replication === 'SyncTarget' || q.pendingResync?.asTarget);
      const list = this.requests.heldCompletions;
      this.requests.heldCompletions = [];
      for (const { p, st } of list) this.requests.finish(p.req, replaced ? -EIO : st);
    }
    if (this.hasQuorum() && this.requests.suspended.length > 0) {
      const list = this.requests.suspended;
      this.requests.suspended = [];
      this.log.info('quorum regained: resuming suspended I/O', { requests: list.length });
      for (const r of list) this.requests.request(r);
      this.requests.endBatch();
    } else if (!this.hasQuorum() && this.role === 'Primary') {
      const v = this.votes();
      this.log.warn(`lost quorum (${v.have} of ${v.needed} votes): new writes ${this.cfg.onNoQuorum === 'suspend-io' ? 'are suspended' : 'fail'} until it returns`);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Frames from peers: checked against frame-rules.ts, then dispatched

  /** The frame rules' view of a link (see frame()); the config's part is fixed. */
  private readonly frameContext: FrameContext;

  frame(link: PeerLink, f: Frame): void {
    const p = this.byId.get(link.peerId);
    if (!p || p.link !== link) return;
    const c = this.frameContext; // one object, refilled per frame: this runs for every DATA and ACK
    c.peerState = p.state !== null;
    c.replication = p.replication;
    c.peerRole = p.state?.role ?? null;
    c.myRole = this.role;
    c.staleResyncAnswers = p.abandonedResync.size > 0;
    const refused = refuseFrame(f.type, c);
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
      case FrameType.State: return this.connections.onState(p, f);
      case FrameType.Bitmap: return this.connections.onBitmap(p, f.offset, f.totalBits, f.last, f.bits);
      case FrameType.Data: return this.receiver.onData(p, f.seq, f.offset, f.flags, f.data);
      case FrameType.Ack: return this.requests.settle(p, f.seq, f.status);
      case FrameType.Flush: return this.receiver.onFlush(p, f.seq);
      case FrameType.Trim: return this.receiver.onTrim(p, f.seq, f.offset, f.length, f.mode);
      case FrameType.ReadRequest: return this.receiver.onReadRequest(p, f.seq, f.offset, f.length);
      case FrameType.ReadReply: return this.requests.onReadReply(p, f.seq, f.status, f.data);
      case FrameType.ResyncRequest: return this.resync.onResyncRequest(p, f.seq, f.offset, f.length, null);
      case FrameType.ChecksumRequest: return this.resync.onResyncRequest(p, f.seq, f.offset, f.length, f.hash);
      case FrameType.ResyncData: return this.resync.onResyncAnswer(p, f.seq, f.offset, f.data.length, f.data);
      case FrameType.ResyncInSync: return this.resync.onResyncAnswer(p, f.seq, f.offset, f.length, null);
      case FrameType.ResyncDone: return this.resync.onResyncDone(p, f.gens);
      case FrameType.VerifyRequest: return this.verify.onVerifyRequest(p, f.seq, f.offset, f.length, f.blockSize);
      case FrameType.VerifyReply: return this.verify.onVerifyReply(p, f.seq, f.status, f.hashes);
      case FrameType.Resize: return this.resizer.onResize(p, f.seq, f.size, f.phase);
      case FrameType.ResizeAck: return this.resizer.onResizeAck(p, f.seq, f.status, f.message);
      case FrameType.Error:
        this.log.warn(`${p.name} reports: ${f.message}`);
        return;
      default:
        return p.link!.close(ErrorCode.Protocol, `unexpected frame type ${(f as Frame).type}`);
    }
  }

  /** `connect --discard-my-data`: the next split-brain handshake with these peers makes this node the target. */
  readonly discardMyData = new Set<number>();

  // ---------------------------------------------------------------------------------------------
  // Status

  anyOutOfSync(peerId: number, offset: number, length: number): boolean {
    const md = this.md;
    return md !== null && length > 0 && md.anyOutOfSync(peerId, offset, length);
  }

  /** Percent done of a resync with `total` bits out of sync at its start, one decimal. */
  resyncPercent(peerId: number, total: number): number {
    const left = this.md ? this.md.outOfSyncBits(peerId) : 0;
    return total <= 0 ? 100 : Math.floor((1000 * Math.max(0, total - left)) / total) / 10;
  }

  outOfSyncBytes(p: Peer): number {
    if (!this.md || !p.hasDisk) return 0;
    return Math.min(this.size, this.md.outOfSyncBits(p.id) * this.md.granularity);
  }

  status(): ResourceStatus {
    // Marks the workers posted and the engine has not taken yet count as written.
    this.safely(() => this.applyLocalMarks());
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
          seconds: ((v.finishedAt || Date.now()) - v.startedAt) / 1000,
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

  /** Closes the disk without writing its metadata, as a crash would leave it (a start that failed: it never served). */
  abandon(): void {
    this.md?.abandon();
    this.md = null;
    this.close();
  }

  /** Clean shutdown: demotes (if no client), flushes metadata and closes the disk. */
  close(): void {
    this.stopLocalWrites();
    this.requests.endBatch();
    if (this.resync.resyncTimer) clearInterval(this.resync.resyncTimer);
    if (this.bitmapTimer) clearInterval(this.bitmapTimer);
    this.resync.resyncTimer = this.bitmapTimer = null;
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

  // Delegates: the LinkHandler, and the administrative entry points the daemon calls.
  linkUp(link: PeerLink): void { this.connections.linkUp(link); }
  linkDown(link: PeerLink, reason: string): void { this.connections.linkDown(link, reason); }
  /** `twindisk connect` / `disconnect`. */
  setEnabled(peer: Peer, on: boolean): void { this.connections.setEnabled(peer, on); }
  /** `twindisk verify`. */
  startVerify(resyncAfter: boolean): string[] { return this.verify.startVerify(resyncAfter); }
}
