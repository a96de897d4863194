// Prometheus metrics (daemon/metrics.ts) of a real `twindisk serve --metrics` and of a real replicated pair, driven by the TypeScript vhost-user front-end and scraped over HTTP.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import {
  VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_IN,
} from '../../../qemu-plugin/virtio/constants.js';
import { LATENCY_BUCKETS } from '../../../qemu-plugin/virtio/blk-stats.js';
import type { ResourceStatus } from '../../../engine/replication/resource.js';
import { attach, writeRandom } from '../../harness/blk-client.js';
import { clusterFactory, sleep } from '../../harness/cluster.js';
import { iscsiUrl, qemuIo, serveIscsi } from '../../harness/iscsi.js';
import { find, scrape, value, type Exposition } from '../../harness/prometheus.js';
import { runCli, serve, tmpDir, type Served } from '../../harness/serve.js';

const dir = tmpDir();
const running: Served[] = [];
after(async () => {
  for (const s of running) await s.stop('SIGKILL');
});
const cluster = clusterFactory(after);

/** Checks one histogram series set (labels `l`): cumulative buckets at the documented bounds, +Inf equal to _count. */
function checkHistogram(e: Exposition, name: string, l: Record<string, string>): { count: number; sum: number } {
  const buckets = find(e, `${name}_bucket`, l);
  assert.deepEqual(buckets.map((b) => b.labels.le), [...LATENCY_BUCKETS.map(String), '+Inf'], `${name} bucket bounds`);
  assert.equal(buckets[0]!.labels.le, '0.00001', 'the first bucket resolves 10 µs');
  assert.equal(buckets[LATENCY_BUCKETS.length - 1]!.labels.le, '0.1', 'the last finite bucket is 100 ms');
  for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i]!.value >= buckets[i - 1]!.value, `${name} buckets are cumulative`);
  const count = value(e, `${name}_count`, l);
  assert.equal(buckets[buckets.length - 1]!.value, count, '+Inf bucket = count');
  return { count, sum: value(e, `${name}_sum`, l) };
}

