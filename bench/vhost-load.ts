// The C vhost-user-blk front-end (bench/vhost-load.c) from TypeScript: built once per source version, run once per workload.
// It drives a back-end as QEMU and a guest would, far past the TypeScript driver's ceiling (qemu-plugin/testing).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cacheDir, spawnTracked } from './iscsi.js';
import type { Workload } from './vhost.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The path of bench/vhost-load.c compiled (gcc -O2 -Wall), building it first when needed. */
export function vhostLoadBinary(): string {
  const src = path.join(root, 'bench', 'vhost-load.c');
  if (!fs.existsSync(src)) throw new Error(`${src} is missing: the vhost-user load client's source comes with the repository`);
  const text = fs.readFileSync(src);
  const bin = path.join(cacheDir(), `vhost-load-${createHash('sha256').update(text).digest('hex').slice(0, 16)}`);
  if (fs.existsSync(bin)) return bin;
  if (spawnSync('gcc', ['--version'], { stdio: 'ignore' }).error) {
    throw new Error('gcc is not installed, so bench/vhost-load.c cannot be built: install the Debian package gcc (scripts/setup.sh does, as root)');
  }
  fs.mkdirSync(cacheDir(), { recursive: true });
  const tmp = `${bin}.${process.pid}.tmp`;
  const r = spawnSync('gcc', ['-O2', '-Wall', '-o', tmp, src], { encoding: 'utf8' });
  if (r.status !== 0) {
    fs.rmSync(tmp, { force: true });
    throw new Error(`building bench/vhost-load.c failed (gcc exited ${r.status ?? r.signal}):\n${(r.stderr || String(r.error ?? '')).trim()}`);
  }
  fs.renameSync(tmp, bin);
  return bin;
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
  const child = spawnTracked(bin, args);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d));
  child.stderr!.on('data', (d: Buffer) => (err += d));
  return new Promise((resolve, reject) => {
    // The client times itself out (a message unanswered or a request stalled for 10 s); this only
    // catches a client that hangs anyway.
    const limitMs = seconds * 1000 + 60_000;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, limitMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${w.name}: cannot run ${bin}: ${e.message}`));
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) return reject(new Error(`${w.name}: vhost-load did not finish within ${limitMs / 1000} s and was killed: ${err.trim()}`));
      if (code !== 0) return reject(new Error(`${w.name}: vhost-load exited (${code ?? signal}): ${err.trim() || '(nothing on stderr)'}`));
      try {
        const j = JSON.parse(out.trim().split('\n').pop()!) as { iops: number; mbps: number; p50_us: number; p99_us: number };
        resolve({ iops: j.iops, mbps: j.mbps, p50Us: j.p50_us, p99Us: j.p99_us });
      } catch {
        reject(new Error(`${w.name}: vhost-load printed no result: ${out.trim()} ${err.trim()}`));
      }
    });
  });
}
