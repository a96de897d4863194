// Per-peer out-of-sync bitmaps in wasm memory (DRBD's drbd_bitmap.c): set/clear/count/find, dirty pages, write-back.
//
// Bit i of a peer's bitmap is block i (`granularity` bytes of data); bit i is bit (i & 7) of byte i >> 3.
// Every bitmap, and the staging area through which pages are read and written, lives in ONE block of
// the kernels' memory (allocBuffer), allocated when the metadata is opened and sized for it, so the
// bitmap kernels (setRange, countSet, findNextSet, orInto, ...) and CRC32C run on the bits in place,
// without copying them through the kernels' staging area.
//
// Growing wasm memory (any later allocBuffer, Slab or Xxh3Stream anywhere in the process, e.g. another
// node's metadata in the same test process) detaches every Uint8Array view of it. So views are never
// kept across calls: every method takes them afresh from the block (KernelBuffer.bytes rebuilds its
// view after a growth, and refreshViews() cuts the per-peer subarrays again when it did), and bitmap() hands
// callers a view to use at once, within one synchronous stretch of code. When kernel memory cannot
// grow (wasm32 stops at 4 GiB), the bitmaps fall back to ordinary memory and the kernels stream them
// through staging, as they do under TWINDISK_NO_WASM=1.
import { allocBuffer, clearRange, countSet, findNextClear, findNextSet, orInto, setRange, type BitRun } from '../../wasm/index.js';
import {
  BITMAP_PAGE_BITS, BITMAP_PAGE_BYTES, IO_UNITS, MD_UNIT, MetadataError, decodeBitmapPage, encodeBitmapPage,
  type MetadataIo,
} from './md-format.js';
import { MAX_NODES } from './frames.js';

/** A bitmap page encoded by capture(). */
interface CapturedPage {
  i: number;
  page: number;
  bytes: Uint8Array;
  changedAt: number;
  writtenAt: number;
}

/** Bitmap pages captured at one moment (Metadata.captureBitmaps). */
export interface CapturedBitmaps {
  readonly pages: readonly CapturedPage[];
}

/** What the bitmaps need to know of the metadata they belong to. */
export interface BitmapGeometry {
  /** The metadata id every page is sealed with. */
  mdId: bigint;
  nodeId: number;
  /** One bitmap per peer, in this order. */
  peerIds: readonly number[];
  dataSize: number;
  granularity: number;
  pagesPerPeer: number;
  /** File offset of each peer's first page, in `peerIds` order. */
  bitmapOffsets: readonly number[];
}

/** A block of bytes that may move (wasm memory growth): `bytes` is always current. */
interface Region {
  readonly bytes: Uint8Array;
  release(): void;
}

const ALIGN = 64;

/** The out-of-sync bitmaps toward every peer, with per-page dirty tracking and write-back to the metadata file. */
export class OutOfSyncBitmaps {
  /** Bits per bitmap: ceil(dataSize / granularity). */
  readonly bits: number;
  /** Bytes per bitmap: ceil(bits / 8). */
  readonly bytes: number;
  private region: Region;
  /** `region.bytes` as of the last refreshViews(), and the views cut from it. */
  private all: Uint8Array | null = null;
  private maps: Uint8Array[] = [];
  /** IO_UNITS units through which pages are read and written (so their CRCs run in place too). */
  private staging: Uint8Array = new Uint8Array(0);
  private readonly stride: number;
  private readonly peerIndex = new Int8Array(MAX_NODES).fill(-1);
  /** Per peer and page: 1 when changed in memory since it was last written. */
  private readonly dirty: Uint8Array[];
  /** Per peer and page: the epoch of its last change in memory, and of its last write to disk. */
  private readonly changedAt: Uint32Array[];
  private readonly writtenAt: Uint32Array[];
  /** A counter that orders page changes and page writes (wraps; only compared for equality). */
  private epoch = 0;
  /** Sequence number of the next page write-back (pages written at create carry 1). */
  private seq = 1;
  /** Bitmap pages were written by a flush without fdatasync and are not known to be durable yet. */
  private unsyncedPages = false;

