// Tests of the control sockets' request parsers (daemon/control.ts): a served array's raid requests, well-formed and malformed, and a seeded fuzz over both parsers.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseControlRequest, parseRaidControlRequest } from '../../daemon/control.js';
import type { RaidControlRequest } from '../../engine/raid/membership.js';
import { seededRandom } from '../harness/random.js';

const line = (v: unknown): string => JSON.stringify(v);

test('raid requests: each command parses to exactly its fields; optional fields only when given', () => {
  const ok: [unknown, RaidControlRequest][] = [
    [{ cmd: 'raid-status' }, { cmd: 'raid-status' }],
    [{ cmd: 'raid-fail', slot: 2 }, { cmd: 'raid-fail', slot: 2 }],
    [{ cmd: 'raid-remove', slot: 0 }, { cmd: 'raid-remove', slot: 0 }],
    [{ cmd: 'raid-add', slot: 1, member: '/d/e.img' }, { cmd: 'raid-add', slot: 1, member: '/d/e.img' }],
    [{ cmd: 'raid-add', slot: 1, member: '/d/e.img', size: 16 << 20, rate: 1.5e6, force: true },
      { cmd: 'raid-add', slot: 1, member: '/d/e.img', size: 16 << 20, rate: 1.5e6, force: true }],
    [{ cmd: 'raid-add', slot: 1, member: '/d/e.img', force: false }, { cmd: 'raid-add', slot: 1, member: '/d/e.img' }],
    [{ cmd: 'raid-replace', slot: 3, member: '/dev/sdf', rate: 50 << 20 }, { cmd: 'raid-replace', slot: 3, member: '/dev/sdf', rate: 50 << 20 }],
    [{ cmd: 'raid-check' }, { cmd: 'raid-check' }],
    [{ cmd: 'raid-check', rate: 100 << 20 }, { cmd: 'raid-check', rate: 100 << 20 }],
    [{ cmd: 'raid-repair', rate: 1 }, { cmd: 'raid-repair', rate: 1 }],
    [{ cmd: 'raid-resync' }, { cmd: 'raid-resync' }],
  ];
  for (const [req, want] of ok) {
    assert.deepEqual(parseRaidControlRequest(line(req)), want, line(req));
    // A node's control socket passes raid-* requests to the same parser.
    assert.deepEqual(parseControlRequest(line(req)), want, `node: ${line(req)}`);
  }
});

