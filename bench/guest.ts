// `twindisk bench guest`: the throughput a real guest sees on a vhost-user-blk disk, twindisk (adaptive, fixed and no
// polling) against qemu-storage-daemon.
//
// What is measured: each run boots the project's test guest (QEMU under TCG, 1 vCPU, the test initramfs) on a
// target's socket; the guest runs `dd` with O_DIRECT on /dev/vda — 1 MiB sequential reads, then 1 MiB sequential
// writes. Each workload moves 2 GiB by default (256 MiB with quick): as many passes over the 512 MiB disk as that
// takes (one dd per pass, each from the start of the disk), timed as a whole, so a workload lasts seconds of guest
// time and not the tenths of a second where scheduling noise on the host doubled or halved a run's figure. The
// clock is the guest kernel's monotonic clock (/proc/timer_list; /proc/uptime's centiseconds where that is
// missing), read before the first pass and after the last; the few milliseconds each extra dd takes to start
// under TCG are in the time, so the figures are slightly low, alike for every target. The host turns that into
// MB/s and takes the back-end's CPU time (/proc/PID/stat) from the guest's console line that starts a workload to
// the one that ends it. No random 4 KiB workload: the guest has no I/O tool but busybox dd, and a shell loop of
// one-block dd commands measures process start-up under TCG, not the disk.
//
// Why a real guest: the back-end's queue workers busy-poll their ring for a while after work (--poll-us), which
// pays when the next request comes within the window. The driver of `bench vhost` answers within microseconds
// and costs nothing while it waits; a guest's vCPU is a thread that needs a core to make the next request, and on
// a small host (2 cores here: QEMU's vCPU and I/O threads, the back-end's threads) the core a worker spins on can
// be the one the vCPU wanted. Adaptive polling (the default) is meant to stop spinning when the guest cannot
// answer that soon; fixed polling always spins --poll-us; no polling never does. qemu-storage-daemon is the
// reference, run as an expert would: the file driver on the image, aio=io_uring, page cache on.
//
// Every target serves an image of its own, written with non-zero data and read once on the host (page cache
// warm), for the whole bench, and the runs alternate between targets, so a load that comes and goes on the
// machine falls on all alike. One QEMU runs at a time, and a run starts only once the previous guest's QEMU has
// exited and the target has closed its end of that guest's connection (qemu-storage-daemon serves one front-end
// per export and accepts the next only after it has torn the last one down), then a short settle. Every run has a
// time limit (3 minutes for 2 GiB per workload, longer in proportion for more): past it the guest is killed and
// the bench fails naming the target, the run and how far the guest got. A progress line on stderr marks the start
// of each run.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Guest } from '../test/harness/guest.js';
import { median } from './pattern.js';
import { requireQemuStorageDaemon, startQemuStorageDaemon } from './qemu-storage-daemon.js';

export interface GuestBenchOptions {
  json: boolean;
  quick?: boolean;
  /** Guest boots per target, alternating between targets (default 5; 1 with quick). */
  runs?: number;
  targets?: string[];
  /**
   * MiB each workload moves, in passes over the 512 MiB disk (default 2048; 256 with quick; the environment's
   * TWINDISK_BENCH_GUEST_MIB, when set, before those).
   */
  mib?: number;
  /** Time limit of one run (guest boot to QEMU's exit) in ms (default 3 minutes for 2 GiB per workload, in proportion for more). */
  runTimeoutMs?: number;
  /** Progress lines (default: to stderr). */
  progress?: (line: string) => void;
  out?: (line: string) => void;
}

export interface GuestRow {
  target: string;
  workload: string;
  /** 1-based run number. */
  run: number;
  mbps: number;
  /** The workload's time in the guest's monotonic clock (ns resolution; 10 ms where only /proc/uptime is there). */
  seconds: number;
  /** The back-end process's CPU time (user + system) while the workload ran, seen from the guest's console. */
  backend_cpu_s: number;
}

