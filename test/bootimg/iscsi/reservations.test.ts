// Tests of persistent reservations (SPC-4 5.12, 6.15, 6.16): registration, the reservation types and their conflicts, PREEMPT, PR IN data.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PrInAction, PrOutAction, PrType, Reservations, iscsiTransportId, nexusKey, type ITNexus, type ReservationOutcome } from '../../../bootimg/iscsi/reservations.js';

const A: ITNexus = { initiator: 'iqn.1991-05.com.microsoft:node-a', isid: 0x400001370000, targetPortalGroup: 1 };
const B: ITNexus = { initiator: 'iqn.1991-05.com.microsoft:node-b', isid: 0x400001370000, targetPortalGroup: 1 };
const C: ITNexus = { initiator: 'iqn.2004-10.com.ubuntu:c', isid: 0x23d000000001, targetPortalGroup: 1 };

function params(key: bigint, saKey: bigint, flags = 0): Uint8Array {
  const b = new Uint8Array(24);
  new DataView(b.buffer).setBigUint64(0, key);
  new DataView(b.buffer).setBigUint64(8, saKey);
  b[20] = flags;
  return b;
}

function outcome(o: ReservationOutcome): string {
  if (o.kind === 'check') return `check ${o.condition.asc.toString(16)}/${o.condition.ascq.toString(16)}`;
  return o.kind;
}

const READ = Uint8Array.of(0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0);
const WRITE = Uint8Array.of(0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0);
const TUR = Uint8Array.of(0, 0, 0, 0, 0, 0);
const INQUIRY = Uint8Array.of(0x12, 0, 0, 0, 36, 0);
const MODE_SENSE = Uint8Array.of(0x1a, 0, 0x3f, 0, 0xff, 0);
const SYNC = Uint8Array.of(0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0);

function reg(r: Reservations, n: ITNexus, key: bigint): void {
  assert.equal(outcome(r.out(PrOutAction.REGISTER, 0, params(0n, key), n)), 'good');
}

function keysOf(r: Reservations): { generation: number; keys: bigint[] } {
  const d = (r.in(PrInAction.READ_KEYS, 1024, A) as { data: Uint8Array }).data;
  const v = new DataView(d.buffer, d.byteOffset, d.length);
  const keys: bigint[] = [];
  for (let at = 8; at < 8 + v.getUint32(4); at += 8) keys.push(v.getBigUint64(at));
  return { generation: v.getUint32(0), keys };
}

test('REGISTER: key 0 when unregistered, own key after; a wrong key is RESERVATION CONFLICT; 0 unregisters; PRgeneration counts', () => {
  const r = new Reservations();
  assert.equal(outcome(r.out(PrOutAction.REGISTER, 0, params(5n, 6n), A)), 'conflict'); // unregistered must give 0
  reg(r, A, 0xaan);
  assert.equal(outcome(r.out(PrOutAction.REGISTER, 0, params(0xabn, 0xacn), A)), 'conflict');
  assert.equal(outcome(r.out(PrOutAction.REGISTER, 0, params(0xaan, 0xa1n), A)), 'good'); // change the key
  reg(r, B, 0xbbn);
  assert.deepEqual(keysOf(r), { generation: 3, keys: [0xa1n, 0xbbn] });
  assert.equal(outcome(r.out(PrOutAction.REGISTER, 0, params(0xbbn, 0n), B)), 'good'); // unregister
  assert.deepEqual(keysOf(r), { generation: 4, keys: [0xa1n] });
  // unregistered with both keys zero: GOOD, nothing changes
  assert.equal(outcome(r.out(PrOutAction.REGISTER, 0, params(0n, 0n), C)), 'good');
  assert.equal(keysOf(r).generation, 4);
  // REGISTER AND IGNORE EXISTING KEY: any RESERVATION KEY
  assert.equal(outcome(r.out(PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY, 0, params(0x999n, 0xa2n), A)), 'good');
  assert.deepEqual(keysOf(r).keys, [0xa2n]);
});

