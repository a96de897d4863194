// The progress bars of wait-sync, verify --wait and the demo (cli-progress): away from a terminal, a
// plain line per peer at each update, with the bar, a percentage to a tenth and the detail.
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { ProgressBars } from '../../cli/progress.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('not a terminal: every update is printed as plain lines, no escape sequences', async () => {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d: Buffer) => (text += d.toString()));
  assert.equal((out as { isTTY?: boolean }).isTTY, undefined);
  const bars = new ProgressBars({ stream: out, plainEveryMs: 20 });
  bars.update([{ name: 'beta', percent: 12.34, detail: 'SyncTarget 10.0 MiB/s' }]);
  await sleep(60);
  bars.update([{ name: 'beta', percent: 50, detail: 'SyncTarget 12.5 MiB/s' }, { name: 'gamma', percent: 100, detail: 'Established' }]);
  await sleep(60);
  bars.stop();
  bars.stop(); // idempotent
  const lines = text.split('\n').filter((l) => l !== '');
  assert.ok(lines.includes('beta [==                  ] 12.3% SyncTarget 10.0 MiB/s'), text);
  assert.ok(lines.includes('beta [==========          ] 50.0% SyncTarget 12.5 MiB/s'), text);
  assert.ok(lines.includes('gamma [====================] 100.0% Established'), text);
  assert.doesNotMatch(text, /\x1b/, 'no terminal control sequences in a log');
  const after = text.length;
  await sleep(60);
  bars.update([{ name: 'beta', percent: 99, detail: '' }]);
  assert.equal(text.length, after, 'nothing is printed after stop()');
});

test('a terminal: the bars are drawn in place and cleared when done', async () => {
  const out = Object.assign(new PassThrough(), { isTTY: true, columns: 80 });
  let text = '';
  out.on('data', (d: Buffer) => (text += d.toString()));
  const bars = new ProgressBars({ stream: out });
  bars.update([{ name: 'beta', percent: 25, detail: 'SyncSource' }]);
  await sleep(150);
  bars.stop();
  assert.match(text, /beta \[=====               \] 25\.0% SyncSource/);
  assert.match(text, /\x1b\[/, 'cursor movement and line clearing');
});
