// contrib/ocf/resource (ocf:twindisk:resource): its actions run with the environment Pacemaker gives an
// agent (OCF_ROOT, OCF_RESKEY_*, OCF_RESOURCE_INSTANCE, CRM meta and notify variables) against a real
// three-node resource on loopback (alpha and beta with disks, gamma a diskless tie-breaker, quorum
// majority). crm_attribute and crm_master are stand-ins on PATH that record their arguments: they are
// Pacemaker's interface to the agent, so the promotion scores the agent publishes are read from there.
// Needs Debian's resource-agents (ocf-shellfuncs, ocf-tester, ra-api-1.dtd) and libxml2-utils (xmllint).
// TWINDISK_OCF_AGENT runs the tests against another copy of the agent (to check that they fail when it
// is broken).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { clusterFactory, sleep, type Cluster } from '../harness/cluster.js';
import { cli, repoRoot, tmpDir } from '../harness/serve.js';

const agentPath = process.env.TWINDISK_OCF_AGENT ?? path.join(repoRoot, 'contrib', 'ocf', 'resource');
const shellfuncs = '/usr/lib/ocf/lib/heartbeat/ocf-shellfuncs';
const dtd = '/usr/share/resource-agents/ra-api-1.dtd';
const OCF = { SUCCESS: 0, ERR_GENERIC: 1, ERR_CONFIGURED: 6, NOT_RUNNING: 7, RUNNING_PROMOTED: 8 };

const make = clusterFactory(after);
let c: Cluster;
const bin = tmpDir('twindisk-ocf-bin-');
const scoreLog = path.join(bin, 'scores.log');
const started = new Set<string>();

interface AgentRun { status: number; out: string }

/** Runs one action of the agent for `node` with the environment Pacemaker sets, plus `env`. */
function agent(action: string, node: string, env: Record<string, string> = {}): AgentRun {
  const r = spawnSync(agentPath, [action], {
    encoding: 'utf8',
    timeout: 120_000,
    env: {
      PATH: `${bin}:${process.env.PATH}`,
      OCF_ROOT: '/usr/lib/ocf',
      OCF_RESOURCE_INSTANCE: 'td-r0:0',
      OCF_RESKEY_crm_feature_set: '3.16.2', // Pacemaker 2.1.5's: crm_attribute --promotion
      OCF_RESKEY_CRM_meta_timeout: '30000',
      OCF_RESKEY_CRM_meta_interval: action === 'monitor' ? '20000' : '0',
      OCF_RESKEY_CRM_meta_on_node: node,
      OCF_RESKEY_CRM_meta_notify: 'true',
      OCF_RESKEY_CRM_meta_clone_max: '3',
      OCF_RESKEY_CRM_meta_promoted_max: '1',
      OCF_RESKEY_config: c.file,
      OCF_RESKEY_twindisk: cli,
      OCF_RESKEY_nodejs: process.execPath,
      OCF_RESKEY_log: path.join(c.dir, `${node}.log`),
      OCF_RESKEY_pidfile: path.join(c.dir, `${node}.pid`),
      OCF_RESKEY_wait_connect: '3',
      HA_RSCTMP: c.dir,
      ...env,
    },
  });
  return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}${r.error ? `\n${r.error.message}` : ''}` };
}

/** Asserts the action's exit status, showing the agent's output (and the node's log) when it differs. */
function expect(action: string, node: string, status: number, env: Record<string, string> = {}): AgentRun {
  const r = agent(action, node, env);
  const log = path.join(c.dir, `${node}.log`);
  assert.equal(r.status, status, `${action} on ${node}: exit ${r.status}, expected ${status}\n${r.out}\n--- ${node}.log:\n${fs.existsSync(log) ? fs.readFileSync(log, 'utf8').slice(-3000) : ''}`);
  if (action === 'start' && status === 0) started.add(node);
  if (action === 'stop' && status === 0) started.delete(node);
  return r;
}

/** The promotion-score calls recorded since the last call, as "NODE TOOL ARGS" lines. */
function scores(): string[] {
  const lines = fs.existsSync(scoreLog) ? fs.readFileSync(scoreLog, 'utf8').split('\n').filter(Boolean) : [];
  fs.writeFileSync(scoreLog, '');
  return lines;
}

/** The last score `node` published: a number, 'deleted', or undefined when it published nothing. */
function lastScore(lines: string[], node: string): number | 'deleted' | undefined {
  const mine = lines.filter((l) => l.startsWith(`${node} `));
  const last = mine.at(-1);
  if (!last) return undefined;
  if (/ -D\b/.test(last)) return 'deleted';
  const m = / -v (\d+)/.exec(last);
  assert.ok(m, `unexpected score call: ${last}`);
  return Number(m[1]);
}

before(async () => {
  assert.ok(fs.existsSync(shellfuncs), `${shellfuncs} is missing: apt-get install resource-agents (scripts/setup.sh installs it)`);
  // Pacemaker's tools, as the agent calls them; each line: the node (the agent's OCF_RESKEY_node), the tool, its arguments.
  for (const tool of ['crm_attribute', 'crm_master']) {
    fs.writeFileSync(path.join(bin, tool), `#!/bin/sh\necho "$OCF_RESKEY_CRM_meta_on_node ${tool} $*" >> ${scoreLog}\n`, { mode: 0o755 });
  }
  c = await make({
    nodes: { alpha: { disk: true }, beta: { disk: true }, gamma: { disk: false } },
    // Slow enough that a resyncing node stays Inconsistent for several seconds (8 MiB at 512 KiB/s).
    resource: { quorum: 'majority', 'resync-rate': '512K', 'c-min-rate': '512K' },
    size: 8 << 20,
  });
});