test('SPEC_I_PT, ALL_TG_PT and APTPL are refused with INVALID FIELD IN PARAMETER LIST; acceptAptpl takes APTPL', () => {
  const r = new Reservations();
  for (const flag of [0x08, 0x04, 0x01]) {
    const o = r.out(PrOutAction.REGISTER, 0, params(0n, 1n, flag), A);
    assert.equal(outcome(o), 'check 26/0');
    assert.equal((o as { condition: { field?: { byte: number; bit?: number } } }).condition.field?.byte, 20);
  }
  const caps = (x: Reservations): Uint8Array => (x.in(PrInAction.REPORT_CAPABILITIES, 8, A) as { data: Uint8Array }).data;
  assert.equal(caps(r)[2]! & 0x01, 0); // PTPL_C
  const p = new Reservations({ acceptAptpl: true });
  assert.equal(outcome(p.out(PrOutAction.REGISTER, 0, params(0n, 1n, 0x01), A)), 'good');
  assert.deepEqual([caps(p)[2]! & 0x01, caps(p)[3]! & 0x01], [1, 1]); // PTPL_C, PTPL_A
  assert.equal(outcome(r.out(PrOutAction.REGISTER, 0, new Uint8Array(20), A)), 'check 1a/0');
});

test('REPORT CAPABILITIES: LENGTH 8, TMV with every type of Table 167, no SIP_C/ATP_C/CRH', () => {
  const d = (new Reservations().in(PrInAction.REPORT_CAPABILITIES, 100, A) as { data: Uint8Array }).data;
  assert.deepEqual([...d], [0, 8, 0x00, 0x90, 0xea, 0x01, 0, 0]);
  assert.equal((new Reservations().in(PrInAction.REPORT_CAPABILITIES, 4, A) as { data: Uint8Array }).data.length, 4);
  assert.equal(outcome(new Reservations().in(7, 8, A) as ReservationOutcome), 'check 24/0');
});

test('RESERVE: only a registered nexus with its key; the holder may repeat it; another type or another nexus conflicts', () => {
  const r = new Reservations();
  assert.equal(outcome(r.out(PrOutAction.RESERVE, PrType.WRITE_EXCLUSIVE, params(0n, 0n), A)), 'conflict'); // not registered
  reg(r, A, 1n);
  reg(r, B, 2n);
  assert.equal(outcome(r.out(PrOutAction.RESERVE, PrType.WRITE_EXCLUSIVE, params(9n, 0n), A)), 'conflict'); // wrong key
  assert.equal(outcome(r.out(PrOutAction.RESERVE, 0x10 | PrType.WRITE_EXCLUSIVE, params(1n, 0n), A)), 'check 24/0'); // scope
  assert.equal(outcome(r.out(PrOutAction.RESERVE, 2, params(1n, 0n), A)), 'check 24/0'); // type 2 is obsolete
  assert.equal(outcome(r.out(PrOutAction.RESERVE, PrType.WRITE_EXCLUSIVE, params(1n, 0n), A)), 'good');
  assert.equal(outcome(r.out(PrOutAction.RESERVE, PrType.WRITE_EXCLUSIVE, params(1n, 0n), A)), 'good');
  assert.equal(outcome(r.out(PrOutAction.RESERVE, PrType.EXCLUSIVE_ACCESS, params(1n, 0n), A)), 'conflict');
  assert.equal(outcome(r.out(PrOutAction.RESERVE, PrType.WRITE_EXCLUSIVE, params(2n, 0n), B)), 'conflict');
  assert.equal(keysOf(r).generation, 2); // RESERVE does not count
  const rr = (r.in(PrInAction.READ_RESERVATION, 100, B) as { data: Uint8Array }).data;
  assert.deepEqual([rr.length, rr[7], rr[15], rr[21]], [24, 16, 1, PrType.WRITE_EXCLUSIVE]);
});

