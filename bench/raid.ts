// `twindisk bench raid`: md-compatible arrays (raid1, raid5, raid6, raid10) over member files, against one plain
// file and the members' raw write rate measured in the same run; a degraded raid5 read and a rebuild.
//
// The arrays are driven in this process through the engine's RaidBackend over FileBackend members, with the
// array's md write-intent bitmap as its write intent, as `twindisk serve --raid` runs them (without the
// vhost-user front-end, whose cost `bench vhost` measures). Every write workload ends with a flush of every
// member, so the rates are of data on the disk, not in the page cache. FileBackend members are
// synchronous: one stripe's member writes follow each other on one thread. On this machine every member is a
// file on the same disk, so "the members' aggregate" is what the disk takes from all of them at once,
// measured with one writer thread per member.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Backend } from '../engine/backend.js';
import { FileBackend } from '../engine/file-backend.js';
import { IoVector } from '../engine/iovec.js';
import { NativeBuffer } from '../engine/os.js';
import { createArray, type MdArray } from '../engine/raid/array.js';
import { RaidBackend } from '../engine/raid/raid-backend.js';
import { blockPicker } from './pattern.js';

export interface RaidBenchOptions {
  json?: boolean;
  quick?: boolean;
  out?: (line: string) => void;
}

export interface RaidRow {
  level: string;
  workload: string;
  mbps: number;
  iops: number;
}

interface Shape {
  name: string;
  level: 1 | 5 | 6 | 10;
  members: number;
}

const SHAPES: Shape[] = [
  { name: 'raid1 (2)', level: 1, members: 2 },
  { name: 'raid5 (4+1)', level: 5, members: 5 },
  { name: 'raid6 (4+2)', level: 6, members: 6 },
  { name: 'raid10 (4)', level: 10, members: 4 },
];

const MIB = 1 << 20;
/** raid5 4+1 and raid6 4+2 with 256 KiB chunks: a 1 MiB write is exactly one full stripe. */
const CHUNK = 256 << 10;

function promised(run: (done: { complete(st: number): void }) => void): Promise<void> {
  return new Promise((resolve, reject) => run({ complete: (st) => (st === 0 ? resolve() : reject(new Error(`I/O failed with status ${st}`))) }));
}

/** A native (addressed) buffer, so file members write straight from it. */
function nativeBuffer(size: number): { buf: Uint8Array; addr: number; nb: NativeBuffer } {
  const nb = new NativeBuffer(size);
  for (let i = 0; i < size; i += 4096) nb.u8.fill((i / 4096) & 255, i, Math.min(size, i + 4096));
  return { buf: nb.u8, addr: nb.addr, nb };
}

function memberFiles(dir: string, n: number, bytes: number, tag: string): string[] {
  return Array.from({ length: n }, (_, i) => {
    const f = path.join(dir, `${tag}-${i}.img`);
    fs.rmSync(f, { force: true });
    const fd = fs.openSync(f, 'w');
    fs.ftruncateSync(fd, bytes);
    fs.closeSync(fd);
    return f;
  });
}

/** Writes `bytes` to each of `files` in 1 MiB pieces, one worker thread per file, each ending with fdatasync; MB/s of all together. */
async function parallelRawWrite(files: string[], bytes: number): Promise<number> {
  const src = `const { workerData, parentPort } = require('node:worker_threads'); const fs = require('node:fs');
    const fd = fs.openSync(workerData.file, 'r+'); const b = Buffer.alloc(1 << 20, 0x5a);
    for (let o = 0; o < workerData.bytes; o += b.length) fs.writeSync(fd, b, 0, b.length, o);
    fs.fdatasyncSync(fd); fs.closeSync(fd); parentPort.postMessage('done');`;
  const t0 = performance.now();
  await Promise.all(files.map((file) => new Promise<void>((resolve, reject) => {
    const w = new Worker(src, { eval: true, workerData: { file, bytes } });
    w.once('message', () => resolve());
    w.once('error', reject);
  })));
  return (files.length * bytes) / ((performance.now() - t0) / 1000) / 1e6;
}

interface Measured {
  mbps: number;
  iops: number;
}

/** Runs `ops` requests of `len` bytes (sequential from 0, or random `len`-aligned) through `b`, then flushes. */
async function drive(b: Backend, write: boolean, len: number, random: boolean, ops: number, span: number, flushAll: () => Promise<void>): Promise<Measured> {
  const { buf, addr, nb } = nativeBuffer(len);
  const iov = new IoVector(1);
  const pick = blockPicker(random, Math.floor(span / len));
  const t0 = performance.now();
  for (let i = 0; i < ops; i++) {
    const at = random ? pick() * len : (i * len) % span;
    iov.reset();
    iov.push(buf, 0, len, addr);
    await promised((done) => (write ? b.write(iov, at, false, done) : b.read(iov, at, done)));
  }
  if (write) await flushAll();
  const s = (performance.now() - t0) / 1000;
  nb.free();
  return { mbps: Math.round((ops * len) / s / 1e6), iops: Math.round(ops / s) };
}

