// Live migration of real QEMU guests with a vhost-user-blk disk: on one `twindisk serve` (source and destination QEMU on the same socket), and between the two Primaries of a replicated resource.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { Cluster, freePort, sleep } from '../../harness/cluster.js';
import { Guest } from '../../harness/guest.js';
import { runCli, serve, tmpDir, type Served } from '../../harness/serve.js';

/**
 * Every back-end this file starts (serve, cluster nodes: they inherit the environment) writes down the
 * guest pages it marks in the dirty log (queue-worker.ts, TWINDISK_DIRTY_LOG_AUDIT).
 */
const auditDir = tmpDir();
process.env.TWINDISK_DIRTY_LOG_AUDIT = auditDir;

const clusters: Cluster[] = [];
const served: Served[] = [];
const guests: Guest[] = [];
after(async () => {
  for (const g of guests) await g.kill();
  for (const s of served) await s.stop('SIGKILL');
  for (const c of clusters) await c.stopAll('SIGKILL');
});

/** The 4 KiB block the test writes "stop" into from the host, behind the server's back (the guest polls it with O_DIRECT). */
const STOP_BLOCK = 3000;
const BLOCK = 4096;

/**
 * The guest. A writer puts "block-i" into block i with O_DIRECT and says "acked i" once each write
 * returned, until "stop" appears at STOP_BLOCK; then it checks every block it wrote. Beside it a
 * reader keeps the device writing guest memory: it drops the page cache, reads 4 MiB of random data
 * into it (the device fills those pages) and checks them there, over and over.
 */
const SCRIPT = `
  dd if=/dev/urandom of=/tmp/pat bs=1M count=4 2>/dev/null
  dd if=/tmp/pat of=/dev/vda bs=1M seek=16 conv=fsync 2>/dev/null || echo "WRITEFAIL pattern"
  want=$(md5sum < /tmp/pat | cut -d' ' -f1)
  rm /tmp/pat
  ( n=0
    while [ ! -e /tmp/stop ]; do
      echo 3 > /proc/sys/vm/drop_caches
      dd if=/dev/vda of=/dev/null bs=1M skip=16 count=4 2>/dev/null
      got=$(dd if=/dev/vda bs=1M skip=16 count=4 2>/dev/null | md5sum | cut -d' ' -f1)
      if [ "$got" = "$want" ]; then echo "readok $n"; else echo "READBAD $n $got"; fi
      n=$((n + 1))
    done ) &
  i=0
  while [ $i -lt 2900 ]; do
    yes "block-$i" | head -c 4096 | dd of=/dev/vda bs=4k seek=$i oflag=direct 2>/dev/null || echo "WRITEFAIL $i"
    echo "acked $i"
    i=$((i + 1))
    if [ $((i % 8)) -eq 0 ] && [ "$(dd if=/dev/vda bs=4k skip=${STOP_BLOCK} count=1 iflag=direct 2>/dev/null | head -c 4)" = "stop" ]; then break; fi
  done
  touch /tmp/stop
  wait
  bad=0
  j=0
  while [ $j -lt $i ]; do
    w=$(yes "block-$j" | head -c 4096 | md5sum | cut -d' ' -f1)
    g=$(dd if=/dev/vda bs=4k skip=$j count=1 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
    [ "$w" = "$g" ] || { echo "LOST $j"; bad=$((bad + 1)); }
    j=$((j + 1))
  done
  echo "verified $i bad=$bad"
`;

/** What block `i` holds once the guest wrote it. */
function blockBytes(i: number): Buffer {
  return Buffer.from(`block-${i}\n`.repeat(BLOCK)).subarray(0, BLOCK);
}

/**
 * The guests. init_on_alloc=0 (QEMU takes the last -append): with it on, the kernel zeroes every page
 * cache page before the device fills it, a CPU write QEMU tracks on its own, which would hide pages
 * the device wrote without marking them.
 */
const GUEST = {
  memoryMiB: 256, script: SCRIPT, qmp: true, timeoutMs: 20 * 60_000,
  extraArgs: ['-append', 'console=ttyS0 quiet panic=-1 twindisk.disks=1 init_on_alloc=0'],
};

