// Online resize of a replicated volume (DRBD's `drbdadm resize`): the checks, each node's growth, and the agreed size.
//
// The node where `twindisk resize` runs coordinates. It checks that every node takes part (connected,
// Established, every disk UpToDate), grows its own disk and metadata, then sends RESIZE (phase GROW) to
// every peer; each grows its own (a diskless one only takes the size) and answers RESIZE_ACK. Once every
// peer has answered 0, the size is agreed: RESIZE (phase DONE) tells every node to tell its front-ends
// (vhost-user config change, iSCSI capacity), and the coordinator does the same. Until DONE no guest is
// told, so no write reaches the new blocks before every disk has them.
//
// The new blocks are in sync toward every peer: each node's backing file grows sparse (and internal
// metadata's old area is zeroed when it moves, see Metadata.grow), so the new blocks read as zeroes on
// every node. That holds only because every disk node grows in the same resize, which the checks enforce.
// A node that crashed mid-resize keeps its old size; its peers refuse it at the next handshake (sizes
// differ), and `twindisk resize --size SIZE` on it finishes the job (peers that already report SIZE do
// not need to be connected for that).
import fs from 'node:fs';
import { EIO } from '../os.js';
import { ErrorCode, FrameType, RESIZE_DONE, RESIZE_GROW } from './frames.js';
import { MetadataError } from './metadata.js';
import type { Peer } from './peer.js';
import type { Resource } from './resource.js';
import { RoleError } from './states.js';

/** How long the coordinator waits for every peer's RESIZE_ACK (a peer writes and syncs its bitmaps). */
export const RESIZE_ACK_TIMEOUT_MS = 60_000;

/** What `twindisk resize` answers. */
export interface ResizeResult {
  size: number;
  oldSize: number;
  changed: boolean;
  /** The nodes that took part (this one first). */
  nodes: string[];
}

/** The online resizes of one node: as coordinator (resize) and as a peer (onResize). */
export class VolumeResize {
  private seq = 1;
  private running = false;
  private readonly waiting = new Map<number, Map<number, (a: { status: number; message: string }) => void>>();

  constructor(private readonly r: Resource) {}

  /**
   * `twindisk resize --size SIZE` on this node. Rejects with a RoleError naming the node that cannot
   * take part (nothing changed then), or the node whose growth failed.
   */
  async resize(size: number): Promise<ResizeResult> {
    const r = this.r;
    if (this.running) throw new RoleError('a resize is already under way');
    const oldSize = r.size;
    const why = this.refusal(size);
    if (why !== null) throw new RoleError(why);
    const taking = r.peers.filter((p) => p.link !== null);
    const nodes = [r.me.name, ...taking.map((p) => p.name)];
    if (size === oldSize && taking.every((p) => p.state?.size === size || !p.hasDisk)) return { size, oldSize, changed: false, nodes };
    this.running = true;
    try {
      try {
        this.grow(size);
      } catch (e) {
        throw new RoleError(`${r.me.name} cannot grow its disk: ${(e as Error).message}`);
      }
      const seq = this.seq++;
      const answers = new Map<number, (a: { status: number; message: string }) => void>();
      this.waiting.set(seq, answers);
      const replies = taking.map((p) => new Promise<{ p: Peer; status: number; message: string }>((resolve) => {
        const timer = setTimeout(() => resolve({ p, status: -EIO, message: `no answer within ${RESIZE_ACK_TIMEOUT_MS / 1000} s` }), RESIZE_ACK_TIMEOUT_MS);
        answers.set(p.id, (a) => { clearTimeout(timer); resolve({ p, ...a }); });
        p.link!.send({ type: FrameType.Resize, seq, size, phase: RESIZE_GROW });
      }));
      const results = await Promise.all(replies);
      this.waiting.delete(seq);
      const failed = results.filter((x) => x.status !== 0);
      if (failed.length > 0) {
        // The nodes that grew keep their size (growing cannot be undone safely once the metadata moved);
        // no front-end was told. The failed node catches up with `resize` once it can.
        throw new RoleError(failed.map((x) => `${x.p.name} cannot grow to ${size} bytes: ${x.message}`).join('; ')
          + `. The nodes that grew keep ${size} bytes and no guest was told; fix ${failed.map((x) => x.p.name).join(', ')} and run the resize again`);
      }
      for (const p of taking) p.link?.send({ type: FrameType.Resize, seq, size, phase: RESIZE_DONE });
      await this.agreed(size);
      r.log.info('volume resized', { from: oldSize, to: size, nodes: nodes.join(',') });
      return { size, oldSize, changed: true, nodes };
    } finally {
      this.running = false;
    }
  }

