// Per-queue IOPS and mean latency over the last minute, for the status page's sparklines, from the front-ends' cumulative counters (qemu-plugin/virtio/blk-stats.ts).
import { BLK_STAT_OPS, type BlkQueueStats } from '../../qemu-plugin/virtio/blk-stats.js';

/** One front-end queue's counters as the page's source reads them, and its name ("vhost-user 0", "iscsi"). */
export interface QueueSource { name: string; stats: BlkQueueStats }

/** One queue's recent history: a sample per tick, newest last. */
export interface QueueHistory {
  name: string;
  /** Requests completed per second in each interval. */
  iops: number[];
  /** Mean latency of the requests completed in each interval, in milliseconds (null: none completed). */
  latencyMs: (number | null)[];
  /** Requests started and not completed now. */
  inFlight: number;
  /** Requests completed with an error, since start. */
  errors: number;
}

/** How many samples each queue keeps (one a second: a minute). */
export const HISTORY_SAMPLES = 60;

interface Totals { completed: number; started: number; errors: number; latencySum: number }

function totals(s: BlkQueueStats): Totals {
  const t: Totals = { completed: 0, started: 0, errors: 0, latencySum: 0 };
  for (let row = 0; row < BLK_STAT_OPS.length; row++) {
    const c = s.read(row);
    t.completed += c.completed;
    t.started += c.started;
    t.errors += c.errors;
    t.latencySum += c.latencySum;
  }
  return t;
}

/** Keeps each queue's last HISTORY_SAMPLES intervals; `sample()` once per tick. */
export class QueueHistories {
  private readonly last = new Map<string, { t: number; totals: Totals; h: QueueHistory }>();

  /** Takes one sample of every queue `sources` lists now, at `now` (ms); returns every queue's history. */
  sample(sources: QueueSource[], now: number): QueueHistory[] {
    const out: QueueHistory[] = [];
    for (const src of sources) {
      const t = totals(src.stats);
      const prev = this.last.get(src.name);
      const h: QueueHistory = prev?.h ?? { name: src.name, iops: [], latencyMs: [], inFlight: 0, errors: 0 };
      if (prev && now > prev.t) {
        const n = Math.max(0, t.completed - prev.totals.completed);
        h.iops.push(Math.round((n * 1000) / (now - prev.t)));
        h.latencyMs.push(n > 0 ? ((t.latencySum - prev.totals.latencySum) * 1000) / n : null);
        if (h.iops.length > HISTORY_SAMPLES) { h.iops.shift(); h.latencyMs.shift(); }
      }
      h.inFlight = Math.max(0, t.started - t.completed);
      h.errors = t.errors;
      this.last.set(src.name, { t: now, totals: t, h });
      out.push(h);
    }
    return out;
  }
}
