// `twindisk bench replication`: replicated writes (protocol C, 2 and 3 replicas) against the same volume unreplicated, and resync throughput.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VhostUserFrontend } from '../qemu-plugin/testing/vhost-user-frontend.js';
import type { BlkDriver } from '../qemu-plugin/testing/blk-driver.js';
import { VIRTIO_BLK_S_OK, VIRTIO_BLK_T_OUT } from '../qemu-plugin/virtio/constants.js';
import { Cluster, sleep } from '../test/harness/cluster.js';
import { cli } from '../test/harness/serve.js';
import { allocBuffer, xxh3 } from '../wasm/index.js';
import { NativeBuffer, POSIX_FADV_DONTNEED, posixFadvise } from '../engine/os.js';
import { measureLinkCeiling } from './link-ceiling.js';
import { runVhostLoad } from './vhost-load.js';
import { median, writePattern } from './pattern.js';
import { setupDriver, type Workload } from './vhost.js';

export interface ReplicationBenchOptions {
  json: boolean;
  quick?: boolean;
  out?: (line: string) => void;
  /**
   * Run one part: `alone` (serve against a resource node with no peer), every write row, resync, or `metrics`
   * (2 replicas with Prometheus metrics off and on, alternating).
   */
  only?: 'alone' | 'writes' | 'resync' | 'metrics';
  /** Alternating runs of serve and the resource node alone (median reported); default 3, 1 with `quick`. */
  runs?: number;
}

export interface ReplicationRow {
  scenario: string;
  replicas: number;
  iops: number;
  mbps: number;
  bytesSent: number;
  /** What served the volume: `serve` (plain vhost-user back-end) or `resource` (twindisk up). */
  target: string;
  seconds?: number;
  changedBytes?: number;
  /** Times a thread of the serving processes went to sleep (and so had to be woken) per write: voluntary context switches. */
  wakeupsPerWrite?: number;
  /** 99th percentile latency seen by the driver, µs. */
  p99Us?: number;
  /** CPU time of every serving process (all nodes, all threads) per request, µs: on 2 cores, 2e6 / this bounds IOPS. */
  cpuUsPerRequest?: number;
  /** IOPS of each run, when the row is their median. */
  runs?: number[];
}

const WRITES: Workload[] = [
  { name: 'randwrite-4k-qd32', write: true, random: true, bs: 4096, depth: 32 },
  { name: 'seqwrite-1m-qd4', write: true, random: false, bs: 1 << 20, depth: 4 },
];
/** Reads, measured on the unreplicated rows only: a resource node serves them from its local disk in the queue worker, as `serve` does. */
const READS: Workload[] = [
  { name: 'randread-4k-qd32', write: false, random: true, bs: 4096, depth: 32 },
];

function frontend(socket: string): { fe: VhostUserFrontend; blk: BlkDriver } {
  const fe = VhostUserFrontend.connect(socket);
  return { fe, blk: setupDriver(fe, 1) };
}

async function waitForFile(p: string, ms = 20000): Promise<void> {
  const t0 = Date.now();
  while (!fs.existsSync(p)) {
    if (Date.now() - t0 > ms) throw new Error(`${p} did not appear within ${ms} ms`);
    await sleep(20);
  }
}

/** Writes a non-sparse pattern over the data area so reads and resync move real bytes. */
function fill(file: string, size: number): void {
  const fd = fs.openSync(file, 'r+');
  writePattern(fd, size);
  // Settled on disk, so no target pays for write-back of the setup's dirty pages.
  fs.fdatasyncSync(fd);
  fs.closeSync(fd);
}

/**
 * The resync's ceiling on this machine: a fresh file of `size` bytes written in 1 MiB pieces and
 * made durable with fdatasync, as a resync target must before it calls its data UpToDate.
 */
