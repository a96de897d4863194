// Tests of CHAP at login through the connection state machine: iPXE (T bit on every request), open-iscsi, mutual CHAP, refusals, bounds.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { LoginStatus, Opcode, RESERVED_TAG } from '../../../bootimg/iscsi/constants.js';
import { ConnectionState, type ConnectionOptions, type Step, type TargetConfig } from '../../../bootimg/iscsi/connection-state.js';
import { PduReader, buildBhs, parseBhs, serializePdu, type Bhs, type InPdu, type InitiatorBhs, type TargetBhs } from '../../../bootimg/iscsi/pdu.js';
import { makeScsiDisk } from '../../../bootimg/iscsi/scsi.js';
import { encodeText, parseText } from '../../../bootimg/iscsi/text.js';

const IQN = 'iqn.2026-12.org.twindisk:r0';
const OPEN = 'iqn.2026-12.org.twindisk:open';
const IPXE = 'iqn.2010-04.org.ipxe:00000000-0000-0000-0000-000000000000';
const ISID = 0x4000_2723_abcd;
const USER = 'boot';
const SECRET = 'initiator-secret-16+';
const MUTUAL = { user: IQN, secret: 'target-secret-16+bytes' };
const disk = makeScsiDisk({ id: 'r0/0', blocks: 2048n, blockSize: 512 });
const chapTarget: TargetConfig = { name: IQN, disk, addresses: ['10.0.0.1:3260'], chap: { user: USER, secret: SECRET, mutual: MUTUAL } };
const openTarget: TargetConfig = { name: OPEN, disk, addresses: ['10.0.0.1:3260'] };
const targets = [chapTarget, openTarget];

/** Identifier 0x2a and challenge 00 01 .. 0f, so the expected values are known. */
const CHALLENGE = Uint8Array.from({ length: 16 }, (_, i) => i);
function fixedRandom(n: number): Uint8Array {
  return n === 1 ? Uint8Array.of(0x2a) : CHALLENGE.slice(0, n);
}

/** The RFC 1994 MD5 response, computed here independently of chap.ts, hex-encoded as initiators send it. */
function md5(id: number, secret: string, challenge: Uint8Array): string {
  return '0x' + createHash('md5').update(Buffer.from([id])).update(Buffer.from(secret, 'utf8')).update(challenge).digest('hex');
}

function inPdu(h: InitiatorBhs, data: Uint8Array = new Uint8Array(0)): InPdu {
  const r = new PduReader({ maxDataSegmentLength: 1 << 20 });
  const out = r.push(serializePdu({ bhs: buildBhs({ ...h, dataSegmentLength: data.length } as Bhs), data }));
  assert.equal(out.length, 1);
  return out[0]!;
}

const base = { immediate: true, totalAhsLength: 0, dataSegmentLength: 0 };

function loginPdu(o: { csg: number; nsg?: number; transit: boolean; cont?: boolean }, data: Uint8Array): InPdu {
  return inPdu({
    opcode: Opcode.LoginRequest, ...base, final: o.transit, transit: o.transit, cont: o.cont ?? false, csg: o.csg, nsg: o.transit ? o.nsg ?? 1 : 0,
    versionMax: 0, versionMin: 0, isid: ISID, tsih: 0, cid: 0, cmdSN: 0, expStatSN: 0, itt: 0x4953_4353,
  }, data);
}

function login(o: { csg: number; nsg?: number; transit: boolean }, keys: [string, string][]): InPdu {
  return loginPdu(o, encodeText(keys));
}

interface Answer { transit: boolean; csg: number; nsg: number; status: number; tsih: number; keys: Map<string, string>; order: string[] }

