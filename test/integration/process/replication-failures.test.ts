// Replicated resources under failure: partitions and quorum, split brain (refused and resolved), disk errors, bad peers.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import WebSocket from 'ws';
import { encodeFrame } from '../../../engine/replication/wire.js';
import { FrameType, WIRE_VERSION } from '../../../engine/replication/frames.js';
import type { ResourceStatus } from '../../../engine/replication/resource.js';
import { VIRTIO_BLK_S_IOERR, VIRTIO_BLK_T_OUT } from '../../../qemu-plugin/virtio/constants.js';
import { attach, readBack, writeRandom } from '../../harness/blk-client.js';
import { clusterFactory, type Cluster } from '../../harness/cluster.js';

const cluster = clusterFactory(after);
const write = writeRandom;
const read = readBack;

const established = (s: ResourceStatus, ...peers: string[]) => peers.every((p) => s.peers[p]?.replication === 'Established');

test('partition: the isolated Primary loses quorum and cannot write, the majority goes on, and after healing verify finds no difference', async () => {
  const c = await cluster({
    nodes: { alpha: { disk: true, socket: true }, beta: { disk: true, socket: true }, gamma: { disk: false } },
    resource: { quorum: 'majority' },
  });
  await c.startAll();
  const [alpha, beta] = [c.node('alpha'), c.node('beta')];
  await alpha.waitStatus((s) => established(s, 'beta', 'gamma'), 'all connected');
  await alpha.waitLog(/vhost-user: listening/);
  const g = attach(alpha.socket);
  const a1 = write(g, 0, 8192);
  // Cut alpha off from both peers.
  await alpha.call({ cmd: 'disconnect' });
  await alpha.waitStatus((s) => !s.quorum, 'alpha without quorum');
  g.data(0, 4096).fill(0x55);
  assert.equal(g.run(0, VIRTIO_BLK_T_OUT, 64, 4096).status, VIRTIO_BLK_S_IOERR, 'the minority cannot write');
  await alpha.waitLog(/lost quorum/);
  g.fe.close();
  await alpha.waitStatus((s) => s.role === 'Secondary', 'alpha demoted');
  await assert.rejects(alpha.call({ cmd: 'primary' }), /no quorum/);
  // The majority side: beta with gamma's vote becomes Primary and writes.
  await beta.waitStatus((s) => s.quorum && s.peers.alpha?.connection !== 'Connected', 'beta has quorum without alpha');
  const h = attach(beta.socket);
  assert.equal((await beta.status()).role, 'Primary');
  const b1 = write(h, 16 * 4096, 12288);
  assert.ok(read(h, 0, 8192).equals(a1), 'alpha\'s acknowledged write is on beta');
  h.fe.close();
  await beta.waitStatus((s) => s.role === 'Secondary', 'beta demoted');
  // Heal.
  await alpha.call({ cmd: 'connect' });
  await beta.waitStatus((s) => established(s, 'alpha') && s.peers.alpha!.outOfSyncBytes === 0, 'converged', 30000);
  await beta.call({ cmd: 'verify' });
  const v = await beta.waitStatus((s) => s.peers.alpha?.verify?.running === false, 'verify done', 60000);
  assert.equal(v.peers.alpha!.verify!.outOfSyncBlocks, 0);
  const a = c.data('alpha');
  assert.ok(a.equals(c.data('beta')));
  assert.ok(a.subarray(16 * 4096, 19 * 4096).equals(b1));
  assert.equal(a[64 * 512], 0, 'the refused write is nowhere');
});

async function splitBrain(c: Cluster): Promise<{ fromAlpha: Buffer; fromBeta: Buffer }> {
  await c.startAll();
  const [alpha, beta] = [c.node('alpha'), c.node('beta')];
  await alpha.waitStatus((s) => established(s, 'beta'), 'connected');
  await alpha.call({ cmd: 'disconnect' });
  await beta.waitStatus((s) => s.peers.alpha?.connection !== 'Connected', 'apart');
  await alpha.waitLog(/vhost-user: listening/);
  await beta.waitLog(/vhost-user: listening/);
  const g = attach(alpha.socket);
  const fromAlpha = write(g, 0, 4096);
  g.fe.close();
  await alpha.waitStatus((s) => s.role === 'Secondary', 'alpha demoted');
  await new Promise((r) => setTimeout(r, 20)); // a later promotion for beta (discard-younger-primary)
  const h = attach(beta.socket);
  const fromBeta = write(h, 8 * 4096, 4096);
  h.fe.close();
  await beta.waitStatus((s) => s.role === 'Secondary', 'beta demoted');
  return { fromAlpha, fromBeta };
}