after(() => {
  // Nodes the agent started run in their own sessions: stop whatever a failed test left running.
  for (const n of started) agent('stop', n);
  fs.rmSync(bin, { recursive: true, force: true });
});

test('meta-data is OCF XML that validates against ra-api-1.dtd, with every action of a promotable clone', () => {
  assert.ok(fs.existsSync(dtd), `${dtd} is missing: apt-get install resource-agents`);
  const r = spawnSync(agentPath, ['meta-data'], { encoding: 'utf8', env: { PATH: process.env.PATH } });
  assert.equal(r.status, 0, r.stderr);
  const lint = spawnSync('xmllint', ['--noout', '--dtdvalid', dtd, '-'], { input: r.stdout, encoding: 'utf8' });
  assert.equal(lint.error, undefined, 'xmllint is missing: apt-get install libxml2-utils');
  assert.equal(lint.status, 0, `meta-data does not validate:\n${lint.stderr}`);
  for (const a of ['start', 'stop', 'monitor', 'promote', 'demote', 'notify', 'meta-data', 'validate-all']) {
    assert.match(r.stdout, new RegExp(`<action name="${a}"`), `no ${a} action`);
  }
  assert.match(r.stdout, /<action name="monitor"[^>]*role="Promoted"/);
  assert.match(r.stdout, /<parameter name="config" unique="0" required="1">/);
  for (const p of ['node', 'twindisk', 'nodejs', 'promotion_scores']) assert.match(r.stdout, new RegExp(`<parameter name="${p}"`));
});

test('validate-all: 0 for a good resource; 6 (ERR_CONFIGURED) for a missing config or a node not in the file, saying which', () => {
  expect('validate-all', 'alpha', OCF.SUCCESS);
  const none = expect('validate-all', 'alpha', OCF.ERR_CONFIGURED, { OCF_RESKEY_config: '' });
  assert.match(none.out, /parameter config is not set/);
  const stranger = expect('validate-all', 'delta', OCF.ERR_CONFIGURED);
  assert.match(stranger.out, /has no node "delta"; its nodes are alpha, beta and gamma/);
  // A probe where the node is not in the resource file: not running there, not an error.
  expect('monitor', 'delta', OCF.NOT_RUNNING, { OCF_RESKEY_CRM_meta_interval: '0' });
});

