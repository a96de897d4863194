// `twindisk bench guest`: the throughput a real guest sees on a vhost-user-blk disk, twindisk (adaptive, fixed and no
// polling) against qemu-storage-daemon.
//
// What is measured: each run boots the project's test guest (QEMU under TCG, 1 vCPU, the test initramfs) on a
// target's socket; the guest runs `dd` with O_DIRECT on /dev/vda — 1 MiB sequential reads, then 1 MiB sequential
// writes — timing each with the guest kernel's monotonic clock (/proc/timer_list; /proc/uptime's centiseconds
// are too coarse for a 64 MiB run that takes a tenth of a second), and the host turns that into MB/s. The host also takes
// the back-end's CPU time (/proc/PID/stat) from the guest's console line that starts a workload to the one that
// ends it. No random 4 KiB workload: the guest has no I/O tool but busybox dd, and a shell loop of one-block dd
// commands measures process start-up under TCG, not the disk.
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
// machine falls on all alike. One QEMU runs at a time.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Guest } from '../test/harness/guest.js';

export interface GuestBenchOptions {
  json: boolean;
  quick?: boolean;
  /** Guest boots per target, alternating between targets (default 5; 1 with quick). */
  runs?: number;
  targets?: string[];
  /** MiB each workload moves (default 256; 64 with quick). */
  mib?: number;
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
/** Each target's image: larger than what a workload moves, so the reads never run past its end. */
const IMAGE_SIZE = 512 << 20;
const REFERENCE = 'qemu-storage-daemon';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * The guest's script: each workload between a BEGIN and an END line, the END line carrying the clock before and
 * after it; a failed dd prints FAIL with its message; the kernel's I/O errors are reported at the end. Exits 1 if
 * anything failed. The clock is the kernel's monotonic clock in ns from /proc/timer_list ("now at N nsecs"), or
 * /proc/uptime (10 ms) where the guest kernel lacks that file; both are read with the shell's own `read`, so
 * taking the time starts no process (a fork costs milliseconds under TCG).
 */
export function guestScript(mib: number): string {
  return `
if [ -r /proc/timer_list ] && grep -q '^now at [0-9]* nsecs' /proc/timer_list; then
  clock=ns
  now() { { read -r _; read -r _; read -r _ _ t _; } </proc/timer_list; }
else
  clock=uptime
  now() { read -r t _ </proc/uptime; }
fi
rc=0
run() {
  name=$1; shift
  echo "TDBENCH-BEGIN $name"
  now; a=$t
  if "$@" 2>/tmp/dd.err; then
    now; b=$t
    if grep -q "^${mib}+0 records out" /tmp/dd.err; then
      echo "TDBENCH-END $name $clock $a $b"
    else
      echo "TDBENCH-FAIL $name: short transfer: $(tr '\\n' ' ' </tmp/dd.err)"
      rc=1
    fi
  else
    echo "TDBENCH-FAIL $name: $(tr '\\n' ' ' </tmp/dd.err)"
    rc=1
  fi
}
run seqread-1m dd if=/dev/vda of=/dev/null bs=1M count=${mib} iflag=direct
run seqwrite-1m dd if=/dev/zero of=/dev/vda bs=1M count=${mib} oflag=direct
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
    // The same as bench migrate: the file protocol driver straight on the image, io_uring, page cache on
    // (cache.direct=off, as twindisk), writable.
    return spawn('qemu-storage-daemon', [
      '--blockdev', `driver=file,node-name=file0,filename=${image},aio=io_uring,cache.direct=off`,
      '--export', `type=vhost-user-blk,id=exp0,node-name=file0,addr.type=unix,addr.path=${socket},writable=on`,
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
  }
  throw new Error(`unknown target ${target}`);
}

async function waitForSocket(p: string, child: ChildProcess): Promise<void> {
  let err = '';
  child.stderr?.on('data', (d) => (err += d));
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`the target exited (${child.exitCode}): ${err}`);
    if (fs.existsSync(p)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no socket at ${p} after 10 s: ${err}`);
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

/** One guest boot on `socket`: every workload once; MB/s, guest time and back-end CPU per workload. */
async function runOnce(socket: string, backendPid: number, mib: number): Promise<Map<string, { mbps: number; seconds: number; cpu: number }>> {
  const cpuAt = new Map<string, number>();
  const cpu = new Map<string, number>();
  const log = (line: string) => {
    const b = /TDBENCH-BEGIN (\S+)/.exec(line);
    if (b) cpuAt.set(b[1]!, cpuSeconds(backendPid));
    const e = /TDBENCH-END (\S+)/.exec(line);
    if (e && cpuAt.has(e[1]!)) cpu.set(e[1]!, cpuSeconds(backendPid) - cpuAt.get(e[1]!)!);
  };
  const guest = await Guest.launch({ script: guestScript(mib), disks: [{ socket }], cpus: 1, timeoutMs: 20 * 60_000, log });
  let result;
  try {
    result = await guest.wait();
  } finally {
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

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** Boots a guest `runs` times per target, alternating; prints one row per workload and run, the medians and the ratios to qemu-storage-daemon. */
export async function runGuestBench(o: GuestBenchOptions): Promise<GuestRow[]> {
  const out = o.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const runs = o.runs ?? (o.quick ? 1 : 5);
  const mib = o.mib ?? (o.quick ? 64 : 256);
  const targets = o.targets ?? GUEST_TARGETS;
  const unknown = targets.find((t) => !GUEST_TARGETS.includes(t));
  if (unknown !== undefined) throw new Error(`unknown target '${unknown}' (known: ${GUEST_TARGETS.join(', ')})`);
  if (mib * 2 ** 20 > IMAGE_SIZE) throw new Error(`${mib} MiB per workload is more than the ${IMAGE_SIZE >> 20} MiB image`);
  if (targets.includes(REFERENCE) && spawnSync('qemu-storage-daemon', ['--version']).status !== 0) {
    throw new Error('qemu-storage-daemon is not installed: apt-get install qemu-system-x86 (Debian ships it there), or run with only twindisk targets');
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-bench-guest-'));
  const rows: GuestRow[] = [];
  const started: { target: string; child: ChildProcess; socket: string }[] = [];
  try {
    for (const target of targets) {
      const image = path.join(dir, `${target}.img`);
      writeImage(image, IMAGE_SIZE);
      const socket = path.join(dir, `${target}.sock`);
      const t = { target, child: startTarget(target, image, socket), socket };
      started.push(t);
      await waitForSocket(socket, t.child);
    }
    for (let i = 1; i <= runs; i++) {
      for (const { target, child, socket } of started) {
        const res = await runOnce(socket, child.pid!, mib);
        for (const [workload, m] of res) {
          const r: GuestRow = {
            target, workload, run: i, mbps: Math.round(m.mbps * 10) / 10, seconds: Math.round(m.seconds * 1000) / 1000,
            backend_cpu_s: Math.round(m.cpu * 100) / 100,
          };
          rows.push(r);
          if (o.json) out(JSON.stringify(r));
          else {
            out(`${target.padEnd(20)} ${workload.padEnd(12)} run ${String(i).padStart(2)}  ${r.mbps.toFixed(1).padStart(7)} MB/s`
              + `  (${r.seconds.toFixed(3)} s in the guest, back-end CPU ${r.backend_cpu_s.toFixed(2)} s)`);
          }
        }
        // The back-end serves one front-end at a time: let it see this one go before the next connects.
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  } finally {
    for (const { child } of started) {
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(null) : child.once('exit', r)));
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
  if (!o.json) {
    out('');
    const med = (t: string, w: string) => {
      const rs = rows.filter((r) => r.target === t && r.workload === w);
      return { mbps: median(rs.map((r) => r.mbps)), cpu: median(rs.map((r) => r.backend_cpu_s)) };
    };
    for (const t of targets) {
      for (const w of GUEST_WORKLOADS) {
        const m = med(t, w);
        out(`median ${t.padEnd(20)} ${w.padEnd(12)} ${m.mbps.toFixed(1).padStart(7)} MB/s  back-end CPU ${m.cpu.toFixed(2)} s  (${runs} run${runs > 1 ? 's' : ''}, ${mib} MiB each)`);
      }
    }
    if (targets.includes(REFERENCE)) {
      for (const t of targets.filter((x) => x !== REFERENCE)) {
        out('');
        out(`ratio ${t} / ${REFERENCE} (median MB/s):`);
        for (const w of GUEST_WORKLOADS) out(`  ${w.padEnd(12)} ${(med(t, w).mbps / med(REFERENCE, w).mbps).toFixed(2)}x`);
      }
    }
  }
  return rows;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  await runGuestBench({ json: process.argv.includes('--json'), quick: process.argv.includes('--quick') });
}