/** The one Login Response of a step. */
function answer(s: Step): Answer {
  assert.equal(s.pdus.length, 1, `one PDU expected, got ${s.pdus.length}`);
  const h = parseBhs(s.pdus[0]!.bhs) as TargetBhs;
  assert.equal(h.opcode, Opcode.LoginResponse);
  if (h.opcode !== Opcode.LoginResponse) throw new Error('unreachable');
  const keys = parseText(s.pdus[0]!.data);
  return { transit: h.transit, csg: h.csg, nsg: h.nsg, status: (h.statusClass << 8) | h.statusDetail, tsih: h.tsih, keys, order: [...keys.keys()] };
}

function failedWith(s: Step, c: ConnectionState, status: LoginStatus, re: RegExp): void {
  const a = answer(s);
  assert.equal(a.status, status, `status 0x${a.status.toString(16)}, close: ${s.close}`);
  assert.equal(a.transit, false);
  assert.match(s.close ?? '', re);
  assert.equal(c.phase, 'closed');
}

function conn(opts: Partial<ConnectionOptions> = {}): ConnectionState {
  return new ConnectionState({ targets, allocateTsih: () => 0x55, chapRandom: fixedRandom, ...opts });
}

const first: [string, string][] = [['InitiatorName', IPXE], ['TargetName', IQN], ['SessionType', 'Normal']];
const operational: [string, string][] = [['HeaderDigest', 'None'], ['DataDigest', 'None'], ['MaxRecvDataSegmentLength', '8192']];

/** Runs the first two rounds (AuthMethod, CHAP_A) with the given T bit; returns the connection in the 'response' state. */
function challenged(transit: boolean, opts: Partial<ConnectionOptions> = {}): ConnectionState {
  const c = conn(opts);
  const a1 = answer(c.receive(login({ csg: 0, nsg: 1, transit }, [...first, ['AuthMethod', 'CHAP,None']])));
  assert.equal(a1.keys.get('AuthMethod'), 'CHAP');
  const a2 = answer(c.receive(login({ csg: 0, nsg: 1, transit }, [['CHAP_A', '5']])));
  assert.equal(a2.keys.get('CHAP_C'), '0x000102030405060708090a0b0c0d0e0f');
  return c;
}

test('iPXE: T=1 on every request; the target answers T=0 until CHAP_R is verified, then moves on to the operational stage', () => {
  const c = conn();
  // 1. iPXE with a username offers AuthMethod=CHAP,None, T=1 NSG=1 from the very first request.
  const a1 = answer(c.receive(login({ csg: 0, nsg: 1, transit: true }, [...first, ['AuthMethod', 'CHAP,None']])));
  assert.deepEqual([a1.status, a1.transit, a1.csg, a1.nsg], [0, false, 0, 0]);
  assert.deepEqual(a1.keys, new Map([['AuthMethod', 'CHAP'], ['TargetPortalGroupTag', '1']]));
  assert.equal(c.phase, 'security');
  // 2. CHAP_A=5, still T=1: CHAP_A, CHAP_I, CHAP_C in that order (iPXE reads CHAP_I before CHAP_C), T=0.
  const a2 = answer(c.receive(login({ csg: 0, nsg: 1, transit: true }, [['CHAP_A', '5']])));
  assert.deepEqual([a2.status, a2.transit, a2.nsg], [0, false, 0]);
  assert.deepEqual(a2.order, ['CHAP_A', 'CHAP_I', 'CHAP_C']);
  assert.deepEqual(a2.keys, new Map([['CHAP_A', '5'], ['CHAP_I', '42'], ['CHAP_C', '0x000102030405060708090a0b0c0d0e0f']]));
  assert.equal(c.phase, 'security');
  // 3. CHAP_N, CHAP_R with T=1: verified, so the transit is granted.
  const s3 = c.receive(login({ csg: 0, nsg: 1, transit: true }, [['CHAP_N', USER], ['CHAP_R', md5(0x2a, SECRET, CHALLENGE)]]));
  const a3 = answer(s3);
  assert.deepEqual([a3.status, a3.transit, a3.csg, a3.nsg, a3.keys.size], [0, true, 0, 1, 0]);
  assert.equal(c.phase, 'operational');
  assert.ok(s3.log.some((l) => /CHAP/.test(l) && l.includes(USER)), s3.log.join('; '));
  assert.equal(c.session.authMethod, 'CHAP');
  // 4. Operational, T=1 NSG=3: full feature phase.
  const a4 = answer(c.receive(login({ csg: 1, nsg: 3, transit: true }, operational)));
  assert.deepEqual([a4.status, a4.transit, a4.tsih], [0, true, 0x55]);
  assert.equal(c.phase, 'full');
});

