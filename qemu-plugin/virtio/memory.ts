// Guest memory as the device sees it: regions of guest-physical addresses mapped into this process.

/** One mapped region. `u8`/`dv` view exactly the region's bytes; `hostAddr` is their process address (0 if unknown). */
export interface GuestRegion {
  gpa: number;
  size: number;
  /** The front-end's (QEMU's) virtual address of the region, used by vring addresses. */
  uaddr: number;
  u8: Uint8Array;
  dv: DataView;
  hostAddr: number;
}

/**
 * Translates guest addresses to (region, offset). Lookups return the region index and leave the
 * offset in `off`, so the hot path allocates nothing. A range must lie inside one region; the
 * virtqueue splits a buffer that crosses regions into one segment per region.
 */
export class GuestMemory {
  /** Offset inside the region of the last successful lookup. */
  off = 0;

  constructor(readonly regions: GuestRegion[]) {}

  /** Region holding guest-physical `gpa` (and at least one byte at it); -1 if none. */
  findGpa(gpa: number): number {
    const rs = this.regions;
    for (let i = 0; i < rs.length; i++) {
      const r = rs[i]!;
      const o = gpa - r.gpa;
      if (o >= 0 && o < r.size) {
        this.off = o;
        return i;
      }
    }
    return -1;
  }

  /** Region holding the whole front-end virtual range [uaddr, uaddr+len); -1 if none. */
  findUaddr(uaddr: number, len: number): number {
    const rs = this.regions;
    for (let i = 0; i < rs.length; i++) {
      const r = rs[i]!;
      const o = uaddr - r.uaddr;
      if (o >= 0 && o + len <= r.size) {
        this.off = o;
        return i;
      }
    }
    return -1;
  }

  /** Region holding the whole guest-physical range [gpa, gpa+len); -1 if none (or if it crosses regions). */
  findGpaRange(gpa: number, len: number): number {
    const i = this.findGpa(gpa);
    if (i < 0 || this.off + len > this.regions[i]!.size) return -1;
    return i;
  }
}