export const GUEST_TARGETS = ['twindisk', 'twindisk-fixed-poll', 'twindisk-no-poll', 'qemu-storage-daemon'];
export const GUEST_WORKLOADS = ['seqread-1m', 'seqwrite-1m'];
/** Each target's image: a workload moves more than this in passes over it, each from its start. */
const IMAGE_SIZE = 512 << 20;
const DEFAULT_MIB = 2048;
const QUICK_MIB = 256;
/** A run's time limit for DEFAULT_MIB per workload: boot, both workloads (seconds each) and power-off need well under a minute under TCG. */
const RUN_TIMEOUT_MS = 3 * 60_000;
/** How long a target may take to close its end of the previous guest's connection after that QEMU exited. */
const RELEASE_TIMEOUT_MS = 30_000;
/** The pause after that, before the next guest connects. */
const SETTLE_MS = 500;
const REFERENCE = 'qemu-storage-daemon';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The dd counts of the passes that move `mib` MiB over a disk of `diskMib` MiB: full passes, then the rest. */
export function passCounts(mib: number, diskMib = IMAGE_SIZE >> 20): number[] {
  const counts: number[] = [];
  for (let left = mib; left > 0; left -= diskMib) counts.push(Math.min(left, diskMib));
  return counts;
}

/**
 * The guest's script: each workload between a BEGIN and an END line, the END line carrying the clock before its
 * first pass and after its last; a failed or short dd prints FAIL with its message; the kernel's I/O errors are
 * reported at the end. Exits 1 if anything failed. The clock is the kernel's monotonic clock in ns from
 * /proc/timer_list ("now at N nsecs"), or /proc/uptime (10 ms) where the guest kernel lacks that file; both are
 * read with the shell's own `read`, so taking the time starts no process (a fork costs milliseconds under TCG).
 * Each pass's dd writes its report to a file of its own, checked after the clock has stopped.
 */
export function guestScript(mib: number, diskMib = IMAGE_SIZE >> 20): string {
  const counts = passCounts(mib, diskMib).join(' ');
  return `
if [ -r /proc/timer_list ] && grep -q '^now at [0-9]* nsecs' /proc/timer_list; then
  clock=ns
  now() { { read -r _; read -r _; read -r _ _ t _; } </proc/timer_list; }
else
  clock=uptime
  now() { read -r t _ </proc/uptime; }
fi
seqread() { dd if=/dev/vda of=/dev/null bs=1M count=$1 iflag=direct; }
seqwrite() { dd if=/dev/zero of=/dev/vda bs=1M count=$1 oflag=direct; }
rc=0
run() {
  name=$1; fn=$2; err=; i=0
  echo "TDBENCH-BEGIN $name"
  now; a=$t
  for c in ${counts}; do
    i=$((i+1))
    if ! $fn $c 2>/tmp/dd.$i.err; then err="pass $i: $(tr '\\n' ' ' </tmp/dd.$i.err)"; break; fi
  done
  now; b=$t
  if [ -z "$err" ]; then
    i=0
    for c in ${counts}; do
      i=$((i+1))
      grep -q "^$c+0 records out" /tmp/dd.$i.err || { err="pass $i: short transfer: $(tr '\\n' ' ' </tmp/dd.$i.err)"; break; }
    done
  fi
  if [ -n "$err" ]; then
    echo "TDBENCH-FAIL $name: $err"
    rc=1
  else
    echo "TDBENCH-END $name $clock $a $b"
  fi
}
run seqread-1m seqread
run seqwrite-1m seqwrite
if dmesg | grep -qi 'i/o error'; then
  echo "TDBENCH-IOERROR $(dmesg | grep -i 'i/o error' | head -3 | tr '\\n' ' ')"
  rc=1
fi
exit $rc
`;
}

/** A back-end serving `image` on `socket`. */
function startTarget(target: string, image: string, socket: string): ChildProcess {
  if (target.startsWith('twindisk')) {
    const extra = target === 'twindisk-fixed-poll' ? ['--poll-mode', 'fixed'] : target === 'twindisk-no-poll' ? ['--poll-us', '0'] : [];
    if (target !== 'twindisk' && extra.length === 0) throw new Error(`unknown target ${target}`);
    return spawn(process.execPath, [path.join(root, 'dist', 'cli', 'twindisk.js'), 'serve', '--image', image, '--socket', socket, ...extra], {
      stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, TWINDISK_LOG_LEVEL: 'warn' },
    });
  }
  if (target === REFERENCE) {
    return startQemuStorageDaemon(image, [{ id: 'exp0', socket }]);
  }
  throw new Error(`unknown target ${target}`);
}

