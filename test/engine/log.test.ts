// The log's two formats: text lines whose `component: message key=value` shape tests and operators match,
// and pino's JSON lines (TWINDISK_LOG_FORMAT=json, or by default when stderr is systemd's journal), written
// synchronously so a process that exits right after logging loses nothing.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { formatText, isJournal, logFormat } from '../../engine/log.js';

const LOG_MODULE = new URL('../../engine/log.js', import.meta.url).href;
const at = new Date('2026-12-02T12:00:00.000Z');

test('text: time, level, component: message, then key=value with quoting; undefined fields left out', () => {
  const line = formatText(at, 'info', 'r0/alpha', 'disk attached', { size: 1073741824, path: 'a b', big: 2n ** 64n, empty: '', gone: undefined, ok: true, none: null });
  assert.equal(line, '2026-12-02T12:00:00.000Z INFO  r0/alpha: disk attached size=1073741824 path="a b" big=18446744073709551616 empty="" ok=true none=null');
  assert.equal(formatText(at, 'warn', 'x', 'm', {}), '2026-12-02T12:00:00.000Z WARN  x: m');
});

test('text in colour: only the time and level are styled; the rest keeps its shape', () => {
  const line = formatText(at, 'error', 'r0/beta/link', 'lost connection', { peer: 0 }, true);
  assert.match(line, /\x1b\[/);
  assert.ok(line.endsWith(' r0/beta/link: lost connection peer=0'), line);
  assert.ok(line.includes('ERROR'), line);
});

test('the format: TWINDISK_LOG_FORMAT wins; otherwise JSON only when stderr is the journal', () => {
  assert.equal(logFormat({ TWINDISK_LOG_FORMAT: 'json' }), 'json');
  assert.equal(logFormat({ TWINDISK_LOG_FORMAT: 'text', JOURNAL_STREAM: '1:1' }), 'text');
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'log-test-')), 'journal');
  const fd = fs.openSync(file, 'w');
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    assert.equal(isJournal(`${st.dev}:${st.ino}`, fd), true);
    assert.equal(isJournal(`${st.dev}:${st.ino + 1n}`, fd), false, 'an inherited JOURNAL_STREAM naming another file');
    assert.equal(isJournal(undefined, fd), false);
    assert.equal(isJournal('journal', fd), false);
  } finally {
    fs.closeSync(fd);
  }
});

/** Runs a script that logs through engine/log.js with stderr in a file; returns the file's text. */
function logInChild(script: string, env: Record<string, string>, journal = false): string {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'log-test-')), 'stderr');
  const fd = fs.openSync(file, 'w');
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    const jenv: Record<string, string> = journal ? { JOURNAL_STREAM: `${st.dev}:${st.ino}` } : {};
    const base = { ...process.env };
    delete base.TWINDISK_LOG_FORMAT;
    delete base.TWINDISK_LOG_LEVEL;
    delete base.JOURNAL_STREAM;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', `import { Logger } from '${LOG_MODULE}';\n${script}`], {
      stdio: ['ignore', 'inherit', fd], env: { ...base, ...jenv, ...env },
    });
    assert.equal(r.status, 0, fs.readFileSync(file, 'utf8'));
  } finally {
    fs.closeSync(fd);
  }
  return fs.readFileSync(file, 'utf8');
}

test('JSON lines are pino records: numeric level, ISO time, component, fields (bigint as a number), msg', () => {
  const out = logInChild("new Logger('r0/alpha').child('link').warn('lost connection to beta', { peer: 1, big: 12n, gone: undefined });", { TWINDISK_LOG_FORMAT: 'json' });
  const lines = out.trimEnd().split('\n');
  assert.equal(lines.length, 1, out);
  const o = JSON.parse(lines[0]!) as Record<string, unknown>;
  assert.equal(o.level, 40);
  assert.match(String(o.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.equal(o.component, 'r0/alpha/link');
  assert.equal(o.msg, 'lost connection to beta');
  assert.equal(o.peer, 1);
  assert.equal(o.big, 12);
  assert.equal('gone' in o, false);
  assert.equal(typeof o.pid, 'number');
});

test('under systemd (stderr is the journal) lines are JSON by default; TWINDISK_LOG_FORMAT=text keeps text', () => {
  const script = "new Logger('r0/alpha').info('node up', { node: 'alpha' });";
  assert.equal((JSON.parse(logInChild(script, {}, true)) as { msg: string }).msg, 'node up');
  assert.match(logInChild(script, { TWINDISK_LOG_FORMAT: 'text' }, true), /^\S+ INFO  r0\/alpha: node up node=alpha\n$/);
  assert.match(logInChild(script, {}), /^\S+ INFO  r0\/alpha: node up node=alpha\n$/, 'a pipe or file without JOURNAL_STREAM: text');
});

test('TWINDISK_LOG_LEVEL filters; lines logged right before process.exit are all written, in both formats', () => {
  const script = "const l = new Logger('t'); l.debug('hidden'); for (let i = 0; i < 2000; i++) l.warn('line', { i }); process.exit(0);";
  for (const format of ['json', 'text']) {
    const out = logInChild(script, { TWINDISK_LOG_FORMAT: format, TWINDISK_LOG_LEVEL: 'warn' });
    const lines = out.trimEnd().split('\n');
    assert.equal(lines.length, 2000, `${format}: ${lines.length} lines`);
    assert.ok(!out.includes('hidden'));
    assert.ok(lines[1999]!.includes(format === 'json' ? '"i":1999' : 't: line i=1999'), lines[1999]);
  }
});