  /** All-clear bitmaps for `geom`, nothing dirty; load() reads them from `file`. */
  constructor(private readonly geom: BitmapGeometry, private readonly file: MetadataIo) {
    this.bits = Math.ceil(geom.dataSize / geom.granularity);
    this.bytes = Math.ceil(this.bits / 8);
    this.stride = Math.ceil(this.bytes / ALIGN) * ALIGN;
    geom.peerIds.forEach((p, i) => { this.peerIndex[p] = i; });
    const n = geom.peerIds.length;
    const size = n * this.stride + IO_UNITS * MD_UNIT;
    try {
      this.region = allocBuffer(size);
    } catch (e) {
      if (!(e instanceof RangeError)) throw e;
      this.region = plainRegion(new Uint8Array(size)); // kernel memory is full: see the file comment
    }
    const ppp = geom.pagesPerPeer;
    this.dirty = geom.peerIds.map(() => new Uint8Array(ppp));
    this.changedAt = geom.peerIds.map(() => new Uint32Array(ppp));
    this.writtenAt = geom.peerIds.map(() => new Uint32Array(ppp));
  }

  /**
   * Reads every peer's pages from the metadata file: a page that fails its check (torn, or left over
   * from an earlier create) reads as all ones and stays dirty, so the next flush rewrites it. Returns
   * how many pages were damaged.
   */
  load(): number {
    let bad = 0;
    const ppp = this.geom.pagesPerPeer;
    const bits = this.bits;
    const bytes = this.bytes;
    this.geom.peerIds.forEach((peer, i) => {
      for (let first = 0; first < ppp; first += IO_UNITS) {
        const n = Math.min(IO_UNITS, ppp - first);
        this.refreshViews();
        const chunk = this.staging.subarray(0, n * MD_UNIT);
        this.file.pread(chunk, this.geom.bitmapOffsets[i]! + first * MD_UNIT);
        const map = this.maps[i]!;
        for (let k = 0; k < n; k++) {
          const page = first + k;
          const from = page * BITMAP_PAGE_BYTES;
          const to = Math.min(from + BITMAP_PAGE_BYTES, bytes);
          const body = decodeBitmapPage(chunk.subarray(k * MD_UNIT, (k + 1) * MD_UNIT), peer, page, this.geom.mdId);
          if (body !== null) {
            map.set(body.subarray(0, to - from), from);
          } else {
            setRange(map, Math.min(from * 8, bits), Math.min(to * 8, bits));
            this.dirty[i]![page] = 1;
            bad++;
          }
        }
      }
      if (bits % 8 !== 0) clearTail(this.maps[i]!, bits); // bits past the end stay clear
    });
    return bad;
  }

  /**
   * The bitmap toward `peerId`, a live view of wasm memory: use it at once and do not keep it (an
   * allocation of kernel memory anywhere detaches it). Change bits through the methods so pages get
   * written back; a change made in place must be followed by markDirty().
   */
  bitmap(peerId: number): Uint8Array {
    const i = this.indexOf(peerId);
    return this.map(i);
  }

  /** Marks every block touching [offset, offset + length) out of sync toward `peerId`. */
  setOutOfSync(peerId: number, offset: number, length: number): void {
    const i = this.indexOf(peerId);
    this.checkRange(offset, length);
    if (length === 0) return;
    const g = this.geom.granularity;
    const from = Math.floor(offset / g);
    const end = Math.ceil((offset + length) / g);
    setRange(this.map(i), from, end);
    this.markDirtyPages(i, from, end);
  }

  /**
   * Marks in sync only the blocks wholly inside [offset, offset + length); the last block, shorter when
   * the data size is not a multiple of the granularity, counts as whole when the range reaches the end.
   */
  clearInSync(peerId: number, offset: number, length: number): void {
    const i = this.indexOf(peerId);
    this.checkRange(offset, length);
    const g = this.geom.granularity;
    const from = Math.ceil(offset / g);
    const stop = offset + length;
    const end = stop === this.geom.dataSize ? this.bits : Math.floor(stop / g);
    if (from >= end) return;
    clearRange(this.map(i), from, end);
    this.markDirtyPages(i, from, end);
  }

  /** Blocks out of sync toward `peerId`. */
  outOfSyncBits(peerId: number): number {
    const i = this.indexOf(peerId);
    return countSet(this.map(i), 0, this.bits);
  }

  /** Whether any block touching [offset, offset + length) is out of sync toward `peerId` (false for length 0). */
  anyOutOfSync(peerId: number, offset: number, length: number): boolean {
    const i = this.indexOf(peerId);
    this.checkRange(offset, length);
    if (length === 0) return false;
    const g = this.geom.granularity;
    return findNextSet(this.map(i), Math.floor(offset / g), Math.ceil((offset + length) / g)) >= 0;
  }