test('split brain: detected and refused by default, then resolved with connect --discard-my-data', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true, socket: true }, beta: { disk: true, socket: true } } });
  const { fromAlpha } = await splitBrain(c);
  const [alpha, beta] = [c.node('alpha'), c.node('beta')];
  await alpha.call({ cmd: 'connect' });
  const s = await alpha.waitStatus((x) => x.peers.beta?.splitBrain !== undefined, 'split brain reported');
  assert.equal(s.peers.beta!.connection, 'StandAlone');
  await alpha.waitLog(/split brain detected with beta/);
  await beta.waitLog(/split brain detected with alpha/);
  assert.match(c.cli(['status', '--config', c.file, '--node', 'alpha']), /split brain/);
  // beta gives up its changes.
  await beta.call({ cmd: 'connect', discardMyData: true });
  await alpha.call({ cmd: 'connect' });
  await alpha.waitStatus((x) => established(x, 'beta') && x.peers.beta!.outOfSyncBytes === 0, 'resolved', 30000);
  const a = c.data('alpha');
  assert.ok(a.equals(c.data('beta')), 'beta took alpha\'s data');
  assert.ok(a.subarray(0, 4096).equals(fromAlpha));
  assert.equal(a[8 * 4096], 0, 'beta\'s split-brain write was discarded');
});

test('split brain resolved automatically by after-sb-0pri discard-younger-primary', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true, socket: true }, beta: { disk: true, socket: true } }, resource: { 'after-sb-0pri': 'discard-younger-primary' } });
  const { fromAlpha } = await splitBrain(c);
  await c.node('alpha').call({ cmd: 'connect' });
  const s = await c.node('alpha').waitStatus((x) => established(x, 'beta') && x.peers.beta!.outOfSyncBytes === 0, 'resolved', 30000);
  assert.equal(s.peers.beta!.splitBrain, undefined);
  await c.node('beta').waitLog(/split brain detected with alpha .*resolved by policy, discarding beta's changes/);
  const a = c.data('alpha');
  assert.ok(a.equals(c.data('beta')));
  assert.ok(a.subarray(0, 4096).equals(fromAlpha));
});

test('disk errors: a failed local read is served from the peer and rewritten; a failed local write detaches the disk and the guest sees no error; attach resyncs the repaired disk', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true, socket: true }, beta: { disk: true } } });
  await c.startAll();
  const alpha = c.node('alpha');
  await alpha.waitStatus((s) => established(s, 'beta'), 'connected');
  await alpha.waitLog(/vhost-user: listening/);
  const g = attach(alpha.socket);
  const d = write(g, 10 * 4096, 4096);
  await alpha.call({ cmd: 'fault', kind: 'read', offset: 10 * 4096, length: 4096 });
  assert.ok(read(g, 10 * 4096, 4096).equals(d), 'read served from beta');
  let s = await alpha.status();
  assert.equal(s.stats.localReadErrors, 1);
  assert.equal(s.stats.readsRepaired, 1);
  await alpha.call({ cmd: 'fault', kind: 'clear' });
  await alpha.call({ cmd: 'fault', kind: 'write', offset: 20 * 4096, length: 4096 });
  const w = write(g, 20 * 4096, 4096);
  await alpha.waitLog(/local disk failed .*detaching it/);
  s = await alpha.status();
  assert.equal(s.disk, 'Diskless');
  assert.ok(read(g, 20 * 4096, 4096).equals(w), 'reads go through beta after the detach');
  const more = write(g, 30 * 4096, 4096);
  const b = c.data('beta');
  assert.ok(b.subarray(20 * 4096, 21 * 4096).equals(w));
  assert.ok(b.subarray(30 * 4096, 31 * 4096).equals(more));
  // The disk is repaired: attach takes it back and resyncs every block from beta, under the guest.
  await alpha.call({ cmd: 'fault', kind: 'clear' }).catch(() => undefined);
  c.cli(['attach', '--config', c.file, '--node', 'alpha']);
  s = await alpha.waitStatus((x) => x.disk === 'UpToDate' && established(x, 'beta') && x.peers.beta!.outOfSyncBytes === 0, 'alpha resynced after attach', 30000);
  assert.equal(s.peers.beta!.lastResync!.full, false);
  assert.equal(s.peers.beta!.lastResync!.bytesReceived, c.size, 'every block came from beta');
  const last = write(g, 40 * 4096, 4096);
  g.fe.close();
  assert.ok(c.data('alpha').equals(c.data('beta')));
  assert.ok(c.data('alpha').subarray(40 * 4096, 41 * 4096).equals(last));
});

