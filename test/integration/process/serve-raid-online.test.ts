// `twindisk serve --raid --control`: a member failed and a new one added while serving (mdadm --manage --fail/--add), driven by the vhost-user test front-end.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, test } from 'node:test';
import type { ServedRaidStatus } from '../../../engine/raid/membership.js';
import { VIRTIO_BLK_S_OK, VIRTIO_BLK_T_FLUSH } from '../../../qemu-plugin/virtio/constants.js';
import { attach, readBack, writeRandom, type BlkClient } from '../../harness/blk-client.js';
import { cli, runCli, runCliOk, tmpDir } from '../../harness/serve.js';

const dir = tmpDir('twindisk-serve-raid-online-');
const children: ReturnType<typeof spawn>[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

const KiB = 1024;
const CHUNK = 64 * KiB;
/** Array bytes of one raid5 stripe over 4 members. */
const STRIPE = 3 * CHUNK;

function at(...names: string[]): string[] {
  return names.map((n) => path.join(dir, n));
}

/** Starts `twindisk serve --raid` with a control socket; resolves once it listens, with its log. */
async function serveRaid(members: string[], socket: string, control: string) {
  const child = spawn(process.execPath, [cli, 'serve', '--raid', members.join(','), '--socket', socket, '--control', control], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let log = '';
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  const waitLog = async (re: RegExp, ms = 20_000): Promise<void> => {
    const t0 = Date.now();
    while (!re.test(log)) {
      if (Date.now() - t0 > ms) throw new Error(`serve --raid did not log ${re} within ${ms} ms:\n${log}`);
      if (child.exitCode !== null) throw new Error(`serve --raid exited (${child.exitCode}) before logging ${re}:\n${log}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const stop = (): Promise<number | null> => {
    if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
    child.kill('SIGTERM');
    return new Promise((r) => child.once('exit', (code) => r(code)));
  };
  await waitLog(/control socket listening/);
  return { child, log: () => log, waitLog, stop };
}

/** A CLI run that must succeed; its stdout. */
const twindisk = runCliOk;

async function onlineStatus(control: string): Promise<ServedRaidStatus> {
  return JSON.parse(await twindisk('raid', 'status', '--json', '--control', control)) as ServedRaidStatus;
}

function writeAll(g: BlkClient, shadow: Map<number, Buffer>, offsets: number[], len: number): void {
  for (const off of offsets) shadow.set(off, writeRandom(g, off, len));
}

function verifyAll(g: BlkClient, shadow: Map<number, Buffer>): void {
  for (const [off, bytes] of shadow) assert.ok(readBack(g, off, bytes.length).equals(bytes), `data at ${off}`);
}

test('raid5 served with --control: fail a slot, I/O goes on degraded, add a new member, the rebuild completes while serving, the array checks clean', async () => {
  const m = at('a.img', 'b.img', 'c.img', 'd.img');
  await twindisk('raid', 'create', '--level', '5', '--chunk', '64K', '--bitmap-chunk', '64K', '--assume-clean', '--size', '16M', ...m);
  const sock = path.join(dir, 'vol.sock');
  const control = path.join(dir, 'vol.ctl');
  const s = await serveRaid(m, sock, control);
  const g = attach(sock);
  const shadow = new Map<number, Buffer>();
  writeAll(g, shadow, [0, 5 * STRIPE + 4096, 7 * STRIPE - 512, (45 << 20) - 4096], 4096);
  writeAll(g, shadow, [STRIPE, 30 * STRIPE], STRIPE);

  let st = await onlineStatus(control);
  assert.deepEqual([st.mdstat, st.degraded, st.work, st.level], ['[4/4] [UUUU]', 0, null, 'raid5']);
  assert.equal(st.members.length, 4);

  // Refused: add to a slot in sync, and unknown slots; the serve goes on.
  const busy = await runCli('raid', 'add', '--control', control, '--slot', '1', '--size', '16M', path.join(dir, 'never.img'));
  assert.equal(busy.status, 1);
  assert.match(busy.stderr, /slot 1 is held by .*b\.img, in sync: fail it first \(twindisk raid fail --control/);
  assert.ok(!fs.existsSync(path.join(dir, 'never.img')), 'a refused add leaves no file behind');
  const nowhere = await runCli('raid', 'fail', '--control', control, '--slot', '7');
  assert.equal(nowhere.status, 1);
  assert.match(nowhere.stderr, /slot 7: this array has slots 0 to 3/);

  // Fail slot 1 while serving: degraded, and I/O goes on.
  assert.match(await twindisk('raid', 'fail', '--control', control, '--slot', '1'), /failed slot 1: .* degraded \[4\/3\] \[U_UU\]/);
  st = await onlineStatus(control);
  assert.deepEqual([st.mdstat, st.degraded, st.members[1]!.state], ['[4/3] [U_UU]', 1, 'missing']);
  assert.match(await twindisk('raid', 'status', '--control', control), /degraded: rebuild while serving with twindisk raid add --control .* --slot 1 NEW-MEMBER/);
  verifyAll(g, shadow);
  writeAll(g, shadow, [10 * STRIPE + 8192, 40 * STRIPE + 512], 32 * KiB); // written while degraded
  verifyAll(g, shadow);

  // A member of another array is refused.
  const other = at('o-a.img', 'o-b.img');
  await twindisk('raid', 'create', '--level', '1', '--assume-clean', '--size', '16M', ...other);
  const foreign = await runCli('raid', 'add', '--control', control, '--slot', '1', other[0]!);
  assert.equal(foreign.status, 1);
  assert.match(foreign.stderr, /holds the md superblock of another array/);

  // Add a new member: the rebuild runs in the background while the guest writes.
  const fresh = path.join(dir, 'new.img');
  assert.match(await twindisk('raid', 'add', '--control', control, '--slot', '1', '--size', '16M', fresh), /rebuilding slot 1 onto .*new\.img while serving/);
  writeAll(g, shadow, [2 * STRIPE, 60 * STRIPE + 4096], 64 * KiB);
  const t0 = Date.now();
  for (;;) {
    st = await onlineStatus(control);
    if (st.work === null && st.degraded === 0) break;
    if (st.work !== null) assert.equal(st.work.action, 'rebuild');
    assert.ok(Date.now() - t0 < 60_000, `the rebuild did not finish within 60 s: ${JSON.stringify(st.work)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.deepEqual([st.mdstat, st.lastRebuild?.ok, st.members[1]!.member], ['[4/4] [UUUU]', true, fresh]);
  await s.waitLog(/rebuild of slot 1 onto .*new\.img finished/);
  verifyAll(g, shadow);
  assert.equal(g.run(0, VIRTIO_BLK_T_FLUSH, 0, 0).status, VIRTIO_BLK_S_OK);
  g.fe.close();
  assert.equal(await s.stop(), 0);
  assert.ok(!fs.existsSync(control), 'the control socket is removed at shutdown');

  // Offline: the members now are a, new, c, d; they agree, and hold the data.
  const whole = [m[0]!, fresh, m[2]!, m[3]!];
  const offline = JSON.parse(await twindisk('raid', 'status', '--json', ...whole)) as ServedRaidStatus;
  assert.deepEqual([offline.state, offline.mdstat, offline.bitmap!.dirtyChunks], ['clean', '[4/4] [UUUU]', 0]);
  assert.match(await twindisk('raid', 'check', ...whole), /^check: 0 mismatched sectors/m);
  const sock2 = path.join(dir, 'vol2.sock');
  const s2 = await serveRaid(whole, sock2, control);
  const g2 = attach(sock2);
  verifyAll(g2, shadow);
  g2.fe.close();
  assert.equal(await s2.stop(), 0);
});

test('raid --control: a socket nobody serves, a plain serve\'s socket, and members given with --control are refused with advice', async () => {
  const gone = await runCli('raid', 'status', '--control', path.join(dir, 'nobody.ctl'));
  assert.equal(gone.status, 1);
  assert.match(gone.stderr, /no serve --raid is running with control socket .*nobody\.ctl: start it with twindisk serve --raid/);

  // A control socket that speaks daemon/control.ts and knows no raid commands.
  const fake = path.join(dir, 'plain.ctl');
  const server = net.createServer((c) => c.on('data', () => c.end(JSON.stringify({ ok: false, error: 'unknown command "raid-status"' }) + '\n')));
  await new Promise<void>((r) => server.listen(fake, () => r()));
  try {
    const plain = await runCli('raid', 'status', '--control', fake);
    assert.equal(plain.status, 1);
    assert.match(plain.stderr, /is the control socket of a serve --image or a node, not of serve --raid/);
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
  }

  const both = await runCli('raid', 'fail', '--control', fake, '--slot', '0', 'x.img');
  assert.equal(both.status, 2);
  assert.match(both.stderr, /raid fail --control talks to the running serve --raid, which knows its members: leave out x\.img/);
  const none = await runCli('raid', 'status');
  assert.equal(none.status, 2);
  assert.match(none.stderr, /raid status needs the array's members \(offline\), or --control PATH/);
  const replace = await runCli('raid', 'replace', '--control', fake, '--slot', '0', 'n.img', 'a.img');
  assert.equal(replace.status, 2);
  assert.match(replace.stderr, /raid replace --control talks to the running serve --raid, which knows its members: leave out a\.img/);
  const waitOffline = await runCli('raid', 'check', '--wait', 'a.img');
  assert.equal(waitOffline.status, 2);
  assert.match(waitOffline.stderr, /--wait goes with --control/);
  const removeBoth = await runCli('raid', 'remove', '--control', fake, '--slot', '0', 'a.img');
  assert.equal(removeBoth.status, 2);
  assert.match(removeBoth.stderr, /raid remove --control talks to the running serve --raid/);
  const resyncRate = await runCli('raid', 'resync', '--control', fake, '--rate', '1M/s');
  assert.equal(resyncRate.status, 2);
  assert.match(resyncRate.stderr, /--rate goes with the members \(offline\)/);
  const checkNobody = await runCli('raid', 'check', '--control', path.join(dir, 'nobody.ctl'));
  assert.equal(checkNobody.status, 1);
  assert.match(checkNobody.stderr, /no serve --raid is running with control socket/);
});

test('SIGTERM during an online rebuild: the rebuild stops at a recorded checkpoint (md\'s recovery offset), the array is clean, and the next serve goes on from there', async () => {
  const m = at('s-a.img', 's-b.img', 's-c.img', 's-d.img');
  await twindisk('raid', 'create', '--level', '5', '--chunk', '64K', '--bitmap-chunk', '64K', '--assume-clean', '--size', '16M', ...m);
  const sock = path.join(dir, 's.sock');
  const control = path.join(dir, 's.ctl');
  const s = await serveRaid(m, sock, control);
  const g = attach(sock);
  const shadow = new Map<number, Buffer>();
  writeAll(g, shadow, [0, 12 * STRIPE + 4096], 64 * KiB);
  await twindisk('raid', 'fail', '--control', control, '--slot', '2');
  const fresh = path.join(dir, 's-new.img');
  await twindisk('raid', 'add', '--control', control, '--slot', '2', '--size', '16M', '--rate', '2M/s', fresh);
  const st = await onlineStatus(control);
  assert.equal(st.work?.action, 'rebuild');
  assert.deepEqual([st.work?.slot, st.work?.member, st.members[2]!.state], [2, fresh, 'recovering']);
  const again = await runCli('raid', 'add', '--control', control, '--slot', '0', '--size', '16M', path.join(dir, 's-other.img'));
  assert.equal(again.status, 1);
  assert.match(again.stderr, /a rebuild of slot 2 onto .*s-new\.img is running .*: one at a time/);
  g.fe.close();
  assert.equal(await s.stop(), 0);
  assert.match(s.log(), /shutdown stops the rebuild of slot 2/);

  assert.match(s.log(), /its progress is recorded in the member's superblock \(md's recovery offset\)/);

  const whole = [m[0]!, m[1]!, fresh, m[3]!];
  const offline = JSON.parse(await twindisk('raid', 'status', '--json', ...whole)) as ServedRaidStatus;
  assert.deepEqual([offline.state, offline.mdstat], ['clean', '[4/3] [UU_U]']);
  const rec = offline.members[2]!;
  assert.equal(rec.state, 'recovering');
  assert.ok((rec.recoveredBytes ?? 0) > 0, 'the stopped rebuild recorded how far it got');
  const s2 = await serveRaid(whole, sock, control);
  await s2.waitLog(new RegExp(`the rebuild of slot 2 onto .*s-new\\.img goes on while serving, from its checkpoint \\(.* done\\) slot=2 .*recoveredBytes=${rec.recoveredBytes}\\b`));
  const g2 = attach(sock);
  const st2 = await until(control, (x) => x.work === null && x.degraded === 0);
  assert.equal(st2.lastRebuild?.ok, true);
  verifyAll(g2, shadow);
  g2.fe.close();
  assert.equal(await s2.stop(), 0);
  assert.match(await twindisk('raid', 'check', ...whole), /^check: 0 mismatched sectors/m);
});

// ------------------------------------------------------------------ check, repair, remove, replace online

/** Writes 16 KiB of random data at a random 16 KiB-aligned offset of the array's first `bytes` (one grid, so the shadow never overlaps). */
function writeSomewhere(g: BlkClient, shadow: Map<number, Buffer>, bytes: number): void {
  const off = Math.floor(Math.random() * Math.floor(bytes / (16 * KiB))) * 16 * KiB;
  shadow.set(off, writeRandom(g, off, 16 * KiB));
}

/** Polls the served array's status until `done` says so (60 s at most); `during` runs between polls while it is not. */
async function until(control: string, done: (s: ServedRaidStatus) => boolean, during: (s: ServedRaidStatus) => void = () => undefined): Promise<ServedRaidStatus> {
  const t0 = Date.now();
  for (;;) {
    const st = await onlineStatus(control);
    if (done(st)) return st;
    assert.ok(Date.now() - t0 < 60_000, `not done within 60 s: ${JSON.stringify({ work: st.work, lastCheck: st.lastCheck, mdstat: st.mdstat })}`);
    during(st);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('online check while the guest writes: 0 mismatches; one job at a time; resync answers; --wait prints the result; a shutdown stops a check and a waiter says so', async () => {
  const m = at('k-a.img', 'k-b.img', 'k-c.img', 'k-d.img');
  await twindisk('raid', 'create', '--level', '5', '--chunk', '64K', '--bitmap-chunk', '64K', '--assume-clean', '--size', '16M', ...m);
  const sock = path.join(dir, 'k.sock');
  const control = path.join(dir, 'k.ctl');
  const s = await serveRaid(m, sock, control);
  const g = attach(sock);
  const shadow = new Map<number, Buffer>();
  let st = await onlineStatus(control);
  const bytes = st.arrayBytes;
  for (let i = 0; i < 32; i++) writeSomewhere(g, shadow, bytes);
  assert.equal(st.lastCheck, null);
  assert.match(await twindisk('raid', 'resync', '--control', control), /^nothing to resync: the array is in sync/);

  assert.match(await twindisk('raid', 'check', '--control', control, '--rate', '8M/s'), /^check started while serving .*follow it with: twindisk raid status --control/s);
  // One background job at a time: the refusals name the check; a refused replace touches nothing.
  const repair = await runCli('raid', 'repair', '--control', control);
  assert.equal(repair.status, 1);
  assert.match(repair.stderr, /a check of the array is running \([\d.]+%\): one at a time \(rebuild, check, repair, resync\); wait for it to end \(twindisk raid status --control .*k\.ctl\), then repair/);
  const replace = await runCli('raid', 'replace', '--control', control, '--slot', '2', '--size', '16M', path.join(dir, 'k-never.img'));
  assert.equal(replace.status, 1);
  assert.match(replace.stderr, /a check of the array is running .*then replace/);
  assert.ok(!fs.existsSync(path.join(dir, 'k-never.img')));
  const resync = await runCli('raid', 'resync', '--control', control);
  assert.equal(resync.status, 0, resync.stderr);

  // The guest writes while the check runs; progress shows in status.
  let writesDuring = 0;
  let midway = false;
  st = await until(control, (x) => x.work === null, (x) => {
    assert.equal(x.work!.action, 'check');
    assert.equal(x.work!.id, 1);
    if (x.work!.percent > 0 && x.work!.percent < 100) midway = true;
    for (let i = 0; i < 4; i++, writesDuring++) writeSomewhere(g, shadow, bytes);
  });
  assert.ok(midway && writesDuring >= 8, `the check ran ${writesDuring} writes long (seen midway: ${midway})`);
  assert.deepEqual([st.lastCheck?.id, st.lastCheck?.action, st.lastCheck?.ok, st.lastCheck?.mismatches, st.lastCheck?.arrayBytes, st.members[2]!.state],
    [1, 'check', true, 0, bytes, 'in-sync']);
  assert.ok(st.lastCheck!.bytesRead >= bytes, 'every member was read');
  await s.waitLog(/check finished in [\d.]+ s: 0 mismatched sectors in .* of the array/);
  assert.match(s.log(), /check started while serving .*at most 8(\.0)? MiB\/s read/);
  assert.match(await twindisk('raid', 'status', '--control', control), /^last check: 0 mismatched sectors in .* of the array/m);
  verifyAll(g, shadow);

  // --wait follows it and prints what the offline check prints.
  const waited = await twindisk('raid', 'check', '--control', control, '--wait');
  assert.match(waited, /^check: 0 mismatched sectors in .* of the array \(read \d+ bytes\)$/m);
  assert.equal((await onlineStatus(control)).lastCheck?.id, 2);

  // A shutdown stops a check where it is; a waiter says it went away.
  const waiter = runCli('raid', 'check', '--control', control, '--wait', '--rate', '2M/s');
  await until(control, (x) => x.work?.action === 'check' && x.work.done > 0);
  g.fe.close();
  assert.equal(await s.stop(), 0);
  assert.match(s.log(), /shutdown stops the check at [\d.]+% \(.* of .*\): 0 mismatched sectors so far; run it again once serving/);
  const w = await waiter;
  assert.equal(w.status, 1);
  assert.match(w.stderr, /went away before the check ended|shut down during the check/);
  const offline = JSON.parse(await twindisk('raid', 'status', '--json', ...m)) as ServedRaidStatus;
  assert.deepEqual([offline.state, offline.mdstat], ['clean', '[4/4] [UUUU]']);
});

test('a parity block corrupted on a member before serving: online check counts it, online repair rewrites it, the next check finds 0', async () => {
  const m = at('p-a.img', 'p-b.img', 'p-c.img', 'p-d.img');
  await twindisk('raid', 'create', '--level', '5', '--chunk', '64K', '--bitmap-chunk', '64K', '--assume-clean', '--size', '16M', ...m);
  const { dataOffset } = JSON.parse(await twindisk('raid', 'status', '--json', ...m)) as ServedRaidStatus;
  // left-symmetric over 4 members: stripe 0's parity is on slot 3, stripe 1's on slot 2. 1 + 2 pages of 8 sectors.
  const corrupt = (file: string, at: number, len: number): void => {
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.alloc(len, 0xa5), 0, len, at);
    fs.closeSync(fd);
  };
  corrupt(m[3]!, dataOffset, 4096);
  corrupt(m[2]!, dataOffset + CHUNK + 8192, 8192);

  const sock = path.join(dir, 'p.sock');
  const control = path.join(dir, 'p.ctl');
  const s = await serveRaid(m, sock, control);
  const g = attach(sock);
  assert.ok(readBack(g, 0, 2 * STRIPE).equals(Buffer.alloc(2 * STRIPE)), 'only parity was corrupted: the data reads back as written (zeroes)');
  const shadow = new Map<number, Buffer>();
  writeAll(g, shadow, [10 * STRIPE, 20 * STRIPE + 4096], 16 * KiB); // away from stripes 0 and 1

  const check = await twindisk('raid', 'check', '--control', control, '--wait');
  assert.match(check, /^check: 24 mismatched sectors in .* of the array/m);
  assert.match(check, /^the members disagree: twindisk raid repair --control .*p\.ctl rewrites parity from the data$/m);
  assert.deepEqual([(await onlineStatus(control)).lastCheck?.mismatches], [24]);
  await s.waitLog(/check finished in [\d.]+ s: 24 mismatched sectors/);

  assert.match(await twindisk('raid', 'repair', '--control', control, '--wait'), /^repair: 24 mismatched sectors rewritten in .* of the array/m);
  await s.waitLog(/repair finished in [\d.]+ s: 24 mismatched sectors rewritten/);
  assert.match(await twindisk('raid', 'check', '--control', control, '--wait'), /^check: 0 mismatched sectors/m);
  assert.ok(readBack(g, 0, 2 * STRIPE).equals(Buffer.alloc(2 * STRIPE)));
  verifyAll(g, shadow);
  g.fe.close();
  assert.equal(await s.stop(), 0);
  assert.match(await twindisk('raid', 'check', ...m), /^check: 0 mismatched sectors/m);
});

test('remove while serving: refused for a member in sync (fail it first), the failed member dropped from the superblocks, then a rebuild; a degraded array is not checked', async () => {
  const m = at('r-a.img', 'r-b.img', 'r-c.img', 'r-d.img');
  await twindisk('raid', 'create', '--level', '5', '--chunk', '64K', '--bitmap-chunk', '64K', '--assume-clean', '--size', '16M', ...m);
  const sock = path.join(dir, 'r.sock');
  const control = path.join(dir, 'r.ctl');
  const s = await serveRaid(m, sock, control);
  const g = attach(sock);
  const shadow = new Map<number, Buffer>();
  const bytes = (await onlineStatus(control)).arrayBytes;
  for (let i = 0; i < 16; i++) writeSomewhere(g, shadow, bytes);

  const inSync = await runCli('raid', 'remove', '--control', control, '--slot', '1');
  assert.equal(inSync.status, 1);
  assert.match(inSync.stderr, /slot 1 is held by .*r-b\.img, in sync: fail it first \(twindisk raid fail --control .*r\.ctl --slot 1\), then remove it/);
  assert.equal((await onlineStatus(control)).members[1]!.state, 'in-sync');

  await twindisk('raid', 'fail', '--control', control, '--slot', '1');
  let st = await onlineStatus(control);
  assert.match(st.members[1]!.reason!, /r-b\.img failed/);
  const events = st.events;
  const degraded = await runCli('raid', 'check', '--control', control);
  assert.equal(degraded.status, 1);
  assert.match(degraded.stderr, /the array is degraded \[4\/3\] \[U_UU\]: a check compares every member, so rebuild slot 1 first \(twindisk raid add --control .* --slot 1 NEW-MEMBER\)/);

  assert.match(await twindisk('raid', 'remove', '--control', control, '--slot', '1'), /^removed the failed member of slot 1 from the superblocks \(events \d+\); the array is served degraded \[4\/3\] \[U_UU\]/);
  st = await onlineStatus(control);
  assert.equal(st.members[1]!.reason, 'no member');
  assert.ok(st.events > events, 'the removal is a superblock update');
  await s.waitLog(/removed the failed member of slot 1 from the superblocks on request \(.*r-b\.img failed\)/);
  const again = await runCli('raid', 'remove', '--control', control, '--slot', '1');
  assert.equal(again.status, 1);
  assert.match(again.stderr, /slot 1 holds no failed member to remove \(no member\): nothing to do/);
  verifyAll(g, shadow);

  const fresh = path.join(dir, 'r-new.img');
  await twindisk('raid', 'add', '--control', control, '--slot', '1', '--size', '16M', fresh);
  st = await until(control, (x) => x.work === null && x.degraded === 0);
  assert.deepEqual([st.mdstat, st.lastRebuild?.ok], ['[4/4] [UUUU]', true]);
  verifyAll(g, shadow);
  g.fe.close();
  assert.equal(await s.stop(), 0);
  assert.match(await twindisk('raid', 'check', m[0]!, fresh, m[2]!, m[3]!), /^check: 0 mismatched sectors/m);
});

test('replace while the guest writes: the old member failed, the new one rebuilt while serving; all data verified; the members check clean offline', async () => {
  const m = at('x-a.img', 'x-b.img', 'x-c.img', 'x-d.img');
  await twindisk('raid', 'create', '--level', '5', '--chunk', '64K', '--bitmap-chunk', '64K', '--assume-clean', '--size', '16M', ...m);
  const sock = path.join(dir, 'x.sock');
  const control = path.join(dir, 'x.ctl');
  const s = await serveRaid(m, sock, control);
  const g = attach(sock);
  const shadow = new Map<number, Buffer>();
  const bytes = (await onlineStatus(control)).arrayBytes;
  for (let i = 0; i < 48; i++) writeSomewhere(g, shadow, bytes);

  const own = await runCli('raid', 'replace', '--control', control, '--slot', '0', m[1]!);
  assert.equal(own.status, 1);
  assert.match(own.stderr, /x-b\.img is one of the members the array was started with/);
  assert.equal((await onlineStatus(control)).mdstat, '[4/4] [UUUU]', 'a refused replace fails nothing');

  const fresh = path.join(dir, 'x-new.img');
  const out = await twindisk('raid', 'replace', '--control', control, '--slot', '0', '--size', '16M', '--rate', '3M/s', fresh);
  assert.match(out, /^failed .*x-a\.img \(slot 0\): the array runs without its redundancy until the rebuild ends$/m);
  assert.match(out, /^rebuilding slot 0 onto .*x-new\.img while serving/m);
  await s.waitLog(/replacing .*x-a\.img \(slot 0\) with .*x-new\.img on request/);
  const busy = await runCli('raid', 'check', '--control', control);
  assert.equal(busy.status, 1);
  assert.match(busy.stderr, /a rebuild of slot 0 onto .*x-new\.img is running \([\d.]+%\): one at a time/);

  let writesDuring = 0;
  const st = await until(control, (x) => x.work === null && x.degraded === 0, (x) => {
    assert.equal(x.work?.action, 'rebuild');
    assert.deepEqual([x.work?.slot, x.members[0]!.state], [0, 'recovering']);
    for (let i = 0; i < 4; i++, writesDuring++) writeSomewhere(g, shadow, bytes);
  });
  assert.ok(writesDuring >= 8, `only ${writesDuring} writes during the rebuild`);
  assert.deepEqual([st.mdstat, st.lastRebuild?.ok, st.members[0]!.member], ['[4/4] [UUUU]', true, fresh]);
  verifyAll(g, shadow);
  assert.match(await twindisk('raid', 'check', '--control', control, '--wait'), /^check: 0 mismatched sectors/m);
  g.fe.close();
  assert.equal(await s.stop(), 0);

  const whole = [fresh, m[1]!, m[2]!, m[3]!];
  assert.match(await twindisk('raid', 'check', ...whole), /^check: 0 mismatched sectors/m);
  const s2 = await serveRaid(whole, sock, control);
  const g2 = attach(sock);
  verifyAll(g2, shadow);
  g2.fe.close();
  assert.equal(await s2.stop(), 0);
});