/** A started back-end: its process, socket and what it wrote to stderr so far. */
interface Target {
  target: string;
  child: ChildProcess;
  socket: string;
  stderr: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const gone = (c: ChildProcess) => c.exitCode !== null || c.signalCode !== null;

/** The Unix sockets bound to `p` (/proc/net/unix): listening ones, and the connections the listener has queued or accepted and not closed. */
function unixSocketsAt(p: string): { listening: number; connections: number } {
  let listening = 0;
  let connections = 0;
  for (const line of fs.readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || f.slice(7).join(' ') !== p) continue;
    // Flags 0x10000 is __SO_ACCEPTCON (a listening socket), St 01 unconnected; an accepted connection carries the listener's address.
    if ((parseInt(f[3]!, 16) & 0x10000) !== 0 && f[5] === '01') listening++;
    else connections++;
  }
  return { listening, connections };
}

/** Waits (up to 10 s) until the target listens on its socket. */
async function waitForListening(t: Target): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (gone(t.child)) throw new Error(`${t.target} exited (${t.child.exitCode ?? t.child.signalCode}) before it listened: ${t.stderr.trim()}`);
    if (unixSocketsAt(t.socket).listening > 0) return;
    await sleep(50);
  }
  throw new Error(`${t.target} did not listen on ${t.socket} within 10 s: ${t.stderr.trim()}`);
}

/**
 * Waits until `t` is ready for a new front-end: it still runs and listens, and has closed its end of every earlier
 * connection (the previous guest's QEMU has exited by now; qemu-storage-daemon serves one front-end per export
 * and takes the next only once it has torn the last one down); then lets it settle for SETTLE_MS.
 */
async function waitUntilReady(t: Target): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    if (gone(t.child)) throw new Error(`the target exited (${t.child.exitCode ?? t.child.signalCode}): ${t.stderr.trim()}`);
    const s = unixSocketsAt(t.socket);
    if (s.listening > 0 && s.connections === 0) break;
    if (Date.now() - t0 > RELEASE_TIMEOUT_MS) {
      throw new Error(s.listening === 0
        ? `the target no longer listens on ${t.socket}`
        : `the target still holds ${s.connections} connection(s) on ${t.socket} ${RELEASE_TIMEOUT_MS / 1000} s after the previous guest's QEMU exited`);
    }
    await sleep(50);
  }
  await sleep(SETTLE_MS);
}

/** How far a guest got, from its console. */
function guestStage(output: string): string {
  if (!/TWINDISK-READY/.test(output)) {
    return 'it never reached its script (still booting: QEMU may be waiting for the target\'s vhost-user answers as it sets up the disk)';
  }
  const begun = [...output.matchAll(/TDBENCH-BEGIN (\S+)/g)].map((m) => m[1]!);
  const open = begun.filter((w) => !new RegExp(`TDBENCH-(?:END|FAIL) ${w}\\b`).test(output));
  if (open.length > 0) return `it was in workload ${open[open.length - 1]} (a dd on the disk had not returned)`;
  if (begun.length === 0) return 'it had started its script but no workload';
  return 'it had finished its workloads (stuck powering off)';
}

/** The last `n` lines of a console. */
function tail(output: string, n = 15): string {
  if (output.trim() === '') return '  (nothing on the console)';
  return output.trimEnd().split('\n').slice(-n).map((l) => `  | ${l}`).join('\n');
}

/** Writes `size` bytes of non-zero data (each MiB its own byte, 1..255) and reads them back once, so the page cache holds them. */
function writeImage(image: string, size: number): void {
  const chunk = Buffer.alloc(1 << 20);
  const fd = fs.openSync(image, 'w+');
  try {
    for (let off = 0; off < size; off += chunk.length) {
      chunk.fill(((off >>> 20) % 255) + 1);
      fs.writeSync(fd, chunk, 0, Math.min(chunk.length, size - off), off);
    }
    for (let off = 0; off < size; off += chunk.length) fs.readSync(fd, chunk, 0, chunk.length, off);
  } finally {
    fs.closeSync(fd);
  }
}

/** CPU time (user + system, all threads) of process `pid` in seconds. */
function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100 on Linux)
}

