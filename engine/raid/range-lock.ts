// Exclusive locks on ranges of numbers (stripes, array bytes), granted first come first served: what keeps one stripe's read-modify-write from racing another's.
//
// A holder asks for [lockLo, lockHi) and is granted it once no held range and no range asked for
// before it (still waiting) overlaps; so requests on one stripe run in the order they arrived and
// requests on different stripes run side by side. A holder asks for its whole range at once, so there
// is no lock order to get wrong and no deadlock. Grants run from a loop rather than from inside
// release(): a holder whose work completes synchronously releases, the next is granted, and the stack
// does not grow with the queue.

/** Something that waits for, then holds, a range. */
export interface RangeLockHolder {
  /** First number of the range. */
  lockLo: number;
  /** One past the last number of the range. */
  lockHi: number;
  /** The range is now held (possibly before acquire() returns). */
  lockGranted(): void;
}

export class RangeLock {
  private readonly held: RangeLockHolder[] = [];
  private readonly waiting: RangeLockHolder[] = [];
  private readonly ready: RangeLockHolder[] = [];
  private granting = false;

  /** Asks for `h`'s range; `h.lockGranted()` runs when it is held. */
  acquire(h: RangeLockHolder): void {
    if (!(h.lockLo < h.lockHi)) throw new RangeError(`lock range [${h.lockLo}, ${h.lockHi}) is empty`);
    if (this.free(h, this.waiting.length)) {
      this.held.push(h);
      this.ready.push(h);
      this.grant();
    } else {
      this.waiting.push(h);
    }
  }

  /** Gives `h`'s range back and grants it to whoever waits for it. */
  release(h: RangeLockHolder): void {
    const i = this.held.indexOf(h);
    if (i < 0) throw new Error('releasing a range that is not held');
    this.held[i] = this.held[this.held.length - 1]!;
    this.held.pop();
    for (let j = 0; j < this.waiting.length;) {
      const w = this.waiting[j]!;
      if (this.free(w, j)) {
        this.waiting.splice(j, 1);
        this.held.push(w);
        this.ready.push(w);
      } else {
        j++;
      }
    }
    this.grant();
  }

  /** Ranges held now. */
  get heldCount(): number {
    return this.held.length;
  }

  /** Holders waiting now. */
  get waitingCount(): number {
    return this.waiting.length;
  }

  /** Whether `h` overlaps no held range and none of the first `before` waiters. */
  private free(h: RangeLockHolder, before: number): boolean {
    for (const o of this.held) if (h.lockLo < o.lockHi && o.lockLo < h.lockHi) return false;
    for (let j = 0; j < before; j++) {
      const o = this.waiting[j]!;
      if (h.lockLo < o.lockHi && o.lockLo < h.lockHi) return false;
    }
    return true;
  }

  private grant(): void {
    if (this.granting) return;
    this.granting = true;
    try {
      for (let h = this.ready.shift(); h !== undefined; h = this.ready.shift()) h.lockGranted();
    } finally {
      this.granting = false;
    }
  }
}
