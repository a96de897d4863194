// Tests of the target's CHAP (bootimg/iscsi/chap.ts): MD5 vectors, value encodings, the exchange and its refusals, config checks.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import {
  CHAP_CHALLENGE_LENGTH, ChapConfigError, ChapExchange, ChapValueError, chapResponse, decodeChapBinary, encodeChapBinary, validateChapConfig,
  type ChapConfig, type ChapResult,
} from '../../../bootimg/iscsi/chap.js';

const USER = 'iqn.2010-04.org.ipxe:client';
const SECRET = 'initiator-secret-0123';
const CONFIG: ChapConfig = { user: USER, secret: SECRET, mutual: { user: 'iqn.2026-12.org.twindisk:r0', secret: 'target-secret-456789' } };

/** The RFC 1994 section 4.1 response, computed here independently of chap.ts. */
function md5(id: number, secret: string, challenge: Uint8Array): string {
  return createHash('md5').update(Buffer.from([id])).update(Buffer.from(secret, 'utf8')).update(challenge).digest('hex');
}

/** A "random" source that hands out the given bytes in order (identifier first, then the challenge). */
function fixed(...chunks: number[][]): (n: number) => Uint8Array {
  const q = chunks.map((c) => Uint8Array.from(c));
  return (n) => {
    const c = q.shift();
    assert.ok(c && c.length === n, `random(${n}) asked for, ${c?.length} prepared`);
    return c;
  };
}

const CHALLENGE = Array.from({ length: 16 }, (_, i) => i);

function challenged(config: ChapConfig = CONFIG): { x: ChapExchange; id: number; challenge: Uint8Array } {
  const x = new ChapExchange(config, fixed([0x2a], CHALLENGE));
  const r = x.receive(new Map([['CHAP_A', '5']]));
  assert.equal(r.kind, 'continue');
  const keys = new Map(r.kind === 'continue' ? r.keys : []);
  return { x, id: Number(keys.get('CHAP_I')), challenge: decodeChapBinary(keys.get('CHAP_C')!) };
}

function failed(r: ChapResult, cause: 'authentication' | 'initiator', re: RegExp): void {
  assert.equal(r.kind, 'failed', JSON.stringify(r));
  if (r.kind !== 'failed') return;
  assert.equal(r.cause, cause);
  assert.match(r.reason, re);
}

test('chapResponse: known MD5 vectors (computed with Python hashlib) and node:crypto agree', () => {
  // hashlib.md5(bytes([0x2a]) + b'0123456789abcdef' + bytes(range(16))).hexdigest()
  assert.equal(Buffer.from(chapResponse(0x2a, '0123456789abcdef', Uint8Array.from(CHALLENGE))).toString('hex'), '0fbee2a235349701655e644832d106bf');
  // hashlib.md5(bytes([7]) + b'target-secret-16b' + bytes.fromhex('ffeeddccbbaa99887766554433221100')).hexdigest()
  const c2 = Buffer.from('ffeeddccbbaa99887766554433221100', 'hex');
  assert.equal(Buffer.from(chapResponse(7, 'target-secret-16b', c2)).toString('hex'), '09f67184c9c321da9b4bbc981cbd20d6');
  for (const [id, secret] of [[0, 'x'.repeat(12)], [255, 'a secret with ünïcode']] as const) {
    assert.equal(Buffer.from(chapResponse(id, secret, c2)).toString('hex'), md5(id, secret, c2));
  }
});

test('binary values: 0x hex and 0b base64 decode alike; odd hex, bad base64, no prefix and over 1024 bytes are refused', () => {
  const bytes = Uint8Array.from(CHALLENGE);
  assert.deepEqual(decodeChapBinary('0x000102030405060708090a0b0c0d0e0f'), bytes);
  assert.deepEqual(decodeChapBinary('0X000102030405060708090A0B0C0D0E0F'), bytes);
  assert.deepEqual(decodeChapBinary('0bAAECAwQFBgcICQoLDA0ODw=='), bytes);
  assert.deepEqual(decodeChapBinary('0BAAECAwQFBgcICQoLDA0ODw=='), bytes);
  assert.equal(encodeChapBinary(bytes), '0x000102030405060708090a0b0c0d0e0f');
  assert.deepEqual(decodeChapBinary('0x' + 'ab'.repeat(1024)).length, 1024);
  for (const bad of ['0x', '0x123', '0xzz', '0x12 3', '000102', 'abcd', '0b', '0bAAEC=', '0bAAECAw=', '0bAA*CAw==', '0bAAECAx==', '0x' + 'ab'.repeat(1025), '0b' + 'A'.repeat(1372)]) {
    assert.throws(() => decodeChapBinary(bad), ChapValueError, bad.slice(0, 20));
  }
});