test('iPXE with a target username: mutual CHAP, CHAP_I/CHAP_C after CHAP_N/CHAP_R; the target answers with its name and response', () => {
  const c = challenged(true);
  const theirs = Buffer.from('a0a1a2a3a4a5a6a7a8a9aaabacadaeaf', 'hex');
  const a = answer(c.receive(login({ csg: 0, nsg: 1, transit: true }, [
    ['CHAP_N', USER], ['CHAP_R', md5(0x2a, SECRET, CHALLENGE)], ['CHAP_I', '17'], ['CHAP_C', '0x' + theirs.toString('hex')],
  ])));
  assert.deepEqual([a.status, a.transit, a.nsg], [0, true, 1]);
  assert.deepEqual(a.order, ['CHAP_N', 'CHAP_R']);
  assert.equal(a.keys.get('CHAP_N'), MUTUAL.user);
  assert.equal(a.keys.get('CHAP_R'), md5(17, MUTUAL.secret, theirs));
  assert.equal(c.phase, 'operational');
});

test('open-iscsi: T=0 through the exchange, T=1 with the mutual response (CHAP_I/CHAP_C with CHAP_N/CHAP_R, base64 challenge)', () => {
  const c = challenged(false);
  const theirs = Buffer.from(Array.from({ length: 16 }, (_, i) => 0xf0 - i));
  const a = answer(c.receive(login({ csg: 0, nsg: 1, transit: true }, [
    ['CHAP_N', USER], ['CHAP_R', md5(0x2a, SECRET, CHALLENGE)], ['CHAP_I', '0xc8'], ['CHAP_C', '0b' + theirs.toString('base64')],
  ])));
  assert.deepEqual([a.status, a.transit, a.csg, a.nsg], [0, true, 0, 1]);
  assert.equal(a.keys.get('CHAP_R'), md5(200, MUTUAL.secret, theirs));
  const f = answer(c.receive(login({ csg: 1, nsg: 3, transit: true }, operational)));
  assert.deepEqual([f.status, f.transit], [0, true]);
  assert.equal(c.phase, 'full');
});

test('CHAP_A in the first request with AuthMethod; a T=0 round after success; then the transit straight to full feature', () => {
  const c = conn();
  const a1 = answer(c.receive(login({ csg: 0, transit: false }, [...first, ['AuthMethod', 'CHAP'], ['CHAP_A', '7,5']])));
  assert.deepEqual(a1.order, ['AuthMethod', 'TargetPortalGroupTag', 'CHAP_A', 'CHAP_I', 'CHAP_C']);
  assert.equal(a1.keys.get('CHAP_A'), '5');
  const a2 = answer(c.receive(login({ csg: 0, transit: false }, [['CHAP_N', USER], ['CHAP_R', md5(0x2a, SECRET, CHALLENGE)]])));
  assert.deepEqual([a2.status, a2.transit], [0, false]);
  assert.equal(c.phase, 'security');
  const a3 = answer(c.receive(login({ csg: 0, nsg: 3, transit: true }, [])));
  assert.deepEqual([a3.status, a3.transit, a3.nsg, a3.tsih], [0, true, 3, 0x55]);
  assert.equal(c.phase, 'full');
});