test('serve --metrics: request counters, bytes, errors and latency histograms per queue move by what the front-end did', async () => {
  const image = path.join(dir, 'serve.img');
  fs.writeFileSync(image, Buffer.alloc(8 << 20));
  const s = await serve({ image, socket: path.join(dir, 'serve.sock'), args: ['--queues', '2', '--metrics', '127.0.0.1:0'], dir });
  running.push(s);
  await s.waitLog(/metrics on http:\/\/127\.0\.0\.1:\d+\/metrics/);
  const url = /metrics on (http:\/\/\S+)/.exec(s.log())![1]!;

  const before = await scrape(url);
  assert.equal(before.types.get('twindisk_request_duration_seconds'), 'histogram');
  assert.equal(before.types.get('twindisk_requests_total'), 'counter');
  assert.ok(value(before, 'process_cpu_seconds_total') >= 0, 'process metrics (collectDefaultMetrics)');
  assert.ok(value(before, 'process_resident_memory_bytes') > 0);
  const q0 = { queue: '0' };
  const q1 = { queue: '1' };
  for (const q of [q0, q1]) for (const op of ['read', 'write', 'flush', 'discard', 'write_zeroes']) {
    assert.equal(value(before, 'twindisk_requests_total', { ...q, op }), 0, `no ${op} yet on queue ${q.queue}`);
  }
  assert.equal(value(before, 'twindisk_vhost_frontend_connected'), 0);

  const g = attach(s.socket, 2);
  // Queue 0: 3 writes of 64 KiB, 2 reads of 4 KiB. Queue 1: a flush, a read past the end (an error).
  for (let i = 0; i < 3; i++) writeRandom(g, i * 65536, 65536);
  for (let i = 0; i < 2; i++) assert.equal(g.run(0, VIRTIO_BLK_T_IN, i * 8, 4096).status, VIRTIO_BLK_S_OK);
  assert.equal(g.run(1, VIRTIO_BLK_T_FLUSH, 0, 0).status, VIRTIO_BLK_S_OK);
  assert.equal(g.run(1, VIRTIO_BLK_T_IN, (8 << 20) / 512, 4096).status, VIRTIO_BLK_S_IOERR);

  const e = await scrape(url);
  assert.equal(value(e, 'twindisk_requests_total', { ...q0, op: 'write' }), 3);
  assert.equal(value(e, 'twindisk_request_bytes_total', { ...q0, op: 'write' }), 3 * 65536);
  assert.equal(value(e, 'twindisk_requests_total', { ...q0, op: 'read' }), 2);
  assert.equal(value(e, 'twindisk_request_bytes_total', { ...q0, op: 'read' }), 2 * 4096);
  assert.equal(value(e, 'twindisk_request_errors_total', { ...q0, op: 'read' }), 0);
  assert.equal(value(e, 'twindisk_requests_total', { ...q1, op: 'flush' }), 1);
  assert.equal(value(e, 'twindisk_requests_total', { ...q1, op: 'read' }), 1);
  assert.equal(value(e, 'twindisk_request_errors_total', { ...q1, op: 'read' }), 1, 'the read past the end failed');
  assert.equal(value(e, 'twindisk_request_bytes_total', { ...q1, op: 'read' }), 0, 'a failed read moved nothing');
  assert.equal(value(e, 'twindisk_requests_total', { ...q1, op: 'write' }), 0);
  for (const q of [q0, q1]) assert.equal(value(e, 'twindisk_requests_in_flight', q), 0);
  const w = checkHistogram(e, 'twindisk_request_duration_seconds', { ...q0, op: 'write' });
  assert.equal(w.count, 3);
  assert.ok(w.sum > 0 && w.sum < 3 * 5, `write latency sum ${w.sum} s`);
  assert.equal(checkHistogram(e, 'twindisk_request_duration_seconds', { ...q0, op: 'read' }).count, 2);
  assert.equal(checkHistogram(e, 'twindisk_request_duration_seconds', { ...q1, op: 'flush' }).count, 1);
  assert.equal(value(e, 'twindisk_vhost_frontend_connected'), 1);
  assert.equal(value(e, 'twindisk_vhost_frontend_connections_total'), 1);
  g.fe.close();

  // Only /metrics is served; a taken port is refused with what to do, and exit 1.
  assert.equal((await fetch(url.replace('/metrics', '/'))).status, 404);
  assert.equal((await fetch(url.replace('/metrics', '/metricsx'))).status, 404);
  assert.equal((await fetch(url, { method: 'POST' })).status, 405);
  const hostPort = url.replace('http://', '').replace('/metrics', '');
  const r = await runCli('serve', '--image', path.join(dir, 'other.img'), '--size', '1M', '--socket', path.join(dir, 'other.sock'), '--metrics', hostPort);
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stderr, new RegExp(`cannot listen for metrics on ${hostPort.replace(/\./g, '\\.')}: the port is in use.*choose another port for --metrics`));
  assert.ok(!fs.existsSync(path.join(dir, 'other.sock')), 'nothing left listening');
  const bad = await runCli('serve', '--image', image, '--socket', path.join(dir, 'x.sock'), '--metrics', '127.0.0.1');
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--metrics: .*has no port/);
});

