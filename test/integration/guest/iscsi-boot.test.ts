// The diskless chain end to end: stock iPXE sanboots an iSCSI LUN, SYSLINUX loads Linux from it over INT 13h, and Linux logs in to the same LUN from the iBFT and writes to it.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, test, type TestContext } from 'node:test';
import { buildBootDisk, readRange, readSector, SECTOR_BYTES, type BootDisk } from '../../../bootimg/bootdisk.js';
import { ipxeScript, type IscsiTarget } from '../../../bootimg/ipxe.js';
import { IpxeGuest, USER_NET_HOST, milestones, type IpxeBootResult } from '../../harness/ipxe.js';
import { freePort, startTgt, waitListening, type TgtTarget } from '../../harness/ipxe-tgt.js';
import { cli, tmpDir } from '../../harness/serve.js';
import { clusterFactory } from '../../harness/cluster.js';

const dir = tmpDir('twindisk-iscsi-boot-');
const INITIATOR = 'iqn.2026-12.io.twindisk:boot-test-client';

// Whatever a test started is stopped here too, should the test itself have been cut short.
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups.splice(0)) await c().catch(() => undefined);
});

/**
 * Boots the disk from `target` through iPXE and checks every step: the iBFT names the target and
 * the initiator, Linux logs in and sees the disk, the marker is read back in the guest, and on the
 * host the marker is in the image and nothing else of it changed.
 */
async function bootAndCheck(t: TestContext, disk: BootDisk, target: IscsiTarget, o: { script?: string; image?: string; dataOffset?: number } = {}): Promise<void> {
  const image = o.image ?? disk.image;
  const at = o.dataOffset ?? 0;
  assert.ok(readSector(image, disk.markSector, at).every((b) => b === 0), 'the marker sector starts zeroed');
  const g = IpxeGuest.launch({ script: o.script ?? ipxeScript({ target, initiator: INITIATOR }), timeoutMs: 600_000 });
  cleanups.push(() => g.kill());
  let r: IpxeBootResult;
  try {
    r = await g.wait();
  } finally {
    await g.kill();
  }
  const times = milestones(r.lines);
  const order = Object.entries(times).sort((a, b) => a[1] - b[1]);
  t.diagnostic(`console milestones (s since QEMU started): ${order.map(([k, v]) => `${k} ${(v / 1000).toFixed(1)}`).join(', ')}; QEMU exited at ${(r.durationMs / 1000).toFixed(1)}`);
  for (const re of [/TWINDISK-IBFT .*/, /TWINDISK-DISK .*/]) t.diagnostic(re.exec(r.output)?.[0] ?? `no ${re.source} line`);
  assert.match(r.output, /Registered SAN device 0x80/, 'iPXE hooked the LUN as BIOS drive 0x80');
  assert.match(r.output, /TWINDISK-SYSLINUX/, 'SYSLINUX read its configuration from the FAT partition over INT 13h');
  const ibft = /TWINDISK-IBFT (.*)/.exec(r.output);
  assert.ok(ibft, `the kernel found iPXE's iBFT:\n${r.output}`);
  assert.match(ibft[1]!, new RegExp(`initiator=${INITIATOR} target=${target.iqn} target-ip=${USER_NET_HOST} port=${target.port} `));
  assert.match(r.output, /TWINDISK-LOGIN/, `iscsistart -b logged in:\n${r.output}`);
  assert.match(r.output, /TWINDISK-DISK \/dev\/sd[a-z]+ sectors=131072 /, 'Linux sees the 64 MiB LUN it booted from');
  assert.match(r.output, /TWINDISK-MARK-OK/, `the guest read back its marker with O_DIRECT:\n${r.output}`);
  assert.equal(r.exitCode, 0, r.output);
  const expected = Buffer.alloc(SECTOR_BYTES);
  disk.mark.copy(expected);
  assert.deepEqual(readSector(image, disk.markSector, at), expected, 'the host sees the marker in the image');
  // Everything else, the FAT partition above all, is as built: the boot read it and wrote nothing.
  const built = fs.readFileSync(disk.built);
  const now = readRange(image, at, built.length);
  now.fill(0, disk.markSector * SECTOR_BYTES, (disk.markSector + 1) * SECTOR_BYTES);
  assert.ok(now.equals(built), 'no sector but the marker changed');
}