function diskBaseline(dir: string, size: number): { mbps: number; seconds: number } {
  const file = path.join(dir, 'baseline.img');
  const fd = fs.openSync(file, 'w');
  const chunk = Buffer.alloc(1 << 20, 0x5a);
  const t0 = performance.now();
  for (let off = 0; off < size; off += chunk.length) fs.writeSync(fd, chunk, 0, Math.min(chunk.length, size - off), off);
  fs.fdatasyncSync(fd);
  const seconds = (performance.now() - t0) / 1000;
  fs.closeSync(fd);
  fs.rmSync(file);
  return { mbps: Math.round(size / seconds / 1e6), seconds };
}

/**
 * The same ceiling the way a resync target can also write: O_DIRECT 1 MiB writes, as many in flight as
 * libuv's pool runs at once (4), then fdatasync. On this machine it beats the buffered ceiling, so the
 * resync is compared with both.
 */
async function diskDirectBaseline(dir: string, size: number): Promise<{ mbps: number; seconds: number }> {
  const file = path.join(dir, 'baseline-direct.img');
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_DIRECT);
  const CH = 1 << 20;
  const natives = [0, 1, 2, 3].map(() => new NativeBuffer(CH + 4096));
  const bufs = natives.map((nb) => nb.u8.subarray((4096 - (nb.addr % 4096)) % 4096).subarray(0, CH).fill(0x5a));
  const t0 = performance.now();
  let next = 0;
  await new Promise<void>((resolve, reject) => {
    let active = bufs.length;
    const go = (b: Uint8Array): void => {
      if (next >= size) {
        if (--active === 0) resolve();
        return;
      }
      const at = next;
      next += CH;
      fs.write(fd, b, 0, Math.min(CH, size - at), at, (e) => (e ? reject(e) : go(b)));
    };
    bufs.forEach(go);
  });
  fs.fdatasyncSync(fd);
  const seconds = (performance.now() - t0) / 1000;
  fs.closeSync(fd);
  fs.rmSync(file);
  for (const nb of natives) nb.free();
  return { mbps: Math.round(size / seconds / 1e6), seconds };
}

/**
 * A partial resync's ceiling: the same scattered 4 KiB blocks written in offset order (as the resync
 * walks its bitmap) into an allocated, cold file of the volume's size, then fdatasync.
 */
function partialBaseline(dir: string, size: number, blocks: number[]): { mbps: number; seconds: number } {
  const file = path.join(dir, 'baseline-partial.img');
  const fd = fs.openSync(file, 'w+');
  const chunk = Buffer.alloc(1 << 20, 0x33);
  for (let off = 0; off < size; off += chunk.length) fs.writeSync(fd, chunk, 0, Math.min(chunk.length, size - off), off);
  fs.fdatasyncSync(fd);
  const block = Buffer.alloc(4096, 0x77);
  const sorted = [...blocks].sort((a, b) => a - b);
  const t0 = performance.now();
  for (const b of sorted) fs.writeSync(fd, block, 0, 4096, b * 4096);
  fs.fdatasyncSync(fd);
  const seconds = (performance.now() - t0) / 1000;
  fs.closeSync(fd);
  fs.rmSync(file);
  return { mbps: Math.round((blocks.length * 4096) / seconds / 1e6), seconds };
}

/** Drops `file`'s pages from the page cache (written back first), so the next reads come from the disk. */
function evict(file: string): void {
  const fd = fs.openSync(file, 'r+');
  fs.fdatasyncSync(fd);
  posixFadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  fs.closeSync(fd);
}

/**
 * Verify's read ceiling: both nodes' volumes (`files`, one per node, on this machine's one disk) read
 * from the disk at once, each by a process of its own (as the two nodes are) in 1 MiB pieces with
 * several reads in flight. MB/s of one volume, as verify's rate is counted. Two processes matter here:
 * two readers in one process read 2-3x faster from this machine's disk than two processes do.
 */