test('conflicts: Write Exclusive lets others read; Exclusive Access lets nothing through but the always-allowed commands', () => {
  const we = new Reservations();
  reg(we, A, 1n);
  we.out(PrOutAction.RESERVE, PrType.WRITE_EXCLUSIVE, params(1n, 0n), A);
  reg(we, B, 2n); // registered, but Write Exclusive gives registrants nothing
  for (const [cdb, c] of [[READ, false], [WRITE, true], [TUR, false], [INQUIRY, false], [MODE_SENSE, true], [SYNC, true]] as const) {
    assert.equal(we.conflicts(cdb, B), c, cdb[0]!.toString(16));
    assert.equal(we.conflicts(cdb, A), false);
  }
  const ea = new Reservations();
  reg(ea, A, 1n);
  ea.out(PrOutAction.RESERVE, PrType.EXCLUSIVE_ACCESS, params(1n, 0n), A);
  assert.deepEqual([READ, WRITE, TUR, INQUIRY].map((c) => ea.conflicts(c, C)), [true, true, false, false]);
  assert.equal(new Reservations().conflicts(WRITE, C), false);
});

test('Registrants Only and All Registrants: registered nexuses have access; unregistered ones get the base type', () => {
  for (const [type, readOk] of [[PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, true], [PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, false],
    [PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, true], [PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS, false]] as const) {
    const r = new Reservations();
    reg(r, A, 1n);
    reg(r, B, 2n);
    assert.equal(outcome(r.out(PrOutAction.RESERVE, type, params(1n, 0n), A)), 'good');
    assert.deepEqual([r.conflicts(WRITE, B), r.conflicts(READ, B)], [false, false]);
    assert.deepEqual([r.conflicts(WRITE, C), r.conflicts(READ, C)], [true, !readOk]);
  }
});

test('All Registrants: every registrant holds it (READ RESERVATION key 0); it ends with the last registrant', () => {
  const r = new Reservations();
  reg(r, A, 1n);
  reg(r, B, 2n);
  r.out(PrOutAction.RESERVE, PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, params(1n, 0n), A);
  assert.equal(outcome(r.out(PrOutAction.RESERVE, PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, params(2n, 0n), B)), 'good');
  const rr = (r.in(PrInAction.READ_RESERVATION, 100, B) as { data: Uint8Array }).data;
  assert.deepEqual([...rr.subarray(8, 16)], [0, 0, 0, 0, 0, 0, 0, 0]);
  r.out(PrOutAction.REGISTER, 0, params(1n, 0n), A);
  assert.notEqual(r.snapshot().reservation, null);
  r.out(PrOutAction.REGISTER, 0, params(2n, 0n), B);
  assert.equal(r.snapshot().reservation, null);
});

test('RELEASE: not the holder is a no-op; another type is INVALID RELEASE OF PERSISTENT RESERVATION; unregistering the holder releases', () => {
  const r = new Reservations();
  reg(r, A, 1n);
  reg(r, B, 2n);
  r.out(PrOutAction.RESERVE, PrType.EXCLUSIVE_ACCESS, params(1n, 0n), A);
  assert.equal(outcome(r.out(PrOutAction.RELEASE, PrType.EXCLUSIVE_ACCESS, params(2n, 0n), B)), 'good');
  assert.notEqual(r.snapshot().reservation, null);
  assert.equal(outcome(r.out(PrOutAction.RELEASE, PrType.WRITE_EXCLUSIVE, params(1n, 0n), A)), 'check 26/4');
  assert.equal(outcome(r.out(PrOutAction.RELEASE, PrType.EXCLUSIVE_ACCESS, params(1n, 0n), A)), 'good');
  assert.equal(r.snapshot().reservation, null);
  assert.equal(outcome(r.out(PrOutAction.RELEASE, PrType.EXCLUSIVE_ACCESS, params(1n, 0n), A)), 'good'); // none: GOOD
  r.out(PrOutAction.RESERVE, PrType.EXCLUSIVE_ACCESS, params(1n, 0n), A);
  r.out(PrOutAction.REGISTER, 0, params(1n, 0n), A);
  assert.equal(r.snapshot().reservation, null);
});