/** One guest boot on `t`: every workload once; MB/s, guest time and back-end CPU per workload. Fails after `timeoutMs`, with the guest killed. */
async function runOnce(t: Target, mib: number, timeoutMs: number): Promise<Map<string, { mbps: number; seconds: number; cpu: number }>> {
  const cpuAt = new Map<string, number>();
  const cpu = new Map<string, number>();
  const backendPid = t.child.pid!;
  const log = (line: string) => {
    try {
      const b = /TDBENCH-BEGIN (\S+)/.exec(line);
      if (b) cpuAt.set(b[1]!, cpuSeconds(backendPid));
      const e = /TDBENCH-END (\S+)/.exec(line);
      if (e && cpuAt.has(e[1]!)) cpu.set(e[1]!, cpuSeconds(backendPid) - cpuAt.get(e[1]!)!);
    } catch { /* the back-end is gone: the run fails below */ }
  };
  // The harness's own limit is a backstop; this run's limit is the timer below, which says what the guest was doing.
  const guest = await Guest.launch({ script: guestScript(mib), disks: [{ socket: t.socket }], cpus: 1, timeoutMs: timeoutMs + 60_000, log });
  let timer: NodeJS.Timeout | undefined;
  let onTargetExit: (() => void) | undefined;
  const failed = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`the guest did not finish within ${Math.round(timeoutMs / 1000)} s and was killed; ${guestStage(guest.output)}. `
        + `Last console lines:\n${tail(guest.output)}`));
    }, timeoutMs);
    onTargetExit = () => reject(new Error(`the target exited (${t.child.exitCode ?? t.child.signalCode}) during the run: ${t.stderr.trim()}`));
    t.child.once('exit', onTargetExit);
  });
  failed.catch(() => undefined);
  let result;
  try {
    result = await Promise.race([guest.wait(), failed]);
  } finally {
    clearTimeout(timer);
    t.child.off('exit', onTargetExit!);
    await guest.kill();
  }
  const fail = /TDBENCH-(?:FAIL|IOERROR).*/.exec(result.output);
  if (fail) throw new Error(`the guest saw an I/O error: ${fail[0]}`);
  if (result.exitCode !== 0) throw new Error(`the guest script exited ${result.exitCode}; console:\n${result.output}`);
  const res = new Map<string, { mbps: number; seconds: number; cpu: number }>();
  for (const w of GUEST_WORKLOADS) {
    const m = new RegExp(`TDBENCH-END ${w} (ns|uptime) ([0-9.]+) ([0-9.]+)`).exec(result.output);
    if (!m) throw new Error(`the guest printed no result for ${w}; console:\n${result.output}`);
    const ns = m[1] === 'ns';
    // At least one tick of the clock, so a workload too short to time shows as "at least this fast".
    const seconds = Math.max(ns ? 1e-9 : 0.01, (Number(m[3]) - Number(m[2])) / (ns ? 1e9 : 1));
    res.set(w, { mbps: (mib * 2 ** 20) / 1e6 / seconds, seconds, cpu: cpu.get(w) ?? NaN });
  }
  return res;
}