test('serve --iscsi --metrics: the target\'s disk operations and the portal\'s counters (qemu-io over libiscsi)', async () => {
  const image = path.join(dir, 'iscsi.img');
  fs.writeFileSync(image, Buffer.alloc(16 << 20));
  const s = await serveIscsi({ image, iqn: 'iqn.2026-12.io.twindisk:metrics', args: ['--metrics', '127.0.0.1:0'] });
  try {
    await s.waitLog(/metrics on http:\/\/127\.0\.0\.1:\d+\/metrics/);
    const url = /metrics on (http:\/\/\S+)/.exec(s.log())![1]!;
    const I = { frontend: 'iscsi', queue: '0' };
    const e0 = await scrape(url);
    assert.equal(value(e0, 'twindisk_requests_total', { ...I, op: 'write' }), 0);
    assert.equal(value(e0, 'twindisk_iscsi_connections_accepted_total'), 0);
    const w = await qemuIo(iscsiUrl(s.port, s.iqn), ['write -P 0xa5 1M 256k', 'flush', 'read -P 0xa5 1M 256k']);
    assert.equal(w.code, 0, w.stdout + w.stderr);
    const e = await scrape(url);
    assert.ok(value(e, 'twindisk_requests_total', { ...I, op: 'write' }) >= 1);
    assert.equal(value(e, 'twindisk_request_bytes_total', { ...I, op: 'write' }), 256 * 1024, 'the 256 KiB written, however the initiator cut it');
    assert.ok(value(e, 'twindisk_request_bytes_total', { ...I, op: 'read' }) >= 256 * 1024);
    assert.ok(value(e, 'twindisk_requests_total', { ...I, op: 'flush' }) >= 1);
    assert.equal(value(e, 'twindisk_request_errors_total', { ...I, op: 'write' }), 0);
    assert.equal(checkHistogram(e, 'twindisk_request_duration_seconds', { ...I, op: 'write' }).count, value(e, 'twindisk_requests_total', { ...I, op: 'write' }));
    assert.ok(value(e, 'twindisk_iscsi_connections_accepted_total') >= 1);
    assert.ok(value(e, 'twindisk_iscsi_pdus_received_total') > 3);
    assert.ok(value(e, 'twindisk_iscsi_pdus_sent_total') > 3);
    assert.equal(find(e, 'twindisk_requests_total', { frontend: 'vhost-user' }).length, 0, 'no vhost-user socket served');
  } finally {
    await s.stop();
  }
});

const connected = (s: ResourceStatus, peer: string) => s.peers[peer]?.connection === 'Connected' && s.peers[peer]?.replication === 'Established';

