// `twindisk bench iscsi`: twindisk's iSCSI target against Linux's user-space target (tgt), driven by the same libiscsi client (bench/iscsi-load.c).
import { spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildCTool, live, runJsonTool, spawnTracked } from './c-tools.js';
import { writePattern, type Row, type Workload } from './pattern.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(root, 'dist', 'cli', 'twindisk.js');

/** The names the benchmark's targets and initiator use. */
export const TGT_IQN = 'iqn.2026-12.io.twindisk:bench-tgt';
export const TWINDISK_IQN = 'iqn.2026-12.io.twindisk:bench';
export const INITIATOR_IQN = 'iqn.2026-12.io.twindisk:bench-initiator';

/** tgt's LUN 0 is its controller; the disk is LUN 1. twindisk serves the image as LUN 0. */
export const TGT_LUN = 1;
export const TWINDISK_LUN = 0;

/** A tgt backing-store type: `rdwr` (pread/pwrite on a thread pool, page cache) or `aio` (Linux AIO, O_DIRECT). */
export type TgtBsType = 'rdwr' | 'aio';

/**
 * The backing store `tgt` means: rdwr, measured against aio in one run on this machine (bench/RESULTS.md).
 * tgt opens an aio store O_DIRECT, so aio reads come from the device while rdwr's come from the page
 * cache, as twindisk's do (`serve --aio sync`, the default): rdwr did 1.8x to 3.4x aio's IOPS at 4 KiB
 * depth 1 and 1.05x to 1.5x at depth 32; aio moved 1 MiB sequential reads at 2.2x and writes at 1.3x.
 * A VM disk's traffic is the small random kind, and rdwr is also the store that implements every
 * command (aio has no WRITE SAME; iscsi-test-cu: 222 of 230 pass on rdwr, 208 on aio). It is tgt's default.
 */
export const TGT_BEST_BS: TgtBsType = 'rdwr';

/**
 * Session parameters for tgt, as a tuned installation sets them: tgt's defaults (8 KiB data segments,
 * a 64 KiB first burst, InitialR2T=Yes) split a 1 MiB write into an R2T round trip per 256 KiB and
 * 8 KiB PDUs; these let a write go out as immediate/unsolicited data up to 256 KiB and the rest in
 * one burst, with 256 KiB PDUs both ways (libiscsi offers the same lengths). Measured: 1 MiB writes
 * at 1.4x tgt's defaults, the other workloads within the noise.
 */
export const TGT_SESSION_PARAMS: Record<string, string> = {
  MaxRecvDataSegmentLength: '262144',
  MaxXmitDataSegmentLength: '262144',
  FirstBurstLength: '262144',
  MaxBurstLength: '1048576',
  InitialR2T: 'No',
  ImmediateData: 'Yes',
};

/**
 * NOP-In pings from tgt to the initiator: off (tgt's default), stated here so the choice is visible.
 * A ping only tells a target that an idle initiator has gone; a benchmark session is never idle, and
 * pinging would only add unsolicited PDUs to the measured stream.
 */
export const TGT_NOP = { interval: 0, count: 0 };

/** The iSCSI workloads have the shape of every I/O benchmark's (bench/pattern.ts). */
export type IscsiWorkload = Workload;

export const ISCSI_WORKLOADS: IscsiWorkload[] = [
  { name: 'randread-4k-qd1', write: false, random: true, bs: 4096, depth: 1 },
  { name: 'randread-4k-qd32', write: false, random: true, bs: 4096, depth: 32 },
  { name: 'randwrite-4k-qd1', write: true, random: true, bs: 4096, depth: 1 },
  { name: 'randwrite-4k-qd32', write: true, random: true, bs: 4096, depth: 32 },
  { name: 'seqread-1m-qd4', write: false, random: false, bs: 1 << 20, depth: 4 },
  { name: 'seqwrite-1m-qd4', write: true, random: false, bs: 1 << 20, depth: 4 },
];

export type IscsiRow = Row;

