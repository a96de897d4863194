// `twindisk bench migrate`: live migration of a writing guest with a vhost-user-blk disk, twindisk against qemu-storage-daemon: downtime and total time.
//
// Each run boots the same guest (QEMU under TCG, the test initramfs) on the target's socket, lets it
// write continuously (O_DIRECT, so the disk is busy during the switch-over), starts a destination
// QEMU with -incoming on the target's second socket (twindisk serve: the same socket; a second
// front-end is served beside the first), migrates with the same parameters for every target, and
// takes QEMU's own figures from query-migrate.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../test/harness/cluster.js';
import { Guest } from '../test/harness/guest.js';
import { median } from './pattern.js';
import { requireQemuStorageDaemon, startQemuStorageDaemon } from './qemu-storage-daemon.js';

export interface MigrateBenchOptions {
  json: boolean;
  quick?: boolean;
  /** Guest RAM in MiB (default 1024; 256 with quick). */
  memoryMiB?: number;
  /** Migrations per target, alternating between targets (default 5; 1 with quick). */
  runs?: number;
  targets?: string[];
  out?: (line: string) => void;
}

export interface MigrateRow {
  target: string;
  workload: string;
  downtime_ms: number;
  total_ms: number;
}

export const MIGRATE_TARGETS = ['twindisk', 'qemu-storage-daemon'];
const WORKLOAD = 'dd-64k-direct-write';
/** Migration parameters, the same for every target: bandwidth high enough that the link is not what is measured. */
const PARAMETERS = { 'max-bandwidth': 1 << 30, 'downtime-limit': 300 };

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The guest: rewrites the first 128 MiB of its disk with O_DIRECT 64 KiB writes, forever. */
const SCRIPT = `
  echo "writing"
  while :; do dd if=/dev/zero of=/dev/vda bs=64k count=2048 oflag=direct 2>/dev/null || echo "WRITEFAIL"; done
`;

/** A back-end serving `image`; the source QEMU connects to `sockets[0]`, the destination to `sockets[1]`. */
function startTarget(target: string, image: string, dir: string): { child: ChildProcess; sockets: [string, string] } {
  if (target === 'twindisk') {
    const socket = path.join(dir, 'twindisk.sock');
    const child = spawn(process.execPath, [path.join(root, 'dist', 'cli', 'twindisk.js'), 'serve', '--image', image, '--socket', socket], {
      stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, TWINDISK_LOG_LEVEL: 'warn' },
    });
    return { child, sockets: [socket, socket] };
  }
  // qemu-storage-daemon serves one front-end per export: the destination gets a second export of the same node.
  const a = path.join(dir, 'qsd-src.sock');
  const b = path.join(dir, 'qsd-dst.sock');
  const child = startQemuStorageDaemon(image, [{ id: 'src', socket: a }, { id: 'dst', socket: b }]);
  return { child, sockets: [a, b] };
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

interface QueryMigrate { status: string; downtime?: number; 'total-time'?: number; 'error-desc'?: string; ram?: { 'downtime-bytes'?: number } }

/** One migration of a writing guest from `sockets[0]` to `sockets[1]`. */
async function migrateOnce(sockets: [string, string], memoryMiB: number): Promise<{ downtime: number; total: number; downtimeBytes: number }> {
  const guest = { memoryMiB, script: SCRIPT, qmp: true, timeoutMs: 30 * 60_000 };
  const src = await Guest.launch({ ...guest, disks: [{ socket: sockets[0] }] });
  let dst: Guest | null = null;
  try {
    await src.waitFor(/writing/, 10 * 60_000);
    await new Promise((r) => setTimeout(r, 3000)); // writes under way
    const port = await freePort();
    dst = await Guest.launch({ ...guest, disks: [{ socket: sockets[1] }], extraArgs: ['-incoming', `tcp:127.0.0.1:${port}`] });
    await src.qmp!.execute('migrate-set-parameters', PARAMETERS);
    await src.qmp!.execute('migrate', { uri: `tcp:127.0.0.1:${port}` });
    for (;;) {
      const m = await src.qmp!.execute<QueryMigrate>('query-migrate');
      if (m.status === 'completed') {
        if (/WRITEFAIL/.test(src.output + dst.output)) throw new Error('the guest saw a write fail');
        return { downtime: m.downtime ?? NaN, total: m['total-time'] ?? NaN, downtimeBytes: m.ram?.['downtime-bytes'] ?? NaN };
      }
      if (m.status === 'failed' || m.status === 'cancelled') throw new Error(`migration ${m.status}: ${m['error-desc'] ?? 'no reason given'}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    await src.kill();
    await dst?.kill();
  }
}

/** Migrates a writing guest `runs` times per target; prints one row per migration, the medians and their ratio. */
export async function runMigrateBench(o: MigrateBenchOptions): Promise<MigrateRow[]> {
  const out = o.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const memoryMiB = o.memoryMiB ?? (o.quick ? 256 : 1024);
  const runs = o.runs ?? (o.quick ? 1 : 5);
  const targets = o.targets ?? MIGRATE_TARGETS;
  if (targets.includes('qemu-storage-daemon')) requireQemuStorageDaemon('run with only twindisk');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-bench-migrate-'));
  const rows: MigrateRow[] = [];
  const medians = new Map<string, { downtime: number; total: number }>();
  const started: { target: string; child: ChildProcess; sockets: [string, string] }[] = [];
  try {
    // Every target serves an image of its own the whole time, and the runs alternate between them,
    // so a load that comes and goes on the machine falls on all alike.
    for (const target of targets) {
      const image = path.join(dir, `${target}.img`);
      fs.writeFileSync(image, Buffer.alloc(0));
      fs.truncateSync(image, 256 << 20);
      const t = { target, ...startTarget(target, image, dir) };
      started.push(t);
      await waitForSocket(t.sockets[1], t.child);
    }
    const mine = new Map<string, MigrateRow[]>(targets.map((t) => [t, []]));
    for (let i = 0; i < runs; i++) {
      for (const { target, sockets } of started) {
        const m = await migrateOnce(sockets, memoryMiB);
        const r = { target, workload: `${WORKLOAD}-${memoryMiB}m`, downtime_ms: m.downtime, total_ms: m.total };
        mine.get(target)!.push(r);
        rows.push(r);
        if (o.json) out(JSON.stringify(r));
        else {
          out(`${target.padEnd(20)} ${r.workload.padEnd(26)} downtime ${String(r.downtime_ms).padStart(5)} ms  total ${String(r.total_ms).padStart(6)} ms`
            + `  (${(m.downtimeBytes / 1e6).toFixed(1)} MB sent while stopped)`);
        }
      }
    }
    for (const [target, rs] of mine) {
      medians.set(target, { downtime: median(rs.map((r) => r.downtime_ms)), total: median(rs.map((r) => r.total_ms)) });
    }
  } finally {
    for (const { child } of started) {
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)));
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const t = medians.get('twindisk');
  const q = medians.get('qemu-storage-daemon');
  if (!o.json) {
    for (const [target, m] of medians) out(`median ${target.padEnd(20)} downtime ${m.downtime} ms  total ${m.total} ms  (${runs} runs)`);
    if (t && q) out(`ratio twindisk / qemu-storage-daemon: downtime ${(t.downtime / q.downtime).toFixed(2)}x  total ${(t.total / q.total).toFixed(2)}x`);
  }
  return rows;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  await runMigrateBench({ json: process.argv.includes('--json'), quick: process.argv.includes('--quick') });
}