test('exchange: CHAP_A=5 gets CHAP_A, CHAP_I, CHAP_C (16 bytes, hex), then the right CHAP_N/CHAP_R authenticates', () => {
  const x = new ChapExchange(CONFIG, fixed([0x2a], CHALLENGE));
  assert.equal(x.state, 'algorithm');
  const r1 = x.receive(new Map([['CHAP_A', '7,5']]));
  assert.deepEqual(r1, { kind: 'continue', keys: [['CHAP_A', '5'], ['CHAP_I', '42'], ['CHAP_C', '0x000102030405060708090a0b0c0d0e0f']] });
  assert.equal(x.state, 'response');
  const r2 = x.receive(new Map([['CHAP_N', USER], ['CHAP_R', '0x' + md5(0x2a, SECRET, Uint8Array.from(CHALLENGE))]]));
  assert.deepEqual(r2, { kind: 'authenticated', keys: [] });
  assert.ok(x.authenticated);
  // Nothing more is expected; an empty round stays authenticated, more CHAP keys are an error.
  assert.deepEqual(x.receive(new Map()), { kind: 'authenticated', keys: [] });
  failed(x.receive(new Map([['CHAP_A', '5']])), 'initiator', /after CHAP authentication finished/);
});

test('exchange: the default random source gives a fresh 16-byte challenge each time', () => {
  const a = new ChapExchange(CONFIG).receive(new Map([['CHAP_A', '5']]));
  const b = new ChapExchange(CONFIG).receive(new Map([['CHAP_A', '5']]));
  assert.ok(a.kind === 'continue' && b.kind === 'continue');
  const ca = decodeChapBinary(new Map(a.keys).get('CHAP_C')!);
  assert.equal(ca.length, CHAP_CHALLENGE_LENGTH);
  assert.notDeepEqual(ca, decodeChapBinary(new Map(b.keys).get('CHAP_C')!));
});

test('exchange: a base64 CHAP_R is accepted', () => {
  const { x, id, challenge } = challenged();
  const r = x.receive(new Map([['CHAP_N', USER], ['CHAP_R', '0b' + Buffer.from(md5(id, SECRET, challenge), 'hex').toString('base64')]]));
  assert.equal(r.kind, 'authenticated');
});

test('mutual CHAP: the target answers the initiator challenge with its own name and MD5 of the mutual secret', () => {
  const { x, id, challenge } = challenged();
  const theirs = Buffer.from('f0e1d2c3b4a5968778695a4b3c2d1e0f', 'hex');
  const r = x.receive(new Map([
    ['CHAP_N', USER], ['CHAP_R', '0x' + md5(id, SECRET, challenge)], ['CHAP_I', '200'], ['CHAP_C', '0b' + theirs.toString('base64')],
  ]));
  assert.deepEqual(r, { kind: 'authenticated', keys: [['CHAP_N', CONFIG.mutual!.user], ['CHAP_R', '0x' + md5(200, CONFIG.mutual!.secret, theirs)]] });
});

test('mutual CHAP refused: no mutual configured, reflected challenge, short challenge, CHAP_I out of range, CHAP_I without CHAP_C', () => {
  const ok = (id: number, c: Uint8Array): [string, string][] => [['CHAP_N', USER], ['CHAP_R', '0x' + md5(id, SECRET, c)]];
  const big = '0x' + '5a'.repeat(16);
  {
    const { x, id, challenge } = challenged({ user: USER, secret: SECRET });
    failed(x.receive(new Map([...ok(id, challenge), ['CHAP_I', '1'], ['CHAP_C', big]])), 'authentication', /no mutual CHAP is configured/);
    assert.equal(x.state, 'failed');
  }
  {
    const { x, id, challenge } = challenged();
    failed(x.receive(new Map([...ok(id, challenge), ['CHAP_I', String(id)], ['CHAP_C', encodeChapBinary(challenge)]])), 'authentication', /reflection/);
  }
  {
    // The same challenge in base64 is still ours.
    const { x, id, challenge } = challenged();
    failed(x.receive(new Map([...ok(id, challenge), ['CHAP_I', '9'], ['CHAP_C', '0b' + Buffer.from(challenge).toString('base64')]])), 'authentication', /reflection/);
  }
  {
    const { x, id, challenge } = challenged();
    failed(x.receive(new Map([...ok(id, challenge), ['CHAP_I', '9'], ['CHAP_C', '0x' + '11'.repeat(8)]])), 'authentication', /8 bytes, under the 16/);
  }
  {
    const { x, id, challenge } = challenged();
    failed(x.receive(new Map([...ok(id, challenge), ['CHAP_I', '256'], ['CHAP_C', big]])), 'initiator', /CHAP_I="256"/);
  }
  {
    const { x, id, challenge } = challenged();
    failed(x.receive(new Map([...ok(id, challenge), ['CHAP_I', '3']])), 'initiator', /CHAP_I without CHAP_C/);
  }
});

