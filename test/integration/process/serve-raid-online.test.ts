// `twindisk serve --raid --control`: a member failed and a new one added while serving (mdadm --manage --fail/--add), driven by the vhost-user test front-end.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, test } from 'node:test';
import type { ServedRaidStatus } from '../../../cli/raid.js';
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
  const replace = await runCli('raid', 'replace', '--control', fake, '--slot', '0', 'n.img');
  assert.equal(replace.status, 2);
  assert.match(replace.stderr, /raid replace does not run on a served array: fail the slot/);
});

test('SIGTERM during an online rebuild: the rebuild stops, the new member is recorded failed, the array is clean and degraded; adding it again offline rebuilds it', async () => {
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

  const left = [m[0]!, m[1]!, m[3]!];
  const offline = JSON.parse(await twindisk('raid', 'status', '--json', ...left, fresh)) as ServedRaidStatus;
  assert.deepEqual([offline.state, offline.mdstat], ['clean', '[4/3] [UU_U]']);
  await twindisk('raid', 'add', '--slot', '2', fresh, ...left);
  const whole = [m[0]!, m[1]!, fresh, m[3]!];
  assert.match(await twindisk('raid', 'check', ...whole), /^check: 0 mismatched sectors/m);
  const s2 = await serveRaid(whole, sock, control);
  const g2 = attach(sock);
  verifyAll(g2, shadow);
  g2.fe.close();
  assert.equal(await s2.stop(), 0);
});