test('raid requests: malformed ones are refused with what is wrong', () => {
  const bad: [string, RegExp][] = [
    ['', /not JSON/],
    ['{', /not JSON/],
    ['null', /no "cmd"/],
    ['[]', /no "cmd"/],
    ['"raid-status"', /no "cmd"/],
    [line({ cmd: 7 }), /no "cmd"/],
    [line({ cmd: 'raid-stop' }), /unknown command "raid-stop": a served array takes raid-status, raid-fail, raid-remove, raid-add, raid-replace, raid-check, raid-repair, raid-resync/],
    [line({ cmd: 'toString' }), /unknown command "toString"/],
    [line({ cmd: '__proto__' }), /unknown command "__proto__"/],
    [line({ cmd: 'raid-status', slot: 1 }), /raid-status has no field "slot": it takes none besides "cmd"/],
    ['{"cmd":"raid-fail","slot":1,"__proto__":{"force":true}}', /raid-fail has no field "__proto__"/],
    [line({ cmd: 'raid-fail' }), /raid-fail needs "slot"/],
    [line({ cmd: 'raid-fail', slot: -1 }), /raid-fail needs "slot": the slot number, a whole number 0 or more/],
    [line({ cmd: 'raid-fail', slot: 1.5 }), /needs "slot"/],
    [line({ cmd: 'raid-fail', slot: '1' }), /needs "slot"/],
    [line({ cmd: 'raid-fail', slot: 2 ** 60 }), /needs "slot"/],
    [line({ cmd: 'raid-remove', slot: null }), /raid-remove needs "slot"/],
    [line({ cmd: 'raid-remove', slot: 1, member: '/x' }), /raid-remove has no field "member": it takes "slot"/],
    [line({ cmd: 'raid-add', slot: 1 }), /raid-add needs "member"/],
    [line({ cmd: 'raid-add', slot: 1, member: '' }), /raid-add needs "member"/],
    [line({ cmd: 'raid-add', slot: 1, member: ['/x'] }), /raid-add needs "member"/],
    [line({ cmd: 'raid-add', slot: 1, member: 'e.img' }), /raid-add "member" is an absolute path/],
    [line({ cmd: 'raid-add', slot: 1, member: '/a\u0000b' }), /holds a NUL byte/],
    [line({ cmd: 'raid-add', slot: 1, member: '/' + 'x'.repeat(5000) }), /longer than 4095 bytes/],
    [line({ cmd: 'raid-add', slot: 1, member: '/e', size: 0 }), /raid-add "size" is a whole number of bytes above 0/],
    [line({ cmd: 'raid-add', slot: 1, member: '/e', size: -4096 }), /"size" is a whole number/],
    [line({ cmd: 'raid-add', slot: 1, member: '/e', size: 1e300 }), /"size" is a whole number/],
    [line({ cmd: 'raid-add', slot: 1, member: '/e', size: '16M' }), /"size" is a whole number/],
    [line({ cmd: 'raid-add', slot: 1, member: '/e', rate: 0 }), /raid-add "rate" is bytes a second, a number above 0/],
    [line({ cmd: 'raid-add', slot: 1, member: '/e', rate: '50M/s' }), /"rate" is bytes a second/],
    [line({ cmd: 'raid-add', slot: 1, member: '/e', force: 'yes' }), /raid-add "force" is true or false/],
    [line({ cmd: 'raid-add', slot: 1, member: '/e', forse: true }), /raid-add has no field "forse"/],
    [line({ cmd: 'raid-replace', member: '/e' }), /raid-replace needs "slot"/],
    [line({ cmd: 'raid-replace', slot: 0, member: 'rel/e' }), /raid-replace "member" is an absolute path/],
    [line({ cmd: 'raid-check', rate: -5 }), /raid-check "rate" is bytes a second/],
    [line({ cmd: 'raid-check', rate: null }), /raid-check "rate"/],
    [line({ cmd: 'raid-check', slot: 1 }), /raid-check has no field "slot": it takes "rate"/],
    [line({ cmd: 'raid-repair', rate: 1e6, wait: true }), /raid-repair has no field "wait"/],
    [line({ cmd: 'raid-resync', rate: 1e6 }), /raid-resync has no field "rate"/],
  ];
  for (const [l, re] of bad) {
    const r = parseRaidControlRequest(l);
    assert.equal(typeof r, 'string', `${l.slice(0, 80)} was taken: ${JSON.stringify(r)}`);
    assert.match(r as string, re, l.slice(0, 80));
    if (l.includes('raid-')) assert.equal(parseControlRequest(l), r, `node: ${l.slice(0, 80)}`);
  }
});