async function readCeiling(files: string[], size: number): Promise<{ mbps: number; seconds: number }> {
  for (const f of files) evict(f);
  const reader = `const fs = require('node:fs'); const [file, size] = [process.argv[1], Number(process.argv[2])];
    const fd = fs.openSync(file, 'r'); let next = 0; let active = 4;
    const go = (b) => { if (next >= size) { if (--active === 0) fs.closeSync(fd); return; } const at = next; next += b.length;
      fs.read(fd, b, 0, Math.min(b.length, size - at), at, (e) => { if (e) throw e; go(b); }); };
    for (let i = 0; i < 4; i++) go(Buffer.allocUnsafe(1 << 20));`;
  const t0 = performance.now();
  await Promise.all(files.map((file) => new Promise<void>((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', reader, file, String(size)], { stdio: 'inherit' });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`the reader of ${file} exited with ${code}`))));
  })));
  const seconds = (performance.now() - t0) / 1000;
  return { mbps: Math.round(size / seconds / 1e6), seconds };
}

/** Hashing `size` bytes in 4 KiB blocks with the wasm XXH3 kernel, from memory the kernel owns (no copy in). */
function hashCeiling(size: number): { mbps: number; seconds: number } {
  const kb = allocBuffer(1 << 20);
  const buf = kb.bytes;
  buf.fill(0x5a);
  let sink = 0n;
  const t0 = performance.now();
  for (let done = 0; done < size; done += buf.length) for (let o = 0; o < buf.length; o += 4096) sink ^= xxh3(buf.subarray(o, o + 4096));
  const seconds = (performance.now() - t0) / 1000;
  if (sink === 1n) process.stdout.write('');
  return { mbps: Math.round(size / seconds / 1e6), seconds };
}

/**
 * Voluntary context switches of every thread of `pids` (/proc/PID/task/TID/status): each is a thread
 * that blocked and had to be woken again, the cost the issue counts as wake-ups.
 */