test('a replicated pair: role, disk, quorum, peer states, traffic, round trip, out-of-sync bytes and activity-log updates', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true, socket: true, metrics: true }, beta: { disk: true, metrics: true } } });
  await c.startAll();
  const alpha = c.node('alpha');
  const beta = c.node('beta');
  await alpha.waitStatus((s) => connected(s, 'beta'), 'alpha connected to beta');
  await alpha.waitLog(/vhost-user: listening/);
  const aUrl = `http://127.0.0.1:${alpha.metricsPort}/metrics`;
  const bUrl = `http://127.0.0.1:${beta.metricsPort}/metrics`;
  const A = { resource: 'r0', node: 'alpha' };
  const B = { resource: 'r0', node: 'beta' };
  const toBeta = { ...A, peer: 'beta' };
  const toAlpha = { ...B, peer: 'alpha' };

  const a0 = await scrape(aUrl);
  const b0 = await scrape(bUrl);
  assert.equal(value(a0, 'twindisk_role', { ...A, role: 'Secondary' }), 1);
  assert.equal(value(a0, 'twindisk_role', { ...A, role: 'Primary' }), 0);
  assert.equal(value(a0, 'twindisk_disk_state', { ...A, state: 'UpToDate' }), 1);
  assert.equal(value(a0, 'twindisk_disk_state', { ...A, state: 'Outdated' }), 0);
  assert.equal(value(a0, 'twindisk_quorum', A), 1);
  assert.equal(value(a0, 'twindisk_peer_connection_state', { ...toBeta, state: 'Connected' }), 1);
  assert.equal(value(a0, 'twindisk_peer_connection_state', { ...toBeta, state: 'StandAlone' }), 0);
  assert.equal(value(a0, 'twindisk_peer_replication_state', { ...toBeta, state: 'Established' }), 1);
  assert.equal(value(a0, 'twindisk_peer_out_of_sync_bytes', toBeta), 0);
  assert.equal(value(a0, 'twindisk_link_events_total', { ...A, event: 'link_up' }), 1);

  const g = attach(alpha.socket);
  const n = 4;
  for (let i = 0; i < n; i++) writeRandom(g, (i * 2 + 8) << 20, 65536);
  const a1 = await scrape(aUrl);
  const b1 = await scrape(bUrl);
  assert.equal(value(a1, 'twindisk_role', { ...A, role: 'Primary' }), 1, 'auto-promoted by the client');
  assert.equal(value(a1, 'twindisk_clients', A), 1);
  assert.equal(value(a1, 'twindisk_requests_total', { ...A, queue: '0', op: 'write' }), n);
  assert.equal(value(a1, 'twindisk_request_bytes_total', { ...A, queue: '0', op: 'write' }), n * 65536);
  assert.equal(checkHistogram(a1, 'twindisk_request_duration_seconds', { ...A, queue: '0', op: 'write' }).count, n);
  assert.equal(value(a1, 'twindisk_writes_total', A), n, 'the engine replicated every write');
  const sent = value(a1, 'twindisk_peer_data_sent_bytes_total', toBeta) - value(a0, 'twindisk_peer_data_sent_bytes_total', toBeta);
  assert.equal(sent, n * 65536, 'replicated data sent to beta');
  const got = value(b1, 'twindisk_peer_data_received_bytes_total', toAlpha) - value(b0, 'twindisk_peer_data_received_bytes_total', toAlpha);
  assert.equal(got, n * 65536, 'replicated data beta received from alpha');
  const framesOut = value(a1, 'twindisk_peer_sent_frames_total', toBeta) - value(a0, 'twindisk_peer_sent_frames_total', toBeta);
  const framesIn = value(b1, 'twindisk_peer_received_frames_total', toAlpha) - value(b0, 'twindisk_peer_received_frames_total', toAlpha);
  assert.ok(framesOut >= n, `alpha sent at least ${n} frames to beta (${framesOut})`);
  assert.ok(framesIn >= n, `beta received at least ${n} frames from alpha (${framesIn})`);
  const bytesOut = value(a1, 'twindisk_peer_sent_bytes_total', toBeta) - value(a0, 'twindisk_peer_sent_bytes_total', toBeta);
  assert.ok(bytesOut >= n * 65536 && bytesOut < n * 65536 + 64 * 1024, `link bytes to beta ${bytesOut}: the data plus headers and keep-alives`);
  assert.ok(value(b1, 'twindisk_peer_received_bytes_total', toAlpha) >= n * 65536);
  assert.ok(value(a1, 'twindisk_activity_log_updates_total', A) > value(a0, 'twindisk_activity_log_updates_total', A),
    'writes to cold extents updated the activity log');
  assert.equal(value(a1, 'twindisk_peer_role', { ...toBeta, role: 'Secondary' }), 1);
  assert.equal(value(b1, 'twindisk_peer_role', { ...toAlpha, role: 'Primary' }), 1);

  // The keep-alive PINGs (every 2 s) give a round trip.
  let rtt: number[] = [];
  for (let t0 = Date.now(); Date.now() - t0 < 8000; await sleep(250)) {
    rtt = find(await scrape(aUrl), 'twindisk_peer_rtt_seconds', toBeta).map((x) => x.value);
    if (rtt.length > 0) break;
  }
  assert.equal(rtt.length, 1, 'a round trip to beta within 8 s');
  assert.ok(rtt[0]! > 0 && rtt[0]! < 1, `rtt ${rtt[0]} s`);

  // Disconnected, beta misses two 64 KiB writes: out of sync by exactly that, and the states say so.
  await alpha.call({ cmd: 'disconnect', peer: 'beta' });
  await alpha.waitStatus((s) => s.peers.beta!.connection === 'StandAlone', 'alpha standalone toward beta');
  writeRandom(g, 3 << 20, 65536);
  writeRandom(g, 5 << 20, 65536);
  const a2 = await scrape(aUrl);
  assert.equal(value(a2, 'twindisk_peer_out_of_sync_bytes', toBeta), 2 * 65536);
  assert.equal(value(a2, 'twindisk_peer_connection_state', { ...toBeta, state: 'StandAlone' }), 1);
  assert.equal(value(a2, 'twindisk_peer_connection_state', { ...toBeta, state: 'Connected' }), 0);
  assert.equal(value(a2, 'twindisk_peer_replication_state', { ...toBeta, state: 'Off' }), 1);
  assert.equal(find(a2, 'twindisk_peer_rtt_seconds', toBeta).length, 0, 'no round trip to a disconnected peer');
  assert.equal(value(a2, 'twindisk_requests_total', { ...A, queue: '0', op: 'write' }), n + 2);
  const b2 = await scrape(bUrl);
  assert.equal(value(b2, 'twindisk_peer_connection_state', { ...toAlpha, state: 'Connected' }), 0);

  // Reconnected: the resync brings it back to zero.
  await alpha.call({ cmd: 'connect', peer: 'beta' });
  await alpha.waitStatus((s) => connected(s, 'beta') && s.peers.beta!.outOfSyncBytes === 0, 'beta resynced');
  const a3 = await scrape(aUrl);
  assert.equal(value(a3, 'twindisk_peer_out_of_sync_bytes', toBeta), 0);
  assert.equal(value(a3, 'twindisk_peer_replication_state', { ...toBeta, state: 'Established' }), 1);
  assert.equal(value(a3, 'twindisk_link_events_total', { ...A, event: 'link_up' }), 2);
  g.fe.close();
  await c.stopAll('SIGTERM');
});