interface Migration {
  status: string;
  downtime?: number;
  'total-time'?: number;
  'error-desc'?: string;
  ram?: { transferred: number; remaining: number; total: number; 'dirty-sync-count': number };
}

/** Polls query-migrate until `done` holds; throws if the migration failed. */
async function waitMigration(src: Guest, done: (m: Migration) => boolean): Promise<Migration> {
  for (;;) {
    const m = await src.qmp!.execute<Migration>('query-migrate');
    if (m.status === 'failed' || m.status === 'cancelled') throw new Error(`migration ${m.status}: ${m['error-desc'] ?? 'no reason given'}`);
    if (done(m)) return m;
    if (m.status === 'completed') throw new Error('the migration completed before the test was ready for it');
    await sleep(100);
  }
}

/** Writes a 4-byte marker into block `block` of `image` behind the server's back. */
function writeMarker(image: string, block: number, text: string): void {
  const fd = fs.openSync(image, 'r+');
  fs.writeSync(fd, Buffer.from(text), 0, 4, block * BLOCK);
  fs.closeSync(fd);
}

/** A step of a migration test, on stderr with the time since the test file started (the runs are long). */
const t0 = Date.now();
function step(what: string): void {
  process.stderr.write(`# ${((Date.now() - t0) / 1000).toFixed(1)} s: ${what}\n`);
}

/** Highest "acked i" in `output` (-1: none). */
function lastAcked(output: string): number {
  return Math.max(-1, ...[...output.matchAll(/acked (\d+)/g)].map((m) => Number(m[1])));
}

/** The guest RAM of QEMU process `pid`: its memory-backend-memfd, found among its fds by size. */
function guestRam(pid: number, bytes: number): number {
  const dir = `/proc/${pid}/fd`;
  for (const n of fs.readdirSync(dir)) {
    let link = '';
    try {
      link = fs.readlinkSync(path.join(dir, n));
    } catch {
      continue;
    }
    if (!link.startsWith('/memfd:')) continue;
    const fd = fs.openSync(path.join(dir, n), 'r');
    if (fs.fstatSync(fd).size === bytes) return fd;
    fs.closeSync(fd);
  }
  throw new Error(`QEMU ${pid} has no memfd of ${bytes} bytes`);
}

/**
 * The guest-physical pages (4 KiB) whose bytes differ between the paused source and the
 * destination that has not run yet: after a correct migration, none. A page the back-end wrote and
 * did not mark in the log would show here.
 */
function differingPages(srcPid: number, dstPid: number, bytes: number): number[] {
  const a = guestRam(srcPid, bytes);
  const b = guestRam(dstPid, bytes);
  const out: number[] = [];
  const chunk = 4 << 20;
  const x = Buffer.alloc(chunk);
  const y = Buffer.alloc(chunk);
  try {
    for (let off = 0; off < bytes; off += chunk) {
      fs.readSync(a, x, 0, chunk, off);
      fs.readSync(b, y, 0, chunk, off);
      if (x.equals(y)) continue;
      for (let p = 0; p < chunk; p += BLOCK) {
        if (x.subarray(p, p + BLOCK).equals(y.subarray(p, p + BLOCK))) continue;
        out.push((off + p) / BLOCK);
        if (out.length <= 4) {
          // Which bytes, for the failure message.
          const at: string[] = [];
          for (let k = p; k < p + BLOCK && at.length < 8; k++) if (x[k] !== y[k]) at.push(`+0x${(k - p).toString(16)}: ${x[k]} vs ${y[k]}`);
          step(`page 0x${(off + p).toString(16)} differs (source vs destination) at ${at.join(', ')}`);
        }
      }
    }
  } finally {
    fs.closeSync(a);
    fs.closeSync(b);
  }
  return out;
}

/** The guest-physical addresses of the pages the back-ends marked in dirty logs so far (their audit files). */
function auditedPages(): Set<number> {
  const out = new Set<number>();
  for (const f of fs.readdirSync(auditDir)) {
    for (const line of fs.readFileSync(path.join(auditDir, f), 'utf8').split('\n')) {
      const m = / marked (.*)$/.exec(line);
      if (m) for (const a of m[1]!.split(' ')) out.add(parseInt(a, 16));
    }
  }
  return out;
}

