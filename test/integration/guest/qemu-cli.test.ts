// `twindisk qemu run|attach|detach|migrate` against real QEMU: run boots the test guest on a node's volume
// (the guest writes to it, and the write reaches the peer); attach hot-plugs a `twindisk serve` disk that
// the guest sees appear in /sys/block, detach makes it disappear; migrate's refusals and QEMU's own errors.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { buildGuestImage, scriptArchive } from '../../../bootimg/guest.js';
import { NEEDS_TWO_PRIMARIES } from '../../../cli/qemu-commands.js';
import { QmpClient } from '../../../qemu-plugin/qmp.js';
import { clusterFactory, freePort } from '../../harness/cluster.js';
import { cli, runCli, serve, tmpDir, type Served } from '../../harness/serve.js';

const makeCluster = clusterFactory(after);
const dir = tmpDir('twindisk-qemu-cli-');
const children: ChildProcess[] = [];
const served: Served[] = [];
after(async () => {
  for (const c of children) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    // SIGTERM: `qemu run` passes it on to QEMU (a SIGKILL would orphan QEMU).
    c.kill('SIGTERM');
    await Promise.race([new Promise((r) => c.once('exit', r)), new Promise((r) => setTimeout(r, 15_000))]);
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
  for (const s of served) await s.stop('SIGKILL');
});

const twindisk = runCli;

/** The test guest's initramfs with `script` as /test.sh (as test/harness/guest.ts builds it). */
async function guestImage(script: string): Promise<{ kernel: string; initrd: string }> {
  const img = await buildGuestImage();
  const base = fs.readFileSync(img.initrd);
  const initrd = path.join(dir, 'initrd');
  // The kernel finds an uncompressed archive after a compressed one only at a 4-byte boundary.
  fs.writeFileSync(initrd, Buffer.concat([base, Buffer.alloc((4 - (base.length % 4)) % 4), scriptArchive(script)]));
  return { kernel: img.kernel, initrd };
}