test('start brings nodes up Secondary; promote makes monitor say 8; demote 0; scores follow the disk state', () => {
  scores();
  expect('monitor', 'alpha', OCF.NOT_RUNNING);
  expect('monitor', 'alpha', OCF.NOT_RUNNING, { OCF_RESKEY_CRM_meta_interval: '0' }); // the probe
  for (const n of ['alpha', 'beta', 'gamma']) expect('start', n, OCF.SUCCESS);
  for (const n of ['alpha', 'beta', 'gamma']) expect('monitor', n, OCF.SUCCESS);
  expect('start', 'alpha', OCF.SUCCESS); // a started node: start succeeds and changes nothing
  let s = scores();
  assert.equal(lastScore(s, 'alpha'), 10000, s.join('\n'));
  assert.equal(lastScore(s, 'beta'), 10000, s.join('\n'));
  assert.equal(lastScore(s, 'gamma'), 'deleted', `a diskless tie-breaker gets no promotion score:\n${s.join('\n')}`);
  assert.ok(s.every((l) => / crm_attribute --promotion -Q /.test(l)), `Pacemaker 2.1 takes crm_attribute --promotion:\n${s.join('\n')}`);

  expect('promote', 'alpha', OCF.SUCCESS);
  expect('monitor', 'alpha', OCF.RUNNING_PROMOTED);
  expect('promote', 'alpha', OCF.SUCCESS); // promoting the Primary succeeds
  const twice = expect('promote', 'beta', OCF.ERR_GENERIC, { OCF_RESKEY_CRM_meta_timeout: '3000' });
  assert.match(twice.out, /alpha is Primary/);
  expect('monitor', 'beta', OCF.SUCCESS);
  expect('notify', 'beta', OCF.SUCCESS, { OCF_RESKEY_CRM_meta_notify_type: 'post', OCF_RESKEY_CRM_meta_notify_operation: 'promote', OCF_RESKEY_CRM_meta_notify_promote_uname: 'alpha' });
  expect('demote', 'alpha', OCF.SUCCESS);
  expect('monitor', 'alpha', OCF.SUCCESS);
  expect('demote', 'alpha', OCF.SUCCESS); // demoting a Secondary succeeds
  s = scores();
  assert.equal(lastScore(s, 'alpha'), 10000, s.join('\n'));
  assert.equal(lastScore(s, 'beta'), 10000, s.join('\n'));

  // Before Pacemaker 2.1 (no crm_feature_set 3.10), crm_master.
  expect('monitor', 'beta', OCF.SUCCESS, { OCF_RESKEY_crm_feature_set: '3.0.14' });
  s = scores();
  assert.match(s.at(-1)!, /^beta crm_master -l reboot -Q -v 10000$/, s.join('\n'));
});

test('ocf-tester (resource-agents) passes on alpha', () => {
  const probe = spawnSync('ocf-tester', ['--version'], { encoding: 'utf8' });
  assert.equal(probe.error, undefined, 'ocf-tester is missing: apt-get install resource-agents');
  // ocf-tester sets its own OCF_RESKEY_CRM_meta_* and runs its sequence: stop, probe, start, monitor,
  // notify, demote/promote pairs, stop, start twice, stop twice.
  const r = spawnSync('ocf-tester', [
    '-n', 'td-r0', '-o', `config=${c.file}`, '-o', 'node=alpha', '-o', `twindisk=${cli}`, '-o', `nodejs=${process.execPath}`,
    '-o', `log=${path.join(c.dir, 'alpha.log')}`, '-o', `pidfile=${path.join(c.dir, 'alpha.pid')}`, '-o', 'wait_connect=1', agentPath,
  ], { encoding: 'utf8', timeout: 300_000, env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, HA_RSCTMP: c.dir, OCF_RESKEY_CRM_meta_on_node: 'alpha' } });
  assert.equal(r.status, 0, `ocf-tester failed:\n${r.stdout}${r.stderr}`);
  assert.ok(r.stdout.includes(`${agentPath} passed all tests`), r.stdout);
  // It ends with the node stopped: start it again for what follows.
  started.delete('alpha');
  expect('start', 'alpha', OCF.SUCCESS);
});

