// `twindisk bench raid --served`: one raid5 array served three ways, driven by the C vhost-user client: `serve --raid`, a one-node resource whose disk is the array (`up`), and `serve --image` of one plain file.
//
// What it answers: what the replication layer costs over an array (the node's engine hands every request
// to the array's own thread: two channel hops instead of one, see docs/architecture.md), and what the
// array costs over a plain file through the same vhost-user path. The array is raid5 over five member
// files (4+1, 256 KiB chunks: a 1 MiB write is one full stripe), created by `create-md` exactly as a
// user's node would have it; `serve --raid` then serves the same members. Targets alternate, run by
// run; each row is the median of its runs.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Cluster } from '../test/harness/cluster.js';
import { cli } from '../test/harness/serve.js';
import { median, type Workload } from './pattern.js';
import { runVhostLoad } from './vhost-load.js';

export interface RaidServedOptions {
  json?: boolean;
  quick?: boolean;
  /** Alternating runs of the three targets (default 3; 1 with quick). */
  runs?: number;
  out?: (line: string) => void;
}

export interface RaidServedRow {
  target: 'serve-image' | 'serve-raid' | 'node-raid';
  workload: string;
  iops: number;
  mbps: number;
  p99Us: number;
  runs: number[];
}

const WORKLOADS: Workload[] = [
  { name: 'randwrite-4k-qd32', write: true, random: true, bs: 4096, depth: 32 },
  { name: 'seqwrite-1m-qd4', write: true, random: false, bs: 1 << 20, depth: 4 },
  { name: 'randread-4k-qd32', write: false, random: true, bs: 4096, depth: 32 },
];

const MIB = 1 << 20;

async function waitForFile(p: string, ms = 30_000): Promise<void> {
  const t0 = Date.now();
  while (!fs.existsSync(p)) {
    if (Date.now() - t0 > ms) throw new Error(`${p} did not appear within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function stopChild(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise((r) => c.once('exit', r));
  c.kill('SIGTERM');
  await exited;
}

/** Starts `twindisk serve ...args` on `socket` and waits for it. */
async function serve(args: string[], socket: string): Promise<ChildProcess> {
  fs.rmSync(socket, { force: true });
  const child = spawn(process.execPath, [cli, 'serve', ...args, '--socket', socket], { stdio: 'ignore' });
  await waitForFile(socket);
  return child;
}

export async function runRaidServedBench(o: RaidServedOptions = {}): Promise<RaidServedRow[]> {
  const out = o.out ?? ((l: string) => console.log(l));
  const size = (o.quick ? 64 : 256) * MIB;
  const seconds = o.quick ? 2 : 5;
  const runs = o.runs ?? (o.quick ? 1 : 3);
  const c = await Cluster.create({ nodes: { solo: { disk: true, socket: true, raid: { level: 'raid5', members: 5, chunk: '256K' } } }, size });
  const solo = c.node('solo');
  const members = [0, 1, 2, 3, 4].map((k) => solo.member(k));
  const plain = path.join(c.dir, 'plain.img');
  const sock = path.join(c.dir, 'bench.sock');
  const raw: Record<RaidServedRow['target'], Map<string, { iops: number; mbps: number; p99Us: number }[]>> = {
    'serve-image': new Map(), 'serve-raid': new Map(), 'node-raid': new Map(),
  };
  const measure = async (target: RaidServedRow['target'], socket: string): Promise<void> => {
    for (const w of WORKLOADS) {
      const r = await runVhostLoad(socket, w, seconds, { size });
      const list = raw[target].get(w.name) ?? [];
      list.push({ iops: r.iops, mbps: r.mbps, p99Us: r.p99Us });
      raw[target].set(w.name, list);
    }
  };
  try {
    // Both volumes hold data before anything is measured: reads of holes would measure nothing.
    const fd = fs.openSync(plain, 'w');
    const chunk = Buffer.alloc(MIB, 0x5a);
    for (let off = 0; off < size; off += MIB) fs.writeSync(fd, chunk, 0, MIB, off);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    const fill = await serve(['--raid', members.join(',')], sock);
    try {
      await runVhostLoad(sock, { name: 'fill', write: true, random: false, bs: MIB, depth: 4 }, o.quick ? 3 : 6, { size });
    } finally {
      await stopChild(fill);
    }
    for (let run = 0; run < runs; run++) {
      let child = await serve(['--image', plain], sock);
      try {
        await measure('serve-image', sock);
      } finally {
        await stopChild(child);
      }
      child = await serve(['--raid', members.join(',')], sock);
      try {
        await measure('serve-raid', sock);
      } finally {
        await stopChild(child);
      }
      await solo.start();
      try {
        await waitForFile(solo.socket);
        await measure('node-raid', solo.socket);
      } finally {
        await solo.stop('SIGTERM');
      }
    }
    const rows: RaidServedRow[] = [];
    for (const target of ['serve-image', 'serve-raid', 'node-raid'] as const) {
      for (const w of WORKLOADS) {
        const list = raw[target].get(w.name)!;
        const row: RaidServedRow = {
          target, workload: w.name, iops: Math.round(median(list.map((x) => x.iops))), mbps: Math.round(median(list.map((x) => x.mbps))),
          p99Us: Math.round(median(list.map((x) => x.p99Us))), runs: list.map((x) => Math.round(x.iops)),
        };
        rows.push(row);
        out(o.json ? JSON.stringify(row) : `${target.padEnd(12)} ${w.name.padEnd(18)} ${String(row.iops).padStart(8)} IOPS ${String(row.mbps).padStart(6)} MB/s  p99 ${String(row.p99Us).padStart(6)} µs  runs ${row.runs.join(',')}`);
      }
    }
    if (!o.json) {
      out('');
      for (const w of WORKLOADS) {
        const get = (t: RaidServedRow['target']) => rows.find((r) => r.target === t && r.workload === w.name)!.iops;
        out(`${w.name}: node on raid5 ${(get('node-raid') / get('serve-raid')).toFixed(2)}x of serve --raid; serve --raid ${(get('serve-raid') / get('serve-image')).toFixed(2)}x of serve --image`);
      }
    }
    return rows;
  } finally {
    await c.stopAll('SIGKILL');
    fs.rmSync(c.dir, { recursive: true, force: true });
  }
}