  /**
   * The first run of out-of-sync blocks toward `peerId` at or after block `fromBit`, cut to at most
   * `maxBits` blocks, as [start, end) block indices; null when every block from `fromBit` on is in sync.
   */
  nextOutOfSync(peerId: number, fromBit: number, maxBits = Number.MAX_SAFE_INTEGER): BitRun | null {
    const i = this.indexOf(peerId);
    if (!(Number.isInteger(fromBit) && fromBit >= 0 && fromBit <= this.bits)) {
      throw new RangeError(`bit ${fromBit} is outside the ${this.bits}-bit bitmap`);
    }
    if (!(Number.isInteger(maxBits) && maxBits >= 1)) throw new RangeError(`maxBits ${maxBits} is not a positive integer`);
    const map = this.map(i);
    const start = findNextSet(map, fromBit, this.bits);
    if (start < 0) return null;
    const limit = Math.min(this.bits, start + maxBits);
    const stop = findNextClear(map, start + 1, limit);
    return { start, end: stop < 0 ? limit : stop };
  }

  /** Marks the whole volume out of sync toward `peerId` (full resync). */
  setAll(peerId: number): void {
    const i = this.indexOf(peerId);
    setRange(this.map(i), 0, this.bits);
    this.markDirtyPages(i, 0, this.bits);
  }

  /** Marks the whole volume in sync toward `peerId`. */
  clearAll(peerId: number): void {
    const i = this.indexOf(peerId);
    this.map(i).fill(0);
    this.markDirtyPages(i, 0, this.bits);
  }

  /**
   * ORs `bits` (a peer's bitmap frame: its bytes from byte `byteOffset` of the bitmap) into the bitmap
   * toward `peerId`, in place with the kernel; bits past the end of the volume stay clear, and the pages
   * touched are written at the next flush. Throws RangeError when the bytes reach past the bitmap.
   */
  merge(peerId: number, byteOffset: number, bits: Uint8Array): void {
    const i = this.indexOf(peerId);
    if (!(Number.isInteger(byteOffset) && byteOffset >= 0 && byteOffset + bits.length <= this.bytes)) {
      throw new RangeError(`bitmap bytes [${byteOffset}, +${bits.length}) lie outside the ${this.bytes}-byte bitmap`);
    }
    if (bits.length === 0) return;
    const map = this.map(i);
    orInto(map.subarray(byteOffset, byteOffset + bits.length), bits);
    if (byteOffset + bits.length === this.bytes && this.bits % 8 !== 0) clearTail(map, this.bits);
    this.markDirtyPages(i, byteOffset * 8, Math.min(this.bits, (byteOffset + bits.length) * 8));
  }

  /**
   * Records that bits [fromBit, endBit) of `bitmap(peerId)` were changed in place, so the next flush()
   * writes their pages.
   */
  markDirty(peerId: number, fromBit = 0, endBit = this.bits): void {
    const i = this.indexOf(peerId);
    this.checkBits(fromBit, endBit);
    if (fromBit < endBit) this.markDirtyPages(i, fromBit, endBit);
  }

  /**
   * Writes every page changed since the last flush (each with seq and CRC), then fdatasync unless
   * `sync` is false (the periodic write-back: bits a crash loses there are covered by the activity
   * log, whose evictions flush with sync, or only make a later resync larger).
   */
  flush(sync: boolean): void {
    if (!this.dirty.some((d) => d.includes(1))) {
      // Pages written by an earlier flush without sync still need one before anything relies on them.
      if (sync && this.unsyncedPages) {
        this.file.sync();
        this.unsyncedPages = false;
      }
      return;
    }
    this.file.markInUse();
    this.seq++;
    const ppp = this.geom.pagesPerPeer;
    this.refreshViews();
    const { maps, staging } = this;
    for (let i = 0; i < maps.length; i++) {
      const dirt = this.dirty[i]!;
      const peer = this.geom.peerIds[i]!;
      let page = dirt.indexOf(1);
      while (page !== -1 && page < ppp) {
        // One write per run of consecutive dirty pages (up to IO_UNITS).
        let n = 0;
        while (page + n < ppp && n < IO_UNITS && dirt[page + n] === 1) {
          encodeBitmapPage(staging.subarray(n * MD_UNIT, (n + 1) * MD_UNIT), maps[i]!, peer, page + n, this.seq, this.geom.mdId);
          n++;
        }
        this.file.pwrite(staging.subarray(0, n * MD_UNIT), this.geom.bitmapOffsets[i]! + page * MD_UNIT);
        dirt.fill(0, page, page + n);
        this.writtenAt[i]!.fill(this.nextEpoch(), page, page + n);
        this.file.stats.bitmapPageWrites += n;
        page = dirt.indexOf(1, page + n);
      }
    }
    if (sync) this.file.sync();
    this.unsyncedPages = !sync;
  }

