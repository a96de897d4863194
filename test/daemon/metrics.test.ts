// Tests of the metrics endpoint (daemon/metrics.ts): the address syntax, the HTTP answers, and the exposition of read-on-scrape metrics.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Logger } from '../../engine/log.js';
import { MetricsServer, TwindiskMetrics, parseMetricsAddress } from '../../daemon/metrics.js';
import { parseResource } from '../../engine/replication/config.js';
import { parseExposition, scrape, value } from '../harness/prometheus.js';

const servers: MetricsServer[] = [];
after(async () => {
  for (const s of servers) await s.close();
});

test('--metrics HOST:PORT: IPv4, [IPv6], port 0 for a free one; no port or a bad one is refused with why', () => {
  assert.deepEqual(parseMetricsAddress('127.0.0.1:9942'), { host: '127.0.0.1', port: 9942 });
  assert.deepEqual(parseMetricsAddress('[::1]:0'), { host: '::1', port: 0 });
  assert.deepEqual(parseMetricsAddress('0.0.0.0:0'), { host: '0.0.0.0', port: 0 });
  assert.match(parseMetricsAddress('127.0.0.1') as string, /has no port/);
  assert.match(parseMetricsAddress('127.0.0.1:70000') as string, /out of range 0\.\.65535/);
});

test('GET /metrics answers the text format, values read at each scrape; other paths 404, other methods 405; a taken port says so', async () => {
  const m = new TwindiskMetrics();
  let n = 0;
  m.add('twindisk_test_total', 'A test counter.', 'counter', () => [{ labels: { queue: '0' }, value: n }]);
  const s = new MetricsServer({ host: '127.0.0.1', port: 0 }, m, new Logger('test'));
  servers.push(s);
  await s.start();
  assert.notEqual(s.address.port, 0);
  assert.equal(s.url, `http://127.0.0.1:${s.address.port}/metrics`);
  n = 5;
  const e = await scrape(s.url);
  assert.equal(value(e, 'twindisk_test_total', { queue: '0' }), 5);
  assert.equal(e.types.get('twindisk_test_total'), 'counter');
  assert.equal(e.help.get('twindisk_test_total'), 'A test counter.');
  assert.ok(value(e, 'process_cpu_seconds_total') >= 0);
  n = 7;
  assert.equal(value(await scrape(`${s.url}?x=1`), 'twindisk_test_total'), 7, 'read again at the next scrape');
  assert.equal((await fetch(s.url.replace('/metrics', '/'))).status, 404);
  assert.equal((await fetch(s.url.replace('/metrics', '/metrics/x'))).status, 404);
  assert.equal((await fetch(s.url, { method: 'DELETE' })).status, 405);
  const head = await fetch(s.url, { method: 'HEAD' });
  assert.equal(head.status, 200);
  const taken = new MetricsServer({ host: '127.0.0.1', port: s.address.port }, m, new Logger('test'));
  await assert.rejects(taken.start(), /cannot listen for metrics on 127\.0\.0\.1:\d+: the port is in use.*choose another port/);
});

test('the exposition parser refuses malformed lines', () => {
  assert.throws(() => parseExposition('twindisk_x{a="1"\n'), /not an exposition line/);
  assert.throws(() => parseExposition('twindisk_x{a=1} 2\n'), /bad labels/);
  assert.equal(parseExposition('# HELP a b\n# TYPE a gauge\na{l="x\\"y"} 1.5\n').series[0]!.labels.l, 'x"y');
});

test('a node\'s "metrics" key: host:port, in JSON and text form; no port, or another endpoint\'s address, is refused with the path', () => {
  const file = (alpha: string) => JSON.stringify({
    resource: 'r0', secret: 'test-secret-4Vq9Zk2Lx7Rm3Tb8Wn5Yp', quorum: 'off',
    nodes: { alpha: { address: '127.0.0.1:7789', disk: 'a.img', ...JSON.parse(alpha) }, beta: { address: '127.0.0.1:7790', disk: 'b.img' } },
  });
  const cfg = parseResource(file('{"metrics": "127.0.0.1:9942"}'), '/srv/r0.json');
  assert.deepEqual(cfg.nodes.find((n) => n.name === 'alpha')!.metrics, { host: '127.0.0.1', port: 9942 });
  assert.equal(cfg.nodes.find((n) => n.name === 'beta')!.metrics ?? null, null);
  assert.throws(() => parseResource(file('{"metrics": "127.0.0.1"}'), '/srv/r0.json'), /nodes\.alpha\.metrics: .*has no port/);
  assert.throws(() => parseResource(file('{"metrics": "127.0.0.1:7790"}'), '/srv/r0.json'), /nodes\.alpha\.metrics: 127\.0\.0\.1:7790 is already the address of node beta/);
  const text = `resource r0 { secret "test-secret-4Vq9Zk2Lx7Rm3Tb8Wn5Yp"; quorum off;
    on alpha { address 127.0.0.1:7789; disk a.img; metrics 127.0.0.1:9942; }
    on beta { address 127.0.0.1:7790; disk b.img; } }`;
  assert.deepEqual(parseResource(text, '/srv/r0.res').nodes.find((n) => n.name === 'alpha')!.metrics, { host: '127.0.0.1', port: 9942 });
});
