// A scatter-gather list of byte ranges in memory the caller owns (guest RAM, a slab), reused across requests, and copies in and out of one.

/**
 * One I/O vector: `count` segments, each a range `[offs[i], offs[i] + lens[i])` of `bufs[i]`, whose
 * first byte lives at the process address `addrs[i]` (0 when the buffer has no known address).
 * Front-ends preallocate one per request slot and refill it, so the data path allocates nothing.
 * Back-ends that can do vectored system calls use `addrs` (zero copy); others copy through `bufs`.
 */
export class IoVector {
  readonly bufs: Uint8Array[];
  readonly offs: Float64Array;
  readonly lens: Float64Array;
  readonly addrs: Float64Array;
  count = 0;
  /** Sum of `lens[0..count)`. */
  bytes = 0;

  constructor(readonly capacity: number) {
    this.bufs = new Array<Uint8Array>(capacity);
    this.offs = new Float64Array(capacity);
    this.lens = new Float64Array(capacity);
    this.addrs = new Float64Array(capacity);
  }

  /** Empties the vector (keeps its storage). */
  reset(): void {
    this.count = 0;
    this.bytes = 0;
  }

  /** Appends a segment; returns false (and appends nothing) when the vector is full. */
  push(buf: Uint8Array, off: number, len: number, addr: number): boolean {
    const i = this.count;
    if (i >= this.capacity) return false;
    this.bufs[i] = buf;
    this.offs[i] = off;
    this.lens[i] = len;
    this.addrs[i] = addr;
    this.count = i + 1;
    this.bytes += len;
    return true;
  }

  /** Drops `n` bytes from the front (they must exist). */
  consumeFront(n: number): void {
    let i = 0;
    while (n > 0) {
      const l = this.lens[i]!;
      if (l <= n) {
        n -= l;
        i++;
      } else {
        this.offs[i]! += n;
        this.addrs[i]! += this.addrs[i] ? n : 0;
        this.lens[i]! -= n;
        n = 0;
      }
    }
    if (i > 0) this.shift(i);
    this.recount();
  }

  /** Drops `n` bytes from the back (they must exist). */
  consumeBack(n: number): void {
    while (n > 0) {
      const i = this.count - 1;
      const l = this.lens[i]!;
      if (l <= n) {
        n -= l;
        this.count = i;
      } else {
        this.lens[i]! -= n;
        n = 0;
      }
    }
    this.recount();
  }

  private shift(k: number): void {
    for (let j = k; j < this.count; j++) {
      this.bufs[j - k] = this.bufs[j]!;
      this.offs[j - k] = this.offs[j]!;
      this.lens[j - k] = this.lens[j]!;
      this.addrs[j - k] = this.addrs[j]!;
    }
    this.count -= k;
  }

  private recount(): void {
    let b = 0;
    for (let i = 0; i < this.count; i++) b += this.lens[i]!;
    this.bytes = b;
  }
}

/**
 * Copies `len` bytes between the vector, starting `pos` bytes into it, and `buf` at `bufOff`: into
 * the vector (scatter) with `intoVector`, out of it (gather) otherwise. Stops at the vector's end;
 * returns the bytes copied.
 */
function copyVector(v: IoVector, pos: number, buf: Uint8Array, bufOff: number, len: number, intoVector: boolean): number {
  let done = 0;
  for (let i = 0; i < v.count && done < len; i++) {
    const l = v.lens[i]!;
    if (pos >= l) {
      pos -= l;
      continue;
    }
    const take = Math.min(l - pos, len - done);
    const o = v.offs[i]! + pos;
    if (intoVector) v.bufs[i]!.set(buf.subarray(bufOff + done, bufOff + done + take), o);
    else buf.set(v.bufs[i]!.subarray(o, o + take), bufOff + done);
    done += take;
    pos = 0;
  }
  return done;
}

/** Gathers `len` bytes from the vector, starting `pos` bytes into it, into `dst` at `dstOff`; returns how many. */
export function copyFromVector(v: IoVector, pos: number, dst: Uint8Array, len: number, dstOff = 0): number {
  return copyVector(v, pos, dst, dstOff, len, false);
}

/** Scatters `len` bytes of `src` (from `srcOff`) into the vector, starting `pos` bytes into it; returns how many. */
export function copyToVector(src: Uint8Array, v: IoVector, pos: number, len: number, srcOff = 0): number {
  return copyVector(v, pos, src, srcOff, len, true);
}