async function waitFor(what: () => string, re: RegExp, ms: number, child: ChildProcess): Promise<void> {
  const t0 = Date.now();
  while (!re.test(what())) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`qemu run exited (${child.exitCode ?? child.signalCode}) before ${re}:\n${what()}`);
    if (Date.now() - t0 > ms) throw new Error(`no ${re} within ${ms} ms:\n${what()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('qemu run boots a guest on a node\'s volume; attach and detach a disk the guest sees come and go; migrate refusals', async () => {
  const c = await makeCluster({ nodes: { alpha: { disk: true, socket: true, queues: 2 }, beta: { disk: true } } });
  await c.startAll();
  const alpha = c.node('alpha');
  await alpha.waitStatus((s) => s.peers.beta?.replication === 'Established', 'connected');
  await alpha.waitLog(/vhost-user: listening/);

  const image = path.join(dir, 'extra.img');
  fs.writeFileSync(image, Buffer.alloc(8 << 20, 0x5a));
  const extra = await serve({ image, socket: path.join(dir, 'extra.sock'), dir });
  served.push(extra);

  const guest = await guestImage(`
    echo "vda size=$(cat /sys/block/vda/size)"
    printf RUN-VIA-CLI | dd of=/dev/vda bs=512 seek=16 conv=sync,fsync 2>/dev/null && echo WROTE-VDA
    echo WAITING-FOR-VDB
    i=0; while [ ! -e /sys/block/vdb ] && [ $i -lt 1800 ]; do sleep 0.1; i=$((i+1)); done
    [ -e /sys/block/vdb ] || { echo NO-VDB; exit 1; }
    echo "vdb size=$(cat /sys/block/vdb/size)"
    dd if=/dev/vdb bs=4k count=1 iflag=direct 2>/dev/null | od -An -tx1 | head -1
    i=0; while [ -e /sys/block/vdb ] && [ $i -lt 1800 ]; do sleep 0.1; i=$((i+1)); done
    [ -e /sys/block/vdb ] && echo VDB-STILL-THERE || echo VDB-GONE
    # Stay up: the test ends QEMU over QMP.
    sleep 900
  `);
  const qmpSocket = path.join(dir, 'guest.qmp');
  const run = spawn(process.execPath, [
    cli, 'qemu', 'run', '--config', c.file, '--node', 'alpha', '--accel', 'tcg', '--memory', '256M', '--qmp', qmpSocket,
    '--kernel', guest.kernel, '--initrd', guest.initrd, '--append', 'console=ttyS0 quiet panic=-1 twindisk.disks=1', '--', '-no-reboot',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(run);
  let out = '';
  let err = '';
  run.stdout!.on('data', (d) => (out += d.toString().replace(/\r/g, '')));
  run.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((r) => run.once('exit', (code) => r(code)));

  await waitFor(() => out, /WAITING-FOR-VDB/, 300_000, run);
  assert.ok(err.includes(`twindisk: QMP socket: ${qmpSocket}`), err);
  assert.match(err, /starting qemu-system-x86_64 -accel tcg .*vhost-user-blk-pci,id=twindisk-r0,chardev=twindisk-r0-sock,num-queues=2/);
  assert.match(out, /vda size=32768\n/);
  assert.match(out, /WROTE-VDA/);

  // Hot-plug the serve'd disk into the root port `qemu run` left free.
  const attached = await twindisk('qemu', 'attach', '--qmp', qmpSocket, '--socket', extra.socket);
  assert.equal(attached.status, 0, attached.stdout + attached.stderr);
  assert.match(attached.stdout, /attached .*extra\.sock as twindisk0 on twindisk-hp0/);
  await waitFor(() => out, /vdb size=16384\n\s*5a 5a 5a 5a/, 120_000, run);
  // A second attach of the same disk is refused before QEMU is touched.
  const twice = await twindisk('qemu', 'attach', '--qmp', qmpSocket, '--socket', extra.socket);
  assert.equal(twice.status, 1);
  assert.match(twice.stderr, /QEMU has twindisk0 attached already/);

  const detached = await twindisk('qemu', 'detach', '--qmp', qmpSocket, '--socket', extra.socket, '--timeout', '180');
  assert.equal(detached.status, 0, detached.stdout + detached.stderr);
  assert.match(detached.stdout, /detached .*extra\.sock \(twindisk0\)/);
  await waitFor(() => out, /VDB-GONE|VDB-STILL-THERE/, 120_000, run);
  assert.match(out, /VDB-GONE/);
  await extra.waitLog(/front-end disconnected/, 30_000);

  // migrate: refused without allow-two-primaries, before QEMU is asked anything.
  const refused = await twindisk('qemu', 'migrate', '--qmp', qmpSocket, '--to', '127.0.0.1:4444', '--config', c.file);
  assert.equal(refused.status, 1);
  assert.match(refused.stderr, new RegExp(NEEDS_TWO_PRIMARIES.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
  // QEMU's own refusal (no vhost-user dirty logging yet) or failure (nothing listens at --to) comes through.
  const port = await freePort();
  const failed = await twindisk('qemu', 'migrate', '--qmp', qmpSocket, '--to', `127.0.0.1:${port}`);
  assert.equal(failed.status, 1, failed.stdout + failed.stderr);
  assert.match(failed.stderr, /^twindisk: (QEMU refused migrate: |migration failed: )\S/);
  if (/LOG_SHMFD|LOG_ALL/.test(failed.stderr)) assert.match(failed.stderr, /does not log the guest memory it writes/);

  // The guest still runs on its disk; end QEMU, and `qemu run` exits with its status.
  const qmp = await QmpClient.connect(qmpSocket, 10_000);
  const status = await qmp.execute<{ status: string }>('query-status');
  assert.equal(status.status, 'running');
  await qmp.execute('quit').catch(() => undefined);
  qmp.close();
  assert.equal(await exited, 0, err);

  // The guest's write went through the node to its peer.
  const sector = (name: string) => c.data(name).toString('latin1', 16 * 512, 16 * 512 + 11);
  assert.equal(sector('alpha'), 'RUN-VIA-CLI');
  assert.equal(sector('beta'), 'RUN-VIA-CLI');
});