  /** Why the volume cannot grow to `size` now (naming the node), or null. */
  refusal(size: number): string | null {
    const r = this.r;
    if (!Number.isSafeInteger(size) || size <= 0 || size % 4096 !== 0) return `size ${size} is not a positive multiple of 4096 bytes`;
    if (r.size === 0) return `${r.me.name} does not know the volume's size yet (no peer with a disk has connected): run resize on a node with a disk`;
    if (size < r.size) return `${size} bytes is smaller than the volume's ${r.size}: a replicated volume only grows (shrinking would cut off data the guest may hold)`;
    if (r.me.disk !== null && (!r.disk || !r.md)) return `${r.me.name}'s disk is detached: attach it first (twindisk attach)`;
    if (r.disk && !r.disk.resizable) return `${r.me.name}'s disk is an md array (${r.disk.path}), whose size its members set: growing a replicated volume on a RAID disk is not supported yet`;
    if (r.disk && r.diskState !== 'UpToDate') return `${r.me.name}'s disk is ${r.diskState}: wait until it is UpToDate (twindisk wait-sync)`;
    for (const p of r.peers) {
      if (!p.link) {
        // A peer that already grew to `size` (a resize this node missed) need not be here.
        if (p.hasDisk && p.state?.size === size) continue;
        if (!p.hasDisk && r.size === size) continue;
        return `${p.name} is not connected (${p.connection}): every node must take part in a resize; start or connect it first`;
      }
      if (p.replication !== 'Established') return `${p.name} is ${p.replication}: wait until it is in sync (twindisk wait-sync)`;
      if (p.hasDisk && p.state?.disk !== 'UpToDate') return `${p.name}'s disk is ${p.state?.disk ?? 'unknown'}: wait until it is UpToDate`;
    }
    return null;
  }

  /**
   * Grows this node's backing file and metadata to `size` (a diskless node only takes the size), so
   * that it accepts replicated writes up to it; front-ends are not told (see agreed()). Synchronous.
   * Throws with the reason; an I/O error after the metadata switched detaches the disk.
   */
  grow(size: number): void {
    const r = this.r;
    if (!r.disk || !r.md) {
      if (r.me.disk !== null) throw new RoleError(`${r.me.name}'s disk is detached`);
      r.size = Math.max(r.size, size);
      return;
    }
    const md = r.md;
    if (size <= md.dataSize) return;
    if (!r.disk.resizable) throw new RoleError(`${r.me.name}'s disk is an md array (${r.disk.path}), whose size its members set: growing a replicated volume on a RAID disk is not supported yet`);
    const loc = md.location;
    for (const file of [loc.backingFile, ...(loc.metaFile ? [loc.metaFile] : [])]) {
      if (!fs.statSync(file).isFile()) {
        throw new MetadataError(`${file} is not a regular file: growing a block device's volume is not supported yet (grow the device, then recreate its metadata)`);
      }
    }
    // External metadata: the data grows first (sparse: the new blocks read as zeroes); internal metadata
    // grows the file itself as it moves to the new end.
    if (loc.metaFile !== null && fs.statSync(loc.backingFile).size < size) fs.truncateSync(loc.backingFile, size);
    // Workers writing the local disk themselves post marks for this metadata: take those writes back first.
    r.stopLocalWrites();
    let next;
    try {
      next = md.grow(size);
    } catch (e) {
      if (!md.isOpen) r.detach(e as Error); // past the switch: the metadata must be opened anew
      throw e;
    }
    r.md = next;
    r.shareHotExtents(next);
    r.disk.size = size;
    r.size = size;
    r.updateFastPaths();
    r.log.info('disk and metadata grown', { size, metadata: `${next.layout.file}@${next.layout.areaOffset}` });
  }

  /** The size is agreed by every node: tell the front-ends, and the peers (STATE). */
  private async agreed(size: number): Promise<void> {
    const r = this.r;
    r.size = Math.max(r.size, size);
    r.connections.broadcastState();
    r.changed();
    if (r.onResize) {
      try {
        await r.onResize(size);
      } catch (e) {
        r.log.warn(`front-ends not told of the new size: ${(e as Error).message}`);
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Frames

  /** RESIZE from the coordinator: grow (and answer), or tell the front-ends. */
  onResize(p: Peer, seq: number, size: number, phase: number): void {
    if (phase === RESIZE_DONE) {
      if (this.r.size !== size) return p.link?.close(ErrorCode.SizeMismatch, `RESIZE DONE for ${size} bytes, but this node has ${this.r.size}`);
      void this.agreed(size);
      return;
    }
    let status = 0;
    let message = '';
    try {
      if (this.r.disk && this.r.diskState !== 'UpToDate') throw new RoleError(`its disk is ${this.r.diskState}`);
      if (size < this.r.size) throw new RoleError(`it has ${this.r.size} bytes, more than ${size}`);
      this.grow(size);
    } catch (e) {
      status = -EIO;
      message = (e as Error).message;
      this.r.log.error(`cannot grow to ${size} bytes as ${p.name} asked: ${message}`);
    }
    p.link?.send({ type: FrameType.ResizeAck, seq, status, message });
  }

  /** RESIZE_ACK: a peer's answer to this node's RESIZE (an unknown seq is ignored). */
  onResizeAck(p: Peer, seq: number, status: number, message: string): void {
    this.waiting.get(seq)?.get(p.id)?.({ status, message });
  }

  /** A peer's link went down: a resize waiting for it fails at once. */
  peerLost(p: Peer): void {
    for (const answers of this.waiting.values()) answers.get(p.id)?.({ status: -EIO, message: 'its connection was lost' });
  }
}
