// Online verify: compares every block with a peer by hash and marks differing blocks out of sync.
import { xxh3 } from '../../wasm/index.js';
import type { PeerLink } from './link.js';
import { EIO } from '../os.js';
import { FrameType, MAX_PAYLOAD, STATE_WANT_RESYNC } from './frames.js';
import type { Resource } from './resource.js';
import { RoleError } from './states.js';
import { Peer } from './peer.js';

const VERIFY_CHUNK = 1 << 20;
/** Requests a verifying node keeps in flight; each side reads them on libuv's pool (4 threads) at once. */
const VERIFY_DEPTH = 8;
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

  /**
   * Requests in flight. `mine`: this node's hashes, read and computed while the peer computes its own;
   * `theirs`: the peer's reply, when it came first. The request is settled once both are there.
   */
  private readonly verifyReqs = new Map<number, VerifyReq>();

  private pumpVerify(p: Peer): void {
    const v = p.verify;
    if (!v || !p.link) return;
    while (v.inflight < VERIFY_DEPTH && v.offset < this.r.size) {
      const length = Math.min(VERIFY_CHUNK, this.r.size - v.offset);
      const seq = this.r.seq++;
      const q: VerifyReq = { peer: p.id, offset: v.offset, length, mine: null, theirs: null, status: 0 };
      this.verifyReqs.set(seq, q);
      p.link.send({ type: FrameType.VerifyRequest, seq, offset: v.offset, length, blockSize: VERIFY_BLOCK });
      v.offset += length;
      v.inflight++;
      // This node reads and hashes its copy while the peer does the same with its own.
      this.hashRange(q.offset, q.length, VERIFY_BLOCK, (status, hashes) => {
        q.mine = hashes;
        if (status !== 0) q.status = status;
        if (this.verifyReqs.get(seq) === q && q.theirs) this.settle(p, seq, q);
      });
    }
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

  /** Read buffers (1 MiB, Node memory: a growing wasm memory would detach a view a pool read still fills). */
  private readonly spare: Buffer[] = [];

  /**
   * Reads [offset, offset + length) on libuv's pool and hashes it in `blockSize` blocks; `done` gets 0
   * and the hashes, or -EIO and none (unreadable here, or the disk went away meanwhile).
   */
  private hashRange(offset: number, length: number, blockSize: number, done: (status: number, hashes: bigint[]) => void): void {
    const disk = this.r.disk;
    if (!disk) return done(-EIO, []);
    const buf = this.spare.pop() ?? Buffer.allocUnsafe(MAX_PAYLOAD);
    disk.readAsync(buf, length, offset, (err) => {
      let hashes: bigint[] = [];
      let status = 0;
      if (err || this.r.disk !== disk) status = -EIO;
      else for (let o = 0; o < length; o += blockSize) hashes.push(xxh3(buf.subarray(o, Math.min(length, o + blockSize))));
      if (this.spare.length < 2 * VERIFY_DEPTH) this.spare.push(buf);
      if (status !== 0) hashes = [];
      this.r.safely(() => done(status, hashes));
    });
  }

  onVerifyRequest(p: Peer, seq: number, offset: number, length: number, blockSize: number): void {
    if (!this.r.disk || offset < 0 || length > MAX_PAYLOAD || offset + length > this.r.size) {
      p.link!.send({ type: FrameType.VerifyReply, seq, status: -EIO, hashes: [] });
      return;
    }
    const link: PeerLink | null = p.link;
    this.hashRange(offset, length, blockSize, (status, hashes) => {
      // A reply belongs to the link its request came on: a new session starts its verify afresh.
      if (p.link === link && link) link.send({ type: FrameType.VerifyReply, seq, status, hashes });
    });
  }

  onVerifyReply(p: Peer, seq: number, status: number, hashes: bigint[]): void {
    const q = this.verifyReqs.get(seq);
    if (!q || q.peer !== p.id || q.theirs) return;
    q.theirs = hashes;
    if (status !== 0) q.status = status;
    if (q.mine) this.settle(p, seq, q);
  }

  /** Both sides' hashes of a request are in: marks the blocks that differ and asks for more. */
  private settle(p: Peer, seq: number, q: VerifyReq): void {
    this.verifyReqs.delete(seq);
    const v = p.verify;
    if (!v) return;
    v.inflight--;
    const gran = VERIFY_BLOCK;
    const mine = q.mine!;
    const theirs = q.theirs!;
    for (let i = 0, o = q.offset; o < q.offset + q.length; i++, o += gran) {
      if (q.status !== 0 || mine[i] !== theirs[i]) {
        v.outOfSyncBlocks++;
        this.r.md!.setOutOfSync(p.id, o, Math.min(gran, q.offset + q.length - o));
      }
    }
    this.pumpVerify(p);
  }
}

interface VerifyReq {
  peer: number;
  offset: number;
  length: number;
  mine: bigint[] | null;
  theirs: bigint[] | null;
  /** -EIO when either side could not read its copy: every block of the request counts as differing. */
  status: number;
}
