// The C vhost-user-blk front-end (bench/vhost-load.c) from TypeScript: built once per source version, run once per workload.
// It drives a back-end as QEMU and a guest would, far past the TypeScript driver's ceiling (qemu-plugin/testing).
import { buildCTool, runJsonTool } from './c-tools.js';
import type { Workload } from './vhost.js';

/** The path of bench/vhost-load.c compiled (gcc -O2 -Wall), building it first when needed. */
export function vhostLoadBinary(): string {
  return buildCTool('vhost-load', { setup: 'install the Debian package gcc (scripts/setup.sh does, as root)' });
}

/** What one run measured: requests per second, MB/s (10^6 bytes), and the median and 99th percentile latency in µs. */
export interface VhostLoadResult {
  iops: number;
  mbps: number;
  p50Us: number;
  p99Us: number;
}

/** Ways to run the client besides the workload's shape (its defaults: one queue, waiting on the call eventfd). */
export interface VhostLoadOptions {
  /** Virtqueues (the back-end must serve at least this many); slot i goes on queue i % queues. */
  queues?: number;
  /** Poll the used ring instead of sleeping on the call eventfd. */
  spin?: boolean;
  /** Send each request as an indirect table, as a Linux guest does. */
  indirect?: boolean;
  /** Use only the first `size` bytes of the volume (default: all of it). */
  size?: number;
}

/**
 * Runs workload `w` for `seconds` against the vhost-user-blk back-end listening on `socket` and
 * resolves to its figures; rejects with the client's stderr when it fails (connection refused, a
 * refused message, a request that failed or stalled for 10 s).
 */
export function runVhostLoad(socket: string, w: Workload, seconds: number, o: VhostLoadOptions = {}): Promise<VhostLoadResult> {
  const bin = vhostLoadBinary();
  const args = ['--socket', socket, '--rw', w.write ? 'write' : 'read', '--pattern', w.random ? 'rand' : 'seq', '--bs', String(w.bs),
    '--depth', String(w.depth), '--seconds', String(seconds), '--queues', String(o.queues ?? 1),
    ...(o.spin ? ['--spin'] : []), ...(o.indirect ? ['--indirect'] : []), ...(o.size ? ['--size', String(o.size)] : [])];
  // The client times itself out (a message unanswered or a request stalled for 10 s); the limit only
  // catches a client that hangs anyway.
  return runJsonTool<{ iops: number; mbps: number; p50_us: number; p99_us: number }>(bin, args, w.name, seconds * 1000 + 60_000)
    .then((j) => ({ iops: j.iops, mbps: j.mbps, p50Us: j.p50_us, p99Us: j.p99_us }));
}
