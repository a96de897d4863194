// The command line's contract: exit codes (0 success, 1 run-time failure, 2 wrong command line or resource
// file), clear messages for common mistakes, and gen-secret.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { parseResource, secretProblem } from '../../engine/replication/config.js';
import { TEST_SECRET } from '../harness/cluster.js';
import { cli } from '../harness/serve.js';

function twindisk(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 30000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-cli-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));

function resourceFile(name: string, edit: (o: Record<string, any>) => void = () => {}): string {
  const o: Record<string, any> = {
    resource: 'r0', secret: TEST_SECRET,
    nodes: { alpha: { address: '127.0.0.1:7789', disk: 'alpha.img' }, beta: { address: '127.0.0.1:7790', disk: 'beta.img' } },
  };
  edit(o);
  const file = path.join(dir, name);
  fs.writeFileSync(file, JSON.stringify(o));
  return file;
}

test('exit 2: the command line or the resource file is wrong', () => {
  const good = resourceFile('good.json');
  const cases: [string[], RegExp][] = [
    [[], /^twindisk: replicated block storage/],
    // commander's usage errors, as one "twindisk: ..." line and where the help is.
    [['frobnicate'], /^twindisk: unknown command 'frobnicate'\n\(see `twindisk --help`\)/],
    [['stauts'], /unknown command 'stauts'\n\(Did you mean status\?\)/],
    [['status', '--bogus'], /^twindisk: unknown option '--bogus'\n\(see `twindisk status --help`\)/],
    [['status', '--confg', good, '--node', 'alpha'], /unknown option '--confg'\n\(Did you mean --config\?\)/],
    [['status', '--config'], /option '--config <file>' argument missing/],
    [['bench', 'warp'], /unknown command 'warp'/],
    [['gen-secret', 'extra'], /too many arguments for 'gen-secret'\. Expected 0 arguments but got 1/],
    [['serve', '--image', 'x.img', '--socket', 's', '--aio', 'posix'], /option '--aio <mode>' argument 'posix' is invalid\. Allowed choices are sync, io_uring/],
    [['serve', '--image', 'x.img', '--socket', 's', '--block-size', '1024'], /argument '1024' is invalid\. Allowed choices are 512, 4096/],
    // Numbers are checked as they are read.
    [['serve', '--image', 'x.img', '--socket', 's', '--poll-us', 'abc'], /^twindisk: option '--poll-us <us>' argument 'abc' is invalid\. expected a whole number of microseconds, 0 or more/],
    [['serve', '--image', 'x.img', '--socket', 's', '--poll-us', 'soon'], /--poll-us <us>' argument 'soon' is invalid/],
    [['serve', '--image', 'x.img', '--socket', 's', '--poll-us', ''], /--poll-us <us>' argument '' is invalid/],
    [['serve', '--image', 'x.img', '--socket', 's', '--poll-us', '1e3'], /--poll-us <us>' argument '1e3' is invalid/],
    [['serve', '--image', 'x.img', '--socket', 's', '--poll-us', '-1'], /--poll-us <us>' argument '-1' is invalid/],
    [['serve', '--image', 'x.img', '--socket', 's', '--queues', '0'], /option '--queues <n>' argument '0' is invalid\. expected a whole number 1\.\.64/],
    [['serve', '--image', 'x.img', '--socket', 's', '--queues', '65'], /argument '65' is invalid\. expected a whole number 1\.\.64/],
    [['serve', '--image', 'x.img', '--socket', 's', '--size', '1Q'], /option '--size <size>' argument '1Q' is invalid\. "1Q" is not a size/],
    [['wait-sync', '--config', good, '--node', 'alpha', '--timeout', 'never'], /option '--timeout <s>' argument 'never' is invalid\. expected a number of seconds above 0/],
    [['bench', 'vhost', '--seconds', '0'], /option '--seconds <s>' argument '0' is invalid/],
    // What the command itself checks.
    [['status', '--config', good], /status needs --node NAME/],
    [['up', '--node', 'alpha'], /up needs --config FILE/],
    [['serve', '--image', 'x.img'], /serve needs --socket PATH/],
    [['status', '--config', path.join(dir, 'missing.json'), '--node', 'alpha'], /missing\.json: no such file/],
    [['status', '--config', good, '--node', 'gamma'], /has no node "gamma"; its nodes are alpha and beta/],
    [['up', '--config', resourceFile('weak.json', (o) => (o.secret = 'change-me')), '--node', 'alpha'], /weak\.json: secret: too weak: .*twindisk gen-secret/],
    [['up', '--config', resourceFile('same.json', (o) => (o.nodes.beta.address = 'localhost:7789')), '--node', 'alpha'], /same endpoint as 127\.0\.0\.1:7789/],
    [['up', '--config', resourceFile('al.json', (o) => (o['al-extents'] = 2017)), '--node', 'alpha'], /al\.json: al-extents: 2017 is out of range 7\.\.2016 \(one transaction must list them all\)/],
    [['up', '--config', resourceFile('io.json', (o) => (o['on-io-error'] = 'pass_on')), '--node', 'alpha'], /io\.json: on-io-error: "pass_on" is not supported; twindisk always detaches/],
    [['create-md', '--config', good, '--node', 'alpha', '--size', '1000'], /--size 1000 is not a multiple of 4096/],
    [['create-md', '--config', good, '--node', 'alpha', '--size', 'big'], /"big" is not a size/],
  ];
  for (const [args, message] of cases) {
    const r = twindisk(...args);
    assert.equal(r.status, 2, `twindisk ${args.join(' ')}: exit ${r.status}\n${r.stdout}${r.stderr}`);
    assert.match(r.stdout + r.stderr, message, `twindisk ${args.join(' ')}`);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
});

test('exit 1: a well-formed command that fails at run time', () => {
  const good = resourceFile('good.json');
  const cases: [string[], RegExp][] = [
    [['status', '--config', good, '--node', 'alpha'], /^twindisk: alpha: .*(not running|no such)/im],
    [['down', '--config', good, '--node', 'beta'], /^twindisk: beta: /m],
    [['primary', '--config', good, '--node', 'alpha'], /^twindisk: alpha: /m],
    [['up', '--config', good, '--node', 'alpha'], /cannot start r0\/alpha: backing file .*alpha\.img does not exist: create it with its metadata \(twindisk create-md --config .* --node alpha --size SIZE\)/],
    [['create-md', '--config', good, '--node', 'alpha'], /backing file .*alpha\.img does not exist: create it \(truncate -s 1G .*\) or pass --size/],
    [['create-md', '--config', resourceFile('nodir.json', (o) => (o.nodes.alpha.disk = 'no/such/dir/alpha.img')), '--node', 'alpha', '--size', '1M'],
      new RegExp(`^twindisk: cannot create ${dir}/no/such/dir/alpha\\.img: the directory ${dir}/no/such/dir does not exist \\(create it first: mkdir -p ${dir}/no/such/dir\\)$`, 'm')],
    [['serve', '--image', path.join(dir, 'none.img'), '--socket', path.join(dir, 's.sock')], /none\.img does not exist \(create it first, e\.g\. `truncate -s 1G .*`, or pass --size\)/],
  ];
  for (const [args, message] of cases) {
    const r = twindisk(...args);
    assert.equal(r.status, 1, `twindisk ${args.join(' ')}: exit ${r.status}\n${r.stdout}${r.stderr}`);
    assert.match(r.stderr, message, `twindisk ${args.join(' ')}`);
    assert.doesNotMatch(r.stderr, /ENOENT|\n\s+at /, 'no raw errno text, no stack trace');
  }
  // Existing metadata without --force is refused, and says how.
  assert.equal(twindisk('create-md', '--config', good, '--node', 'alpha', '--size', '1M').status, 0);
  const again = twindisk('create-md', '--config', good, '--node', 'alpha');
  assert.equal(again.status, 1);
  assert.match(again.stderr, /already holds twindisk metadata: pass force/);
});

test('exit 0, and --help states the exit codes', () => {
  const help = twindisk('--help');
  assert.equal(help.status, 0);
  assert.match(help.stdout, /Exit status: 0 success; 1 the command failed at run time .*; 2 the command line or the resource file is\s+wrong/s);
  assert.match(help.stdout, /gen-secret\s+print a new random secret/);
  // Every command's help comes from its option declarations.
  const serve = twindisk('serve', '--help');
  assert.equal(serve.status, 0);
  assert.match(serve.stdout, /--poll-us <us>\s+the longest a queue worker polls .*\(default: 50\)/s);
  assert.match(serve.stdout, /--aio <mode>.*\(choices: "sync", "io_uring",\s+default: "sync"\)/s);
  const status = twindisk('help', 'status');
  assert.equal(status.status, 0);
  assert.match(status.stdout, /--config <file>\s+the resource file \(required\)/);
});

test('schema prints the resource file\'s JSON Schema', () => {
  const r = twindisk('schema');
  assert.equal(r.status, 0);
  const schema = JSON.parse(r.stdout);
  assert.equal(schema.properties['al-extents'].maximum, 2016);
  assert.deepEqual(schema.properties['on-io-error'].enum, ['detach']);
});

test('gen-secret prints a fresh 256-bit secret the resource file accepts', () => {
  const a = twindisk('gen-secret');
  const b = twindisk('gen-secret');
  assert.equal(a.status, 0);
  const secret = a.stdout.trim();
  assert.match(secret, /^[A-Za-z0-9_-]{43}$/);
  assert.equal(Buffer.from(secret, 'base64url').length, 32);
  assert.notEqual(secret, b.stdout.trim());
  assert.equal(secretProblem(secret), null);
  const cfg = parseResource(JSON.stringify({ resource: 'r0', secret, nodes: { a: { address: '127.0.0.1:1', disk: 'a.img' } } }), '/x/r0.json');
  assert.equal(cfg.secret, secret);
});
