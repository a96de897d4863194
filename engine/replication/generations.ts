// Data generations (DRBD's UUIDs) as a node moves them: new ones when a peer starts missing writes, adopted ones from a Primary.
import { advanceGenerations, type Generations, type StateFrame } from './frames.js';
import { hex } from './handshake.js';
import { newGeneration } from './metadata.js';
import type { Peer } from './peer.js';
import type { Resource } from './resource.js';

/** Starts and follows data generations; for a diskless node keeps the volatile ones. */
export class GenerationTracker {
  constructor(private readonly r: Resource) {}
  /** A diskless node's view of the generations (learnt from UpToDate peers; rotated while Primary). */
  vgens: Generations | null = null;
  rotatedAway = 0;

  /** Starts a new data generation before the first write that some disk peer misses (DRBD's new current UUID). */
  newGenerationIfNeeded(extra: number): void {
    const md = this.r.md;
    if (!md) return this.newVolatileGeneration();
    let missing = 0;
    for (const p of this.r.peers) {
      if (p.hasDisk && (!p.replicating || (extra & (1 << p.id)) !== 0) && md.gens.bitmap[p.id] === 0n) missing |= 1 << p.id;
    }
    if (missing === 0) return;
    this.r.changeState({
      announce: true,
      persist: (m) => {
        m.rotateGeneration(newGeneration(), this.r.peers.filter((p) => missing & (1 << p.id)).map((p) => p.id));
      },
    });
    this.r.log.info('new data generation: writes are now tracked for peers that miss them', {
      generation: hex(md.gens.current), peers: this.r.peers.filter((p) => missing & (1 << p.id)).map((p) => p.name).join(','),
    });
  }

  /**
   * A diskless Primary has no bitmaps, but its Secondaries do: it starts a new generation for them
   * (they adopt it, base their bitmaps toward the missing peers on the old one and mark the writes).
   */
  private newVolatileGeneration(): void {
    const g = this.vgens;
    if (!g || this.r.role !== 'Primary') return;
    let missing = 0;
    for (const p of this.r.peers) if (p.hasDisk && !p.replicating && (this.rotatedAway & (1 << p.id)) === 0) missing |= 1 << p.id;
    if (missing === 0) return;
    this.rotatedAway |= missing;
    advanceGenerations(g, newGeneration());
    this.r.changeState({ announce: true });
    this.r.log.info('new data generation (diskless Primary): peers with disks track the writes the missing ones lack', { generation: hex(g.current) });
  }

  /** While in sync with a Primary, follow its new data generations. */
  adoptGeneration(p: Peer, s: StateFrame): void {
    const md = this.r.md;
    if (!md || s.role !== 'Primary' || this.r.diskState !== 'UpToDate' || s.gens.current === md.gens.current) return;
    if (s.gens.history[0] !== md.gens.current) return;
    this.r.changeState({
      announce: true,
      persist: (m) => {
        m.rotateGeneration(s.gens.current, this.absentDiskPeers());
      },
    });
    this.r.log.debug(`following ${p.name}'s new data generation`, { generation: hex(s.gens.current) });
  }

  /**
   * Peers with disks that are away: when this node leaves its generation, they get it as the base of this
   * node's bitmap toward them (unless they have one), and the writes this node receives from then on are
   * marked for them (`markAbsent`).
   */
  absentDiskPeers(): number[] {
    return this.r.peers.filter((q) => q.hasDisk && !q.replicating).map((q) => q.id);
  }
}
