// Online resize under a running guest: `twindisk resize` grows a served image and a replicated volume; the guest's
// /sys/block/vda/size changes (a config-change interrupt, no reboot) and it writes to the new blocks.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import { Cluster } from '../../harness/cluster.js';
import { Guest } from '../../harness/guest.js';
import { cli, serve, tmpDir, type Served } from '../../harness/serve.js';

const run = promisify(execFile);
const dir = tmpDir();
const running: Served[] = [];
const clusters: Cluster[] = [];
after(async () => {
  for (const s of running) await s.stop('SIGKILL');
  for (const c of clusters) await c.stopAll('SIGKILL');
});

/** The guest script: waits for the size to change, then writes 1 MiB of 'R' at the old end and reads it back. */
function resizeScript(oldSectors: number): string {
  return `
    echo "before=$(cat /sys/block/vda/size)"
    echo READY-TO-GROW
    n=0
    while [ "$(cat /sys/block/vda/size)" = "${oldSectors}" ] && [ $n -lt 600 ]; do sleep 0.2; n=$((n+1)); done
    echo "after=$(cat /sys/block/vda/size)"
    dd if=/dev/zero bs=1M count=1 2>/dev/null | tr '\\0' R | dd of=/dev/vda bs=1M seek=${oldSectors / 2048} oflag=direct 2>/dev/null
    echo "wrote=$?"
    dd if=/dev/vda bs=1M skip=${oldSectors / 2048} count=1 iflag=direct 2>/dev/null | tr -d R | wc -c | sed 's/^/notR=/'
    sync
  `;
}

test('serve: the guest sees the image grow and writes past the old end', async () => {
  const image = path.join(dir, 'grow.img');
  fs.writeFileSync(image, '');
  fs.truncateSync(image, 64 << 20);
  const control = path.join(dir, 'grow.ctl');
  const s = await serve({ image, socket: path.join(dir, 'grow.sock'), args: ['--control', control], dir });
  running.push(s);
  const g = await Guest.launch({ disks: [{ socket: s.socket }], script: resizeScript(131072), timeoutMs: 300_000 });
  try {
    await g.waitFor(/READY-TO-GROW/, 240_000);
    const { stdout } = await run(process.execPath, [cli, 'resize', '--control', control, '--size', '96M']);
    assert.match(stdout, /resized from 67108864 to 100663296 bytes/);
    const r = await g.wait();
    assert.equal(r.exitCode, 0, r.output);
    assert.match(r.output, /before=131072/);
    assert.match(r.output, /after=196608/);
    assert.match(r.output, /wrote=0/);
    assert.match(r.output, /notR=0/);
  } finally {
    await g.kill();
  }
  assert.equal(fs.statSync(image).size, 96 << 20);
  const f = fs.readFileSync(image);
  assert.ok(f.subarray(64 << 20, 65 << 20).every((b) => b === 0x52), 'the guest\'s write landed in the new blocks');
  await s.waitLog(/told the front-end the capacity changed/);
});

test('replicated: a guest on the Primary sees the volume grow; its writes to the new blocks land on both replicas', async () => {
  const c = await Cluster.create({ nodes: { alpha: { disk: true, socket: true }, beta: { disk: true } }, size: 32 << 20 });
  clusters.push(c);
  await c.startAll();
  const alpha = c.node('alpha');
  await alpha.waitStatus((s) => s.peers.beta?.replication === 'Established', 'alpha connected to beta');
  await alpha.waitLog(/vhost-user: listening/);
  const g = await Guest.launch({ disks: [{ socket: alpha.socket }], script: resizeScript(65536), timeoutMs: 300_000 });
  try {
    await g.waitFor(/READY-TO-GROW/, 240_000);
    const out = c.cli(['resize', '--config', c.file, '--node', 'alpha', '--size', String(48 << 20)]);
    assert.match(out, /resized from 33554432 to 50331648 bytes on alpha, beta/);
    const r = await g.wait();
    assert.equal(r.exitCode, 0, r.output);
    assert.match(r.output, /before=65536/);
    assert.match(r.output, /after=98304/);
    assert.match(r.output, /wrote=0/);
    assert.match(r.output, /notR=0/);
  } finally {
    await g.kill();
  }
  await alpha.waitStatus((s) => s.role === 'Secondary' && s.peers.beta!.outOfSyncBytes === 0, 'alpha demoted, beta in sync');
  await c.stopAll('SIGTERM');
  for (const n of ['alpha', 'beta']) {
    const fd = fs.openSync(c.node(n).image, 'r');
    const b = Buffer.alloc(1 << 20);
    fs.readSync(fd, b, 0, b.length, 32 << 20);
    fs.closeSync(fd);
    assert.ok(b.every((x) => x === 0x52), `${n}: the guest's write in the new blocks`);
  }
});
