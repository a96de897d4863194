// A real guest on a replicated node whose disk is a raid5 md array: a member fails and is rebuilt while the guest writes, and nothing fails over.
//
// DRBD on md: losing a disk inside a node is the array's business, not replication's. The guest writes a
// pattern over its whole disk in 256 KiB steps (O_DIRECT), printing each step once it is acknowledged;
// after a few steps the host fails a member of alpha's array, later adds a new one, and the guest keeps
// writing through both. Then: the guest reads its disk back (md5), alpha stayed Primary and UpToDate the
// whole time, the peer holds the same bytes, and md's scrub of the members finds parity right.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { after, test } from 'node:test';
import type { ServedRaidStatus } from '../../../engine/raid/membership.js';
import type { ResourceStatus } from '../../../engine/replication/resource.js';
import { Cluster } from '../../harness/cluster.js';
import { Guest } from '../../harness/guest.js';
import { runCliOk } from '../../harness/serve.js';

const clusters: Cluster[] = [];
after(async () => {
  for (const c of clusters) await c.stopAll('SIGKILL');
});

const SIZE = 32 << 20;
const BLOCK = 4096;
const STEP = 256 << 10;
const STEPS = SIZE / STEP;

/** Block i: its text padded to 4095 bytes and a newline, as the guest's awk prints it. */
function pattern(bytes: number): Buffer {
  const out = Buffer.alloc(bytes);
  for (let i = 0; i * BLOCK < bytes; i++) out.write(`${`raid-node block ${i}`.padEnd(BLOCK - 1)}\n`, i * BLOCK, 'latin1');
  return out;
}

const SCRIPT = `
j=0
while [ $j -lt ${STEPS} ]; do
  awk -v s=$((j * 64)) 'BEGIN { for (i = s; i < s + 64; i++) printf "%-4095s\\n", "raid-node block " i }' \\
    | dd of=/dev/vda bs=256k seek=$j count=1 iflag=fullblock oflag=direct 2>/dev/null || { echo "failed $j"; break; }
  echo "acked $j"
  j=$((j + 1))
done
sync
echo 3 > /proc/sys/vm/drop_caches
echo "md5=$(dd if=/dev/vda bs=1M iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)"
`;

type RaidNodeStatus = ResourceStatus & { raid?: ServedRaidStatus };

test('raid5 under a replicated Primary: a member fails and is rebuilt while the guest writes; the node never fails over and loses nothing', async () => {
  const c = await Cluster.create({
    nodes: { alpha: { disk: true, socket: true, raid: { level: 'raid5', members: 3, chunk: '64K' } }, beta: { disk: true } },
    size: SIZE,
  });
  clusters.push(c);
  await c.startAll();
  const alpha = c.node('alpha');
  await alpha.waitStatus((s) => s.peers.beta?.replication === 'Established', 'connected');
  await alpha.waitLog(/vhost-user: listening/);
  const control = path.join(c.dir, '.r0.alpha.ctl');
  const seen: RaidNodeStatus[] = [];
  const guest = await Guest.launch({ disks: [{ socket: alpha.socket }], script: SCRIPT });
  let r;
  try {
    await guest.waitFor(/acked 10\b/, 180_000);
    await runCliOk('raid', 'fail', '--control', control, '--slot', '1');
    seen.push(await alpha.waitStatus((s) => (s as RaidNodeStatus).raid?.degraded === 1, 'array degraded'));
    await guest.waitFor(/acked 40\b/, 180_000);
    seen.push(await alpha.status());
    await runCliOk('raid', 'add', '--control', control, '--slot', '1', '--size', '20M', path.join(c.dir, 'alpha-new.img'));
    seen.push(await alpha.waitStatus((s) => (s as RaidNodeStatus).raid?.degraded === 0 && (s as RaidNodeStatus).raid?.work === null, 'rebuilt', 180_000));
    r = await guest.wait();
  } finally {
    await guest.kill();
  }
  assert.equal(r.exitCode, 0, r.output);
  assert.doesNotMatch(r.output, /failed \d+/, 'every guest write succeeded');
  const want = pattern(SIZE);
  assert.equal(/md5=([0-9a-f]{32})/.exec(r.output)?.[1], createHash('md5').update(want).digest('hex'), 'the guest read back what it wrote');
  for (const s of seen) {
    assert.equal(s.role, 'Primary', 'alpha stayed Primary');
    assert.equal(s.disk, 'UpToDate', 'alpha\'s disk stayed UpToDate');
    assert.equal(s.peers.beta?.replication, 'Established', 'replication went on');
  }
  assert.match(alpha.log(), /the md array lost .*alpha-1\.img \(slot 1\): it serves on degraded/);

  // The peer holds the guest's bytes; alpha's array (with the rebuilt member) checks clean.
  await alpha.waitStatus((s) => s.role === 'Secondary', 'alpha demoted when QEMU left');
  assert.ok(c.data('beta').equals(want), 'beta holds every byte the guest wrote');
  await alpha.stop('SIGTERM');
  const check = await runCliOk('raid', 'check', alpha.member(0), path.join(c.dir, 'alpha-new.img'), alpha.member(2));
  assert.match(check, /^check: 0 mismatched sectors/m);
});