test('wrong secret, wrong user, wrong identifier: authentication failure', () => {
  {
    const { x, id, challenge } = challenged();
    failed(x.receive(new Map([['CHAP_N', USER], ['CHAP_R', '0x' + md5(id, 'not-the-secret-xx', challenge)]])), 'authentication', /does not match/);
  }
  {
    const { x, id, challenge } = challenged();
    failed(x.receive(new Map([['CHAP_N', 'someone-else'], ['CHAP_R', '0x' + md5(id, SECRET, challenge)]])), 'authentication', /not the configured user/);
  }
  {
    const { x, id, challenge } = challenged();
    failed(x.receive(new Map([['CHAP_N', USER], ['CHAP_R', '0x' + md5((id + 1) & 0xff, SECRET, challenge)]])), 'authentication', /does not match/);
  }
  {
    // The response the target would give with its own (mutual) secret is refused even if it were configured alike.
    const same = { user: USER, secret: SECRET, mutual: { user: 't', secret: SECRET } };
    const { x, id, challenge } = challenged(same);
    failed(x.receive(new Map([['CHAP_N', USER], ['CHAP_R', '0x' + md5(id, SECRET, challenge)]])), 'authentication', /same secret both ways/);
  }
});

test('malformed responses: odd hex, too long, too short, not hex, missing keys, keys out of order', () => {
  const { challenge, id } = challenged();
  const good = md5(id, SECRET, challenge);
  const cases: [[string, string][], 'authentication' | 'initiator', RegExp][] = [
    [[['CHAP_N', USER], ['CHAP_R', '0x' + good.slice(1)]], 'initiator', /odd number/],
    [[['CHAP_N', USER], ['CHAP_R', '0x' + good + '00']], 'authentication', /CHAP_R of 17 bytes/],
    [[['CHAP_N', USER], ['CHAP_R', '0x' + good.slice(2)]], 'authentication', /CHAP_R of 15 bytes/],
    [[['CHAP_N', USER], ['CHAP_R', '0x' + 'ab'.repeat(1025)]], 'initiator', /over 1024 bytes/],
    [[['CHAP_N', USER], ['CHAP_R', good]], 'initiator', /prefix/],
    [[['CHAP_N', USER]], 'authentication', /no CHAP_R/],
    [[['CHAP_R', '0x' + good]], 'authentication', /no CHAP_N/],
    [[], 'authentication', /no CHAP_N/],
    [[['CHAP_A', '5'], ['CHAP_N', USER], ['CHAP_R', '0x' + good]], 'initiator', /CHAP_A where CHAP_N/],
  ];
  for (const [keys, cause, re] of cases) {
    const c = challenged();
    failed(c.x.receive(new Map(keys)), cause, re);
    // A failed exchange stays failed.
    failed(c.x.receive(new Map()), 'authentication', /already failed/);
  }
});

test('before the challenge: no CHAP_A, no MD5 offered, a response too early', () => {
  failed(new ChapExchange(CONFIG).receive(new Map()), 'authentication', /no CHAP_A/);
  failed(new ChapExchange(CONFIG).receive(new Map([['CHAP_A', '6,7']])), 'authentication', /offers no MD5/);
  failed(new ChapExchange(CONFIG).receive(new Map([['CHAP_A', '5'], ['CHAP_N', USER]])), 'initiator', /CHAP_N before the target's challenge/);
});

test('validateChapConfig: short secrets, empty names, NULs and one secret for both directions are refused with what to do', () => {
  assert.deepEqual(validateChapConfig(CONFIG), []);
  assert.deepEqual(validateChapConfig({ user: 'u', secret: 'x'.repeat(64) }), []);
  const w = validateChapConfig({ user: 'u', secret: '123456789012' }, 'target iqn.x');
  assert.equal(w.length, 1);
  assert.match(w[0]!, /^target iqn\.x: .*12 bytes; 16 bytes or more/);
  const refused: [ChapConfig, RegExp][] = [
    [{ user: 'u', secret: '12345678901' }, /11 bytes, shorter than the 12 bytes \(96 bits\).*16 bytes or more.*twindisk gen-secret/],
    [{ user: 'u', secret: '' }, /0 bytes/],
    [{ user: '', secret: 'x'.repeat(16) }, /user name is empty/],
    [{ user: 'u'.repeat(256), secret: 'x'.repeat(16) }, /256 bytes/],
    [{ user: 'u', secret: 'x'.repeat(16) + '\0' }, /NUL/],
    [{ user: 'u', secret: 'x'.repeat(16), mutual: { user: 't', secret: 'short' } }, /mutual \(target\) CHAP secret is 5 bytes/],
    [{ user: 'u', secret: 'x'.repeat(16), mutual: { user: 't', secret: 'x'.repeat(16) } }, /equals the initiator's.*secret of its own/],
  ];
  for (const [c, re] of refused) assert.throws(() => validateChapConfig(c, 'target iqn.x'), (e: unknown) => e instanceof ChapConfigError && re.test(e.message) && e.message.startsWith('target iqn.x: '));
  // Multi-byte characters count as their UTF-8 bytes: 6 characters of 2 bytes make 12 bytes.
  assert.equal(validateChapConfig({ user: 'u', secret: 'éééééé' }).length, 1);
});
