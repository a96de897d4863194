// Loads the kernels module and owns its linear memory: a heap of 64-byte aligned buffers (KernelBuffer,
// Slab) the engine can use directly as I/O buffers, and a fixed staging area through which kernels see
// Uint8Arrays that live outside wasm memory. Memory grows only when buffers are allocated, never during
// a kernel call; every view handed out is rebuilt from the current memory after a growth.
import { KERNELS_WASM_BASE64 } from '../generated/kernels-wasm.js';

/** The raw exports of wasm/assembly/index.ts (pointers are byte offsets into `memory`). */
export interface KernelExports {
  memory: WebAssembly.Memory;
  heapBase(): number;
  crc32cUpdate(crc: number, ptr: number, len: number): number;
  xxh3(ptr: number, len: number, seed: bigint): bigint;
  xxh3StateInit(state: number, seed: bigint): void;
  xxh3StateBlocks(state: number, ptr: number, nBlocks: number): void;
  xxh3StateDigest(state: number, ptr: number, tailLen: number, totalLen: bigint): bigint;
  xxh3StaticState(): number;
  xxh3StateSize(): number;
  bitmapFindNextSet(p: number, from: number, end: number): number;
  bitmapFindNextClear(p: number, from: number, end: number): number;
  bitmapPopcount(p: number, from: number, end: number): number;
  bitmapSetRange(p: number, from: number, end: number): void;
  bitmapClearRange(p: number, from: number, end: number): void;
  bitmapOr(dst: number, src: number, nbytes: number): void;
  bitmapRuns(p: number, from: number, end: number, out: number, maxRuns: number): number;
  xorBlocks(dst: number, srcs: number, n: number, len: number): void;
  raid6GenPQ(srcs: number, n: number, len: number, p: number, q: number): void;
  raid6MulXor(dst: number, a: number, b: number, c: number, len: number): void;
  raid6Recover2(p: number, q: number, dx: number, dy: number, coefA: number, coefB: number, len: number): void;
}

const PAGE = 65536;
const ALIGN = 64;
/** Bytes of staging for data outside wasm memory; chunks are cut to fit it. */
export const STAGING_BYTES = 1 << 20;
/** Room for this many u32 source pointers (parity kernels take their source lists from here). */
export const MAX_SOURCES = 1024;
/** Runs of set bits returned by one bitmapRuns call. */
export const RUN_BATCH = 512;

/** True when TWINDISK_NO_WASM=1 asks for the plain TypeScript kernels. */
export const wasmDisabled: boolean = process.env['TWINDISK_NO_WASM'] === '1';

/** The loaded module with its heap state; created on first use. */
export class KernelModule {
  readonly exports: KernelExports;
  /** Free heap ranges [offset, offset + size), sorted by offset, never adjacent. */
  private free: { offset: number; size: number }[] = [];
  private sizes = new Map<number, number>();
  /** memory.buffer as of the last growth: only alloc() grows memory, so this stays current. */
  private buffer: ArrayBuffer;
  private view: Uint8Array;
  private dv: DataView;
  /** Staging area for foreign inputs and the u32 source-pointer list. */
  readonly staging: number;
  readonly sourceList: number;
  /** Output of bitmapRuns: RUN_BATCH (start, end) u32 pairs. */
  readonly runList: number;

  constructor() {
    const bytes = Buffer.from(KERNELS_WASM_BASE64, 'base64');
    const module = new WebAssembly.Module(bytes);
    const instance = new WebAssembly.Instance(module, {
      env: { abort: () => { throw new Error('wasm kernel aborted'); } },
    });
    this.exports = instance.exports as unknown as KernelExports;
    const base = alignUp(this.exports.heapBase(), ALIGN);
    const end = this.exports.memory.buffer.byteLength;
    if (end > base) this.free.push({ offset: base, size: end - base });
    this.buffer = this.exports.memory.buffer;
    this.view = new Uint8Array(this.buffer);
    this.dv = new DataView(this.buffer);
    this.staging = this.alloc(STAGING_BYTES + ALIGN);
    this.sourceList = this.alloc(MAX_SOURCES * 4);
    this.runList = this.alloc(RUN_BATCH * 8);
  }