test('an Inconsistent node (resyncing) gets no promotion score and promote refuses it', async () => {
  expect('stop', 'beta', OCF.SUCCESS);
  expect('monitor', 'beta', OCF.NOT_RUNNING);
  // New metadata without --assume-clean: beta must take all of alpha's data before it is UpToDate.
  c.cli(['create-md', '--config', c.file, '--node', 'beta', '--force']);
  scores();
  expect('start', 'beta', OCF.SUCCESS);
  const st = JSON.parse(c.cli(['status', '--config', c.file, '--node', 'beta', '--json'])) as { disk: string };
  assert.equal(st.disk, 'Inconsistent', 'beta should be resyncing (slow resync-rate) when this runs');
  expect('monitor', 'beta', OCF.SUCCESS);
  const s = scores();
  assert.equal(lastScore(s, 'beta'), 'deleted', s.join('\n'));
  const r = expect('promote', 'beta', OCF.ERR_GENERIC);
  assert.match(r.out, /refusing to promote beta: its disk is Inconsistent/);
  // Once in sync it is promotable again.
  c.cli(['wait-sync', '--config', c.file, '--node', 'beta', '--timeout', '60']);
  await sleep(200);
  expect('monitor', 'beta', OCF.SUCCESS);
  assert.equal(lastScore(scores(), 'beta'), 10000);
});

test('a node without quorum publishes no score and promote refuses it (the fencing hook)', () => {
  expect('stop', 'gamma', OCF.SUCCESS);
  expect('stop', 'beta', OCF.SUCCESS);
  scores();
  expect('notify', 'alpha', OCF.SUCCESS, { OCF_RESKEY_CRM_meta_notify_type: 'post', OCF_RESKEY_CRM_meta_notify_operation: 'stop', OCF_RESKEY_CRM_meta_notify_stop_uname: 'beta gamma' });
  assert.equal(lastScore(scores(), 'alpha'), 'deleted');
  expect('monitor', 'alpha', OCF.SUCCESS); // running, only not promotable
  assert.equal(lastScore(scores(), 'alpha'), 'deleted');
  const r = expect('promote', 'alpha', OCF.ERR_GENERIC);
  assert.match(r.out, /refusing to promote alpha: no quorum \(1\/2 votes\)/);
  expect('monitor', 'alpha', OCF.SUCCESS);
  // With gamma's vote back, alpha is promotable (UpToDate, but not every peer seen: the lower score).
  expect('start', 'gamma', OCF.SUCCESS);
  expect('monitor', 'alpha', OCF.SUCCESS);
  assert.equal(lastScore(scores(), 'alpha'), 1000);
  expect('promote', 'alpha', OCF.SUCCESS);
  expect('monitor', 'alpha', OCF.RUNNING_PROMOTED);
});

test('stop stops a Primary and a Secondary (monitor then says 7); stopping a stopped node succeeds', () => {
  expect('stop', 'alpha', OCF.SUCCESS);
  expect('monitor', 'alpha', OCF.NOT_RUNNING);
  expect('stop', 'alpha', OCF.SUCCESS);
  expect('stop', 'gamma', OCF.SUCCESS);
  expect('monitor', 'gamma', OCF.NOT_RUNNING);
  assert.equal(lastScore(scores(), 'alpha'), 'deleted');
  // The disk is free again: nothing holds the lock.
  c.cli(['create-md', '--config', c.file, '--node', 'alpha', '--force']);
});
