// `twindisk bench vhost`: twindisk (aio=sync, aio=io_uring, fixed polling) against qemu-storage-daemon (aio=io_uring), driven by the same TypeScript vhost-user driver.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { VhostUserFrontend } from '../qemu-plugin/testing/vhost-user-frontend.js';
import { BlkDriver } from '../qemu-plugin/testing/blk-driver.js';
import { VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from '../qemu-plugin/virtio/constants.js';
import { blockPicker, writePattern, type Row, type Workload } from './pattern.js';
import { requireQemuStorageDaemon, startQemuStorageDaemon } from './qemu-storage-daemon.js';

export interface VhostBenchOptions {
  json: boolean;
  quick?: boolean;
  /** Seconds per workload (default 5; 1 with quick). */
  seconds?: number | undefined;
  /** Image size in bytes (default 1 GiB; 128 MiB with quick). */
  imageSize?: number;
  queues?: number;
  targets?: string[];
  out?: (line: string) => void;
}

export type { Row, Workload } from './pattern.js';

export const WORKLOADS: Workload[] = [
  { name: 'randread-4k-qd1', write: false, random: true, bs: 4096, depth: 1 },
  { name: 'randread-4k-qd32', write: false, random: true, bs: 4096, depth: 32 },
  { name: 'randwrite-4k-qd32', write: true, random: true, bs: 4096, depth: 32 },
  { name: 'seqread-1m-qd4', write: false, random: false, bs: 1 << 20, depth: 4 },
  { name: 'seqwrite-1m-qd4', write: true, random: false, bs: 1 << 20, depth: 4 },
];

/**
 * Every target `--targets` may name: twindisk (aio=sync, adaptive polling), with io_uring, with fixed polling (`--poll-mode fixed`),
 * with Prometheus metrics on (`--metrics`: per-request counters and latency histograms in the queue workers), and the reference.
 */
export const VHOST_TARGETS = ['twindisk', 'twindisk-io_uring', 'twindisk-fixed-poll', 'twindisk-metrics', 'qemu-storage-daemon'];
/** The targets measured without `--targets`. */
export const DEFAULT_VHOST_TARGETS = ['twindisk', 'twindisk-io_uring', 'qemu-storage-daemon'];
/** The targets also run with their buffers above 4 GiB (an 8 GiB guest's layout). */
const HIGH_LAYOUT_TARGETS = ['twindisk', 'twindisk-io_uring'];
const REFERENCE = 'qemu-storage-daemon';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** A back-end process serving `image` on `socket`. */
function startTarget(target: string, image: string, socket: string, queues: number): ChildProcess {
  if (target === 'twindisk' || target === 'twindisk-io_uring' || target === 'twindisk-fixed-poll' || target === 'twindisk-metrics') {
    const aio = target === 'twindisk-io_uring' ? 'io_uring' : 'sync';
    const poll = target === 'twindisk-fixed-poll' ? ['--poll-mode', 'fixed'] : [];
    const metrics = target === 'twindisk-metrics' ? ['--metrics', '127.0.0.1:0'] : [];
    return spawn(process.execPath, [path.join(root, 'dist', 'cli', 'twindisk.js'), 'serve', '--image', image, '--socket', socket, '--queues', String(queues), '--aio', aio, ...poll, ...metrics], {
      stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, TWINDISK_LOG_LEVEL: 'warn' },
    });
  }
  if (target === 'qemu-storage-daemon') {
    // The same number of queues as twindisk.
    return startQemuStorageDaemon(image, [{ id: 'exp0', socket, queues }]);
  }
  throw new Error(`unknown target ${target}`);
}

