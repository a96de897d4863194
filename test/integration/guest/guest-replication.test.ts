// Real QEMU guests on a replicated resource: the Linux virtio-blk driver writes through the Primary; replicas converge; a crash loses nothing acknowledged.
import assert from 'node:assert/strict';
import { test, after } from 'node:test';
import { Guest, runGuest } from '../../harness/guest.js';
import { Cluster } from '../../harness/cluster.js';

const clusters: Cluster[] = [];
after(async () => {
  for (const c of clusters) await c.stopAll('SIGKILL');
});

test('protocol C, three nodes (one diskless): a guest writes through the Primary and both disks end byte-identical', async () => {
  const c = await Cluster.create({
    nodes: { alpha: { disk: true, socket: true, queues: 2 }, beta: { disk: true }, gamma: { disk: false } },
    resource: { quorum: 'majority' }, size: 32 << 20,
  });
  clusters.push(c);
  await c.startAll();
  const alpha = c.node('alpha');
  await alpha.waitStatus((s) => s.peers.beta?.replication === 'Established' && s.peers.gamma?.connection === 'Connected', 'connected');
  await alpha.waitLog(/vhost-user: listening/);
  const r = await runGuest({
    disks: [{ socket: alpha.socket, numQueues: 2 }],
    cpus: 2,
    script: `
      dd if=/dev/urandom of=/tmp/a bs=64k count=16 2>/dev/null
      dd if=/tmp/a of=/dev/vda bs=64k seek=3 conv=fsync 2>/dev/null
      for i in 1 2 3 4 5 6 7 8; do dd if=/dev/urandom of=/dev/vda bs=4k count=1 seek=$((i * 997)) oflag=direct 2>/dev/null; done
      /sbin/blkdiscard -o 8388608 -l 1048576 /dev/vda
      sync
      echo "md5=$(md5sum < /tmp/a | cut -d' ' -f1)"
      echo "back=$(dd if=/dev/vda bs=64k skip=3 count=16 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)"
    `,
  });
  assert.equal(r.exitCode, 0, r.output);
  const md5 = /md5=([0-9a-f]{32})/.exec(r.output)![1];
  assert.ok(r.output.includes(`back=${md5}`), r.output);
  await alpha.waitStatus((s) => s.role === 'Secondary', 'alpha demoted when QEMU left');
  const a = c.data('alpha');
  const b = c.data('beta');
  assert.ok(a.equals(b), 'alpha and beta hold the same bytes');
  const { createHash } = await import('node:crypto');
  assert.equal(createHash('md5').update(a.subarray(3 * 65536, 19 * 65536)).digest('hex'), md5, 'the guest\'s data is on the disks');
  const v = await alpha.waitStatus((s) => s.peers.beta?.outOfSyncBytes === 0, 'no out-of-sync blocks');
  assert.equal(v.peers.beta!.replication, 'Established');
});

test('the Primary is SIGKILLed under a writing guest: a guest on the promoted Secondary reads every acknowledged write', async () => {
  const c = await Cluster.create({ nodes: { alpha: { disk: true, socket: true }, beta: { disk: true, socket: true } }, size: 32 << 20 });
  clusters.push(c);
  await c.startAll();
  const alpha = c.node('alpha');
  const beta = c.node('beta');
  await alpha.waitStatus((s) => s.peers.beta?.replication === 'Established', 'connected');
  await alpha.waitLog(/vhost-user: listening/);
  await beta.waitLog(/vhost-user: listening/);
  // Block i holds "block-i" repeated; the guest prints "acked i" only after the write returned.
  const writer = await Guest.launch({
    disks: [{ socket: alpha.socket }],
    script: `
      i=0
      while [ $i -lt 4000 ]; do
        yes "block-$i" | head -c 4096 | dd of=/dev/vda bs=4k seek=$i oflag=direct 2>/dev/null || { echo "failed $i"; break; }
        echo "acked $i"
        i=$((i + 1))
      done
    `,
  });
  try {
    await writer.waitFor(/acked 40\b/, 120_000);
    await alpha.stop('SIGKILL');
  } finally {
    await writer.kill();
  }
  const acked = [...writer.output.matchAll(/acked (\d+)/g)].map((m) => Number(m[1]));
  const last = Math.max(...acked);
  assert.ok(last >= 40);
  await beta.waitStatus((s) => s.peers.alpha?.connection !== 'Connected', 'beta saw alpha die');
  const r = await runGuest({
    disks: [{ socket: beta.socket }],
    script: `
      bad=0
      i=0
      while [ $i -le ${last} ]; do
        want=$(yes "block-$i" | head -c 4096 | md5sum | cut -d' ' -f1)
        got=$(dd if=/dev/vda bs=4k skip=$i count=1 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
        [ "$want" = "$got" ] || { echo "lost $i"; bad=$((bad + 1)); }
        i=$((i + 1))
      done
      echo "checked ${last} bad=$bad"
    `,
  });
  assert.equal(r.exitCode, 0, r.output);
  assert.match(r.output, new RegExp(`checked ${last} bad=0`), r.output);
});