  /** A view of the whole memory (rebuilt by alloc() when it grows memory). */
  get u8(): Uint8Array {
    return this.view;
  }

  /** A DataView of the whole memory (for little-endian pointer lists). */
  get dataView(): DataView {
    if (this.dv.buffer !== this.buffer) this.dv = new DataView(this.buffer);
    return this.dv;
  }

  /** The current memory.buffer, cached (reading memory.buffer is a comparatively slow builtin call). */
  get memoryBuffer(): ArrayBuffer {
    return this.buffer;
  }

  /** Whether `a` is a view into this module's memory (then its byteOffset is its pointer). */
  owns(a: Uint8Array): boolean {
    return a.buffer === this.buffer;
  }

  /** Allocates `size` bytes aligned to 64, growing memory when needed; returns the offset. */
  alloc(size: number): number {
    const want = alignUp(Math.max(size, 1), ALIGN);
    for (let i = 0; i < this.free.length; i++) {
      const f = this.free[i]!;
      if (f.size >= want) {
        const offset = f.offset;
        if (f.size === want) this.free.splice(i, 1);
        else { f.offset += want; f.size -= want; }
        this.sizes.set(offset, want);
        return offset;
      }
    }
    const mem = this.exports.memory;
    const oldEnd = mem.buffer.byteLength;
    const last = this.free[this.free.length - 1];
    const tailFree = last && last.offset + last.size === oldEnd ? last.size : 0;
    // Grow by at least a quarter of the current size, so growth (which detaches views) stays rare.
    const pages = Math.max(Math.ceil((want - tailFree) / PAGE), Math.ceil(oldEnd / 4 / PAGE));
    try {
      mem.grow(pages);
    } catch (err) {
      throw new RangeError(`wasm kernels: cannot grow memory by ${pages} pages for a ${size}-byte buffer (${String(err)})`);
    }
    this.buffer = mem.buffer;
    this.view = new Uint8Array(this.buffer);
    if (tailFree) last!.size += pages * PAGE;
    else this.free.push({ offset: oldEnd, size: pages * PAGE });
    return this.alloc(size);
  }

  /** Grows memory now, if needed, so that `bytes` more can be allocated in one piece without growing. */
  reserve(bytes: number): void {
    if (this.largestFree() >= bytes) return;
    this.release(this.alloc(bytes));
  }

  private largestFree(): number {
    return this.free.reduce((m, f) => Math.max(m, f.size), 0);
  }

  /** Returns a block from alloc() to the heap. */
  release(offset: number): void {
    const size = this.sizes.get(offset);
    if (size === undefined) throw new Error(`wasm kernels: release of unknown offset ${offset}`);
    this.sizes.delete(offset);
    let i = 0;
    while (i < this.free.length && this.free[i]!.offset < offset) i++;
    this.free.splice(i, 0, { offset, size });
    const next = this.free[i + 1];
    if (next && offset + size === next.offset) {
      this.free[i]!.size += next.size;
      this.free.splice(i + 1, 1);
    }
    const prev = this.free[i - 1];
    if (prev && prev.offset + prev.size === offset) {
      prev.size += this.free[i]!.size;
      this.free.splice(i, 1);
    }
  }

  /** Bytes currently handed out (for tests and diagnostics). */
  get allocatedBytes(): number {
    let n = 0;
    for (const s of this.sizes.values()) n += s;
    return n;
  }
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

let loaded: KernelModule | null = null;

/** The kernels module, or null when TWINDISK_NO_WASM=1. */
export function kernelModule(): KernelModule | null {
  if (wasmDisabled) return null;
  loaded ??= new KernelModule();
  return loaded;
}

/**
 * A buffer for kernel and I/O use. With the wasm kernels it lives in wasm memory, so kernels read it in
 * place; with TWINDISK_NO_WASM=1 it is an ordinary ArrayBuffer. Take `bytes` afresh after any allocation:
 * growing wasm memory detaches older views, and this getter rebuilds them.
 */
export class KernelBuffer {
  private cached: Uint8Array;
  private released = false;

