// A Backend layer that counts the operations passing through it (requests, bytes, errors, latency) into a
// front-end's request counters (blk-stats.ts): the iSCSI target's, whose disk operations run on the main
// thread. vhost-user queues count in their workers instead (blk.ts), with no layer and no allocation.
import { isAsyncBackend, type AsyncBackend, type Backend, type Completion, type IoStatus } from '../engine/backend.js';
import type { IoVector } from '../engine/iovec.js';
import {
  BlkQueueStats, STAT_DISCARD, STAT_FLUSH, STAT_READ, STAT_WRITE, STAT_WRITE_ZEROES,
} from '../qemu-plugin/virtio/blk-stats.js';

/** One operation under way: completes the caller's completion after counting. */
class Counted implements Completion {
  constructor(private readonly stats: BlkQueueStats, private readonly op: number, private readonly t0: number, private readonly bytes: number,
    private readonly done: Completion) {}

  complete(status: IoStatus): void {
    this.stats.end(this.op, this.t0, status >= 0 ? this.bytes : 0, status >= 0);
    this.done.complete(status);
  }
}

/**
 * `next` with every operation counted in `stats`. Asynchronous when `next` is (the caller's kick, poll and
 * waits reach `next`), so callers that check isAsyncBackend see what they would without the layer.
 */
export function countedBackend(next: Backend, stats: BlkQueueStats): Backend {
  // Each operation starts on its own clock reading: the target's operations are not a drain of a ring.
  const start = (op: number): number => {
    stats.batch();
    return stats.begin(op);
  };
  const layer: Backend = {
    get info() { return next.info; },
    read(iov: IoVector, offset: number, done: Completion): void {
      next.read(iov, offset, new Counted(stats, STAT_READ, start(STAT_READ), iov.bytes, done));
    },
    write(iov: IoVector, offset: number, fua: boolean, done: Completion): void {
      next.write(iov, offset, fua, new Counted(stats, STAT_WRITE, start(STAT_WRITE), iov.bytes, done));
    },
    flush(done: Completion): void {
      next.flush(new Counted(stats, STAT_FLUSH, start(STAT_FLUSH), 0, done));
    },
    discard(offset: number, length: number, done: Completion): void {
      next.discard(offset, length, new Counted(stats, STAT_DISCARD, start(STAT_DISCARD), length, done));
    },
    writeZeroes(offset: number, length: number, mayUnmap: boolean, done: Completion): void {
      next.writeZeroes(offset, length, mayUnmap, new Counted(stats, STAT_WRITE_ZEROES, start(STAT_WRITE_ZEROES), length, done));
    },
    close(): void { next.close(); },
    ...(next.resize ? { resize: (size: number) => next.resize!(size) } : {}),
  };
  if (!isAsyncBackend(next)) return layer;
  const a: AsyncBackend = Object.assign(layer, {
    eventFd: next.eventFd,
    kick: () => next.kick(),
    poll: (signalled?: boolean) => next.poll(signalled),
    inFlight: () => next.inFlight(),
    waitOne: () => next.waitOne(),
    ...(next.idle ? { idle: (sleeping: boolean) => next.idle!(sleeping) } : {}),
  });
  return a;
}
