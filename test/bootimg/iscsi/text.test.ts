// Tests of iSCSI text key=value data and login negotiation: parsing limits, iPXE's and open-iscsi's offers, the RFC result functions, a fuzz run.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  DEFAULT_POLICY, IRRELEVANT, NOT_UNDERSTOOD, REJECT, TextError, defaultParams, encodeText, negotiate, parseNumber, parseText, pickFromList,
  type NegotiationPolicy,
} from '../../../bootimg/iscsi/text.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

test('text round-trips in order, skips empty entries, keeps "=" inside values', () => {
  const pairs: [string, string][] = [['InitiatorName', 'iqn.2010-04.org.ipxe:host'], ['TargetAddress', '10.0.0.1:3260,1'], ['X-com.example.k', 'a=b'], ['TargetAlias', '']];
  const bytes = encodeText(pairs);
  assert.equal(bytes[bytes.length - 1], 0);
  assert.deepEqual([...parseText(bytes)], pairs);
  const padded = new Uint8Array(bytes.length + 3);
  padded.set(bytes);
  assert.deepEqual([...parseText(padded)], pairs);
  assert.deepEqual([...parseText(new Uint8Array(0))], []);
});

test('text that breaks RFC 7143 section 6.1 is refused', () => {
  const bad = (s: string | Uint8Array, re: RegExp, limits = {}) =>
    assert.throws(() => parseText(typeof s === 'string' ? enc(s) : s, limits), (e: unknown) => e instanceof TextError && re.test(e.message));
  bad('A=1', /NUL/);
  bad('A\0', /without '='/);
  bad('=1\0', /invalid key/);
  bad('1A=1\0', /invalid key/);
  bad('A B=1\0', /invalid key/);
  bad('A=1\0A=2\0', /twice/);
  bad(`${'K'.repeat(64)}=1\0`, /key of 64 bytes/);
  bad(`K=${'v'.repeat(256)}\0`, /over 255/);
  parseText(enc(`CHAP_C=0x${'ab'.repeat(500)}\0`));
  bad(Uint8Array.of(0x41, 0x3d, 0xff, 0), /UTF-8/);
  bad('A=1\0B=2\0', /more than 1 keys/, { maxPairs: 1 });
  bad('A=1\0', /exceeds 3/, { maxTotalLength: 3 });
  assert.throws(() => encodeText([['bad key', 'x']]), TextError);
  assert.throws(() => encodeText([['K', 'a\0b']]), TextError);
});

test('numbers: decimal and 0x hex only', () => {
  assert.equal(parseNumber('8192'), 8192);
  assert.equal(parseNumber('0x2000'), 8192);
  for (const v of ['', '-1', '+1', '1.5', '0x', 'ten', ' 1', '0b1']) assert.equal(parseNumber(v), null, v);
  assert.equal(pickFromList('CRC32C,None', ['None']), 'None');
  assert.equal(pickFromList('CRC32C,None', ['None', 'CRC32C']), 'CRC32C');
  assert.equal(pickFromList('KRB5,SRP', ['None']), null);
});

test('iPXE security stage: names recorded, AuthMethod None chosen, nothing else answered', () => {
  const offered = parseText(enc('InitiatorName=iqn.2010-04.org.ipxe:pc\0TargetName=iqn.2026-12.org.twindisk:r0\0SessionType=Normal\0AuthMethod=None\0'));
  const { answer, params } = negotiate(offered);
  assert.deepEqual([...answer], [['AuthMethod', 'None']]);
  assert.equal(params.initiatorName, 'iqn.2010-04.org.ipxe:pc');
  assert.equal(params.targetName, 'iqn.2026-12.org.twindisk:r0');
  assert.equal(params.sessionType, 'Normal');
  assert.equal(params.authMethod, 'None');
  // iPXE with CHAP configured offers CHAP,None; a CHAP-only policy picks CHAP; a None-only one None.
  const chap = new Map([['AuthMethod', 'CHAP,None']]);
  assert.equal(negotiate(chap, { ...DEFAULT_POLICY, authMethods: ['CHAP'] }).answer.get('AuthMethod'), 'CHAP');
  assert.equal(negotiate(chap).answer.get('AuthMethod'), 'None');
  assert.equal(negotiate(new Map([['AuthMethod', 'CHAP']])).answer.get('AuthMethod'), REJECT);
  const r = negotiate(new Map([['CHAP_A', '5'], ['CHAP_N', 'user']]));
  assert.deepEqual([...r.unhandled], [['CHAP_A', '5'], ['CHAP_N', 'user']]);
  assert.equal(r.answer.size, 0);
});

test('iPXE operational stage: every key answered by its RFC result function', () => {
  const offered = parseText(enc([
    'HeaderDigest=None', 'DataDigest=None', 'MaxConnections=1', 'InitialR2T=Yes', 'ImmediateData=No', 'MaxRecvDataSegmentLength=8192',
    'MaxBurstLength=262144', 'FirstBurstLength=65536', 'DefaultTime2Wait=0', 'DefaultTime2Retain=0', 'MaxOutstandingR2T=1',
    'DataPDUInOrder=Yes', 'DataSequenceInOrder=Yes', 'ErrorRecoveryLevel=0', '',
  ].join('\0')));
  const { answer, params } = negotiate(offered);
  assert.deepEqual(Object.fromEntries(answer), {
    HeaderDigest: 'None', DataDigest: 'None', MaxConnections: '1', InitialR2T: 'Yes', ImmediateData: 'No',
    MaxRecvDataSegmentLength: String(DEFAULT_POLICY.maxRecvDataSegmentLength), MaxBurstLength: '262144', FirstBurstLength: '65536',
    DefaultTime2Wait: '2', DefaultTime2Retain: '0', MaxOutstandingR2T: '1', DataPDUInOrder: 'Yes', DataSequenceInOrder: 'Yes', ErrorRecoveryLevel: '0',
  });
  assert.equal(params.maxSendDataSegmentLength, 8192);
  assert.equal(params.maxRecvDataSegmentLength, DEFAULT_POLICY.maxRecvDataSegmentLength);
  assert.equal(params.immediateData, false);
  assert.equal(params.initialR2T, true);
  assert.equal(params.headerDigest, false);
});

