// Links to peers and their handshake: STATE exchange, the resync decision, the bitmap exchange, the start of a resync.
import {
  ErrorCode, FrameType, STATE_CRASHED_PRIMARY, STATE_DISCARD_MY_DATA, STATE_WANT_RESYNC, type Generations, type StateFrame,
} from './frames.js';
import { decideResync, resolveSplitBrain, type NodeView } from './handshake.js';
import type { PeerLink } from './link.js';
import type { Resource } from './resource.js';
import { Peer, Resync } from './peer.js';

function emptyGens(): Generations {
  return { current: 0n, bitmap: new Array<bigint>(32).fill(0n), history: [] };
}

/** Links coming up and going down, STATE frames, and the handshake that decides each peer's replication state. */
export class PeerConnections {
  constructor(private readonly r: Resource) {}

  // ---------------------------------------------------------------------------------------------
  // Links

  linkUp(link: PeerLink): void {
    const p = this.r.byId.get(link.peerId);
    if (!p) return link.close(ErrorCode.UnknownNode, `node id ${link.peerId} is not part of ${this.r.cfg.resource}`);
    if (!p.enabled) return link.close(ErrorCode.Disconnect, `${this.r.me.name} is disconnected from ${p.name} (twindisk connect to resume)`);
    p.link = link;
    p.state = null;
    p.splitBrain = null;
    this.r.changeState({ replication: [[p, 'Handshake']] });
    this.r.log.info(`connected to ${p.name}`);
    // Writes wait while a peer is mid-handshake: one that never sends its state must not hold them.
    setTimeout(() => {
      if (p.link === link && p.replication === 'Handshake') link.close(ErrorCode.Protocol, `${p.name} sent no state within 10 s`);
    }, 10_000).unref();
    this.sendState(p);
    this.r.quorumChanged();
  }

  linkDown(link: PeerLink, reason: string): void {
    const p = this.r.byId.get(link.peerId);
    if (!p || p.link !== link) return;
    p.link = null;
    const wasResync = p.resync;
    p.resync = null;
    p.verify = null;
    p.bitmapSent = p.bitmapReceived = false;
    p.pendingResync = null;
    p.abandonedResync.clear();
    this.r.changeState({ replication: [[p, 'Off']] });
    this.r.log.warn(`lost connection to ${p.name}: ${reason}`, wasResync ? { resyncLeftBytes: this.r.outOfSyncBytes(p) } : {});
    this.r.requests.peerLost(p, link);
    this.r.resizer.peerLost(p);
    this.r.md?.flushBitmaps();
    this.r.quorumChanged();
    this.r.requests.releaseHeld();
    this.r.changed();
  }

  /** `twindisk disconnect`: drops the link and keeps it down. The transport is told by the daemon. */
  setEnabled(peer: Peer, on: boolean): void {
    peer.enabled = on;
    if (on) {
      peer.splitBrain = null;
      this.r.linkControl?.connect(peer.id);
    } else {
      if (peer.link) peer.link.close(ErrorCode.Disconnect, `${this.r.me.name} disconnected from ${peer.name} by request`);
      this.r.linkControl?.disconnect(peer.id);
    }
    this.r.changed();
  }

  // ---------------------------------------------------------------------------------------------
  // States and handshake

  private myState(toward: Peer | null, flags = 0): StateFrame {
    const md = this.r.md;
    const g = md?.gens ?? this.r.generations.vgens;
    return {
      type: FrameType.State, role: this.r.role, disk: this.r.diskState, size: this.r.disk ? this.r.size : 0,
      flags: flags | (toward && this.r.crashPeers.has(toward.id) ? STATE_CRASHED_PRIMARY : 0),
      gens: g ? { current: g.current, bitmap: [...g.bitmap], history: [...g.history] } : emptyGens(),
      promotedAt: md?.promotedAt ?? 0, outOfSyncBits: 0, quorum: this.r.hasQuorum(),
      resyncFrom: md && this.r.diskState === 'Inconsistent' ? md.resyncFrom : 0n,
    };
  }

  sendState(p: Peer, flags = 0): void {
    const s = this.myState(p, flags | (this.r.discardMyData.has(p.id) ? STATE_DISCARD_MY_DATA : 0));
    s.outOfSyncBits = this.r.md && p.hasDisk ? this.r.md.outOfSyncBits(p.id) : 0;
    p.link?.send(s);
  }

  broadcastState(flags = 0): void {
    for (const p of this.r.peers) if (p.link) this.sendState(p, flags);
  }

  private view(p: Peer | null, toward: Peer | null = null): NodeView {
    if (!p) {
      const s = this.myState(toward);
      return { id: this.r.me.id, name: this.r.me.name, role: s.role, disk: s.disk, flags: s.flags, gens: s.gens, promotedAt: s.promotedAt, outOfSyncBits: 0, resyncFrom: s.resyncFrom };
    }
    const s = p.state!;
    return { id: p.id, name: p.name, role: s.role, disk: s.disk, flags: s.flags, gens: s.gens, promotedAt: s.promotedAt, outOfSyncBits: s.outOfSyncBits, resyncFrom: s.resyncFrom };
  }