test('tgt (reference target): iPXE sanboots the LUN, SYSLINUX loads Linux over INT 13h, Linux logs in from the iBFT and writes the marker', { timeout: 12 * 60_000 }, async (t) => {
  const iqn = 'iqn.2026-12.io.twindisk:boot-tgt';
  const disk = await buildBootDisk({ out: path.join(dir, 'tgt.img'), log: (l) => t.diagnostic(l) });
  let tgt: TgtTarget | undefined;
  try {
    tgt = await startTgt({ image: disk.image, iqn });
    cleanups.push(() => tgt!.stop());
    // tgt's LUN 0 is its controller; the disk is LUN 1 (twindisk serves it as LUN 0).
    await bootAndCheck(t, disk, { host: USER_NET_HOST, port: tgt.port, lun: tgt.lun, iqn });
  } finally {
    await tgt?.stop();
    fs.rmSync(disk.image, { force: true });
  }
  assert.ok(tgt.child.exitCode !== null || tgt.child.signalCode !== null, 'tgtd is gone');
});

// ---------------------------------------------------------------------------------------------------
// twindisk's own iSCSI target: the same chain, served by `twindisk serve --iscsi` as LUN 0.

test('twindisk serve --iscsi: iPXE sanboots LUN 0, SYSLINUX loads Linux over INT 13h, Linux logs in from the iBFT and writes the marker', { timeout: 12 * 60_000 }, async (t) => {
  const iqn = 'iqn.2026-12.io.twindisk:boot-twindisk';
  const disk = await buildBootDisk({ out: path.join(dir, 'twindisk.img'), log: (l) => t.diagnostic(l) });
  const port = await freePort();
  const target = background(['serve', '--image', disk.image, '--iscsi', `127.0.0.1:${port}`, '--target-name', iqn]);
  try {
    await waitListening(port, 15_000, () => target.child.exitCode === null).catch((e: Error) => {
      throw new Error(`twindisk serve --iscsi did not listen: ${e.message}\n${target.log()}`);
    });
    await bootAndCheck(t, disk, { host: USER_NET_HOST, port, lun: 0, iqn }).catch((e: Error) => {
      e.message += `\ntwindisk serve log:\n${target.log()}`;
      throw e;
    });
  } finally {
    await target.stop();
    fs.rmSync(disk.image, { force: true });
  }
});

/** Runs a twindisk command in the background until stopped; its output is kept for failure messages. */
function background(args: string[]): { child: ChildProcess; log: () => string; stop: () => Promise<void> } {
  let log = '';
  const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exit = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exit;
    clearTimeout(timer);
  };
  cleanups.push(stop);
  return { child, log: () => log, stop };
}

test('CHAP, chained over HTTP: iPXE fetches its script from `twindisk ipxe --listen`, answers the CHAP challenge and boots; Linux logs in with the iBFT\'s credentials', { timeout: 12 * 60_000 }, async (t) => {
  const iqn = 'iqn.2026-12.io.twindisk:boot-chap';
  const secret = 'boot-secret-of-24-chars!';
  const disk = await buildBootDisk({ out: path.join(dir, 'chap.img'), log: (l) => t.diagnostic(l) });
  const port = await freePort();
  const httpPort = await freePort();
  const target = background(['serve', '--image', disk.image, '--iscsi', `127.0.0.1:${port}`, '--target-name', iqn, '--chap', `boot:${secret}`]);
  const http = background(['ipxe', '--target', `iscsi://${USER_NET_HOST}:${port}/${iqn}`, '--initiator', INITIATOR, '--chap', `boot:${secret}`, '--listen', `127.0.0.1:${httpPort}`]);
  try {
    await waitListening(port, 15_000, () => target.child.exitCode === null);
    await waitListening(httpPort, 15_000, () => http.child.exitCode === null);
    // What a DHCP server hands an iPXE client as its boot file: the portal's root, which chains on with the client's MAC.
    const script = `#!ipxe\ndhcp || dhcp\nchain http://${USER_NET_HOST}:${httpPort}/ || shell\n`;
    await bootAndCheck(t, disk, { host: USER_NET_HOST, port, lun: 0, iqn }, { script }).catch((e: Error) => {
      e.message += `\ntarget log:\n${target.log()}\nhttp log:\n${http.log()}`;
      throw e;
    });
    assert.match(http.log(), /GET \/boot\.ipxe\?mac=52(:|%3A)54(:|%3A)00\S* from \S+: 200/i, `iPXE chained to its per-MAC script:\n${http.log()}`);
    assert.match(target.log(), /iSCSI session .*initiator=/, 'sessions were opened');
  } finally {
    await target.stop();
    await http.stop();
    fs.rmSync(disk.image, { force: true });
  }
});

