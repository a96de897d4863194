// An interrupted resync resumes: kill the SyncTarget or the SyncSource mid-way, restart it, and only what was left travels.
// Also: a node demoted cleanly does not claim a crash as Primary after a later kill.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { ResourceStatus } from '../../../engine/replication/resource.js';
import { writeRandom } from '../../harness/blk-client.js';
import { clusterFactory, pairWithClient } from '../../harness/cluster.js';

const cluster = clusterFactory(after);
const MiB = 1 << 20;
const SIZE = 160 * MiB;
/** Slow enough that one bitmap write-back interval (1 s) is a tenth of the volume. */
const RATE = 16 * MiB;
/** What a resumed resync may send beyond the remainder: one write-back interval, and the requests in flight (8 MiB). */
const SLACK = RATE + 8 * MiB;

const resyncOf = (s: ResourceStatus, peer: string) => s.peers[peer]?.resync;

for (const killed of ['beta', 'alpha'] as const) {
  const role = killed === 'beta' ? 'SyncTarget' : 'SyncSource';
  test(`a full initial sync resumes after a SIGKILL of the ${role} past 40%: only the rest is sent`, async () => {
    const c = await cluster({
      nodes: { alpha: { disk: true }, beta: { disk: true } }, size: SIZE, assumeClean: false,
      resource: { 'resync-rate': `${RATE / MiB}M`, 'c-min-rate': `${RATE / MiB}M` },
    });
    await c.startAll();
    const [alpha, beta] = [c.node('alpha'), c.node('beta')];
    await alpha.waitStatus((s) => s.peers.beta?.connection === 'Connected', 'connected');
    await alpha.call({ cmd: 'primary', force: true });
    const mid = await beta.waitStatus((s) => (resyncOf(s, 'alpha')?.percent ?? 0) >= 42, 'resync past 42%', 60000);
    await c.node(killed).stop('SIGKILL');
    const left = (await c.node(killed === 'beta' ? 'alpha' : 'beta').status()).peers[killed]!.outOfSyncBytes;
    assert.ok(left > 0 && left < SIZE * 0.6, `${left} bytes left at the kill (target said ${resyncOf(mid, 'alpha')!.percent}%)`);
    const logBefore = { alpha: alpha.log().length, beta: beta.log().length };
    await c.node(killed).start();
    // The target shows the resumed percentage, not 0%.
    const resumed = await beta.waitStatus((s) => resyncOf(s, 'alpha') !== undefined || s.disk === 'UpToDate', 'resync resumed', 30000);
    // (the restarted side's bitmap may lag by one write-back interval: those blocks count as left again)
    const floor = resyncOf(mid, 'alpha')!.percent - (100 * SLACK) / SIZE;
    if (resyncOf(resumed, 'alpha')) assert.ok(resyncOf(resumed, 'alpha')!.percent >= floor, `status shows ${resyncOf(resumed, 'alpha')!.percent}% after resuming, below ${floor}%`);
    await beta.waitLog(/resuming the resync from alpha at \d+(\.\d)?%/);
    const done = await beta.waitStatus((s) => s.disk === 'UpToDate' && s.peers.alpha?.replication === 'Established', 'in sync', 120000);
    for (const n of [alpha, beta]) {
      assert.doesNotMatch(n.log().slice(logBefore[n.name as 'alpha' | 'beta']), /resync with \w+: .*full=true/, `${n.name}: no full resync after the restart`);
    }
    const received = done.peers.alpha!.lastResync!.bytesReceived;
    assert.ok(received <= left + SLACK, `after the restart ${received} bytes were resynced, more than the ${left} left plus ${SLACK}`);
    assert.ok(received < SIZE * 0.75, `after the restart ${received} of ${SIZE} bytes were resynced: not resumed`);
    assert.ok(c.data('alpha').equals(c.data('beta')), 'both disks hold the same bytes');
  });
}

test('a node demoted cleanly and later killed does not claim it crashed as Primary', async () => {
  const { alpha, g } = await pairWithClient(cluster);
  for (let i = 0; i < 4; i++) writeRandom(g, i * 4 * MiB, 4096); // four activity-log extents
  g.fe.close();
  await alpha.waitStatus((s) => s.role === 'Secondary', 'alpha demoted');
  await alpha.stop('SIGKILL');
  await alpha.start();
  const log = alpha.log();
  assert.doesNotMatch(log, /crashed while Primary|activity log are marked out of sync/);
  await alpha.waitStatus((s) => s.peers.beta?.replication === 'Established' && s.peers.beta.outOfSyncBytes === 0, 'in sync without a resync');
  assert.doesNotMatch(alpha.log(), /resync with beta/);
});