  onState(p: Peer, s: StateFrame): void {
    const first = p.state === null;
    const before = p.state;
    p.state = s;
    if (this.r.size === 0 && s.size > 0) {
      this.r.size = s.size;
      this.r.log.info(`volume size learnt from ${p.name}`, { size: s.size });
      this.r.sizeWaiters.splice(0).forEach((w) => w());
    }
    if (!this.r.md && s.disk === 'UpToDate' && this.r.role !== 'Primary' && s.gens.current !== 0n
      && (!this.r.generations.vgens || s.gens.history.includes(this.r.generations.vgens.current))) {
      // A diskless node remembers the newest data generation it has seen (it only moves forward), so
      // a node with older data cannot be promoted behind its back (see promote).
      this.r.generations.vgens = { current: s.gens.current, bitmap: new Array<bigint>(32).fill(0n), history: [...s.gens.history] };
    }
    // Sizes are compared at the handshake; on an established link they differ for a moment while an
    // online resize grows one node after the other (resize.ts).
    if (s.size > 0 && this.r.disk && s.size !== this.r.size && (first || p.replication === 'Handshake')) {
      const [small, big] = s.size < this.r.size ? [p.name, this.r.me.name] : [this.r.me.name, p.name];
      const msg = `${p.name}'s disk has ${s.size} usable bytes and ${this.r.me.name}'s ${this.r.size}: `
        + `an online resize did not finish on ${small} (run \`twindisk resize --size ${Math.max(s.size, this.r.size)}\` against ${small}), `
        + `or the disks were created with different sizes (give ${small} the size of ${big} with create-md)`;
      this.r.log.error(msg);
      p.link!.close(ErrorCode.SizeMismatch, msg);
      return;
    }
    if (!this.r.md && this.r.size > 0 && s.size > this.r.size && s.disk === 'UpToDate') {
      // A diskless node takes a size agreed while it was away from a peer with a disk (resize.ts).
      this.r.size = s.size;
      void this.r.onResize?.(s.size);
    }
    if (s.role === 'Primary' && this.r.role === 'Primary' && !this.r.cfg.allowTwoPrimaries && (first || before?.role !== 'Primary')) {
      this.r.log.error(`${p.name} is Primary too and allow-two-primaries is off: dropping the connection (demote one of them)`);
      p.link!.close(ErrorCode.TwoPrimaries, `both ${this.r.me.name} and ${p.name} are Primary`);
      return;
    }
    if (first || p.replication === 'Handshake' || (s.flags & STATE_WANT_RESYNC) !== 0) {
      if ((s.flags & STATE_WANT_RESYNC) !== 0 && !first) this.sendState(p);
      this.handshake(p);
      this.r.requests.releaseHeld();
    } else if (p.replication === 'Established') {
      this.r.generations.adoptGeneration(p, s);
      // A peer that became UpToDate (primary --force) while we are not: resync from it.
      if (this.r.disk && this.r.diskState !== 'UpToDate' && s.disk === 'UpToDate' && before?.disk !== 'UpToDate') this.handshake(p);
    }
    this.r.quorumChanged();
    this.r.changed();
  }