export async function runRaidBench(o: RaidBenchOptions = {}): Promise<RaidRow[]> {
  const out = o.out ?? ((l: string) => console.log(l));
  const memberBytes = (o.quick ? 64 : 256) * MIB;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-bench-raid-'));
  const rows: RaidRow[] = [];
  const emit = (r: RaidRow) => {
    rows.push(r);
    out(o.json ? JSON.stringify(r) : `${r.level.padEnd(14)} ${r.workload.padEnd(22)} ${String(r.mbps).padStart(6)} MB/s ${String(r.iops).padStart(8)} IOPS`);
  };
  const seqOps = (span: number) => Math.floor(span / MIB);
  const randOps = o.quick ? 2000 : 20000;
  try {
    // Ceilings: one plain file through the same FileBackend, and every member of the widest array at once.
    const [plainFile] = memberFiles(dir, 1, memberBytes, 'plain');
    const plain = new FileBackend({ path: plainFile! });
    const flushPlain = () => promised((d) => plain.flush(d));
    const plainRows: [string, boolean, number, boolean][] = [['seq-write-1M', true, MIB, false], ['seq-read-1M', false, MIB, false], ['rand-write-4K', true, 4096, true], ['rand-read-4K', false, 4096, true]];
    const plainRate = new Map<string, number>();
    for (const [workload, write, len, random] of plainRows) {
      const m = await drive(plain, write, len, random, random ? randOps : seqOps(memberBytes), memberBytes, flushPlain);
      plainRate.set(workload, m.mbps);
      emit({ level: 'file', workload, ...m });
    }
    plain.close();
    const aggregateFiles = memberFiles(dir, 6, memberBytes, 'raw');
    const aggregate = Math.round(await parallelRawWrite(aggregateFiles, memberBytes));
    emit({ level: 'members-raw', workload: 'seq-write-1M x6', mbps: aggregate, iops: 0 });
    for (const f of aggregateFiles) fs.rmSync(f);

    const ratios: string[] = [];
    for (const shape of SHAPES) {
      const files = memberFiles(dir, shape.members, memberBytes, `r${shape.level}`);
      const backends = files.map((f) => new FileBackend({ path: f }));
      const array: MdArray = await createArray(files.map((f, i) => ({ name: f, backend: backends[i]! })), {
        level: shape.level, ...(shape.level === 1 ? {} : { chunkBytes: CHUNK }), bitmap: 'internal', assumeClean: true,
      });
      await array.recordDirty();
      const raid = new RaidBackend({
        geometry: array.geometry, members: array.slots.map((m) => m?.backend ?? null), dataOffset: array.dataOffset,
        componentBytes: array.componentBytes, intent: array.bitmap ?? undefined, onMemberFailed: (slot, reason) => array.memberFailed(slot, reason),
      });
      const span = raid.info.size;
      const flushAll = () => promised((d) => raid.flush(d));
      for (const [workload, write, len, random] of plainRows) {
        const m = await drive(raid, write, len, random, random ? randOps : seqOps(span), span, flushAll);
        emit({ level: shape.name, workload, ...m });
        if (shape.level === 5 && workload === 'seq-write-1M') {
          ratios.push(`raid5 full-stripe writes: ${(m.mbps / ((shape.members - 1) * plainRate.get('seq-write-1M')!)).toFixed(2)}x of 4 x one file's write rate (goal 0.8x); ${(m.mbps / aggregate).toFixed(2)}x of the members' aggregate`);
        }
        if (shape.level === 5 && workload === 'seq-read-1M') {
          // Degraded: member 0 fails; every stripe's chunk on it is rebuilt from the others when read.
          raid.failMember(0, 'bench: degraded read');
          const d = await drive(raid, false, MIB, false, seqOps(span), span, flushAll);
          emit({ level: shape.name, workload: 'degraded-seq-read-1M', ...d });
          ratios.push(`raid5 degraded reads: ${(d.mbps / m.mbps).toFixed(2)}x of healthy (goal 0.5x)`);
          // Rebuild onto a fresh member, then back to healthy for the rest.
          const [fresh] = memberFiles(dir, 1, memberBytes, 'fresh');
          const nb = new FileBackend({ path: fresh! });
          const t0 = performance.now();
          await raid.rebuild(0, nb);
          await promised((dn) => nb.flush(dn));
          const s = (performance.now() - t0) / 1000;
          const rate = Math.round(array.componentBytes / s / 1e6);
          emit({ level: shape.name, workload: 'rebuild', mbps: rate, iops: 0 });
          ratios.push(`raid5 rebuild: ${(rate / plainRate.get('seq-write-1M')!).toFixed(2)}x of one file's write rate (goal 0.8x)`);
        }
      }
      raid.close();
      array.close();
      for (const f of files) fs.rmSync(f, { force: true });
    }
    if (!o.json) {
      out('');
      for (const r of ratios) out(r);
    }
    return rows;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