/** Stops a target: SIGTERM, then SIGKILL if it has not exited within 5 s. */
async function stopTarget(t: Target): Promise<void> {
  if (gone(t.child)) return;
  const exited = new Promise((r) => t.child.once('exit', r));
  t.child.kill('SIGTERM');
  const timer = setTimeout(() => t.child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

/** MiB per workload: the option, else TWINDISK_BENCH_GUEST_MIB, else the default. */
function workloadMiB(o: GuestBenchOptions): number {
  const env = process.env.TWINDISK_BENCH_GUEST_MIB;
  const mib = o.mib ?? (env !== undefined && env !== '' ? Number(env) : o.quick ? QUICK_MIB : DEFAULT_MIB);
  if (!Number.isInteger(mib) || mib < 1) {
    throw new Error(`${o.mib !== undefined ? 'mib' : 'TWINDISK_BENCH_GUEST_MIB'} ${o.mib ?? env}: give a whole number of MiB of at least 1`);
  }
  return mib;
}

/**
 * Boots a guest `runs` times per target, alternating; prints one row per workload and run, the medians with the
 * spread of the runs (min-max), and the ratios to qemu-storage-daemon. Progress lines go to `o.progress` (stderr).
 */
export async function runGuestBench(o: GuestBenchOptions): Promise<GuestRow[]> {
  const out = o.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const progress = o.progress ?? ((l: string) => process.stderr.write(l + '\n'));
  const runs = o.runs ?? (o.quick ? 1 : 5);
  const mib = workloadMiB(o);
  const runTimeoutMs = o.runTimeoutMs ?? Math.round(RUN_TIMEOUT_MS * Math.max(1, mib / DEFAULT_MIB));
  const targets = o.targets ?? GUEST_TARGETS;
  const unknown = targets.find((t) => !GUEST_TARGETS.includes(t));
  if (unknown !== undefined) throw new Error(`unknown target '${unknown}' (known: ${GUEST_TARGETS.join(', ')})`);
  if (targets.includes(REFERENCE)) requireQemuStorageDaemon('run with only twindisk targets');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-bench-guest-'));
  const rows: GuestRow[] = [];
  const started: Target[] = [];
  const t0 = Date.now();
  try {
    for (const target of targets) {
      const image = path.join(dir, `${target}.img`);
      writeImage(image, IMAGE_SIZE);
      const socket = path.join(dir, `${target}.sock`);
      const t: Target = { target, child: startTarget(target, image, socket), socket, stderr: '' };
      t.child.stderr?.on('data', (d) => (t.stderr = (t.stderr + d).slice(-4000)));
      started.push(t);
      await waitForListening(t);
    }
    const passes = passCounts(mib).length;
    progress(`bench guest: ${targets.length} target${targets.length > 1 ? 's' : ''} x ${runs} run${runs > 1 ? 's' : ''}, `
      + `${mib} MiB per workload (${passes} pass${passes > 1 ? 'es' : ''} over the ${IMAGE_SIZE >> 20} MiB disk), at most ${Math.round(runTimeoutMs / 1000)} s per run`);
    for (let i = 1; i <= runs; i++) {
      for (const t of started) {
        const label = `${t.target}, run ${i} of ${runs}`;
        try {
          await waitUntilReady(t);
          progress(`bench guest: [${String(Math.round((Date.now() - t0) / 1000)).padStart(5)} s] ${label}: starting the guest`);
          const res = await runOnce(t, mib, runTimeoutMs);
          for (const [workload, m] of res) {
            const r: GuestRow = {
              target: t.target, workload, run: i, mbps: Math.round(m.mbps * 10) / 10, seconds: Math.round(m.seconds * 1000) / 1000,
              backend_cpu_s: Math.round(m.cpu * 100) / 100,
            };
            rows.push(r);
            if (o.json) out(JSON.stringify(r));
            else {
              out(`${t.target.padEnd(20)} ${workload.padEnd(12)} run ${String(i).padStart(2)}  ${r.mbps.toFixed(1).padStart(7)} MB/s`
                + `  (${r.seconds.toFixed(3)} s in the guest, back-end CPU ${r.backend_cpu_s.toFixed(2)} s)`);
            }
          }
        } catch (e) {
          throw new Error(`bench guest: ${label}: ${(e as Error).message}`);
        }
      }
    }
    progress(`bench guest: [${String(Math.round((Date.now() - t0) / 1000)).padStart(5)} s] all runs done`);
  } finally {
    for (const t of started) await stopTarget(t);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  if (!o.json) {
    out('');
    const stats = (t: string, w: string) => {
      const rs = rows.filter((r) => r.target === t && r.workload === w);
      const mbps = rs.map((r) => r.mbps);
      return { mbps: median(mbps), min: Math.min(...mbps), max: Math.max(...mbps), cpu: median(rs.map((r) => r.backend_cpu_s)) };
    };
    for (const t of targets) {
      for (const w of GUEST_WORKLOADS) {
        const m = stats(t, w);
        out(`median ${t.padEnd(20)} ${w.padEnd(12)} ${m.mbps.toFixed(1).padStart(7)} MB/s  min-max ${m.min.toFixed(1).padStart(7)}-${m.max.toFixed(1).padEnd(7)} MB/s`
          + ` (spread ${String(Math.round(((m.max - m.min) / m.mbps) * 100)).padStart(3)}% of the median)  back-end CPU ${m.cpu.toFixed(2)} s`
          + `  (${runs} run${runs > 1 ? 's' : ''}, ${mib} MiB each)`);
      }
    }
    if (targets.includes(REFERENCE)) {
      for (const t of targets.filter((x) => x !== REFERENCE)) {
        out('');
        out(`ratio ${t} / ${REFERENCE} (median MB/s):`);
        for (const w of GUEST_WORKLOADS) out(`  ${w.padEnd(12)} ${(stats(t, w).mbps / stats(REFERENCE, w).mbps).toFixed(2)}x`);
      }
    }
  }
  return rows;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  await runGuestBench({ json: process.argv.includes('--json'), quick: process.argv.includes('--quick') });
}