test('wrong secret, wrong user: Authentication failure (0x0201), the reason logged, the connection closed', () => {
  for (const [n, r, re] of [
    [USER, md5(0x2a, 'wrong-secret-16bytes', CHALLENGE), /CHAP_R does not match/],
    ['someone', md5(0x2a, SECRET, CHALLENGE), /CHAP_N="someone" is not the configured user/],
  ] as const) {
    const c = challenged(true);
    failedWith(c.receive(login({ csg: 0, nsg: 1, transit: true }, [['CHAP_N', n], ['CHAP_R', r]])), c, LoginStatus.AuthenticationFailure, re);
    // Nothing more is answered on a closed connection.
    assert.ok(c.receive(login({ csg: 0, nsg: 1, transit: true }, [])).close);
  }
});

test('CHAP configured: AuthMethod=None, no AuthMethod, a skipped Security stage, a transit before the response all fail with 0x0201', () => {
  {
    const c = conn();
    failedWith(c.receive(login({ csg: 0, nsg: 1, transit: true }, [...first, ['AuthMethod', 'None']])), c, LoginStatus.AuthenticationFailure, /AuthMethod=None.*requires CHAP/);
  }
  {
    const c = conn();
    failedWith(c.receive(login({ csg: 0, nsg: 1, transit: true }, first)), c, LoginStatus.AuthenticationFailure, /without CHAP/);
  }
  {
    const c = conn();
    failedWith(c.receive(login({ csg: 1, nsg: 3, transit: true }, [...first, ...operational])), c, LoginStatus.AuthenticationFailure, /Security stage/);
  }
  {
    // AuthMethod=CHAP agreed, then an attempt to leave without CHAP_A ...
    const c = conn();
    answer(c.receive(login({ csg: 0, nsg: 1, transit: true }, [...first, ['AuthMethod', 'CHAP']])));
    failedWith(c.receive(login({ csg: 0, nsg: 1, transit: true }, [])), c, LoginStatus.AuthenticationFailure, /no CHAP_A/);
  }
  {
    // ... or without CHAP_N/CHAP_R.
    const c = challenged(true);
    failedWith(c.receive(login({ csg: 0, nsg: 1, transit: true }, [])), c, LoginStatus.AuthenticationFailure, /no CHAP_N/);
  }
  {
    // The first request in the Security stage without AuthMethod and T=0 waits for an offer; T=1 later without one fails.
    const c = conn();
    const a = answer(c.receive(login({ csg: 0, transit: false }, first)));
    assert.deepEqual([a.status, a.transit], [0, false]);
    failedWith(c.receive(login({ csg: 0, nsg: 1, transit: true }, [])), c, LoginStatus.AuthenticationFailure, /without CHAP/);
  }
});

test('CHAP is per target: the target without it still takes AuthMethod=None and answers CHAP,None with None', () => {
  const c = conn();
  const a = answer(c.receive(login({ csg: 0, nsg: 1, transit: true }, [['InitiatorName', IPXE], ['TargetName', OPEN], ['AuthMethod', 'CHAP,None']])));
  assert.deepEqual([a.status, a.transit, a.keys.get('AuthMethod')], [0, true, 'None']);
  assert.equal(c.phase, 'operational');
  const d = conn();
  failedWith(d.receive(login({ csg: 0, nsg: 1, transit: true }, [['InitiatorName', IPXE], ['TargetName', OPEN], ['AuthMethod', 'CHAP']])), d,
    LoginStatus.AuthenticationFailure, /AuthMethod=CHAP/);
});

test('mutual CHAP refused: reflected challenge, no mutual configured, a short challenge', () => {
  const ok: [string, string][] = [['CHAP_N', USER], ['CHAP_R', md5(0x2a, SECRET, CHALLENGE)]];
  {
    const c = challenged(true);
    failedWith(c.receive(login({ csg: 0, nsg: 1, transit: true }, [...ok, ['CHAP_I', '42'], ['CHAP_C', '0x000102030405060708090a0b0c0d0e0f']])), c,
      LoginStatus.AuthenticationFailure, /reflection/);
  }
  {
    const c = challenged(true, { targets: [{ ...chapTarget, chap: { user: USER, secret: SECRET } }] });
    failedWith(c.receive(login({ csg: 0, nsg: 1, transit: true }, [...ok, ['CHAP_I', '1'], ['CHAP_C', '0x' + '77'.repeat(16)]])), c,
      LoginStatus.AuthenticationFailure, /no mutual CHAP is configured/);
  }
  {
    const c = challenged(true);
    failedWith(c.receive(login({ csg: 0, nsg: 1, transit: true }, [...ok, ['CHAP_I', '1'], ['CHAP_C', '0x0102']])), c,
      LoginStatus.AuthenticationFailure, /2 bytes, under the 16/);
  }
});