async function waitForSocket(p: string, child: ChildProcess, ms = 20000): Promise<void> {
  let err = '';
  child.stderr?.on('data', (d) => (err += d));
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (child.exitCode !== null) throw new Error(`back-end exited (${child.exitCode}): ${err.trim()}`);
    if (fs.existsSync(p)) {
      try {
        VhostUserFrontend.connect(p).close();
        return;
      } catch { /* not listening yet */ }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`back-end did not listen on ${p} within ${ms} ms: ${err.trim()}`);
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

/** Guest-physical address of the data buffers in the 8 GiB layout: 16 MiB below the 2 GiB mark of a region at 4 GiB (where twindisk's views of it meet). */
export const HIGH_DATA_GPA = 4 * 2 ** 30 + 2 * 2 ** 30 - (16 << 20);

/**
 * Sets the front-end up with `queues` queues and returns a driver of 32 slots of up to 1 MiB on
 * queue 0. With `highLayout`, guest memory is laid out as for an 8 GiB q35 guest (a second region
 * of 6 GiB at 4 GiB, from the same memfd) and the data buffers lie in it, across a view boundary.
 */
export function setupDriver(fe: VhostUserFrontend, queues: number, highLayout = false): BlkDriver {
  const maxData = 1 << 20;
  if (highLayout) {
    fe.setup({ numQueues: queues, queueSize: 128, memSize: (queues + 4) * (1 << 20), highMem: { gpa: 4 * 2 ** 30, size: 6 * 2 ** 30 } });
    return new BlkDriver(fe.queues[0]!.driver, fe.dataBase, 32, maxData, HIGH_DATA_GPA);
  }
  fe.setup({ numQueues: queues, queueSize: 128, memSize: (queues + 2) * (1 << 20) + 32 * (maxData + 4096) + (1 << 20) });
  return new BlkDriver(fe.queues[0]!.driver, fe.dataBase, 32, maxData);
}

/** The row name of `target` with its buffers above 4 GiB. */
const highName = (target: string) => `${target} (8 GiB layout)`;

/** Runs one workload on queue 0 for `seconds`; returns throughput and latency. */
export function runWorkload(fe: VhostUserFrontend, blk: BlkDriver, w: Workload, size: number, seconds: number): Omit<Row, 'target'> {
  const q = fe.queues[0]!;
  const nextBlock = blockPicker(w.random, Math.floor(size / w.bs));
  const type = w.write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN;
  const lat = new Float64Array(4_000_000);
  let n = 0;
  let done = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  for (let i = 0; i < w.depth; i++) blk.submit(i, type, (nextBlock() * w.bs) / 512, w.bs, 1, false, performance.now());
  if (q.driver.publishAndCheckKick()) fe.kick(q);
  let now = t0;
  let inflight = w.depth;
  while (inflight > 0) {
    if (!fe.waitCall(q, 5000)) throw new Error(`${w.name}: no completion within 5 s`);
    now = performance.now();
    for (let c = blk.reap(); c; c = blk.reap()) {
      if (c.status !== VIRTIO_BLK_S_OK) throw new Error(`${w.name}: request failed with status ${c.status}`);
      if (n < lat.length) lat[n++] = now - c.started;
      done++;
      inflight--;
      if (now < end) {
        blk.submit(c.slot, type, (nextBlock() * w.bs) / 512, w.bs, 1, false, now);
        inflight++;
      }
    }
    if (q.driver.publishAndCheckKick()) fe.kick(q);
  }
  const secs = (now - t0) / 1000;
  const sorted = lat.subarray(0, n).sort();
  return {
    workload: w.name,
    iops: Math.round(done / secs),
    mbps: Math.round((done * w.bs) / secs / 1e6),
    p50_us: Math.round(percentile(sorted, 0.5) * 1000),
    p99_us: Math.round(percentile(sorted, 0.99) * 1000),
  };
}

/** Runs every workload against every target; prints rows (JSON lines with `json`) and a ratio table. */
export async function runVhostBench(o: VhostBenchOptions): Promise<Row[]> {
  const out = o.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const seconds = o.seconds ?? (o.quick ? 1 : 5);
  const size = o.imageSize ?? (o.quick ? 128 << 20 : 1 << 30);
  const queues = o.queues ?? 1;
  const targets = o.targets ?? DEFAULT_VHOST_TARGETS;
  const unknown = targets.find((t) => !VHOST_TARGETS.includes(t));
  if (unknown !== undefined) throw new Error(`unknown target '${unknown}' (known: ${VHOST_TARGETS.join(', ')})`);
  if (new Set(targets).size !== targets.length) throw new Error(`a target is named twice in ${targets.join(',')}`);
  if (targets.includes('qemu-storage-daemon')) requireQemuStorageDaemon('run with only twindisk');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-bench-'));
  const image = path.join(dir, 'bench.img');
  // A written (not sparse) image, read once so both targets start from a warm page cache.
  const fd = fs.openSync(image, 'w');
  writePattern(fd, size);
  fs.closeSync(fd);
  const rows: Row[] = [];
  try {
    for (const target of targets) {
      const socket = path.join(dir, `${target}.sock`);
      const child = startTarget(target, image, socket, queues);
      try {
        await waitForSocket(socket, child);
        // twindisk also runs with its buffers above 4 GiB, as an 8 GiB guest's would be: the same
        // figures are expected wherever a buffer lies.
        for (const high of HIGH_LAYOUT_TARGETS.includes(target) ? [false, true] : [false]) {
          const name = high ? highName(target) : target;
          const fe = VhostUserFrontend.connect(socket);
          try {
            const blk = setupDriver(fe, queues, high);
            for (const w of WORKLOADS) {
              const r = { target: name, ...runWorkload(fe, blk, w, size, seconds) };
              rows.push(r);
              if (o.json) out(JSON.stringify(r));
              else out(`${name.padEnd(32)} ${w.name.padEnd(18)} ${String(r.iops).padStart(8)} IOPS ${String(r.mbps).padStart(6)} MB/s  p50 ${r.p50_us} us  p99 ${r.p99_us} us`);
            }
          } finally {
            fe.close();
          }
          // The back-end serves one front-end at a time: let it see the end of this one.
          await new Promise((r) => setTimeout(r, 200));
        }
      } finally {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  // Ratios are to qemu-storage-daemon when it ran, else to the last target named.
  const peer = targets.includes(REFERENCE) ? REFERENCE : targets[targets.length - 1]!;
  if (!o.json) {
    for (const t of targets.filter((x) => rows.some((r) => r.target === highName(x)))) {
      out('');
      out(`ratio ${highName(t)} / ${t} (IOPS, same run):`);
      for (const w of WORKLOADS) {
        const a = rows.find((r) => r.target === highName(t) && r.workload === w.name);
        const b = rows.find((r) => r.target === t && r.workload === w.name);
        if (a && b) out(`  ${w.name.padEnd(18)} ${(a.iops / b.iops).toFixed(2)}x`);
      }
    }
  }
  if (!o.json && targets.length > 1) {
    for (const t of targets.filter((x) => x !== peer)) {
      out('');
      out(`ratio ${t} / ${peer} (IOPS):`);
      for (const w of WORKLOADS) {
        const a = rows.find((r) => r.target === t && r.workload === w.name);
        const b = rows.find((r) => r.target === peer && r.workload === w.name);
        if (a && b) out(`  ${w.name.padEnd(18)} ${(a.iops / b.iops).toFixed(2)}x`);
      }
    }
  }
  return rows;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  runVhostBench({ json: process.argv.includes('--json'), quick: process.argv.includes('--quick') }).catch((e) => {
    process.stderr.write(`bench vhost: ${e.message}\n`);
    process.exit(1);
  });
}
