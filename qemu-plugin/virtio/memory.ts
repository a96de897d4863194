// Guest memory as the device sees it: regions of guest-physical addresses mapped into this process, viewed in pieces a typed array can hold.
//
// Node 20 cannot view more than 4 GiB through one ArrayBuffer (V8's limit; koffi.view aborts the
// process beyond it), and q35 guests with more than ~3 GiB of RAM have a region above 4 GiB of any
// size. So a region is viewed as pieces: piece k starts at byte k * stride of the region and its view
// runs `overlap` bytes into piece k + 1. Lookups pick a piece by division (no search), and any range
// of at most `overlap` bytes lies wholly inside the view of the piece where it starts: ring parts and
// indirect tables never need splitting; data buffers longer than that are split by the virtqueue.

/** One view of guest memory (a piece of a region, or a whole small region): `u8`/`dv` view exactly its `size` bytes; `hostAddr` is their process address (0 if unknown). */
export interface GuestRegion {
  gpa: number;
  size: number;
  /** The front-end's (QEMU's) virtual address of the first byte, used by vring addresses. */
  uaddr: number;
  u8: Uint8Array;
  dv: DataView;
  hostAddr: number;
}

/** Distance between the starts of consecutive pieces of a region (2 GiB). */
export const PIECE_STRIDE = 2 ** 31;
/**
 * How far a piece's view reaches into the next piece (2 MiB): more than the largest ring part (a
 * 32768-entry descriptor table is 512 KiB) and the largest indirect table (64 KiB).
 */
export const PIECE_OVERLAP = 2 ** 21;
/** The largest view Node 20 can make (ArrayBuffer and typed array length limit). */
export const MAX_VIEW_BYTES = 2 ** 32;

/** Where the pieces of a region of `size` bytes start and how long their views are (pure). */
export function pieceLayout(size: number, stride = PIECE_STRIDE, overlap = PIECE_OVERLAP): { off: number; len: number }[] {
  if (!(stride > 0 && overlap >= 0 && stride + overlap <= MAX_VIEW_BYTES)) throw new Error(`pieces of ${stride} + ${overlap} bytes cannot be viewed`);
  const out: { off: number; len: number }[] = [];
  for (let off = 0; off < size; off += stride) out.push({ off, len: Math.min(size - off, stride + overlap) });
  return out;
}

/** A front-end region as lookups see it: its pieces are `regions[first + k]`, piece k starting `k * stride` bytes in. */
interface Span {
  gpa: number;
  uaddr: number;
  size: number;
  first: number;
  stride: number;
}

/** A front-end region to view: where it is, and a way to view `len` bytes at byte `off` of it. */
export interface RegionSource {
  gpa: number;
  size: number;
  uaddr: number;
  /** Process address of the region's first byte (0 if unknown: no vectored I/O by address). */
  hostAddr: number;
  view(off: number, len: number): ArrayBuffer | Uint8Array;
}

/**
 * Translates guest addresses to (view, offset). Lookups return the index of a view in `regions` and
 * leave the offset in `off`, so the hot path allocates nothing: a scan of the front-end's regions
 * (a handful), then a division for the piece.
 */
export class GuestMemory {
  /** Offset inside the view of the last successful lookup. */
  off = 0;
  private readonly spans: Span[];
  /** Span of the last successful guest-physical lookup, tried first. */
  private last = 0;

  /**
   * @param regions the views, by index (ring parts and chains refer to them by index)
   * @param spans how views group into front-end regions; without, every view is its own region
   */
  constructor(readonly regions: GuestRegion[], spans?: Span[]) {
    this.spans = spans ?? regions.map((r, i) => ({ gpa: r.gpa, uaddr: r.uaddr, size: r.size, first: i, stride: Infinity }));
  }

  /** Views `sources` in pieces of `stride` bytes reaching `overlap` bytes further. */
  static fromRegions(sources: RegionSource[], stride = PIECE_STRIDE, overlap = PIECE_OVERLAP): GuestMemory {
    const views: GuestRegion[] = [];
    const spans: Span[] = [];
    for (const s of sources) {
      spans.push({ gpa: s.gpa, uaddr: s.uaddr, size: s.size, first: views.length, stride });
      for (const p of pieceLayout(s.size, stride, overlap)) {
        const v = s.view(p.off, p.len);
        const u8 = v instanceof Uint8Array ? v : new Uint8Array(v);
        if (u8.length !== p.len) throw new Error(`a view of ${p.len} bytes came back with ${u8.length}`);
        views.push({
          gpa: s.gpa + p.off, size: p.len, uaddr: s.uaddr + p.off, u8, dv: new DataView(u8.buffer, u8.byteOffset, u8.length),
          hostAddr: s.hostAddr === 0 ? 0 : s.hostAddr + p.off,
        });
      }
    }
    return new GuestMemory(views, spans);
  }

  /** Front-end regions (not views) in this table. */
  get regionCount(): number {
    return this.spans.length;
  }

  /** View holding guest-physical `gpa` (and at least one byte at it); -1 if none. */
  findGpa(gpa: number): number {
    const ss = this.spans;
    const n = ss.length;
    for (let j = 0; j < n; j++) {
      const i = j === 0 ? this.last : j === this.last ? 0 : j;
      const s = ss[i]!;
      const o = gpa - s.gpa;
      if (o >= 0 && o < s.size) {
        this.last = i;
        return this.piece(s, o);
      }
    }
    return -1;
  }

  /** View holding the whole front-end virtual range [uaddr, uaddr+len); -1 if none. */
  findUaddr(uaddr: number, len: number): number {
    const ss = this.spans;
    for (let i = 0; i < ss.length; i++) {
      const s = ss[i]!;
      const o = uaddr - s.uaddr;
      if (o >= 0 && o < s.size) {
        const v = this.piece(s, o);
        return this.off + len <= this.regions[v]!.size ? v : -1;
      }
    }
    return -1;
  }

  /** View holding the whole guest-physical range [gpa, gpa+len); -1 if none (or if it crosses views). */
  findGpaRange(gpa: number, len: number): number {
    const i = this.findGpa(gpa);
    if (i < 0 || this.off + len > this.regions[i]!.size) return -1;
    return i;
  }

  private piece(s: Span, o: number): number {
    if (o < s.stride) {
      this.off = o;
      return s.first;
    }
    const k = Math.floor(o / s.stride);
    this.off = o - k * s.stride;
    return s.first + k;
  }
}