test('malformed CHAP_R: odd hex and no prefix are initiator errors (0x0200), 17 bytes an authentication failure, over the text limit refused', () => {
  const good = md5(0x2a, SECRET, CHALLENGE);
  const cases: [string, LoginStatus, RegExp][] = [
    [good.slice(0, -1), LoginStatus.InitiatorError, /odd number/],
    [good.slice(2), LoginStatus.InitiatorError, /prefix/],
    [good + 'ff', LoginStatus.AuthenticationFailure, /17 bytes/],
    ['0x' + 'ab'.repeat(1000), LoginStatus.AuthenticationFailure, /1000 bytes/],
    ['0x' + 'ab'.repeat(1100), LoginStatus.InitiatorError, /over 2048|over 1024/],
    ['0bnot*base64', LoginStatus.InitiatorError, /base64/],
  ];
  for (const [r, status, re] of cases) {
    const c = challenged(true);
    failedWith(c.receive(login({ csg: 0, nsg: 1, transit: true }, [['CHAP_N', USER], ['CHAP_R', r]])), c, status, re);
  }
});

test('CHAP keys out of place: before AuthMethod=CHAP, AuthMethod again mid-exchange, CHAP keys after success', () => {
  {
    const c = conn();
    failedWith(c.receive(login({ csg: 0, nsg: 1, transit: true }, [...first, ['CHAP_A', '5']])), c, LoginStatus.InitiatorError, /CHAP keys without AuthMethod=CHAP/);
  }
  {
    const c = challenged(false);
    failedWith(c.receive(login({ csg: 0, transit: false }, [['AuthMethod', 'CHAP']])), c, LoginStatus.InitiatorError, /AuthMethod offered again/);
  }
  {
    const c = challenged(false);
    answer(c.receive(login({ csg: 0, transit: false }, [['CHAP_N', USER], ['CHAP_R', md5(0x2a, SECRET, CHALLENGE)]])));
    failedWith(c.receive(login({ csg: 0, transit: false }, [['CHAP_A', '5']])), c, LoginStatus.InitiatorError, /after CHAP authentication finished/);
  }
});

test('Discovery sessions: discoveryChap, when set, is required too; otherwise discovery stays open', () => {
  const disc: [string, string][] = [['InitiatorName', IPXE], ['SessionType', 'Discovery']];
  const open = conn();
  assert.equal(answer(open.receive(login({ csg: 0, nsg: 3, transit: true }, [...disc, ['AuthMethod', 'None']]))).status, 0);
  assert.equal(open.phase, 'full');
  const guarded = (): ConnectionState => conn({ discoveryChap: { user: 'disc', secret: 'discovery-secret-16' } });
  const c = guarded();
  failedWith(c.receive(login({ csg: 0, nsg: 3, transit: true }, [...disc, ['AuthMethod', 'None']])), c, LoginStatus.AuthenticationFailure, /requires CHAP/);
  const d = guarded();
  assert.equal(answer(d.receive(login({ csg: 0, nsg: 3, transit: true }, [...disc, ['AuthMethod', 'CHAP,None'], ['CHAP_A', '5']]))).transit, false);
  const a = answer(d.receive(login({ csg: 0, nsg: 3, transit: true }, [['CHAP_N', 'disc'], ['CHAP_R', md5(0x2a, 'discovery-secret-16', CHALLENGE)]])));
  assert.deepEqual([a.status, a.transit, a.nsg], [0, true, 3]);
  assert.equal(d.phase, 'full');
});