  /**
   * Encodes the dirty pages as they are now, to be written by `writeCaptured` once the data they
   * describe is durable: how a SyncTarget persists resync progress without an fdatasync on the event
   * loop (it captures, syncs its data asynchronously, then writes the capture). The pages stay dirty
   * until then, so every flush() in between (activity-log evictions) still writes them.
   */
  capture(): CapturedBitmaps {
    this.seq++;
    const pages: CapturedPage[] = [];
    this.refreshViews();
    const { maps } = this;
    for (let i = 0; i < maps.length; i++) {
      const dirt = this.dirty[i]!;
      for (let page = dirt.indexOf(1); page !== -1; page = dirt.indexOf(1, page + 1)) {
        const bytes = new Uint8Array(MD_UNIT);
        encodeBitmapPage(bytes, maps[i]!, this.geom.peerIds[i]!, page, this.seq, this.geom.mdId);
        pages.push({ i, page, bytes, changedAt: this.changedAt[i]![page]!, writtenAt: this.writtenAt[i]![page]! });
      }
    }
    return { pages };
  }

  /**
   * Writes captured pages (without fdatasync): each unless a newer copy was written since the
   * capture; a page unchanged since its capture is clean afterwards.
   */
  writeCaptured(c: CapturedBitmaps): void {
    let first = true;
    for (const p of c.pages) {
      if (this.writtenAt[p.i]![p.page] !== p.writtenAt) continue;
      if (first) this.file.markInUse();
      first = false;
      this.file.pwrite(p.bytes, this.geom.bitmapOffsets[p.i]! + p.page * MD_UNIT);
      this.writtenAt[p.i]![p.page] = this.nextEpoch();
      this.file.stats.bitmapPageWrites++;
      this.unsyncedPages = true;
      if (this.changedAt[p.i]![p.page] === p.changedAt) this.dirty[p.i]![p.page] = 0;
    }
  }

  /**
   * Gives the kernel memory back: the bitmaps are copied to ordinary memory first, so they can still
   * be read (a closed node's status) but no longer cost wasm memory. Idempotent.
   */
  dispose(): void {
    this.refreshViews();
    const copy = new Uint8Array(this.maps.length * this.stride); // no staging: nothing is written once closed
    this.maps.forEach((m, i) => copy.set(m, i * this.stride));
    this.region.release();
    this.region = plainRegion(copy);
    this.all = null;
  }

  /** The bitmap at index `i` of peerIds, a view taken afresh (see the file comment). */
  private map(i: number): Uint8Array {
    this.refreshViews();
    return this.maps[i]!;
  }

  /** Cuts the per-peer views and the staging area afresh when wasm memory has grown since the last call. */
  private refreshViews(): void {
    const all = this.region.bytes;
    if (all === this.all) return;
    this.all = all;
    this.maps = this.geom.peerIds.map((_, i) => all.subarray(i * this.stride, i * this.stride + this.bytes));
    const at = this.geom.peerIds.length * this.stride;
    this.staging = all.subarray(at, at + IO_UNITS * MD_UNIT);
  }

  private nextEpoch(): number {
    this.epoch = (this.epoch + 1) >>> 0;
    return this.epoch;
  }

  private markDirtyPages(i: number, fromBit: number, endBit: number): void {
    const from = Math.floor(fromBit / BITMAP_PAGE_BITS);
    const end = Math.floor((endBit - 1) / BITMAP_PAGE_BITS) + 1;
    this.dirty[i]!.fill(1, from, end);
    this.changedAt[i]!.fill(this.nextEpoch(), from, end);
  }

  private indexOf(peerId: number): number {
    const i = Number.isInteger(peerId) && peerId >= 0 && peerId < MAX_NODES ? this.peerIndex[peerId]! : -1;
    if (i < 0) {
      throw new MetadataError(`node ${peerId} has no bitmap slot on node ${this.geom.nodeId} (peers: ${this.geom.peerIds.join(', ') || 'none'})`);
    }
    return i;
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.geom.dataSize) {
      throw new RangeError(`range [${offset}, +${length}) is outside the ${this.geom.dataSize}-byte volume`);
    }
  }

  private checkBits(fromBit: number, endBit: number): void {
    if (!(Number.isInteger(fromBit) && Number.isInteger(endBit) && fromBit >= 0 && endBit <= this.bits)) {
      throw new RangeError(`bits [${fromBit}, ${endBit}) are outside the ${this.bits}-bit bitmap`);
    }
  }
}

/** Clears the bits of `map`'s last byte that lie past bit `bits` (bits % 8 !== 0). */
function clearTail(map: Uint8Array, bits: number): void {
  map[map.length - 1]! &= (1 << (bits % 8)) - 1;
}

function plainRegion(bytes: Uint8Array): Region {
  return { bytes, release: () => undefined };
}