function wakeups(pids: number[]): number {
  let n = 0;
  for (const pid of pids) {
    let tids: string[] = [];
    try {
      tids = fs.readdirSync(`/proc/${pid}/task`);
    } catch {
      continue; // gone
    }
    for (const tid of tids) {
      try {
        const m = /^voluntary_ctxt_switches:\s+(\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'));
        if (m) n += Number(m[1]);
      } catch {
        // the thread ended meanwhile
      }
    }
  }
  return n;
}

/** CPU time (user + system, µs) the processes `pids` have used so far, all threads (/proc/PID/stat). */
function cpuMicros(pids: number[]): number {
  const tick = 1e6 / 100; // USER_HZ is 100 on Linux
  let n = 0;
  for (const pid of pids) {
    try {
      // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
      const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      n += (Number(f[11]) + Number(f[12])) * tick;
    } catch {
      // gone
    }
  }
  return n;
}

/**
 * Measures every write workload (and the reads, with `reads`) on one socket with the C vhost-user
 * front-end (bench/vhost-load.c: the lightest driver, as QEMU drives a back-end); `pids` are the
 * processes serving it (every node's), for wake-ups per write.
 */
async function measure(socket: string, size: number, seconds: number, replicas: number, target: string, emit: (r: ReplicationRow) => void, pids: number[], reads = false): Promise<void> {
  for (const w of reads ? [...WRITES, ...READS] : WRITES) {
    const before = wakeups(pids);
    const cpu0 = cpuMicros(pids);
    const r = await runVhostLoad(socket, w, seconds, { size });
    const requests = r.iops * seconds;
    const wakeupsPerWrite = Math.round(((wakeups(pids) - before) / requests) * 100) / 100;
    const cpuUsPerRequest = Math.round(((cpuMicros(pids) - cpu0) / requests) * 10) / 10;
    emit({ scenario: w.name, replicas, iops: r.iops, mbps: Math.round(r.mbps), bytesSent: 0, target, wakeupsPerWrite, cpuUsPerRequest, p99Us: Math.round(r.p99Us) });
  }
}

/**
 * What Prometheus metrics cost a replicated pair: the write rows on 2 replicas with metrics off
 * (`resource`) and on (`metrics`: the nodes count per request in their queue workers and serve
 * /metrics), alternating, each the median of its runs, and the ratio.
 */
async function metricsRows(o: ReplicationBenchOptions, size: number, seconds: number, emit: (r: ReplicationRow) => void): Promise<void> {
  const runs: Record<string, ReplicationRow[]> = { resource: [], metrics: [] };
  for (let run = 0; run < (o.runs ?? (o.quick ? 1 : 3)); run++) {
    // The order alternates run by run: whichever runs second meets the first one's writeback on the disk.
    for (const target of run % 2 === 0 ? (['resource', 'metrics'] as const) : (['metrics', 'resource'] as const)) {
      const on = target === 'metrics';
      const c = await Cluster.create({ nodes: { alpha: { disk: true, socket: true, metrics: on }, beta: { disk: true, metrics: on } }, size });
      for (const n of ['alpha', 'beta']) fill(c.node(n).image, size);
      await c.startAll();
      const alpha = c.node('alpha');
      await alpha.waitStatus((s) => s.peers.beta?.replication === 'Established', 'peers connected');
      await waitForFile(alpha.socket);
      // Scraped as Prometheus would, and more often (every second), while the writes run.
      const urls = on ? ['alpha', 'beta'].map((n) => `http://127.0.0.1:${c.node(n).metricsPort}/metrics`) : [];
      const scraper = setInterval(() => { for (const u of urls) void fetch(u).then((r) => r.text()).catch(() => undefined); }, 1000);
      try {
        await measure(alpha.socket, size, seconds, 2, target, (r) => runs[target]!.push(r), ['alpha', 'beta'].map((n) => c.node(n).child!.pid!));
      } finally {
        clearInterval(scraper);
        await c.stopAll('SIGTERM');
      }
    }
  }
  for (const target of ['resource', 'metrics']) {
    for (const w of WRITES) {
      const mine = runs[target]!.filter((r) => r.scenario === w.name);
      const mid = (f: (r: ReplicationRow) => number) => Math.round(median(mine.map(f)) * 100) / 100;
      emit({
        scenario: w.name, replicas: 2, target, iops: Math.round(mid((r) => r.iops)), mbps: Math.round(mid((r) => r.mbps)), bytesSent: 0,
        cpuUsPerRequest: mid((r) => r.cpuUsPerRequest!), p99Us: Math.round(mid((r) => r.p99Us!)), runs: mine.map((r) => r.iops),
      });
    }
  }
  if (!o.json) {
    const out = o.out ?? ((l: string) => process.stdout.write(l + '\n'));
    out('ratio metrics on / off, 2 replicas (IOPS of the medians):');
    for (const w of WRITES) {
      const [off, on] = ['resource', 'metrics'].map((t) => median(runs[t]!.filter((r) => r.scenario === w.name).map((r) => r.iops)));
      out(`  ${w.name.padEnd(20)} ${(on! / off!).toFixed(3)}x`);
    }
  }
}

/** Runs the benchmark; prints JSON lines with `json`, else a table with ratios. */
export async function runReplicationBench(o: ReplicationBenchOptions): Promise<ReplicationRow[]> {
  const out = o.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const seconds = o.quick ? 1 : 5;
  const size = o.quick ? 128 << 20 : 1 << 30;
  const rows: ReplicationRow[] = [];
  const emit = (r: ReplicationRow) => {
    rows.push(r);
    if (o.json) out(JSON.stringify(r));
    else out(`${r.scenario.padEnd(22)} replicas ${r.replicas} ${r.target.padEnd(8)} ${String(r.iops).padStart(7)} IOPS ${String(r.mbps).padStart(5)} MB/s${r.bytesSent ? `  sent ${r.bytesSent} B${r.changedBytes ? ` for ${r.changedBytes} B changed` : ''} in ${r.seconds?.toFixed(2)} s` : ''}${r.p99Us !== undefined ? `  p99 ${r.p99Us} µs` : ''}${r.wakeupsPerWrite !== undefined ? `  ${r.wakeupsPerWrite} wake-ups/request` : ''}${r.cpuUsPerRequest !== undefined ? `  ${r.cpuUsPerRequest} µs CPU/request` : ''}${r.runs && r.runs.length > 1 ? `  (median of ${r.runs.join(', ')})` : ''}`);
  };
  process.env.TWINDISK_LOG_LEVEL ??= 'warn';

  if (o.only === 'metrics') await metricsRows(o, size, seconds, emit);

  // Unreplicated: the same kind of image served by `twindisk serve`, and by a one-node resource.
  if (o.only !== 'resync' && o.only !== 'metrics') {
    // Alternating runs (serve, then the resource node, on the same image), each row the median of its
    // runs: single runs on this machine vary by more than the gap being measured.
    const c = await Cluster.create({ nodes: { solo: { disk: true, socket: true } }, size });
    fill(c.node('solo').image, size);
    const serveSock = path.join(c.dir, 'serve.sock');
    const runs: Record<'serve' | 'resource', ReplicationRow[]> = { serve: [], resource: [] };
    const keep = (r: ReplicationRow) => runs[r.target as 'serve' | 'resource'].push(r);
    for (let run = 0; run < (o.runs ?? (o.quick ? 1 : 3)); run++) {
      const child = spawn(process.execPath, [cli, 'serve', '--image', c.node('solo').image, '--socket', serveSock], { stdio: 'ignore' });
      try {
        await waitForFile(serveSock);
        await measure(serveSock, size, seconds, 1, 'serve', keep, [child.pid!], true);
      } finally {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
        fs.rmSync(serveSock, { force: true });
      }
      await c.startAll();
      await waitForFile(c.node('solo').socket);
      await measure(c.node('solo').socket, size, seconds, 1, 'resource', keep, [c.node('solo').child!.pid!], true);
      await c.stopAll('SIGTERM');
    }
    for (const target of ['serve', 'resource'] as const) {
      for (const w of [...WRITES, ...READS]) {
        const mine = runs[target].filter((r) => r.scenario === w.name);
        const mid = (f: (r: ReplicationRow) => number) => Math.round(median(mine.map(f)) * 100) / 100;
        emit({
          scenario: w.name, replicas: 1, target, iops: Math.round(mid((r) => r.iops)), mbps: Math.round(mid((r) => r.mbps)), bytesSent: 0,
          wakeupsPerWrite: mid((r) => r.wakeupsPerWrite!), cpuUsPerRequest: mid((r) => r.cpuUsPerRequest!), p99Us: Math.round(mid((r) => r.p99Us!)), runs: mine.map((r) => r.iops),
        });
      }
    }
  }

  // The link's ceiling: the same writes as one round trip each to a second process that writes them
  // to a page-cached file, with no twindisk code on either side (bench/link-ceiling.ts).
  if (o.only !== 'resync' && o.only !== 'alone' && o.only !== 'metrics') {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-link-'));
    try {
      for (const w of WRITES) {
        const r = await measureLinkCeiling(dir, w, size, seconds, 'ws');
        emit({ scenario: w.name, replicas: 2, iops: r.iops, mbps: r.mbps, bytesSent: 0, target: 'ws-peer' });
        // The same round trips over a bare TCP socket: what the ws layer costs.
        const t = await measureLinkCeiling(dir, w, size, seconds, 'tcp');
        emit({ scenario: w.name, replicas: 2, iops: t.iops, mbps: t.mbps, bytesSent: 0, target: 'tcp-peer' });
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  for (const replicas of o.only === 'resync' || o.only === 'alone' || o.only === 'metrics' ? [] : [2, 3]) {
    const names = ['alpha', 'beta', 'gamma'].slice(0, replicas);
    const c = await Cluster.create({ nodes: Object.fromEntries(names.map((n, i) => [n, { disk: true, socket: i === 0 }])), size });
    // Every replica starts from the same state as the unreplicated image: written and in the page
    // cache, so no target pays for allocating blocks and pages that the others had allocated already.
    for (const n of names) fill(c.node(n).image, size);
    await c.startAll();
    const alpha = c.node('alpha');
    await alpha.waitStatus((s) => names.slice(1).every((n) => s.peers[n]?.replication === 'Established'), 'peers connected');
    await waitForFile(alpha.socket);
    await measure(alpha.socket, size, seconds, replicas, 'resource', emit, names.map((n) => c.node(n).child!.pid!));
    await c.stopAll('SIGTERM');
  }

  // Resync: a full initial sync of a filled volume, then a 1% divergence.
  if (o.only !== 'writes' && o.only !== 'alone' && o.only !== 'metrics') {
    // An expert lets resync run at link speed on a dedicated link: resync-rate 0 (unlimited).
    const c = await Cluster.create({ nodes: { alpha: { disk: true, socket: true }, beta: { disk: true } }, size, assumeClean: false, resource: { 'resync-rate': 0 } });
    fill(c.node('alpha').image, size);
    await c.startAll();
    const alpha = c.node('alpha');
    await alpha.waitStatus((s) => s.peers.beta?.connection === 'Connected', 'connected');
    await alpha.call({ cmd: 'primary', force: true });
    const full = await alpha.waitStatus((s) => s.peers.beta?.lastResync !== undefined, 'full resync', 600000);
    const fr = full.peers.beta!.lastResync!;
    const disk = diskBaseline(c.dir, size);
    emit({ scenario: 'disk-write-fdatasync', replicas: 1, iops: 0, mbps: disk.mbps, bytesSent: 0, target: 'file', seconds: disk.seconds, changedBytes: size });
    const direct = await diskDirectBaseline(c.dir, size);
    emit({ scenario: 'disk-direct-fdatasync', replicas: 1, iops: 0, mbps: direct.mbps, bytesSent: 0, target: 'file', seconds: direct.seconds, changedBytes: size });
    emit({ scenario: 'resync-full', replicas: 2, iops: 0, mbps: Math.round(size / fr.seconds / 1e6), bytesSent: fr.bytesSent, target: 'resource', seconds: fr.seconds, changedBytes: size });
    // Online verify of the same volume, now in sync, against what it cannot beat: reading the volume
    // (both nodes read in parallel, from this machine's one disk) and hashing it in 4 KiB blocks. Both
    // start cold, as a volume larger than memory would.
    evict(alpha.image);
    evict(c.node('beta').image);
    await alpha.call({ cmd: 'verify' });
    const ver = await alpha.waitStatus((s) => s.peers.beta?.verify?.running === false, 'verify', 600000);
    const vs = ver.peers.beta!.verify!.seconds;
    emit({ scenario: 'verify', replicas: 2, iops: 0, mbps: Math.round(size / vs / 1e6), bytesSent: 0, target: 'resource', seconds: vs, changedBytes: size });
    const rd = await readCeiling([alpha.image, c.node('beta').image], size);
    emit({ scenario: 'disk-read', replicas: 1, iops: 0, mbps: rd.mbps, bytesSent: 0, target: 'file', seconds: rd.seconds, changedBytes: size });
    const hs = hashCeiling(size);
    emit({ scenario: 'xxh3-4k', replicas: 1, iops: 0, mbps: hs.mbps, bytesSent: 0, target: 'wasm', seconds: hs.seconds, changedBytes: size });
    await alpha.call({ cmd: 'secondary' });
    // 1% of the 4 KiB blocks change while beta is away.
    await c.node('beta').stop('SIGTERM');
    await alpha.waitStatus((s) => s.peers.beta?.connection !== 'Connected', 'beta gone');
    const { fe, blk } = frontend(alpha.socket);
    const blocks = size / 4096;
    const changed = Math.floor(blocks / 100);
    const seen = new Set<number>();
    let rng = 12345;
    for (let i = 0; seen.size < changed; i++) {
      rng = (Math.imul(rng, 1103515245) + 12345) >>> 0;
      const b = rng % blocks;
      if (seen.has(b)) continue;
      seen.add(b);
      fe.mem.fill(i & 255, blk.dataGpa(0), blk.dataGpa(0) + 4096);
      blk.submit(0, VIRTIO_BLK_T_OUT, (b * 4096) / 512, 4096);
      if (fe.queues[0]!.driver.publishAndCheckKick()) fe.kick(fe.queues[0]!);
      for (let t = 0; ; t++) {
        const done = blk.reap();
        if (done) {
          if (done.status !== VIRTIO_BLK_S_OK) throw new Error(`a write on alpha failed with status ${done.status}`);
          break;
        }
        if (t === 10) throw new Error(`a write on alpha did not complete within 10 s; alpha's log:\n${alpha.log()}`);
        fe.waitCall(fe.queues[0]!, 1000);
      }
    }
    fe.close();
    await alpha.waitStatus((s) => s.role === 'Secondary', 'demoted');
    const before = (await alpha.status()).peers.beta!.outOfSyncBytes;
    await c.node('beta').start();
    const part = await alpha.waitStatus((s) => s.peers.beta?.replication === 'Established' && (s.peers.beta.lastResync?.bytesSent ?? size) < size, 'partial resync', 120000);
    const pr = part.peers.beta!.lastResync!;
    emit({ scenario: 'resync-1pct', replicas: 2, iops: 0, mbps: Math.round(pr.bytesSent / pr.seconds / 1e6), bytesSent: pr.bytesSent, target: 'resource', seconds: pr.seconds, changedBytes: changed * 4096 });
    if (before !== changed * 4096) out(`note: ${before} bytes were out of sync for ${changed * 4096} changed`);
    const pb = partialBaseline(c.dir, size, [...seen]);
    emit({ scenario: 'disk-partial-fdatasync', replicas: 1, iops: 0, mbps: pb.mbps, bytesSent: 0, target: 'file', seconds: pb.seconds, changedBytes: changed * 4096 });
    await c.stopAll('SIGTERM');
  }

  if (!o.json) {
    const base = (s: string) => rows.find((r) => r.scenario === s && r.target === 'serve');
    out('');
    out('ratios against the unreplicated volume (twindisk serve, same image), IOPS:');
    for (const w of [...WRITES, ...READS]) {
      if (!base(w.name)) continue;
      for (const r of rows.filter((x) => x.scenario === w.name && (x.target === 'resource' || x.target === 'ws-peer' || x.target === 'tcp-peer'))) {
        out(`  ${w.name.padEnd(20)} replicas ${r.replicas} ${r.target.padEnd(8)}: ${(r.iops / base(w.name)!.iops).toFixed(2)}x`);
      }
    }
    out('ratios of the ws link ceiling against the same round trips over bare TCP (net.Socket, no ws), IOPS:');
    for (const w of WRITES) {
      const ws = rows.find((x) => x.scenario === w.name && x.target === 'ws-peer');
      const tcp = rows.find((x) => x.scenario === w.name && x.target === 'tcp-peer');
      if (ws && tcp) out(`  ${w.name.padEnd(20)}: ${(ws.iops / tcp.iops).toFixed(2)}x`);
    }
    const row = (s: string) => rows.find((x) => x.scenario === s);
    const disk = row('disk-write-fdatasync');
    if (disk) {
      out('ratios of resync against the disk\'s own write + fdatasync of the same bytes, MB/s:');
      const full = row('resync-full');
      const direct = row('disk-direct-fdatasync');
      if (full) out(`  resync-full         : ${(full.mbps / disk.mbps).toFixed(2)}x of buffered writes${direct ? `, ${(full.mbps / direct.mbps).toFixed(2)}x of O_DIRECT writes` : ''}`);
      const part = row('resync-1pct');
      const pb = row('disk-partial-fdatasync');
      if (part && pb) out(`  resync-1pct         : ${(pb.seconds! / part.seconds!).toFixed(2)}x (time to write the changed 4 KiB blocks + fdatasync, over the resync's time)`);
    }
    const ver = row('verify');
    if (ver && row('disk-read') && row('xxh3-4k')) {
      const floor = Math.min(row('disk-read')!.mbps, row('xxh3-4k')!.mbps);
      out(`ratio of verify against the slower of reading the volume and hashing it: ${(ver.mbps / floor).toFixed(2)}x (of ${floor} MB/s)`);
    }
    out('ratios of 2 replicas against the link ceiling (ws round trip to a writing peer process, no twindisk code), IOPS:');
    for (const w of WRITES) {
      const link = rows.find((x) => x.scenario === w.name && x.target === 'ws-peer');
      const r = rows.find((x) => x.scenario === w.name && x.target === 'resource' && x.replicas === 2);
      if (link && r) out(`  ${w.name.padEnd(20)}: ${(r.iops / link.iops).toFixed(2)}x`);
    }
  }
  return rows;
}