  /** Use allocBuffer() or a Slab rather than this constructor. */
  constructor(
    private readonly mod: KernelModule | null,
    /** Offset in wasm memory (0 for a plain buffer). */
    readonly byteOffset: number,
    /** Length in bytes. */
    readonly length: number,
    private readonly onRelease: ((b: KernelBuffer) => void) | null,
    /** With no module: the plain bytes to use (a fresh zeroed array when omitted). */
    plain?: Uint8Array,
  ) {
    this.cached = mod ? new Uint8Array(mod.memoryBuffer, byteOffset, length) : (plain ?? new Uint8Array(length));
  }

  /** Marks a Slab buffer as handed out again (internal to Slab). */
  revive(): void {
    this.released = false;
  }

  /** The buffer's bytes, a view rebuilt if wasm memory has grown since the last call. */
  get bytes(): Uint8Array {
    if (this.released) throw new Error('KernelBuffer used after release()');
    if (this.mod && this.cached.buffer !== this.mod.memoryBuffer) {
      this.cached = new Uint8Array(this.mod.memoryBuffer, this.byteOffset, this.length);
    }
    return this.cached;
  }

  /** Whether the bytes live in wasm memory (false with TWINDISK_NO_WASM=1). */
  get inWasmMemory(): boolean {
    return this.mod !== null;
  }

  /** Gives the buffer back (to its Slab, or to the heap). Using it afterwards throws. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.onRelease?.(this);
  }
}

/** Allocates a 64-byte aligned, zero-filled buffer of `length` bytes (in wasm memory unless disabled). */
export function allocBuffer(length: number): KernelBuffer {
  const mod = kernelModule();
  if (!mod) return new KernelBuffer(null, 0, length, null);
  const offset = mod.alloc(length);
  mod.u8.fill(0, offset, offset + length);
  return new KernelBuffer(mod, offset, length, () => mod.release(offset));
}

/**
 * Makes room for `bytes` of buffers up front, so allocations up to that total (in one piece) do not grow
 * wasm memory and so do not detach views taken earlier. A no-op with TWINDISK_NO_WASM=1.
 */
export function reserveKernelMemory(bytes: number): void {
  kernelModule()?.reserve(bytes);
}

/**
 * A fixed set of equal-size I/O buffers carved from one allocation, for the engine's request path:
 * acquire() hands out a free buffer (or null when all are in use), release() on the buffer returns it.
 */
export class Slab {
  private readonly region: KernelBuffer;
  private readonly freeList: number[] = [];
  private readonly buffers: KernelBuffer[] = [];

  /** Reserves `count` buffers of `bufferSize` bytes (rounded up to 64) in one region. */
  constructor(readonly bufferSize: number, readonly count: number) {
    const stride = alignUp(bufferSize, ALIGN);
    this.region = allocBuffer(stride * count);
    const mod = kernelModule();
    const plain = this.region.inWasmMemory ? null : this.region.bytes;
    for (let i = 0; i < count; i++) {
      const onRelease = (): void => { this.freeList.push(i); };
      this.buffers.push(mod
        ? new KernelBuffer(mod, this.region.byteOffset + i * stride, bufferSize, onRelease)
        : new KernelBuffer(null, 0, bufferSize, onRelease, plain!.subarray(i * stride, i * stride + bufferSize)));
    }
    for (let i = count - 1; i >= 0; i--) this.freeList.push(i);
  }

  /** A free buffer, or null when all `count` are in use. Its contents are whatever was left in it. */
  acquire(): KernelBuffer | null {
    const i = this.freeList.pop();
    if (i === undefined) return null;
    const b = this.buffers[i]!;
    b.revive();
    return b;
  }

  /** Buffers not currently acquired. */
  get available(): number {
    return this.freeList.length;
  }

  /** Frees the whole region; buffers still acquired become unusable. */
  destroy(): void {
    this.region.release();
  }
}
