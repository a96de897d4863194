// The live status page (daemon/http/) of a real three-node resource: the page over HTTP, snapshots over the WebSocket, a CLI promotion pushed within a second, and admin actions refused or accepted by mode and secret.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { attach, writeRandom } from '../../harness/blk-client.js';
import { clusterFactory, TEST_SECRET } from '../../harness/cluster.js';
import { runCli, runCliOk } from '../../harness/serve.js';
import { StatusPageClient } from '../../harness/status-page.js';

const cluster = clusterFactory(after);
const pages: StatusPageClient[] = [];
after(() => { for (const p of pages) p.close(); });

async function open(port: number, origin?: string): Promise<StatusPageClient> {
  const p = await StatusPageClient.open(port, origin);
  pages.push(p);
  return p;
}

test('status page: snapshots, a CLI promotion pushed within a second, actions only with --http-admin and the secret', async () => {
  // alpha: "http" and "http-admin" keys; beta: "http" only (read-only); gamma (diskless): `up --http ... --http-admin`.
  const c = await cluster({
    nodes: {
      alpha: { disk: true, http: true, httpAdmin: true },
      beta: { disk: true, http: true, socket: true },
      gamma: { disk: false, http: 'flag', httpAdmin: true },
    },
  });
  await c.startAll();
  const alpha = c.node('alpha');
  const beta = c.node('beta');
  const gamma = c.node('gamma');
  await alpha.waitStatus((s) => Object.values(s.peers).every((p) => p.replication === 'Established'), 'alpha connected to both');
  await gamma.waitStatus((s) => Object.values(s.peers).every((p) => p.replication === 'Established'), 'gamma connected to both');
  await gamma.waitLog(/status page on http:\/\/127\.0\.0\.1:\d+\/ \(admin/);
  await beta.waitLog(/status page on http:\/\/127\.0\.0\.1:\d+\/ \(read-only\)/);

  // The page and its scripts, with a policy that forbids inline script and framing; anything else is 404.
  const base = `http://127.0.0.1:${alpha.httpPort}`;
  const page = await fetch(`${base}/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type')!, /^text\/html/);
  assert.match(page.headers.get('content-security-policy')!, /script-src 'self'.*frame-ancestors 'none'/);
  const html = await page.text();
  assert.match(html, /<script type="module" src="page\.js"><\/script>/);
  for (const js of ['page.js', 'hmac.js']) {
    const r = await fetch(`${base}/${js}`);
    assert.equal(r.status, 200, js);
    assert.match(r.headers.get('content-type')!, /^text\/javascript/);
  }
  assert.equal((await fetch(`${base}/status.json`)).status, 404);
  assert.equal((await fetch(`${base}/`, { method: 'POST' })).status, 405);

  // A WebSocket: hello, then a snapshot of the resource as status shows it.
  const pa = await open(alpha.httpPort);
  const { resource, node, admin } = pa.hello!;
  assert.deepEqual({ resource, node, admin }, { resource: 'r0', node: 'alpha', admin: true });
  assert.match(pa.hello!.nonce, /^[A-Za-z0-9_-]{32}$/);
  const first = await pa.waitStatus(() => true, 'a first snapshot', 3000);
  assert.equal(first.status.node, 'alpha');
  assert.equal(first.status.role, 'Secondary');
  assert.equal(first.status.disk, 'UpToDate');
  assert.deepEqual(Object.keys(first.status.peers).sort(), ['beta', 'gamma']);
  assert.equal(first.status.peers.beta!.connection, 'Connected');
  assert.equal(first.status.peers.gamma!.disk, 'Diskless');
  assert.deepEqual(first.queues, [], 'no front-end: no queues');
  const pb = await open(beta.httpPort);
  assert.equal(pb.hello!.admin, false);
  await pb.waitStatus((m) => m.status.peers.alpha?.role === 'Secondary', 'beta\'s snapshot', 3000);

  // A promotion made with the CLI: pushed because the engine said so (not by the next tick), within a second.
  const fromA = pa.messages.length;
  const fromB = pb.messages.length;
  const t0 = Date.now();
  await runCliOk('primary', '--config', c.file, '--node', 'alpha');
  const cliDone = Date.now();
  const promoted = await pa.waitStatus((m) => m.status.role === 'Primary', 'alpha Primary on alpha\'s page', 1000 + cliDone - t0, fromA);
  assert.ok(promoted.receivedAt - cliDone <= 1000, `alpha's page saw the promotion ${promoted.receivedAt - cliDone} ms after the CLI returned`);
  assert.equal(promoted.reason, 'change', 'pushed on Resource.onChange');
  assert.ok(promoted.events.some((e) => e.kind === 'role' && e.text === 'alpha promoted to Primary'), JSON.stringify(promoted.events));
  const seenByBeta = await pb.waitStatus((m) => m.status.peers.alpha?.role === 'Primary', 'alpha Primary on beta\'s page', 1000 + Date.now() - t0, fromB);
  assert.ok(seenByBeta.receivedAt - cliDone <= 1000, `beta's page saw it ${seenByBeta.receivedAt - cliDone} ms after the CLI returned`);
  assert.ok(seenByBeta.events.some((e) => e.text === 'alpha promoted to Primary'));

  // Read-only (beta): refused whatever the secret, with what to do.
  const ro = await pb.action('primary', TEST_SECRET);
  assert.equal(ro.ok, false);
  assert.match(ro.error!, /read-only.*--http-admin/);
  assert.equal((await beta.status()).role, 'Secondary');

  // Admin (alpha): a wrong secret is refused and changes nothing.
  const wrong = await pa.action('secondary', 'not-the-secret-at-all-0123456789');
  assert.equal(wrong.ok, false);
  assert.match(wrong.error!, /wrong secret/);
  assert.equal((await alpha.status()).role, 'Primary');
  // The right one is accepted and runs like the control socket's `secondary`; the snapshot follows.
  const fromDemote = pa.messages.length;
  const ok = await pa.action('secondary', TEST_SECRET);
  assert.deepEqual({ ok: ok.ok, error: ok.error }, { ok: true, error: undefined });
  assert.equal((await alpha.status()).role, 'Secondary');
  const demoted = await pa.waitStatus((m) => m.status.role === 'Secondary', 'alpha Secondary on the page', 1000, fromDemote);
  assert.ok(demoted.events.some((e) => e.text === 'alpha demoted to Secondary'));
  // A MAC cannot be replayed: the same sequence number again is refused.
  const replay = await pa.action('primary', TEST_SECRET, { seq: 2 });
  assert.equal(replay.ok, false);
  assert.match(replay.error!, /earlier request/);
  assert.equal((await alpha.status()).role, 'Secondary');
  // An engine refusal comes back as the control socket's message.
  const err = await pa.action('disconnect', TEST_SECRET, { peer: 'nobody' });
  assert.equal(err.ok, false);
  assert.match(err.error!, /nobody is not a peer of alpha/);

  // gamma: admin from `up --http-admin`; disconnect and connect beta from the page.
  const pg = await open(gamma.httpPort);
  assert.equal(pg.hello!.admin, true);
  const fromDisconnect = pg.messages.length;
  assert.equal((await pg.action('disconnect', TEST_SECRET, { peer: 'beta' })).ok, true);
  await pg.waitStatus((m) => m.status.peers.beta?.connection === 'StandAlone', 'beta StandAlone on gamma\'s page', 2000, fromDisconnect);
  const fromConnect = pg.messages.length;
  assert.equal((await pg.action('connect', TEST_SECRET, { peer: 'beta' })).ok, true);
  const back = await pg.waitStatus((m) => m.status.peers.beta?.connection === 'Connected', 'beta connected again on gamma\'s page', 10000, fromConnect);
  assert.ok(back.events.some((e) => e.text.startsWith('lost peer beta')), JSON.stringify(back.events));
  assert.ok(back.events.some((e) => e.text === 'peer beta connected'), JSON.stringify(back.events));

  // Three wrong secrets close the connection.
  for (let i = 0; i < 3; i++) await pg.action('verify', `wrong-${i}`);
  await pg.waitFor(() => pg.closed, 'the close after three wrong secrets', 2000).catch(() => undefined);
  assert.equal(pg.closed, true);

  // Another site's page in the operator's browser may not open the socket.
  await assert.rejects(open(alpha.httpPort, 'http://evil.example'), /403/);
  const same = await open(alpha.httpPort, `http://127.0.0.1:${alpha.httpPort}`);
  assert.equal(same.hello!.node, 'alpha');

  // A peer lost: alpha's page says so.
  const fromStop = pa.messages.length;
  await gamma.stop('SIGKILL');
  const lost = await pa.waitStatus((m) => m.events.some((e) => e.text.startsWith('lost peer gamma')), 'the lost peer event', 15000, fromStop);
  assert.notEqual(lost.status.peers.gamma!.connection, 'Connected');

  // Per-queue counters: a front-end on beta's socket (beta becomes Primary) writes; its page shows the queue's IOPS and latency.
  await beta.waitLog(/vhost-user: listening/);
  const fromIo = pb.messages.length;
  const g = attach(beta.socket);
  for (let i = 0; i < 50; i++) writeRandom(g, i * 4096, 4096);
  const io = await pb.waitStatus((m) => m.queues.some((q) => q.iops.some((n) => n > 0)), 'IOPS on beta\'s page', 5000, fromIo);
  const q0 = io.queues.find((q) => q.name === 'vhost-user 0')!;
  assert.ok(q0, JSON.stringify(io.queues));
  assert.ok(q0.latencyMs.some((ms) => ms !== null && ms > 0), JSON.stringify(q0));
  assert.equal(q0.errors, 0);
  g.fe.close();
});

test('status page: --http-admin without a page, and a bad --http, are usage errors', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true }, beta: { disk: true } } });
  for (const [args, re] of [[['--http-admin'], /--http-admin needs a status page/], [['--http', '127.0.0.1'], /--http: .*has no port/]] as const) {
    const r = await runCli('up', '--config', c.file, '--node', 'alpha', ...args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, re);
  }
});
