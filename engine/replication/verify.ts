// Online verify: compares every block with a peer by hash and marks differing blocks out of sync.
import { allocBuffer, xxh3, type KernelBuffer } from '../../wasm/index.js';
import { EIO } from '../os.js';
import { FrameType, MAX_PAYLOAD, STATE_WANT_RESYNC } from './frames.js';
import type { Resource } from './resource.js';
import { RoleError } from './states.js';
import { Peer } from './peer.js';

const VERIFY_CHUNK = 1 << 20;
const VERIFY_DEPTH = 4;
/** Verify hashes 4 KiB blocks (volume sizes are multiples of 4 KiB; bitmaps are at least that coarse). */
export const VERIFY_BLOCK = 4096;

/** The online verify runs of one node, one per peer. */
export class OnlineVerify {
  constructor(private readonly r: Resource) {}

  // ---------------------------------------------------------------------------------------------
  // Online verify

  /** Compares every block with each connected peer by hash; marks differing blocks out of sync. */
  startVerify(resyncAfter: boolean): string[] {
    if (!this.r.disk || !this.r.md) throw new RoleError('verify needs a local disk: run it on a node with a disk');
    if (this.r.diskState !== 'UpToDate') throw new RoleError(`this node's data is ${this.r.diskState}: verify runs between UpToDate replicas`);
    const targets = this.r.peers.filter((p) => p.upToDate && p.hasDisk);
    if (targets.length === 0) throw new RoleError('no UpToDate peer with a disk is connected: nothing to verify against');
    for (const p of targets) {
      if (p.verify) continue;
      p.verify = { offset: 0, inflight: 0, outOfSyncBlocks: 0, startedAt: Date.now(), finishedAt: 0, resyncAfter };
      this.r.log.info(`online verify with ${p.name} started`, { size: this.r.size });
      this.pumpVerify(p);
    }
    this.r.changed();
    return targets.map((p) => p.name);
  }

  /** Requests in flight; `mine` holds this node's hashes once computed (while the peer computes its own). */
  private readonly verifyReqs = new Map<number, { peer: number; offset: number; length: number; mine: bigint[] | null }>();

  private pumpVerify(p: Peer): void {
    const v = p.verify;
    if (!v || !p.link) return;
    const sent: number[] = [];
    while (v.inflight < VERIFY_DEPTH && v.offset < this.r.size) {
      const length = Math.min(VERIFY_CHUNK, this.r.size - v.offset);
      const seq = this.r.seq++;
      this.verifyReqs.set(seq, { peer: p.id, offset: v.offset, length, mine: null });
      p.link.send({ type: FrameType.VerifyRequest, seq, offset: v.offset, length, blockSize: VERIFY_BLOCK });
      sent.push(seq);
      v.offset += length;
      v.inflight++;
    }
    // This node hashes its copies once the requests have left (the link sends at the end of the turn),
    // so both nodes hash at the same time instead of taking turns.
    if (sent.length > 0) setImmediate(() => this.hashAhead(sent));
    if (v.inflight === 0 && v.offset >= this.r.size) {
      v.finishedAt = Date.now();
      p.lastVerify = v;
      p.verify = null;
      this.r.md!.flushBitmaps();
      this.r.log.info(`online verify with ${p.name} finished: ${v.outOfSyncBlocks} blocks (${v.outOfSyncBlocks * VERIFY_BLOCK} bytes) out of sync`, {
        seconds: ((v.finishedAt - v.startedAt) / 1000).toFixed(2),
      });
      if (v.resyncAfter && v.outOfSyncBlocks > 0) {
        this.r.log.info(`resyncing the blocks verify found with ${p.name}`);
        this.r.connections.sendState(p, STATE_WANT_RESYNC);
        this.r.connections.handshake(p);
      }
      this.r.changed();
    }
  }

  /** Where blocks are read for hashing: wasm memory, so the hash kernel reads them in place (no copy in). */
  private hashBuf: KernelBuffer | null = null;

  private hashBlocks(offset: number, length: number, blockSize: number): bigint[] {
    this.hashBuf ??= allocBuffer(MAX_PAYLOAD);
    const buf = this.hashBuf.bytes; // taken afresh: a grown wasm memory replaces the view
    this.r.disk!.read(buf, length, offset);
    const out: bigint[] = [];
    for (let o = 0; o < length; o += blockSize) out.push(xxh3(buf.subarray(o, Math.min(length, o + blockSize))));
    return out;
  }

  onVerifyRequest(p: Peer, seq: number, offset: number, length: number, blockSize: number): void {
    if (!this.r.disk || offset < 0 || length > MAX_PAYLOAD || offset + length > this.r.size) {
      p.link!.send({ type: FrameType.VerifyReply, seq, status: -EIO, hashes: [] });
      return;
    }
    let hashes: bigint[] = [];
    let status = 0;
    try { hashes = this.hashBlocks(offset, length, blockSize); } catch { status = -EIO; }
    p.link!.send({ type: FrameType.VerifyReply, seq, status, hashes });
  }

  /** Computes this node's hashes for requests still waiting for their reply. */
  private hashAhead(seqs: number[]): void {
    for (const seq of seqs) {
      const q = this.verifyReqs.get(seq);
      if (!q || q.mine || !this.r.disk) continue;
      try { q.mine = this.hashBlocks(q.offset, q.length, VERIFY_BLOCK); } catch { /* read again when the reply comes */ }
    }
  }

  onVerifyReply(p: Peer, seq: number, status: number, hashes: bigint[]): void {
    const q = this.verifyReqs.get(seq);
    if (!q || q.peer !== p.id) return;
    this.verifyReqs.delete(seq);
    const v = p.verify;
    if (!v) return;
    v.inflight--;
    const gran = VERIFY_BLOCK;
    let mine: bigint[] = q.mine ?? [];
    if (!q.mine) try { mine = this.hashBlocks(q.offset, q.length, gran); } catch { status = -EIO; }
    for (let i = 0, o = q.offset; o < q.offset + q.length; i++, o += gran) {
      if (status !== 0 || mine[i] !== hashes[i]) {
        v.outOfSyncBlocks++;
        this.r.md!.setOutOfSync(p.id, o, Math.min(gran, q.offset + q.length - o));
      }
    }
    this.pumpVerify(p);
  }
}