const cluster = clusterFactory(after);

test('a replicated volume booted through the Secondary\'s portal: the login is redirected to the Primary, and the marker reaches both replicas', { timeout: 12 * 60_000 }, async (t) => {
  const disk = await buildBootDisk({ out: path.join(dir, 'replicated.img'), log: (l) => t.diagnostic(l) });
  const bootBytes = fs.readFileSync(disk.image);
  const c = await cluster({ nodes: { alpha: { disk: true, iscsi: true }, beta: { disk: true, iscsi: true } }, size: bootBytes.length });
  // The volume starts as the boot disk on both replicas (created in sync with --assume-clean): its data area is the file's start.
  for (const n of ['alpha', 'beta']) {
    const fd = fs.openSync(c.node(n).image, 'r+');
    fs.writeSync(fd, bootBytes, 0, bootBytes.length, 0);
    fs.closeSync(fd);
  }
  // The nodes advertise the address the guest reaches the host by (QEMU user networking), so a redirect leads there.
  const cfg = JSON.parse(fs.readFileSync(c.file, 'utf8'));
  for (const n of ['alpha', 'beta']) cfg.nodes[n]['iscsi-advertise'] = `${USER_NET_HOST}:${c.node(n).iscsiPort}`;
  fs.writeFileSync(c.file, JSON.stringify(cfg, null, 2));
  await c.startAll();
  const alpha = c.node('alpha');
  const beta = c.node('beta');
  c.cli(['primary', '--config', c.file, '--node', 'alpha']);
  await beta.waitStatus((s) => Object.values(s.peers).some((p) => p.role === 'Primary'), 'beta sees alpha Primary');
  const iqn = 'iqn.2026-12.io.twindisk:r0';
  // The boot address is beta's portal; beta is Secondary and redirects to alpha.
  const target = { host: USER_NET_HOST, port: beta.iscsiPort, lun: 0, iqn };
  const g = IpxeGuest.launch({ script: ipxeScript({ target, initiator: INITIATOR }), timeoutMs: 600_000 });
  cleanups.push(() => g.kill());
  let r: IpxeBootResult;
  try {
    r = await g.wait();
  } finally {
    await g.kill();
  }
  const diag = `\nguest:\n${r.output}\nalpha:\n${alpha.log()}\nbeta:\n${beta.log()}`;
  assert.match(r.output, /TWINDISK-MARK-OK/, `the guest wrote and read back its marker${diag}`);
  assert.match(beta.log(), /redirecting an iSCSI login to alpha/, `beta redirected${diag}`);
  await beta.waitStatus((s) => s.role === 'Secondary', 'beta stayed Secondary');
  const expected = Buffer.alloc(SECTOR_BYTES);
  disk.mark.copy(expected);
  await new Promise((res) => setTimeout(res, 200));
  for (const n of ['alpha', 'beta']) {
    assert.deepEqual(readRange(c.node(n).image, disk.markSector * SECTOR_BYTES, SECTOR_BYTES), expected, `the marker is on ${n}`);
  }
});