test('a peer speaking garbage after a correct handshake is dropped and the data is untouched', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true }, beta: { disk: true } } });
  // The lower id dials: pose as alpha (node 0) towards beta with the right secret, then send malformed frames.
  const beta = c.node('beta');
  await beta.start();
  const before = c.data('beta');
  const { authMac } = await import('../../../engine/replication/wire.js');
  const { decodeFrame } = await import('../../../engine/replication/wire.js');
  const cfg = JSON.parse((await import('node:fs')).readFileSync(c.file, 'utf8'));
  const ws = new WebSocket(`ws://${cfg.nodes.beta.address}/`);
  await new Promise((r, j) => { ws.once('open', r); ws.once('error', j); });
  const nonce = randomBytes(32);
  ws.send(encodeFrame({ type: FrameType.Hello, version: WIRE_VERSION, nodeId: 0, resource: 'r0', nonce }));
  const theirs = await new Promise<Uint8Array>((r) => ws.once('message', (m: Buffer) => {
    const f = decodeFrame(m);
    r(f.type === FrameType.Hello ? f.nonce : new Uint8Array());
  }));
  // The dialler proves the secret first (engine/replication/session.ts); beta then answers with its AUTH.
  const transcript = { resource: 'r0', diallerId: 0, acceptorId: 1, diallerNonce: nonce, acceptorNonce: theirs };
  ws.send(encodeFrame({ type: FrameType.Auth, mac: authMac(cfg.secret, 'dialler', transcript) }));
  await beta.waitLog(/connected to alpha/);
  ws.send(Buffer.from([FrameType.Data, 1, 2, 3]));
  const closed = await new Promise<number>((r) => ws.once('close', (code) => r(code)));
  assert.ok(closed > 0);
  await beta.waitLog(/lost connection to alpha/);
  assert.match(beta.log(), /truncated/i);
  assert.ok(c.data('beta').equals(before), 'nothing written');
  // The node still works: the real alpha connects.
  await c.node('alpha').start();
  await beta.waitStatus((s) => established(s, 'alpha'), 'real alpha connected');
});

test('a peer that knows the secret and sends DATA right after authentication, before any STATE, is refused: nothing is written', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true }, beta: { disk: true } } });
  const beta = c.node('beta');
  await beta.start();
  await beta.call({ cmd: 'primary', force: true }); // alone, and Primary: the outside test's set-up
  const before = c.data('beta');
  const { HandshakeSession } = await import('../../../engine/replication/session.js');
  const { decodeFrame } = await import('../../../engine/replication/wire.js');
  const cfg = JSON.parse((await import('node:fs')).readFileSync(c.file, 'utf8'));
  // Pose as alpha (node 0, the dialler) with the right secret, through the real handshake.
  const session = new HandshakeSession({ role: 'dialler', secret: cfg.secret, resource: 'r0', myId: 0, peerId: 1, nonce: randomBytes(32) });
  const ws = new WebSocket(`ws://${cfg.nodes.beta.address}/`);
  await new Promise((r, j) => { ws.once('open', r); ws.once('error', j); });
  const up = new Promise<void>((resolve, reject) => {
    ws.on('message', (m: Buffer) => {
      if (session.phase === 'up') return;
      const step = session.receive(decodeFrame(m));
      for (const f of step.send) ws.send(encodeFrame(f));
      if (step.outcome.kind === 'up') resolve();
      else if (step.outcome.kind !== 'continue') reject(new Error(JSON.stringify(step.outcome)));
    });
  });
  for (const f of session.start().send) ws.send(encodeFrame(f));
  await up;
  // At once: a well-formed DATA frame for block 0.
  ws.send(encodeFrame({ type: FrameType.Data, seq: 1, offset: 0, flags: 0, data: Buffer.alloc(4096, 0xee) }));
  const closed = await new Promise<number>((r) => ws.once('close', (code) => r(code)));
  assert.ok(closed > 0);
  await beta.waitLog(/protocol violation by alpha: DATA refused \(this node Primary, peer before STATE, replication Handshake\)/);
  assert.ok(c.data('beta').equals(before), 'nothing written');
  const s = await beta.status();
  assert.equal(s.stats.framesRefused, 1);
  assert.equal(s.role, 'Primary');
});
