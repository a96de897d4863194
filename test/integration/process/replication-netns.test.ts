// A real network partition: each node in its own network namespace, one node's link cut at the bridge while it keeps running.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { ResourceStatus } from '../../../engine/replication/resource.js';
import { VIRTIO_BLK_S_IOERR, VIRTIO_BLK_T_OUT } from '../../../qemu-plugin/virtio/constants.js';
import { attach, readBack, writeRandom } from '../../harness/blk-client.js';
import { clusterFactory } from '../../harness/cluster.js';
import { TestNetwork } from '../../harness/netns.js';

const cluster = clusterFactory(after);
const established = (s: ResourceStatus, ...peers: string[]) => peers.every((p) => s.peers[p]?.replication === 'Established');

test('partition in network namespaces: the cut-off Primary stops writing, the majority goes on, healing converges and verify finds nothing', async () => {
  const net = new TestNetwork(3);
  after(() => net.destroy());
  const c = await cluster({
    nodes: { alpha: { disk: true, socket: true }, beta: { disk: true, socket: true }, gamma: { disk: false } },
    resource: { quorum: 'majority' }, network: net,
  });
  await c.startAll();
  const [alpha, beta] = [c.node('alpha'), c.node('beta')];
  await alpha.waitStatus((s) => established(s, 'beta', 'gamma'), 'all connected over the bridge');
  await alpha.waitLog(/vhost-user: listening/);
  const g = attach(alpha.socket);
  const before = writeRandom(g, 0, 8192);
  net.cut(0);
  // The links time out (no RST crosses a cut link); alpha is then alone: no quorum, and a write fails
  // rather than being acknowledged on a minority. (A write caught in flight by the cut either fails
  // the same way or, if one peer's link times out first, completes with the other's vote: both are
  // covered by the engine's scenario tests, where the order is under control.)
  const cut = await alpha.waitStatus((s) => !s.quorum, 'alpha without quorum', 30000);
  assert.equal(cut.peers.beta!.connection === 'Connected', false);
  g.data(0, 4096).fill(0x55);
  assert.equal(g.run(0, VIRTIO_BLK_T_OUT, 64, 4096).status, VIRTIO_BLK_S_IOERR);
  g.fe.close();
  await alpha.waitStatus((s) => s.role === 'Secondary', 'alpha demoted');
  await assert.rejects(alpha.call({ cmd: 'primary' }), /no quorum/);
  await beta.waitStatus((s) => s.quorum && s.peers.alpha?.connection !== 'Connected', 'beta and gamma keep the quorum', 30000);
  const h = attach(beta.socket);
  const during = writeRandom(h, 16 * 4096, 8192);
  assert.ok(readBack(h, 0, 8192).equals(before));
  h.fe.close();
  await beta.waitStatus((s) => s.role === 'Secondary', 'beta demoted');
  net.heal(0);
  await beta.waitStatus((s) => established(s, 'alpha') && s.peers.alpha!.outOfSyncBytes === 0, 'converged', 60000);
  await beta.call({ cmd: 'verify' });
  const v = await beta.waitStatus((s) => s.peers.alpha?.verify?.running === false, 'verify done', 60000);
  assert.equal(v.peers.alpha!.verify!.outOfSyncBlocks, 0);
  const a = c.data('alpha');
  assert.ok(a.equals(c.data('beta')));
  assert.ok(a.subarray(16 * 4096, 18 * 4096).equals(during));
});
