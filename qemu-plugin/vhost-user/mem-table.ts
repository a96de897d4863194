// A queue worker's guest memory table: the front-end's regions mapped, viewed in pieces, and switched all at once (prepare, then commit or abort).
import { GuestMemory, PIECE_OVERLAP, PIECE_STRIDE } from '../virtio/memory.js';
import { mapRange, munmap, viewAt } from '../os.js';
import type { RegionMsg } from './ring-host.js';

/** A region as mapped here. Kept across table changes while the front-end's message for it (fd included) stays the same. */
interface MappedRegion {
  key: string;
  msg: RegionMsg;
  addr: number;
  base: number;
  mapped: number;
}

function keyOf(r: RegionMsg): string {
  return `${r.fd}:${r.guestPhysAddr}:${r.memorySize}:${r.userspaceAddr}:${r.mmapOffset}`;
}

function unmapRegion(m: MappedRegion): void {
  munmap(m.base, m.mapped);
}

/**
 * The memory table of one worker. `prepare` maps a new table next to the current one (regions that
 * did not change are shared, not mapped again); `commit` makes it current and unmaps what left;
 * `abort` unmaps what `prepare` added. A table that cannot be mapped leaves nothing new mapped.
 */
export class MemTable {
  private current: MappedRegion[] = [];
  private next: { regions: MappedRegion[]; mem: GuestMemory } | null = null;
  /** The current table's views. */
  mem = new GuestMemory([]);

  constructor(private readonly stride = PIECE_STRIDE, private readonly overlap = PIECE_OVERLAP) {}

  /** Maps `regions` as the next table and returns its views; throws (nothing new left mapped) if a region cannot be mapped. */
  prepare(regions: RegionMsg[]): GuestMemory {
    this.abort();
    const have = new Map(this.current.map((m) => [m.key, m]));
    const made: MappedRegion[] = [];
    const table: MappedRegion[] = [];
    try {
      for (const r of regions) {
        const key = keyOf(r);
        let m = have.get(key);
        if (!m) {
          const at = mapRange(r.fd, r.mmapOffset, r.memorySize);
          m = { key, msg: r, ...at };
          made.push(m);
        }
        table.push(m);
      }
      const mem = GuestMemory.fromRegions(table.map((m) => ({
        gpa: m.msg.guestPhysAddr, size: m.msg.memorySize, uaddr: m.msg.userspaceAddr, hostAddr: m.addr,
        view: (off: number, len: number) => viewAt(m.addr + off, len),
      })), this.stride, this.overlap);
      this.next = { regions: table, mem };
      return mem;
    } catch (e) {
      made.forEach(unmapRegion);
      throw e;
    }
  }

  /**
   * Makes the prepared table current. Returns a function unmapping the regions the new table
   * dropped: call it once nothing uses the old views (requests drained, rings moved).
   */
  commit(): () => void {
    const n = this.next;
    if (!n) throw new Error('no memory table was prepared');
    this.next = null;
    const keep = new Set(n.regions);
    const gone = this.current.filter((m) => !keep.has(m));
    this.current = n.regions;
    this.mem = n.mem;
    return () => gone.forEach(unmapRegion);
  }

  /** Drops a prepared table, unmapping what it added. */
  abort(): void {
    const n = this.next;
    if (!n) return;
    this.next = null;
    const cur = new Set(this.current);
    n.regions.filter((m) => !cur.has(m)).forEach(unmapRegion);
  }

  /** Unmaps everything (the worker exits). */
  clear(): void {
    this.abort();
    this.current.forEach(unmapRegion);
    this.current = [];
    this.mem = new GuestMemory([]);
  }
}
