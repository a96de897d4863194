// How long a queue worker busy-polls its ring before it sleeps: a window that adapts to how soon work came back, the way QEMU's event loop sizes its polling (poll-max-ns, poll-grow, poll-shrink).
//
// Polling pays when the next request comes within the window: neither side makes a system call or
// wakes a thread. It costs when nothing comes: the CPU spent spinning is taken from whoever needed it,
// and on a small host that is the guest's vCPUs, which are what makes the next request. So the window
// follows the recent gaps between the end of work and the next work (QEMU util/aio-posix.c,
// adjust_polling_time): a gap within the window needs no change; a gap longer than the maximum means
// polling would not have caught it, so the window shrinks (halves, and drops to 0 below the starting
// size); a gap between the window and the maximum means a longer window would have caught it, so the
// window grows (doubles, from a starting size, up to the maximum). A guest whose vCPU is starved by
// the polling answers late, its gaps exceed the maximum, and the worker stops polling for it; a light,
// fast front-end answers within microseconds and keeps the window open.

/** The window a worker starts growing from (QEMU's first grow step is 4 µs too). */
export const POLL_START_US = 4;

/** The polling window of one queue worker. Pure: the caller measures the times and does the polling. */
export class AdaptivePoll {
  /** Current window in µs (0: the worker sleeps right after work). */
  windowUs: number;

  /**
   * @param maxUs the longest window (`--poll-us`); 0 turns polling off
   * @param initialUs the window to start with (default 0: polling has to prove itself first)
   */
  constructor(readonly maxUs: number, initialUs = 0) {
    this.windowUs = Math.min(maxUs, Math.max(0, initialUs));
  }

  /**
   * Takes the gap between the end of the last work and the next work, in µs: the polling window that
   * found nothing plus the time asleep after it. Adjusts the window as the file header says.
   */
  gap(us: number): void {
    const max = this.maxUs;
    if (max === 0 || us <= this.windowUs) return;
    if (us > max) {
      const half = this.windowUs / 2;
      this.windowUs = half < POLL_START_US ? 0 : half;
    } else if (this.windowUs < max) {
      this.windowUs = Math.min(max, this.windowUs === 0 ? POLL_START_US : this.windowUs * 2);
    }
  }

}