test('a Secondary stopped while a guest writes is resynced with exactly the blocks written meanwhile', async () => {
  const c = await Cluster.create({ nodes: { alpha: { disk: true, socket: true }, beta: { disk: true } }, size: 32 << 20 });
  clusters.push(c);
  await c.startAll();
  const [alpha, beta] = [c.node('alpha'), c.node('beta')];
  await alpha.waitStatus((s) => s.peers.beta?.replication === 'Established', 'connected');
  await alpha.waitLog(/vhost-user: listening/);
  // Phase 1 with beta up, then a pause while the test stops beta, then 37 distinct 4 KiB blocks.
  const guest = await Guest.launch({
    disks: [{ socket: alpha.socket }],
    script: `
      for i in 0 1 2 3; do dd if=/dev/urandom of=/dev/vda bs=4k count=1 seek=$i oflag=direct 2>/dev/null; done
      echo "phase1 done"
      while [ ! -e /dev/vda ] || [ "$(dd if=/dev/vda bs=4k skip=7000 count=1 iflag=direct 2>/dev/null | head -c 2)" != "go" ]; do sleep 0.2; done
      i=0
      while [ $i -lt 37 ]; do dd if=/dev/urandom of=/dev/vda bs=4k count=1 seek=$((100 + i * 13)) oflag=direct 2>/dev/null; i=$((i + 1)); done
      sync
      echo "phase2 done"
    `,
  });
  try {
    await guest.waitFor(/phase1 done/, 120_000);
    await beta.stop('SIGTERM');
    await alpha.waitStatus((s) => s.peers.beta?.connection !== 'Connected', 'alpha sees beta gone');
    // Tell the guest to go on: a marker it polls for, put into alpha's file behind the engine's back
    // (so it is no write of the guest's and is not replicated; block 7000 is left out of the comparison).
    const fs = await import('node:fs');
    const fd = fs.openSync(alpha.image, 'r+');
    fs.writeSync(fd, Buffer.from('go'), 0, 2, 7000 * 4096);
    fs.closeSync(fd);
    await guest.waitFor(/phase2 done/, 120_000);
  } finally {
    await guest.kill();
  }
  const s = await alpha.waitStatus((x) => x.role === 'Secondary', 'alpha demoted');
  assert.equal(s.peers.beta!.outOfSyncBytes, 37 * 4096, 'the guest\'s writes while beta was away');
  await beta.start();
  const done = await alpha.waitStatus((x) => x.peers.beta?.replication === 'Established' && x.peers.beta.lastResync !== undefined, 'resynced', 60_000);
  assert.equal(done.peers.beta!.lastResync!.bytesSent, 37 * 4096, 'exactly the blocks written meanwhile were sent');
  const a = c.data('alpha');
  const b = c.data('beta');
  assert.ok(a.subarray(0, 7000 * 4096).equals(b.subarray(0, 7000 * 4096)), 'the guest-visible data is identical');
});