test('CLEAR removes every registration and the reservation', () => {
  const r = new Reservations();
  reg(r, A, 1n);
  reg(r, B, 2n);
  r.out(PrOutAction.RESERVE, PrType.WRITE_EXCLUSIVE, params(1n, 0n), A);
  assert.equal(outcome(r.out(PrOutAction.CLEAR, 0, params(3n, 0n), B)), 'conflict');
  assert.equal(outcome(r.out(PrOutAction.CLEAR, 0, params(2n, 0n), B)), 'good');
  assert.deepEqual(keysOf(r), { generation: 3, keys: [] });
  assert.equal(r.snapshot().reservation, null);
});

test('PREEMPT: the holder\'s key moves the reservation; another key only removes registrations; none matching conflicts', () => {
  const r = new Reservations();
  reg(r, A, 1n);
  reg(r, B, 2n);
  reg(r, C, 3n);
  r.out(PrOutAction.RESERVE, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, params(1n, 0n), A);
  assert.equal(outcome(r.out(PrOutAction.PREEMPT, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, params(2n, 3n), B)), 'good'); // removes C only
  assert.deepEqual(keysOf(r).keys, [1n, 2n]);
  assert.equal(r.snapshot().reservation?.holder, nexusKey(A));
  assert.equal(outcome(r.out(PrOutAction.PREEMPT, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, params(2n, 9n), B)), 'conflict');
  assert.equal(outcome(r.out(PrOutAction.PREEMPT, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, params(2n, 0n), B)), 'check 26/0');
  const o = r.out(PrOutAction.PREEMPT_AND_ABORT, PrType.EXCLUSIVE_ACCESS, params(2n, 1n), B);
  assert.deepEqual(o, {
    kind: 'good', abort: [nexusKey(A)], unitAttentions: [{ nexus: nexusKey(A), condition: { key: 6, asc: 0x2a, ascq: 0x05 } }],
  });
  assert.deepEqual(r.snapshot().reservation, { holder: nexusKey(B), type: PrType.EXCLUSIVE_ACCESS });
  assert.deepEqual(keysOf(r), { generation: 5, keys: [2n] }); // three registrations, two preemptions
  assert.equal(r.conflicts(READ, A), true);
  // no reservation: PREEMPT removes registrations only, TYPE ignored
  const n = new Reservations();
  reg(n, A, 1n);
  reg(n, B, 2n);
  assert.equal(outcome(n.out(PrOutAction.PREEMPT, 0xff, params(1n, 2n), A)), 'good');
  assert.deepEqual([keysOf(n).keys, n.snapshot().reservation], [[1n], null]);
});

test('PREEMPT under All Registrants with key 0 removes every other registrant and takes a new reservation', () => {
  const r = new Reservations();
  reg(r, A, 1n);
  reg(r, B, 2n);
  r.out(PrOutAction.RESERVE, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS, params(1n, 0n), A);
  assert.equal(outcome(r.out(PrOutAction.PREEMPT, PrType.WRITE_EXCLUSIVE, params(2n, 0n), B)), 'good');
  assert.deepEqual(r.snapshot().reservation, { holder: nexusKey(B), type: PrType.WRITE_EXCLUSIVE });
  assert.deepEqual(keysOf(r).keys, [2n]);
});