  /** Decides the resync with a peer whose state we just got, and starts the bitmap exchange. */
  handshake(p: Peer): void {
    // A new decision replaces whatever exchange or resync was going on with this peer.
    p.bitmapSent = p.bitmapReceived = false;
    p.pendingResync = null;
    if (p.resync?.asTarget) for (const seq of p.resync.inflight.keys()) p.abandonedResync.add(seq);
    p.resync = null;
    if (!p.state) {
      this.sendState(p, STATE_WANT_RESYNC);
      this.r.changeState({ replication: [[p, 'Handshake']] });
      return;
    }
    const me = this.view(null, p);
    me.outOfSyncBits = this.r.md && p.hasDisk ? this.r.md.outOfSyncBits(p.id) : 0;
    const peer = this.view(p);
    const d = decideResync(me, peer);
    let res: { kind: 'source' | 'target'; full: boolean; why: string } | null = d.kind === 'source' || d.kind === 'target' ? d : null;
    if (d.kind === 'split-brain') {
      const r = this.r.discardMyData.has(p.id) ? 'target'
        : (p.state.flags & STATE_DISCARD_MY_DATA) !== 0 ? 'source'
        : resolveSplitBrain(me, peer, { afterSb0pri: this.r.cfg.afterSb0pri, afterSb1pri: this.r.cfg.afterSb1pri, afterSb2pri: this.r.cfg.afterSb2pri });
      if (r === null) {
        p.splitBrain = d.why;
        this.r.changeState({ replication: [[p, 'SplitBrain']] });
        this.r.log.error(`split brain detected with ${p.name}: ${d.why}. Refusing to connect. Decide which node's changes to discard: on that node run \`twindisk connect --discard-my-data\`, or configure an after-sb-0pri policy`);
        this.setEnabled(p, false);
        p.splitBrain = d.why;
        return;
      }
      this.r.log.warn(`split brain detected with ${p.name} (${d.why}): resolved by policy, ${r === 'target' ? `discarding ${this.r.me.name}'s changes` : `discarding ${p.name}'s changes`}`);
      res = { kind: r, full: false, why: 'split brain resolved by policy' };
    } else if (d.kind === 'unrelated') {
      this.r.log.error(`${p.name} holds unrelated data: ${d.why}. Refusing to connect; recreate the metadata of the node whose data is wrong (twindisk create-md --force) to resync it fully`);
      p.link!.close(ErrorCode.UnrelatedData, d.why);
      this.setEnabled(p, false);
      return;
    }
    this.r.discardMyData.delete(p.id);
    if (!res) {
      this.r.changeState({ replication: [[p, 'Established']] });
      this.r.log.info(`${p.name} is in sync`, { peerDisk: p.state.disk, peerRole: p.state.role });
      this.r.generations.rotatedAway &= ~(1 << p.id);
      if (p.hasDisk && p.state.disk !== 'Diskless' && me.outOfSyncBits === 0) this.r.resync.settledCrash(p);
      return;
    }
    const asTarget = res.kind === 'target';
    const sourceDisk = asTarget ? p.state.disk : this.r.diskState;
    if (sourceDisk !== 'UpToDate' && sourceDisk !== 'Outdated') {
      // Only whole data may be copied: an Inconsistent source would make its target "UpToDate" with
      // half a resync. (Outdated data is whole; the generations chose it as the newer copy.)
      this.r.changeState({ replication: [[p, 'Established']] });
      this.r.log.warn(`${p.name} and ${this.r.me.name} differ (${res.why}) but the would-be SyncSource is ${sourceDisk}: waiting for UpToDate data (connect a node that has it, or primary --force on the authoritative one)`);
      return;
    }
    this.r.log.info(`resync with ${p.name}: this node is ${asTarget ? 'SyncTarget' : 'SyncSource'} (${res.why})`, { full: res.full });
    p.pendingResync = { asTarget, full: res.full };
    this.r.changeState({ replication: [[p, 'WFBitMap']] });
    if (this.r.md) {
      if (res.full) this.r.md.setAll(p.id);
      this.sendBitmap(p);
    }
  }

  private sendBitmap(p: Peer): void {
    const bm = this.r.md!.bitmap(p.id);
    const total = this.r.md!.bits;
    const step = 64 * 1024;
    for (let off = 0; off < bm.length || off === 0; off += step) {
      const end = Math.min(bm.length, off + step);
      p.link!.send({ type: FrameType.Bitmap, offset: off * 8, totalBits: total, last: end >= bm.length, bits: bm.subarray(off, end) });
      if (end >= bm.length) break;
    }
    p.bitmapSent = true;
    this.maybeStartResync(p);
  }

  onBitmap(p: Peer, offset: number, totalBits: number, last: boolean, bits: Uint8Array): void {
    if (!this.r.md || p.replication !== 'WFBitMap' || !p.pendingResync) return; // only during a bitmap exchange
    if (totalBits !== this.r.md.bits) {
      p.link!.close(ErrorCode.SizeMismatch, `bitmap of ${totalBits} bits does not match ${this.r.md.bits}`);
      return;
    }
    const start = offset >>> 3;
    if (start + bits.length > Math.ceil(this.r.md.bits / 8)) {
      p.link!.close(ErrorCode.Protocol, 'bitmap frame past the end of the bitmap');
      return;
    }
    // Both sides' changes: the union is what differs.
    this.r.md.mergeBitmap(p.id, start, bits);
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
    const md = this.r.md!;
    const rs = new Resync(asTarget, full, this.r.cfg.csumsAlg !== null);
    rs.totalBits = md.outOfSyncBits(p.id);
    p.resync = rs;
    if (!asTarget) return this.r.changeState({ replication: [[p, 'SyncSource']] });
    // Resumable: the bitmap (both sides' marks) is made durable first, then the superblock names the
    // generation being copied. From here on the periodic write-back records progress (see
    // persistResyncProgress), so after a crash of either side only what is left is sent.
    const src = p.state!.gens;
    const resumed = md.disk === 'Inconsistent' && md.resyncFrom !== 0n && md.resyncTotal > 0
      && (md.resyncFrom === src.current || src.bitmap[this.r.me.id] === md.resyncFrom)
      && !this.r.peers.some((q) => q !== p && q.replication === 'SyncTarget'); // not a second source of this run
    rs.totalBits = resumed ? Math.max(md.resyncTotal, rs.totalBits) : rs.totalBits;
    rs.doneAtStart = rs.totalBits - md.outOfSyncBits(p.id);
    this.r.changeState({
      disk: 'Inconsistent', replication: [[p, 'SyncTarget']],
      persist: (m) => {
        m.flushBitmaps(true);
        m.resyncFrom = src.current;
        m.resyncTotal = rs.totalBits;
      },
    });
    if (resumed) this.r.log.info(`resuming the resync from ${p.name} at ${this.r.resyncPercent(p.id, rs.totalBits)}%`);
    this.r.resync.ensureResyncTimer();
    this.r.resync.pumpResync(p);
  }
}