/**
 * Runs the guest on the source, migrates it to a destination QEMU on `dstSocket` while it writes and
 * reads, compares the guest's RAM on both sides before the destination runs, lets the guest write on
 * over there, stops it, and checks what it saw. Returns the number of blocks written.
 */
async function migrateWritingGuest(
  srcSocket: string, dstSocket: string, dstImage: string, afterMigration?: () => Promise<void>, viaCli?: { config: string },
): Promise<number> {
  // `twindisk qemu migrate` drives the source over a QMP monitor of its own (a QMP socket takes one client at a time).
  const cliQmp = viaCli ? path.join(tmpDir(), 'qmp-cli.sock') : null;
  const src = await Guest.launch({
    ...GUEST, disks: [{ socket: srcSocket }], extraArgs: [...GUEST.extraArgs, ...(cliQmp ? ['-qmp', `unix:${cliQmp},server=on,wait=off`] : [])],
  });
  guests.push(src);
  await src.waitFor(/acked 20\b/, 10 * 60_000);
  await src.waitFor(/readok 0\b/, 10 * 60_000);
  step('source guest writing and reading');
  const port = await freePort();
  // -S: the destination stays paused once the migration is in, so both RAMs can be compared.
  const dst = await Guest.launch({ ...GUEST, disks: [{ socket: dstSocket }], extraArgs: [...GUEST.extraArgs, '-S', '-incoming', `tcp:127.0.0.1:${port}`] });
  guests.push(dst);
  const before = lastAcked(src.output);
  const readsBefore = (src.output.match(/readok/g) ?? []).length;
  // A moderate bandwidth, so the first pass over the RAM takes a few seconds of the guest's I/O.
  await src.qmp!.execute('migrate-set-parameters', { 'max-bandwidth': 32 << 20 });
  for (const f of fs.readdirSync(auditDir)) fs.rmSync(path.join(auditDir, f)); // this migration's marks only
  let m: Migration;
  if (cliQmp) {
    step('migration started with twindisk qemu migrate');
    const r = await runCli('qemu', 'migrate', '--qmp', cliQmp, '--to', `127.0.0.1:${port}`, '--config', viaCli!.config);
    assert.equal(r.status, 0, `twindisk qemu migrate failed: ${r.stderr}`);
    assert.match(r.stdout, new RegExp(`^migrated to 127\\.0\\.0\\.1:${port}\\b`, 'm'), r.stdout);
    m = await waitMigration(src, (x) => x.status === 'completed');
  } else {
    await src.qmp!.execute('migrate', { uri: `tcp:127.0.0.1:${port}` });
    step('migration started');
    m = await waitMigration(src, (x) => x.status === 'completed');
  }
  step(`migration: ${m['total-time']} ms, downtime ${m.downtime} ms, ${lastAcked(src.output) - before} writes and `
    + `${(src.output.match(/readok/g) ?? []).length - readsBefore} page cache fills during it`);
  // The destination has loaded everything once it leaves "inmigrate" (and, with -S, stays paused).
  for (;;) {
    const st = await dst.qmp!.execute<{ status: string }>('query-status');
    if (st.status !== 'inmigrate') break;
    await sleep(50);
  }
  // The guest read into its page cache during the migration: the back-end marked those pages.
  assert.ok(auditedPages().size > 0, 'the back-end marked no guest page in the dirty log during the migration');
  const diff = differingPages(src.child.pid!, dst.child.pid!, GUEST.memoryMiB << 20);
  if (diff.length > 0) {
    // A differing page the back-end marked was QEMU's to send again; one it did not mark is a page
    // twindisk wrote behind the log (or one the guest's CPU wrote: QEMU's too, but the test cannot
    // tell those apart, so it fails either way).
    const marked = auditedPages();
    const unmarked = diff.filter((p) => !marked.has(p * BLOCK));
    step(`${diff.length} guest pages differ; ${diff.length - unmarked.length} of them twindisk marked in the dirty log (QEMU did not send them again)`);
    assert.deepEqual(unmarked.slice(0, 20).map((p) => `0x${(p * BLOCK).toString(16)}`), [], `${unmarked.length} guest pages differ after the migration that the back-end never marked`);
  }
  await dst.qmp!.execute('cont');
  // The source is paused for good now ("postmigrate"); the guest goes on in the destination.
  await src.kill();
  await afterMigration?.();
  await dst.waitFor(new RegExp(`acked ${lastAcked(src.output) + 20}\\b`), 10 * 60_000);
  await dst.waitFor(/readok \d+/, 10 * 60_000);
  writeMarker(dstImage, STOP_BLOCK, 'stop');
  const r = await dst.wait();
  const all = src.output + dst.output;
  assert.equal(r.exitCode, 0, all);
  assert.doesNotMatch(all, /WRITEFAIL|READBAD|LOST|I\/O error/, 'the guest never saw an I/O error nor wrong data');
  const v = /verified (\d+) bad=(\d+)/.exec(r.output);
  assert.ok(v, r.output);
  assert.equal(v[2], '0', 'every block the guest wrote reads back on the destination');
  const written = Number(v[1]);
  assert.ok(written > before, 'writes went on across the migration');
  return written;
}