test('READ FULL STATUS: key, R_HOLDER, type, relative port and the iSCSI TransportID of each registrant', () => {
  const r = new Reservations();
  reg(r, A, 0x1122n);
  reg(r, C, 0x3344n);
  r.out(PrOutAction.RESERVE, PrType.EXCLUSIVE_ACCESS, params(0x3344n, 0n), C);
  const d = (r.in(PrInAction.READ_FULL_STATUS, 4096, A) as { data: Uint8Array }).data;
  const v = new DataView(d.buffer, d.byteOffset, d.length);
  assert.equal(v.getUint32(4), d.length - 8);
  let at = 8;
  const seen: [bigint, number, number, string][] = [];
  while (at < d.length) {
    const len = v.getUint32(at + 20);
    const tid = d.subarray(at + 24, at + 24 + len);
    assert.equal(tid[0], 0x45);
    assert.equal(len % 4, 0);
    const name = Buffer.from(tid.subarray(4)).toString('utf8').replace(/\0+$/, '');
    seen.push([v.getBigUint64(at), d[at + 12]!, d[at + 13]!, name]);
    assert.equal(v.getUint16(at + 18), 1);
    at += 24 + len;
  }
  assert.deepEqual(seen, [
    [0x1122n, 0, 0, 'iqn.1991-05.com.microsoft:node-a,i,0x400001370000'],
    [0x3344n, 1, PrType.EXCLUSIVE_ACCESS, 'iqn.2004-10.com.ubuntu:c,i,0x23d000000001'],
  ]);
  assert.equal(iscsiTransportId({ initiator: 'a', isid: 1, targetPortalGroup: 1 }).length, 24); // padded to at least 20
});

test('the unit attentions an action owes other nexuses are returned by nexus key (SPC-4 5.12.11.2-4)', () => {
  const uas = (o: ReservationOutcome): [string, string][] =>
    (o.kind === 'good' ? o.unitAttentions ?? [] : []).map((u) => [u.nexus, `${u.condition.asc.toString(16)}/${u.condition.ascq.toString(16)}`]);
  const r = new Reservations();
  reg(r, A, 1n);
  reg(r, B, 2n);
  reg(r, C, 3n);
  // the holder of a Registrants Only reservation unregistering releases it: RESERVATIONS RELEASED for those still registered
  assert.deepEqual(uas(r.out(PrOutAction.RESERVE, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, params(1n, 0n), A)), []);
  assert.deepEqual(uas(r.out(PrOutAction.REGISTER, 0, params(1n, 0n), A)), [[nexusKey(B), '2a/4'], [nexusKey(C), '2a/4']]);
  assert.equal(r.snapshot().reservation, null);
  // a non-holder unregistering, or a RELEASE by a non-holder: nothing
  reg(r, A, 1n);
  r.out(PrOutAction.RESERVE, PrType.EXCLUSIVE_ACCESS, params(1n, 0n), A);
  assert.deepEqual(uas(r.out(PrOutAction.RELEASE, PrType.EXCLUSIVE_ACCESS, params(2n, 0n), B)), []);
  assert.deepEqual(uas(r.out(PrOutAction.REGISTER, 0, params(3n, 0n), C)), []);
  // PREEMPT with the holder's key and the same type: REGISTRATIONS PREEMPTED for A only, no RELEASED
  assert.deepEqual(uas(r.out(PrOutAction.PREEMPT, PrType.EXCLUSIVE_ACCESS, params(2n, 1n), B)), [[nexusKey(A), '2a/5']]);
  // CLEAR: RESERVATIONS PREEMPTED for every other registrant
  reg(r, A, 1n);
  reg(r, C, 3n);
  assert.deepEqual(uas(r.out(PrOutAction.CLEAR, 0, params(3n, 0n), C)), [[nexusKey(B), '2a/3'], [nexusKey(A), '2a/3']]);
  // all registrants, SERVICE ACTION RESERVATION KEY 0: every other registration goes
  reg(r, A, 1n);
  reg(r, B, 2n);
  r.out(PrOutAction.RESERVE, PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, params(1n, 0n), A);
  assert.deepEqual(uas(r.out(PrOutAction.PREEMPT, PrType.WRITE_EXCLUSIVE, params(2n, 0n), B)), [[nexusKey(A), '2a/5']]);
});