/** A running iSCSI target with one disk LUN. */
export interface IscsiTarget {
  name: string;
  /** The LUN's libiscsi URL, iscsi://127.0.0.1:PORT/IQN/LUN. */
  url: string;
  /** What the target has written to stderr lately (for error messages). */
  log(): string;
  /** Stops the target and waits until the process has exited. */
  stop(): Promise<void>;
}

// ---- processes: every target and client this module starts dies with the run --------------------

/** Keeps the last `max` characters a child writes to stderr (and drains the pipe so it never blocks). */
function tail(child: ChildProcess, max = 8192): () => string {
  let buf = '';
  child.stderr?.on('data', (d: Buffer) => {
    buf = (buf + d.toString()).slice(-max);
  });
  child.stdout?.resume();
  return () => buf.trim();
}

function exited(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

/** Stops `child` with `signal`, then SIGKILL if it has not exited after `ms`. */
async function terminate(child: ChildProcess, signal: NodeJS.Signals, ms: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  if (!(await exited(child, ms))) {
    child.kill('SIGKILL');
    await exited(child, 5000);
  }
}

/**
 * Runs `fn` with `dir` as its scratch directory; on return, on an error, and on SIGINT/SIGTERM/SIGHUP
 * every process started here is killed and `dir` is removed.
 */
export async function withScratch<T>(prefix: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const onSignal = (sig: NodeJS.Signals) => {
    for (const c of live) c.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
    process.stderr.write(`${sig}: stopped; every target process was killed\n`);
    process.exit(128 + (os.constants.signals[sig] ?? 15));
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of signals) process.on(s, onSignal);
  try {
    return await fn(dir);
  } finally {
    for (const s of signals) process.off(s, onSignal);
    for (const c of [...live]) await terminate(c, 'SIGKILL', 0);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ---- loopback ports -----------------------------------------------------------------------------

/** A TCP port on 127.0.0.1 that nothing listens on now (the kernel's choice). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect({ host: '127.0.0.1', port });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/** Waits until something accepts connections on `port`, failing early if `child` exits. */
async function waitForPort(port: number, child: ChildProcess, what: string, log: () => string, ms = 20000): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before it listened on 127.0.0.1:${port}: ${log()}`);
    }
    if (await canConnect(port)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} did not listen on 127.0.0.1:${port} within ${ms} ms: ${log()}`);
}

// ---- tgt ------------------------------------------------------------------------------------------

export interface TgtOptions {
  /** Scratch directory: tgtd's management socket goes here. */
  dir: string;
  /** The backing file, served as LUN 1. */
  image: string;
  bsType?: TgtBsType;
  iqn?: string;
  /** Logical block size of the LUN (512 by default, as twindisk's). */
  blockSize?: 512 | 4096;
  /** Report the LUN as thin-provisioned (UNMAP, WRITE SAME with UNMAP, GET LBA STATUS). */
  thin?: boolean;
  /** Session parameters; TGT_SESSION_PARAMS by default, {} for tgt's own defaults. */
  sessionParams?: Record<string, string>;
}

/** Says what is missing for tgt, or null when tgtd and tgtadm are installed. */
export function tgtMissing(): string | null {
  for (const bin of ['tgtd', 'tgtadm']) {
    if (spawnSync(bin, ['--help'], { stdio: 'ignore' }).error) return `${bin} is not installed: run scripts/setup.sh (as root; Debian package tgt)`;
  }
  return null;
}

/**
 * Starts tgtd in the foreground on a loopback port of its own, with a private management socket
 * (TGT_IPC_SOCKET, so neither a system tgtd nor another run is touched), one target with `image` as
 * LUN 1 and every initiator allowed.
 */
export async function startTgt(o: TgtOptions): Promise<IscsiTarget> {
  const missing = tgtMissing();
  if (missing) throw new Error(missing);
  const iqn = o.iqn ?? TGT_IQN;
  const bsType = o.bsType ?? TGT_BEST_BS;
  const port = await freePort();
  const env = { ...process.env, TGT_IPC_SOCKET: path.join(o.dir, `tgtd-${port}.ipc`) };
  const child = spawnTracked('tgtd', ['-f', '--iscsi', `portal=127.0.0.1:${port},nop_interval=${TGT_NOP.interval},nop_count=${TGT_NOP.count}`], env);
  const log = tail(child);
  const adm = (...args: string[]) => {
    const r = spawnSync('tgtadm', ['--lld', 'iscsi', ...args], { env, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`tgtadm ${args.join(' ')} failed (${r.status}): ${(r.stderr || r.stdout).trim()}; tgtd: ${log()}`);
    return r.stdout;
  };
  const stop = async () => {
    // tgtd ignores SIGTERM and SIGINT: its own shutdown is the management call, forced past sessions.
    if (child.exitCode === null && child.signalCode === null) {
      spawnSync('tgtadm', ['--lld', 'iscsi', '--op', 'delete', '--force', '--mode', 'target', '--tid', '1'], { env, stdio: 'ignore' });
      spawnSync('tgtadm', ['--op', 'delete', '--mode', 'system'], { env, stdio: 'ignore' });
      if (!(await exited(child, 3000))) await terminate(child, 'SIGKILL', 0);
    }
  };
  try {
    await waitForPort(port, child, 'tgtd', log);
    adm('--op', 'new', '--mode', 'target', '--tid', '1', '-T', iqn);
    adm('--op', 'new', '--mode', 'logicalunit', '--tid', '1', '--lun', String(TGT_LUN), '-b', o.image, '--bstype', bsType,
      '--blocksize', String(o.blockSize ?? 512));
    if (o.thin) adm('--op', 'update', '--mode', 'logicalunit', '--tid', '1', '--lun', String(TGT_LUN), '--params', 'thin_provisioning=1');
    for (const [name, value] of Object.entries(o.sessionParams ?? TGT_SESSION_PARAMS)) {
      adm('--op', 'update', '--mode', 'target', '--tid', '1', '--name', name, '--value', value);
    }
    adm('--op', 'bind', '--mode', 'target', '--tid', '1', '-I', 'ALL');
  } catch (e) {
    await stop();
    throw e;
  }
  return { name: `tgt-${bsType}`, url: `iscsi://127.0.0.1:${port}/${iqn}/${TGT_LUN}`, log, stop };
}

// ---- twindisk -------------------------------------------------------------------------------------

/** Null when this build's `twindisk serve` has `--iscsi`; otherwise why twindisk's target cannot be run. */
export function twindiskIscsiMissing(): string | null {
  if (!fs.existsSync(cli)) return `${path.relative(process.cwd(), cli)} is not built: run \`npx tsc -p tsconfig.json\``;
  const r = spawnSync(process.execPath, [cli, 'serve', '--help'], { encoding: 'utf8', timeout: 30000 });
  if (r.status !== 0) {
    const lines = (r.stderr || r.stdout || String(r.error ?? '')).trim().split('\n');
    const why = lines.find((l) => /error|^twindisk:/i.test(l)) ?? lines[lines.length - 1] ?? `exit ${r.status}`;
    return `\`twindisk serve --help\` failed (${why.trim()})`;
  }
  if (!/--iscsi\b/.test(r.stdout)) return '`twindisk serve` has no --iscsi option in this build';
  return null;
}

export interface TwindiskIscsiOptions {
  image: string;
  iqn?: string;
}

/** Starts `twindisk serve --image FILE --iscsi 127.0.0.1:PORT --target-name IQN` (the image is LUN 0). */
export async function startTwindiskIscsi(o: TwindiskIscsiOptions): Promise<IscsiTarget> {
  const iqn = o.iqn ?? TWINDISK_IQN;
  const port = await freePort();
  const child = spawnTracked(process.execPath, [cli, 'serve', '--image', o.image, '--iscsi', `127.0.0.1:${port}`, '--target-name', iqn],
    { ...process.env, TWINDISK_LOG_LEVEL: process.env.TWINDISK_LOG_LEVEL ?? 'warn' });
  const log = tail(child);
  const stop = () => terminate(child, 'SIGTERM', 5000);
  try {
    await waitForPort(port, child, 'twindisk serve --iscsi', log);
  } catch (e) {
    await stop();
    throw e;
  }
  return { name: 'twindisk', url: `iscsi://127.0.0.1:${port}/${iqn}/${TWINDISK_LUN}`, log, stop };
}

// ---- the load client ------------------------------------------------------------------------------

/** The path of bench/iscsi-load.c compiled (gcc -O2 ... -liscsi), building it first when needed. */
export function buildLoadClient(): string {
  return buildCTool('iscsi-load', {
    libs: ['-liscsi'],
    setup: 'run scripts/setup.sh (as root), which installs the Debian packages gcc and libiscsi-dev',
    hint: (stderr) => (/iscsi\/iscsi\.h|cannot find -liscsi/.test(stderr) ? 'libiscsi\'s headers or library are missing (Debian package libiscsi-dev)' : null),
  });
}

interface LoadResult {
  iops: number;
  mbps: number;
  p50_us: number;
  p99_us: number;
  lun_bytes: number;
}

/** Runs one workload with the load client against `url`; resolves to its JSON line. */
export function runLoad(bin: string, url: string, w: IscsiWorkload, seconds: number, size?: number): Promise<LoadResult> {
  const args = ['--url', url, '--initiator', INITIATOR_IQN, '--rw', w.write ? 'write' : 'read', '--pattern', w.random ? 'rand' : 'seq',
    '--bs', String(w.bs), '--depth', String(w.depth), '--seconds', String(seconds), ...(size ? ['--size', String(size)] : [])];
  // The client stops itself after a stall (STALL_SECONDS); the limit only catches one that hangs anyway.
  return runJsonTool<LoadResult>(bin, args, w.name, seconds * 1000 + 60_000);
}

// ---- the benchmark --------------------------------------------------------------------------------

/** Target names `runIscsiBench` knows: `tgt` is tgt with TGT_BEST_BS; `tgt-rdwr` and `tgt-aio` name the store. */
export const ISCSI_BENCH_TARGETS = ['twindisk', 'tgt', 'tgt-rdwr', 'tgt-aio'] as const;
export type IscsiBenchTarget = (typeof ISCSI_BENCH_TARGETS)[number];

export interface IscsiBenchOptions {
  json: boolean;
  quick?: boolean;
  /** Seconds per workload (default 5; 1 with quick). */
  seconds?: number | undefined;
  /** Image size in bytes (default 1 GiB; 128 MiB with quick). */
  imageSize?: number;
  /** Default: twindisk and tgt. */
  targets?: IscsiBenchTarget[] | undefined;
  out?: (line: string) => void;
  /** Where notes go (that twindisk's target is missing): stderr with json, else `out`. */
  note?: (line: string) => void;
}

function startTarget(t: IscsiBenchTarget, dir: string, image: string): Promise<IscsiTarget> {
  if (t === 'twindisk') return startTwindiskIscsi({ image });
  const bsType: TgtBsType = t === 'tgt' ? TGT_BEST_BS : t === 'tgt-aio' ? 'aio' : 'rdwr';
  return startTgt({ dir, image, bsType }).then((x) => ({ ...x, name: t }));
}

/** Runs every workload against every target (all running, each on its own copy of the image); prints rows and ratios. */
export async function runIscsiBench(o: IscsiBenchOptions): Promise<IscsiRow[]> {
  const out = o.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const note = o.note ?? (o.json ? (l: string) => process.stderr.write(l + '\n') : out);
  const seconds = o.seconds ?? (o.quick ? 1 : 5);
  const size = o.imageSize ?? (o.quick ? 128 << 20 : 1 << 30);
  let targets = [...(o.targets ?? ['twindisk', 'tgt'])];
  if (targets.includes('twindisk')) {
    const why = twindiskIscsiMissing();
    if (why) {
      note(`twindisk: NOT MEASURED: twindisk's iSCSI target is not available (${why}); measuring ${targets.filter((t) => t !== 'twindisk').join(', ') || 'nothing'} alone`);
      targets = targets.filter((t) => t !== 'twindisk');
    }
  }
  if (targets.some((t) => t.startsWith('tgt'))) {
    const missing = tgtMissing();
    if (missing) throw new Error(missing);
  }
  const bin = buildLoadClient();
  const rows: IscsiRow[] = [];
  await withScratch('twindisk-bench-iscsi-', async (dir) => {
    // Every target runs at once, each on its own copy of the image, and each workload runs on every
    // target back to back: on a shared machine the load drifts over a minute, and this way a drift
    // falls on both sides of a ratio instead of on one target's whole set. Each copy is written (not
    // sparse) and in the page cache, as in `bench vhost`.
    const running: IscsiTarget[] = [];
    try {
      for (const t of targets) {
        const image = path.join(dir, `${t}.img`);
        const fd = fs.openSync(image, 'w');
        writePattern(fd, size);
        fs.closeSync(fd);
        running.push(await startTarget(t, dir, image));
      }
      for (const w of ISCSI_WORKLOADS) {
        for (const target of running) {
          const t = target.name;
          const r = await runLoad(bin, target.url, w, seconds, size).catch((e: Error) => {
            throw new Error(`${t}: ${e.message}${target.log() ? `\n${t} log: ${target.log()}` : ''}`);
          });
          const row: IscsiRow = { target: t, workload: w.name, iops: Math.round(r.iops), mbps: Math.round(r.mbps), p50_us: Math.round(r.p50_us), p99_us: Math.round(r.p99_us) };
          rows.push(row);
          if (o.json) out(JSON.stringify(row));
          else out(`${t.padEnd(10)} ${w.name.padEnd(18)} ${String(row.iops).padStart(8)} IOPS ${String(row.mbps).padStart(6)} MB/s  p50 ${row.p50_us} us  p99 ${row.p99_us} us`);
        }
      }
    } finally {
      for (const target of running) await target.stop();
    }
  });
  // One ratio line per workload: twindisk over the tgt measured in this run (the first tgt row set).
  const peer = targets.find((t) => t.startsWith('tgt'));
  const self = targets.includes('twindisk') ? 'twindisk' : targets.length > 1 && peer ? targets.find((t) => t !== peer) : undefined;
  if (self && peer) {
    if (!o.json) out(`\nratio ${self} / ${peer} (IOPS; latency ratios below 1 are ${self} faster):`);
    for (const w of ISCSI_WORKLOADS) {
      const a = rows.find((r) => r.target === self && r.workload === w.name);
      const b = rows.find((r) => r.target === peer && r.workload === w.name);
      if (!a || !b) continue;
      const x = (p: number, q: number) => Math.round((p / q) * 100) / 100;
      const ratio = { ratio: `${self}/${peer}`, workload: w.name, iops: x(a.iops, b.iops), mbps: x(a.mbps, b.mbps), p50_us: x(a.p50_us, b.p50_us), p99_us: x(a.p99_us, b.p99_us) };
      if (o.json) out(JSON.stringify(ratio));
      else out(`  ${w.name.padEnd(18)} ${ratio.iops.toFixed(2)}x  (p50 ${ratio.p50_us.toFixed(2)}x, p99 ${ratio.p99_us.toFixed(2)}x)`);
    }
  }
  return rows;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const arg = (name: string) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1] : undefined;
  };
  const targets = arg('--targets')?.split(',') as IscsiBenchTarget[] | undefined;
  const bad = targets?.find((t) => !(ISCSI_BENCH_TARGETS as readonly string[]).includes(t));
  if (bad) {
    process.stderr.write(`bench iscsi: unknown target ${bad} (known: ${ISCSI_BENCH_TARGETS.join(', ')})\n`);
    process.exit(2);
  }
  const secs = arg('--seconds');
  runIscsiBench({ json: process.argv.includes('--json'), quick: process.argv.includes('--quick'), targets, seconds: secs ? Number(secs) : undefined }).catch((e) => {
    process.stderr.write(`bench iscsi: ${e.message}\n`);
    process.exit(1);
  });
}