test('one twindisk serve: a guest writing and reading migrates to a second QEMU on the same socket, and loses nothing', async () => {
  const dir = tmpDir();
  const image = path.join(dir, 'disk.img');
  fs.writeFileSync(image, Buffer.alloc(0));
  fs.truncateSync(image, 64 << 20);
  const s = await serve({ image, socket: path.join(dir, 'vu.sock'), dir });
  served.push(s);
  const written = await migrateWritingGuest(s.socket, s.socket, image);
  // Both front-ends were served at once: the destination on queue workers of its own.
  assert.match(s.log(), /starting queue workers for it/);
  assert.match(s.log(), /dirty logging on/);
  const disk = fs.readFileSync(image);
  for (let i = 0; i < written; i++) assert.ok(disk.subarray(i * BLOCK, (i + 1) * BLOCK).equals(blockBytes(i)), `block ${i} in the image`);
});

test('two Primaries: `twindisk qemu migrate` moves a guest from alpha\'s QEMU to beta\'s; every acknowledged write is on both disks', async () => {
  const c = await Cluster.create({
    nodes: { alpha: { disk: true, socket: true }, beta: { disk: true, socket: true } },
    resource: { 'allow-two-primaries': true }, size: 32 << 20,
  });
  clusters.push(c);
  await c.startAll();
  const [alpha, beta] = [c.node('alpha'), c.node('beta')];
  await alpha.waitStatus((s) => s.peers.beta?.replication === 'Established', 'connected');
  await alpha.waitLog(/vhost-user: listening/);
  await beta.waitLog(/vhost-user: listening/);
  const written = await migrateWritingGuest(alpha.socket, beta.socket, beta.image, async () => {
    // The source QEMU has quit: alpha steps down; beta, whose QEMU runs the guest now, stays Primary.
    await alpha.waitStatus((s) => s.role === 'Secondary', 'alpha demoted when the source QEMU left');
    const b = await beta.status();
    assert.equal(b.role, 'Primary');
  }, { config: c.file });
  await beta.waitStatus((s) => s.role === 'Secondary', 'beta demoted when the destination QEMU left');
  await alpha.waitStatus((s) => s.peers.beta?.replication === 'Established' && s.peers.beta.outOfSyncBytes === 0, 'in sync');
  const a = c.data('alpha');
  const b = c.data('beta');
  for (let i = 0; i < written; i++) {
    assert.ok(a.subarray(i * BLOCK, (i + 1) * BLOCK).equals(blockBytes(i)), `block ${i} on alpha`);
    assert.ok(b.subarray(i * BLOCK, (i + 1) * BLOCK).equals(blockBytes(i)), `block ${i} on beta`);
  }
  // The stop marker went into beta's file behind the engine's back; everything else is identical.
  const hash = (x: Buffer) => createHash('sha256').update(x.subarray(0, STOP_BLOCK * BLOCK)).update(x.subarray((STOP_BLOCK + 1) * BLOCK)).digest('hex');
  assert.equal(hash(a), hash(b), 'alpha and beta hold the same bytes');
});