/** What every accepted request must satisfy, checked apart from the parser. */
function checkAccepted(r: RaidControlRequest, input: string): void {
  const fields: Record<string, string[]> = {
    'raid-status': [], 'raid-resync': [], 'raid-fail': ['slot'], 'raid-remove': ['slot'], 'raid-check': ['rate'], 'raid-repair': ['rate'],
    'raid-add': ['slot', 'member', 'size', 'rate', 'force'], 'raid-replace': ['slot', 'member', 'size', 'rate', 'force'],
  };
  const allowed = fields[r.cmd];
  assert.ok(allowed !== undefined, `unknown cmd taken: ${input}`);
  for (const k of Object.keys(r)) assert.ok(k === 'cmd' || allowed.includes(k), `field ${k} taken: ${input}`);
  const o = r as Partial<Record<'slot' | 'member' | 'size' | 'rate' | 'force', unknown>>;
  if (allowed.includes('slot')) assert.ok(Number.isSafeInteger(o.slot) && (o.slot as number) >= 0, `slot: ${input}`);
  if (allowed.includes('member')) {
    assert.ok(typeof o.member === 'string' && o.member.startsWith('/') && !o.member.includes('\0') && Buffer.byteLength(o.member) <= 4095, `member: ${input}`);
  }
  if (o.size !== undefined) assert.ok(Number.isSafeInteger(o.size) && (o.size as number) > 0, `size: ${input}`);
  if (o.rate !== undefined) assert.ok(typeof o.rate === 'number' && Number.isFinite(o.rate) && o.rate > 0, `rate: ${input}`);
  if (o.force !== undefined) assert.equal(o.force, true, `force: ${input}`);
}

test('fuzz: random requests and mangled lines never throw; what is taken has valid fields only', () => {
  const next = seededRandom(0x7d15c);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;
  const cmds = ['raid-status', 'raid-fail', 'raid-remove', 'raid-add', 'raid-replace', 'raid-check', 'raid-repair', 'raid-resync', 'raid-', 'status', 'resize', 'RAID-ADD', ''];
  const keys = ['slot', 'member', 'size', 'rate', 'force', 'cmd', 'wait', '__proto__', 'constructor', ''];
  const values = (): unknown => pick<() => unknown>([
    () => Math.floor(next() * 8),
    () => -Math.floor(next() * 8),
    () => next() * 1e6,
    () => 2 ** Math.floor(next() * 70),
    () => Number.MAX_SAFE_INTEGER + 2,
    () => 0,
    () => '/tmp/m' + Math.floor(next() * 9) + '.img',
    () => 'rel.img',
    () => '',
    () => '/x\u0000y',
    () => '/' + 'a'.repeat(Math.floor(next() * 5000)),
    () => String(Math.floor(next() * 8)),
    () => next() < 0.5,
    () => null,
    () => [],
    () => ({ slot: 1 }),
  ])();
  let taken = 0;
  const n = 5000;
  for (let i = 0; i < n; i++) {
    const o: Record<string, unknown> = { cmd: pick(cmds) };
    const k = Math.floor(next() * 6);
    for (let j = 0; j < k; j++) o[pick(keys)] = values();
    let l = JSON.stringify(o);
    // Sometimes mangle the line: cut it, flip a byte, or prefix junk.
    const how = next();
    if (how < 0.1) l = l.slice(0, Math.floor(next() * l.length));
    else if (how < 0.2) {
      const at = Math.floor(next() * l.length);
      l = l.slice(0, at) + String.fromCharCode(Math.floor(next() * 128)) + l.slice(at + 1);
    } else if (how < 0.25) l = pick(['\u0000', ' ', '{}', 'true', '1e999']) + l;
    for (const parse of [parseRaidControlRequest, parseControlRequest]) {
      let r: unknown;
      assert.doesNotThrow(() => { r = parse(l); }, l.slice(0, 120));
      if (typeof r === 'string') {
        assert.ok(r.length > 0, `error text of ${l.slice(0, 80)}`);
        // The raid parser quotes at most 64 characters of what it was sent.
        if (parse === parseRaidControlRequest) assert.ok(r.length < 400, `error text of ${l.slice(0, 80)}: ${r.slice(0, 80)}`);
        continue;
      }
      if (parse === parseRaidControlRequest || (r as { cmd: string }).cmd.startsWith('raid-')) {
        checkAccepted(r as RaidControlRequest, l.slice(0, 120));
        if (parse === parseRaidControlRequest) taken++;
      }
    }
  }
  // The generator reaches both sides of the parser.
  assert.ok(taken > 50 && taken < n - 500, `${taken} of ${n} taken`);
});