test('open-iscsi style offers: digests list, ERL above 0, larger bursts', () => {
  const offered = new Map([
    ['HeaderDigest', 'CRC32C,None'], ['DataDigest', 'None'], ['ErrorRecoveryLevel', '2'], ['MaxBurstLength', '16776192'],
    ['FirstBurstLength', '262144'], ['ImmediateData', 'Yes'], ['InitialR2T', 'No'], ['MaxOutstandingR2T', '8'], ['MaxRecvDataSegmentLength', '262144'],
  ]);
  const { answer, params } = negotiate(offered);
  assert.equal(answer.get('HeaderDigest'), 'CRC32C');
  assert.equal(params.headerDigest, true);
  assert.equal(answer.get('DataDigest'), 'None');
  assert.equal(answer.get('ErrorRecoveryLevel'), '0');
  assert.equal(answer.get('MaxBurstLength'), String(DEFAULT_POLICY.maxBurstLength));
  assert.equal(answer.get('ImmediateData'), 'Yes');
  assert.equal(answer.get('InitialR2T'), 'No');
  assert.equal(answer.get('MaxOutstandingR2T'), '1');
  const noDigest: NegotiationPolicy = { ...DEFAULT_POLICY, headerDigests: ['None'] };
  assert.equal(negotiate(offered, noDigest).answer.get('HeaderDigest'), 'None');
  assert.equal(negotiate(new Map([['HeaderDigest', 'CRC32C']]), noDigest).answer.get('HeaderDigest'), REJECT);
});

test('FirstBurstLength never exceeds MaxBurstLength (RFC 7143 section 13.14)', () => {
  const { answer, params } = negotiate(new Map([['MaxBurstLength', '4096'], ['FirstBurstLength', '65536']]));
  assert.equal(answer.get('MaxBurstLength'), '4096');
  assert.equal(answer.get('FirstBurstLength'), '4096');
  assert.equal(params.firstBurstLength, 4096);
});

test('invalid values are Rejected, unknown keys NotUnderstood, answers ignored, Discovery keys Irrelevant', () => {
  const { answer, params } = negotiate(new Map([
    ['MaxBurstLength', '100'], ['MaxOutstandingR2T', '0'], ['ImmediateData', 'yes'], ['MaxRecvDataSegmentLength', '16777216'],
    ['SessionType', 'Other'], ['X-com.vendor.Foo', '1'], ['Frobnicate', 'Yes'], ['TargetAlias', REJECT], ['DefaultTime2Wait', NOT_UNDERSTOOD],
  ]));
  assert.deepEqual(Object.fromEntries(answer), {
    MaxBurstLength: REJECT, MaxOutstandingR2T: REJECT, ImmediateData: REJECT, MaxRecvDataSegmentLength: REJECT, SessionType: REJECT,
    'X-com.vendor.Foo': NOT_UNDERSTOOD, Frobnicate: NOT_UNDERSTOOD,
  });
  assert.deepEqual(params, defaultParams());
  const disc = negotiate(new Map([['SessionType', 'Discovery'], ['MaxBurstLength', '262144'], ['HeaderDigest', 'None'], ['InitialR2T', 'Yes']]));
  assert.equal(disc.params.sessionType, 'Discovery');
  assert.deepEqual(Object.fromEntries(disc.answer), { MaxBurstLength: IRRELEVANT, HeaderDigest: 'None', InitialR2T: IRRELEVANT });
});

test('rounds carry parameters forward', () => {
  const first = negotiate(new Map([['InitiatorName', 'iqn.x'], ['SessionType', 'Normal']]));
  const second = negotiate(new Map([['MaxBurstLength', '65536']]), DEFAULT_POLICY, first.params);
  assert.equal(second.params.initiatorName, 'iqn.x');
  assert.equal(second.params.maxBurstLength, 65536);
});

test('fuzz: random and mutated text parses or throws TextError; negotiate never throws', () => {
  const r = rng(99);
  const seed = encodeText([['InitiatorName', 'iqn.a'], ['HeaderDigest', 'CRC32C,None'], ['MaxBurstLength', '0x40000'], ['ImmediateData', 'Yes']]);
  const alphabet = enc('=\0,AZaz09.-_xX#');
  for (let i = 0; i < 5000; i++) {
    let b: Uint8Array;
    if (i % 3 === 0) {
      b = Uint8Array.from({ length: Math.floor(r() * 80) }, () => (r() < 0.7 ? alphabet[Math.floor(r() * alphabet.length)]! : Math.floor(r() * 256)));
    } else {
      b = seed.slice();
      for (let k = 0; k < 1 + Math.floor(r() * 3); k++) b[Math.floor(r() * b.length)] = alphabet[Math.floor(r() * alphabet.length)]!;
    }
    let m: Map<string, string>;
    try {
      m = parseText(b);
    } catch (e) {
      assert.ok(e instanceof TextError, `${Buffer.from(b).toString('hex')} threw ${String(e)}`);
      continue;
    }
    assert.deepEqual(parseText(encodeText(m)), m);
    const { answer, params } = negotiate(m);
    for (const k of answer.keys()) assert.ok(m.has(k));
    assert.ok(params.errorRecoveryLevel === 0 && params.firstBurstLength <= params.maxBurstLength);
  }
});
