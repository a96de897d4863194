// contrib/systemd/twindisk@.service: systemd accepts it (systemd-analyze verify), and its instance name
// RESOURCE:NODE becomes `twindisk up --config /etc/twindisk/RESOURCE.json --node NODE`.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../harness/serve.js';

const unitFile = path.join(repoRoot, 'contrib', 'systemd', 'twindisk@.service');
const unit = fs.readFileSync(unitFile, 'utf8');

/** The value of `key` in the unit (the last one, as systemd reads it). */
function setting(key: string): string {
  const values = unit.split('\n').filter((l) => l.startsWith(`${key}=`)).map((l) => l.slice(key.length + 1));
  assert.ok(values.length > 0, `${key}= is missing`);
  return values.at(-1)!;
}

/** ExecStart as systemd hands it to the shell for `instance`: specifiers and $$ expanded (the subset the unit uses). */
function execStartFor(instance: string): string[] {
  const line = setting('ExecStart');
  const m = /^\/bin\/sh -c '([^']*)' (\S+) %i$/.exec(line);
  assert.ok(m, `ExecStart is /bin/sh -c '...' NAME %i: ${line}`);
  const expand = (s: string) => s.replace(/%%|%i|\$\$/g, (t) => (t === '%%' ? '%' : t === '%i' ? instance : '$'));
  return ['/bin/sh', '-c', expand(m[1]!), m[2]!, instance];
}

test('the instance RESOURCE:NODE runs `twindisk up` with /etc/twindisk/RESOURCE.json and NODE', () => {
  const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-unit-'));
  try {
    // A stand-in twindisk on PATH that prints its arguments.
    fs.writeFileSync(path.join(bin, 'twindisk'), '#!/bin/sh\necho "$@"\n', { mode: 0o755 });
    const env = { ...process.env, PATH: `${bin}:/usr/bin:/bin` };
    for (const [instance, expected] of [
      ['r0:alpha', 'up --config /etc/twindisk/r0.json --node alpha'],
      ['vm-disk.1:node_2.example', 'up --config /etc/twindisk/vm-disk.1.json --node node_2.example'],
    ]) {
      const [cmd, ...args] = execStartFor(instance!);
      const r = spawnSync(cmd!, args, { encoding: 'utf8', env });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, `${expected}\n`);
    }
    const [cmd, ...args] = execStartFor('r0');
    const r = spawnSync(cmd!, args, { encoding: 'utf8', env });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /twindisk@r0: name the instance RESOURCE:NODE, e\.g\. twindisk@r0:alpha/);
  } finally {
    fs.rmSync(bin, { recursive: true, force: true });
  }
});

test('restarts on failure but not on exit 2; sockets for group twindisk only; a clean stop has time', () => {
  assert.equal(setting('Restart'), 'on-failure');
  assert.equal(setting('RestartPreventExitStatus'), '2');
  assert.equal(setting('Group'), 'twindisk');
  assert.equal(setting('UMask'), '0007');
  assert.equal(setting('RuntimeDirectory'), 'twindisk');
  assert.equal(setting('RuntimeDirectoryMode'), '0750');
  assert.equal(setting('RuntimeDirectoryPreserve'), 'yes');
  assert.equal(setting('KillMode'), 'mixed');
  assert.match(fs.readFileSync(path.join(repoRoot, 'contrib', 'systemd', 'twindisk.sysusers'), 'utf8'), /^g twindisk -$/m);
});

test('systemd-analyze verify accepts the unit', (t) => {
  const probe = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
  assert.equal(probe.status, 0, 'systemd-analyze is missing: apt-get install systemd');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-verify-'));
  try {
    // First a unit that cannot be wrong: when even that fails, verify does not work on this machine
    // (it may need systemd as PID 1); only then is this check skipped, saying why.
    fs.writeFileSync(path.join(dir, 'probe.service'), '[Service]\nExecStart=/bin/true\n');
    const baseline = spawnSync('systemd-analyze', ['verify', path.join(dir, 'probe.service')], { encoding: 'utf8' });
    if (baseline.status !== 0) {
      t.skip(`systemd-analyze verify does not work here (without systemd as PID 1?): ${baseline.stderr.trim()}`);
      return;
    }
    fs.copyFileSync(unitFile, path.join(dir, 'twindisk@.service'));
    // FILE:NAME verifies the template under an instance's name (a ':' in a path is read as that separator).
    const r = spawnSync('systemd-analyze', ['verify', `${path.join(dir, 'twindisk@.service')}:twindisk@r0:alpha.service`], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.equal(r.stderr.trim(), '', 'no warnings');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