test('a CHAP configuration that was never validated (secret under 12 bytes) fails the login with a target error, logged', () => {
  const c = conn({ targets: [{ ...chapTarget, chap: { user: USER, secret: 'short' } }] });
  failedWith(c.receive(login({ csg: 0, nsg: 1, transit: true }, [...first, ['AuthMethod', 'CHAP']])), c, LoginStatus.TargetError, /5 bytes, shorter than the 12/);
});

test('bounds: a login PDU over 8192 bytes, login text continued with the C bit, and the number of Login Requests are capped', () => {
  {
    const c = conn();
    failedWith(c.receive(loginPdu({ csg: 0, transit: false, cont: true }, new Uint8Array(8193).fill(0x41))), c, LoginStatus.InitiatorError, /8193 bytes, over 8192/);
  }
  {
    const c = conn();
    const chunk = new Uint8Array(8192).fill(0x41);
    let s: Step | null = null;
    let n = 0;
    for (; n < 100; n++) {
      s = c.receive(loginPdu({ csg: 0, transit: false, cont: true }, chunk));
      if (s.close) break;
      assert.deepEqual([answer(s).status, answer(s).transit], [0, false]);
    }
    assert.ok(n <= 8, `closed after ${n + 1} PDUs of 8192 bytes`);
    failedWith(s!, c, LoginStatus.InitiatorError, /login text/);
  }
  {
    const c = conn();
    answer(c.receive(login({ csg: 0, transit: false }, [...first, ['AuthMethod', 'CHAP']])));
    let s: Step | null = null;
    let n = 1;
    for (; n < 1000; n++) {
      s = c.receive(login({ csg: 0, transit: false }, [['X-twindisk-ping', String(n)]]));
      if (s.close) break;
    }
    assert.ok(n < 1000 && n >= 16, `closed after ${n + 1} requests`);
    failedWith(s!, c, LoginStatus.InitiatorError, /Login Requests/);
  }
});

test('a full CHAP login then a NOP-Out: the session works as without CHAP', () => {
  const c = challenged(true);
  answer(c.receive(login({ csg: 0, nsg: 1, transit: true }, [['CHAP_N', USER], ['CHAP_R', md5(0x2a, SECRET, CHALLENGE)]])));
  answer(c.receive(login({ csg: 1, nsg: 3, transit: true }, operational)));
  const s = c.receive(inPdu({ opcode: Opcode.NopOut, ...base, immediate: false, final: true, lun: 0n, ttt: RESERVED_TAG, cmdSN: 0, expStatSN: 0, itt: 5 }));
  assert.equal(s.pdus.length, 1);
  assert.equal(parseBhs(s.pdus[0]!.bhs).opcode, Opcode.NopIn);
});

test('fuzz: random CHAP values in the response never throw and never authenticate', () => {
  let x = 0x9e37_79b9;
  const rnd = (n: number): number => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x % n;
  };
  const alphabet = '0123456789abcdefABCDEFxXbB+/=.,-_ ';
  const value = (): string => {
    const prefix = ['0x', '0b', '0X', '', '0'][rnd(5)]!;
    return prefix + Array.from({ length: rnd(80) }, () => alphabet[rnd(alphabet.length)]).join('');
  };
  const names = ['CHAP_N', 'CHAP_R', 'CHAP_I', 'CHAP_C', 'CHAP_A', 'CHAP_X'];
  for (let i = 0; i < 300; i++) {
    const c = challenged(rnd(2) === 0);
    const keys = new Map<string, string>();
    for (let k = rnd(5); k >= 0; k--) keys.set(names[rnd(names.length)]!, value());
    const s = c.receive(login({ csg: 0, nsg: 1, transit: true }, [...keys]));
    const a = answer(s);
    assert.ok(a.status !== 0 ? c.phase === 'closed' && s.close !== null : !a.transit && c.phase === 'security', JSON.stringify([...keys]));
  }
});