test('a replicated node\'s iSCSI target: its requests counted by type, and replicated to the peer', async () => {
  const c = await cluster({ nodes: { alpha: { disk: true, iscsi: true, metrics: true }, beta: { disk: true } } });
  await c.startAll();
  const alpha = c.node('alpha');
  await alpha.waitStatus((s) => connected(s, 'beta'), 'alpha connected to beta');
  await alpha.waitLog(/iSCSI target .* LUN 0 on|listening/);
  const url = `http://127.0.0.1:${alpha.metricsPort}/metrics`;
  const I = { resource: 'r0', node: 'alpha', frontend: 'iscsi', queue: '0' };
  let e0: Exposition | null = null;
  for (let t0 = Date.now(); Date.now() - t0 < 10_000 && !e0; await sleep(100)) {
    const e = await scrape(url);
    if (find(e, 'twindisk_requests_total', I).length > 0) e0 = e;
  }
  assert.ok(e0, 'the iSCSI target\'s counters appear once its portal runs');
  const w = await qemuIo(iscsiUrl(alpha.iscsiPort, 'iqn.2026-12.io.twindisk:r0'), ['write -P 0x5c 2M 64k', 'read -P 0x5c 2M 64k']);
  assert.equal(w.code, 0, w.stdout + w.stderr + alpha.log());
  const e = await scrape(url);
  assert.equal(value(e, 'twindisk_request_bytes_total', { ...I, op: 'write' }) - value(e0!, 'twindisk_request_bytes_total', { ...I, op: 'write' }), 65536);
  assert.ok(value(e, 'twindisk_request_bytes_total', { ...I, op: 'read' }) >= 65536);
  const toBeta = { resource: 'r0', node: 'alpha', peer: 'beta' };
  assert.equal(value(e, 'twindisk_peer_data_sent_bytes_total', toBeta) - value(e0!, 'twindisk_peer_data_sent_bytes_total', toBeta), 65536);
  assert.ok(value(e, 'twindisk_iscsi_connections_accepted_total', { resource: 'r0', node: 'alpha' }) >= 1);
  await c.stopAll('SIGTERM');
});
