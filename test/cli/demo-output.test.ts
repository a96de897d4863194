// The demo's terminal: steps stand out, the nodes' full log goes to a file, and the terminal gets only the
// story (roles, peers, resyncs, QEMU) and every warning and error, one short line per event.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { DemoOutput, demoEvent } from '../../cli/demo-output.js';

const NODES = ['alpha', 'beta', 'gamma'];

test('demoEvent: the story and every warning pass, named by node; the rest of INFO and DEBUG stay in the file', () => {
  assert.deepEqual(demoEvent('info', 'r0/alpha', 'promoted to Primary', { force: true }, NODES), { node: 'alpha', level: 'info', text: 'promoted to Primary (--force)' });
  assert.deepEqual(demoEvent('info', 'r0/beta', 'connected to alpha', {}, NODES), { node: 'beta', level: 'info', text: 'connected to alpha' });
  assert.equal(demoEvent('info', 'r0/alpha', 'resync with beta: this node is SyncSource (beta has fresh metadata)', { full: true }, NODES)?.text,
    'resync with beta: this node is SyncSource (beta has fresh metadata), full');
  assert.equal(demoEvent('info', 'r0/beta', 'resync with alpha finished', { as: 'SyncTarget', bytesSent: 0, bytesReceived: 2 ** 30, seconds: '12.60' }, NODES)?.text,
    'resync with alpha finished: 1.0 GiB in 12.60 s');
  assert.deepEqual(demoEvent('info', 'r0/alpha/vhost-user', 'front-end connected', {}, NODES), { node: 'alpha', level: 'info', text: 'QEMU connected (vhost-user front-end)' });
  assert.deepEqual(demoEvent('warn', 'r0/gamma/link', 'lost connection to alpha: closed', { resyncLeftBytes: 4096, gone: undefined }, NODES),
    { node: 'gamma', level: 'warn', text: 'lost connection to alpha: closed resyncLeftBytes=4096' });
  assert.equal(demoEvent('error', 'twindisk', 'boom', {}, NODES)?.node, 'twindisk', 'a component naming no node is shown whole');
  for (const [c, m] of [['r0/alpha', 'disk attached'], ['r0/alpha/link', 'cannot connect to peer 1 (beta) at 127.0.0.1:7790: ECONNREFUSED; retrying'],
    ['r0/alpha', 'beta is in sync'], ['r0/alpha/link', 'connected to peer 1 (beta) at 127.0.0.1:7790'], ['r0/beta/vhost-user', 'listening'], ['r0/alpha/vhost-user/queue 0', 'queue 0 started']]) {
    assert.equal(demoEvent('info', c!, m!, {}, NODES), null, m);
  }
  assert.equal(demoEvent('debug', 'r0/alpha', 'promoted to Primary', {}, NODES), null);
});

test('DemoOutput: steps and the story on the terminal, every line in the file, held lines after the bars, quiet goodbyes', () => {
  const term = new PassThrough();
  let text = '';
  term.on('data', (d: Buffer) => (text += d.toString()));
  const logFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'demo-output-')), 'nodes.log');
  fs.writeFileSync(logFile, 'an older run\n');
  const out = new DemoOutput({ stream: term, nodes: NODES, logFile });
  out.step('starting the nodes');
  out.sink('info', 'r0/alpha', 'disk attached', { size: 1073741824 });
  out.sink('info', 'r0/gamma', 'connected to beta', {});
  out.hold();
  out.sink('warn', 'r0/beta', 'lost quorum (1 of 2 votes)', {});
  out.note('not yet');
  assert.ok(!text.includes('lost quorum'), 'held while the bars are drawn');
  out.release();
  out.sink('debug', 'r0/alpha', 'a detail', {});
  out.stopAll();
  out.sink('warn', 'r0/alpha', 'lost connection to beta: shutdown', {});
  out.sink('error', 'r0/beta', 'metadata write failed', {});
  out.sink('info', 'r0/beta', 'node down', {});
  out.close();
  assert.equal(text, [
    '==> starting the nodes',
    '    gamma | connected to beta',
    '    beta  | warning: lost quorum (1 of 2 votes)',
    '    not yet',
    '    beta  | error: metadata write failed',
    '    beta  | node down',
    '',
  ].join('\n'));
  const file = fs.readFileSync(logFile, 'utf8').trimEnd().split('\n');
  assert.equal(file.length, 7, 'the file starts anew and has every line');
  assert.match(file[4]!, /WARN  r0\/alpha: lost connection to beta: shutdown$/, 'warnings while stopping: in the file only');
  assert.match(file[0]!, /^\S+Z INFO  r0\/alpha: disk attached size=1073741824$/);
  assert.match(file[2]!, /^\S+Z WARN  r0\/beta: lost quorum \(1 of 2 votes\)$/);
  assert.match(file[3]!, /DEBUG r0\/alpha: a detail$/);
});

test('DemoOutput in colour: steps bold, node names coloured, warnings yellow', () => {
  const term = new PassThrough();
  let text = '';
  term.on('data', (d: Buffer) => (text += d.toString()));
  const out = new DemoOutput({ stream: term, nodes: NODES, logFile: path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'demo-output-')), 'nodes.log'), color: true });
  out.step('ready');
  out.sink('warn', 'r0/beta', 'lost quorum', {});
  out.close();
  assert.match(text, /^\x1b\[1m==> ready\x1b\[22m\n/);
  assert.match(text, /\x1b\[35mbeta \x1b\[39m/);
  assert.match(text, /\x1b\[33mwarning: lost quorum\x1b\[39m/);
});
