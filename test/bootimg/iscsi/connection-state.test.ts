// Tests of the iSCSI connection state machine: iPXE login, discovery, redirect, refusals, NOP, SCSI through the machine, reads, fuzz.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LoginStatus, LogoutResponseCode, Opcode, RESERVED_TAG, RejectReason, ScsiStatus } from '../../../bootimg/iscsi/constants.js';
import { ConnectionState, SessionError, type ConnectionOptions, type Step } from '../../../bootimg/iscsi/connection-state.js';
import { PduError, PduReader, buildBhs, parseBhs, serializePdu, type Bhs, type InPdu, type InitiatorBhs, type TargetBhs } from '../../../bootimg/iscsi/pdu.js';
import { makeScsiDisk, readErrorAt } from '../../../bootimg/iscsi/scsi.js';
import { encodeText, parseText } from '../../../bootimg/iscsi/text.js';

const IQN = 'iqn.2026-12.org.twindisk:r0';
const IPXE = 'iqn.2010-04.org.ipxe:00000000-0000-0000-0000-000000000000';
const ISID = 0x4000_2723_abcd;
const disk = makeScsiDisk({ id: 'r0/0', blocks: 2048n, blockSize: 512 });
const targets = [{ name: IQN, disk, addresses: ['10.0.0.1:3260'] }, { name: 'iqn.2026-12.org.twindisk:r1', disk, addresses: ['10.0.0.1:3260', '10.0.0.2:3260'] }];

function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

/** Serializes an initiator PDU and cuts it back with a PduReader, as the transport would. */
function inPdu(h: InitiatorBhs, data: Uint8Array = new Uint8Array(0)): InPdu {
  const r = new PduReader({ maxDataSegmentLength: 1 << 20 });
  const out = r.push(serializePdu({ bhs: buildBhs({ ...h, dataSegmentLength: data.length } as Bhs), data }));
  assert.equal(out.length, 1);
  return out[0]!;
}

const base = { immediate: false, final: true, totalAhsLength: 0, dataSegmentLength: 0 };

function login(o: { csg: number; nsg: number; transit?: boolean; cont?: boolean; cmdSN?: number; tsih?: number; isid?: number; itt?: number; versionMin?: number }, keys: [string, string][]): InPdu {
  const transit = o.transit ?? true;
  return inPdu({
    opcode: Opcode.LoginRequest, ...base, immediate: true, final: transit, transit, cont: o.cont ?? false, csg: o.csg, nsg: transit ? o.nsg : 0,
    versionMax: 0, versionMin: o.versionMin ?? 0, isid: o.isid ?? ISID, tsih: o.tsih ?? 0, cid: 0, cmdSN: o.cmdSN ?? 0, expStatSN: 0,
    itt: o.itt ?? 0x4953_4353,
  }, encodeText(keys));
}

function out(s: Step): { h: TargetBhs; data: Uint8Array }[] {
  return s.pdus.map((p) => ({ h: parseBhs(p.bhs) as TargetBhs, data: p.data }));
}

function one<T extends TargetBhs['opcode']>(s: Step, op: T): Extract<TargetBhs, { opcode: T }> & { data: Uint8Array } {
  const o = out(s);
  assert.equal(o.length, 1, `one PDU expected, got ${o.length}`);
  assert.equal(o[0]!.h.opcode, op);
  return { ...(o[0]!.h as Extract<TargetBhs, { opcode: T }>), data: o[0]!.data };
}

/** Logs in as iPXE does: Security (T=1 -> Operational), then Operational (T=1 -> Full Feature). */
function ipxeLogin(opts: Partial<ConnectionOptions> = {}, mrdsl = 8192, keys: [string, string][] = []): ConnectionState {
  const c = new ConnectionState({ targets, allocateTsih: () => 0x77, ...opts });
  cmdSN = 0; // the login's CmdSN 0 is immediate, so the first command of the new connection has CmdSN 0
  const s1 = c.receive(login({ csg: 0, nsg: 1 }, [['InitiatorName', IPXE], ['TargetName', IQN], ['SessionType', 'Normal'], ['AuthMethod', 'None']]));
  const r1 = one(s1, Opcode.LoginResponse);
  assert.equal(r1.statusClass, 0);
  assert.ok(r1.transit && r1.csg === 0 && r1.nsg === 1);
  const s2 = c.receive(login({ csg: 1, nsg: 3 }, [['HeaderDigest', 'None'], ['DataDigest', 'None'], ['MaxRecvDataSegmentLength', String(mrdsl)], ...keys]));
  const r2 = one(s2, Opcode.LoginResponse);
  assert.equal(r2.statusClass, 0);
  assert.equal(c.phase, 'full');
  return c;
}

let cmdSN = 0;
function scsi(cdb: number[], edtl: number, o: { itt?: number; lun?: bigint; read?: boolean; cmdSN?: number } = {}): InPdu {
  const c = new Uint8Array(16);
  c.set(cdb);
  return inPdu({
    opcode: Opcode.ScsiCommand, ...base, read: o.read ?? true, write: false, attr: 1, lun: o.lun ?? 0n, expectedDataTransferLength: edtl,
    cmdSN: o.cmdSN ?? cmdSN++, expStatSN: 0, cdb: c, itt: o.itt ?? 0x100 + cmdSN,
  });
}

test('an iPXE login: T bit each step, TSIH on the final response, TargetPortalGroupTag first, SNs, digests off', () => {
  const c = new ConnectionState({ targets, allocateTsih: () => 0x1234, initialStatSN: 7, cmdWindow: 16 });
  assert.equal(c.phase, 'free');
  const s1 = c.receive(login({ csg: 0, nsg: 1, cmdSN: 5 }, [['InitiatorName', IPXE], ['TargetName', IQN], ['SessionType', 'Normal'], ['AuthMethod', 'None']]));
  const r1 = one(s1, Opcode.LoginResponse);
  assert.deepEqual([r1.isid, r1.tsih, r1.itt, r1.statSN, r1.expCmdSN, r1.maxCmdSN], [ISID, 0, 0x4953_4353, 7, 5, 20]);
  assert.deepEqual(parseText(r1.data), new Map([['AuthMethod', 'None'], ['TargetPortalGroupTag', '1']]));
  assert.equal(c.phase, 'operational');
  const s2 = c.receive(login({ csg: 1, nsg: 3, cmdSN: 5 }, [['HeaderDigest', 'None'], ['DataDigest', 'None'], ['MaxRecvDataSegmentLength', '8192'], ['ErrorRecoveryLevel', '0']]));
  const r2 = one(s2, Opcode.LoginResponse);
  assert.deepEqual([r2.transit, r2.csg, r2.nsg, r2.tsih, r2.statSN, r2.statusClass], [true, 1, 3, 0x1234, 8, 0]);
  assert.equal(parseText(r2.data).get('HeaderDigest'), 'None');
  assert.deepEqual(s2.fullFeature, { digests: { header: false, data: false }, maxRecvDataSegmentLength: 262144 });
  assert.equal(c.phase, 'full');
  assert.equal(c.sessionHandle, 0x1234);
});

test('a jump from Security straight to Full Feature (NSG 3) is granted', () => {
  const c = new ConnectionState({ targets });
  const s = c.receive(login({ csg: 0, nsg: 3 }, [['InitiatorName', IPXE], ['TargetName', IQN], ['AuthMethod', 'None']]));
  const r = one(s, Opcode.LoginResponse);
  assert.deepEqual([r.transit, r.csg, r.nsg, r.statusClass], [true, 0, 3, 0]);
  assert.notEqual(r.tsih, 0);
  assert.equal(c.phase, 'full');
  assert.deepEqual(s.fullFeature?.digests, { header: false, data: false });
});

test('login text split with the C bit: empty answers until the last part, then the checks of a first request', () => {
  const c = new ConnectionState({ targets });
  const all = encodeText([['InitiatorName', IPXE], ['TargetName', 'iqn.2026-12.org.nowhere:x'], ['AuthMethod', 'None']]);
  const part = (data: Uint8Array, cont: boolean): InPdu => inPdu({
    opcode: Opcode.LoginRequest, ...base, immediate: true, final: !cont, transit: !cont, cont, csg: 0, nsg: cont ? 0 : 1, versionMax: 0, versionMin: 0,
    isid: ISID, tsih: 0, cid: 0, cmdSN: 0, expStatSN: 0, itt: 1,
  }, data);
  const r1 = one(c.receive(part(all.subarray(0, 20), true)), Opcode.LoginResponse);
  assert.deepEqual([r1.statusClass, r1.transit, r1.data.length], [0, false, 0]);
  const s2 = c.receive(part(all.subarray(20), false));
  const r2 = one(s2, Opcode.LoginResponse);
  assert.deepEqual([r2.statusClass, r2.statusDetail], [2, 3]);
});

test('AuthMethod: CHAP,None gets None; CHAP alone fails with 0x0201 authentication failure', () => {
  const a = new ConnectionState({ targets });
  const ra = one(a.receive(login({ csg: 0, nsg: 1 }, [['InitiatorName', IPXE], ['TargetName', IQN], ['AuthMethod', 'CHAP,None']])), Opcode.LoginResponse);
  assert.equal(parseText(ra.data).get('AuthMethod'), 'None');
  const b = new ConnectionState({ targets });
  const s = b.receive(login({ csg: 0, nsg: 1 }, [['InitiatorName', IPXE], ['TargetName', IQN], ['AuthMethod', 'CHAP']]));
  const rb = one(s, Opcode.LoginResponse);
  assert.equal((rb.statusClass << 8) | rb.statusDetail, LoginStatus.AuthenticationFailure);
  assert.match(s.close!, /AuthMethod/);
  assert.equal(b.phase, 'closed');
});

test('unknown target: class 2 detail 3 "not found", then close; missing InitiatorName: 0x0207', () => {
  const c = new ConnectionState({ targets });
  const s = c.receive(login({ csg: 0, nsg: 1 }, [['InitiatorName', IPXE], ['TargetName', 'iqn.2026-12.org.nowhere:x'], ['AuthMethod', 'None']]));
  const r = one(s, Opcode.LoginResponse);
  assert.deepEqual([r.statusClass, r.statusDetail, r.transit], [2, 3, false]);
  assert.match(s.close!, /unknown target/);
  const d = new ConnectionState({ targets });
  const r2 = one(d.receive(login({ csg: 0, nsg: 1 }, [['TargetName', IQN]])), Opcode.LoginResponse);
  assert.equal((r2.statusClass << 8) | r2.statusDetail, LoginStatus.MissingParameter);
});

test('redirect: decideLogin answers 0x0101 with TargetAddress=host:port,1; refuse gives 0x0202', () => {
  const seen: string[] = [];
  const c = new ConnectionState({ targets, decideLogin: (i, t) => { seen.push(i, t); return { redirect: '10.0.0.2:3260' }; } });
  const s = c.receive(login({ csg: 0, nsg: 1 }, [['InitiatorName', IPXE], ['TargetName', IQN], ['AuthMethod', 'None']]));
  const r = one(s, Opcode.LoginResponse);
  assert.deepEqual(seen, [IPXE, IQN]);
  assert.deepEqual([r.statusClass, r.statusDetail, r.transit], [1, 1, false]);
  assert.deepEqual(parseText(r.data), new Map([['TargetAddress', '10.0.0.2:3260,1']]));
  assert.ok(s.close);
  const d = new ConnectionState({ targets, decideLogin: () => ({ refuse: 'secondary' }) });
  const s2 = d.receive(login({ csg: 0, nsg: 1 }, [['InitiatorName', IPXE], ['TargetName', IQN]]));
  const r2 = one(s2, Opcode.LoginResponse);
  assert.equal((r2.statusClass << 8) | r2.statusDetail, LoginStatus.AuthorizationFailure);
  assert.match(s2.close!, /secondary/);
});

test('login checks: version, TSIH of an unknown session, bad NSG, ISID change', () => {
  const v = one(new ConnectionState({ targets }).receive(login({ csg: 0, nsg: 1, versionMin: 1 }, [['InitiatorName', IPXE]])), Opcode.LoginResponse);
  assert.equal((v.statusClass << 8) | v.statusDetail, LoginStatus.UnsupportedVersion);
  const t = one(new ConnectionState({ targets }).receive(login({ csg: 0, nsg: 1, tsih: 9 }, [['InitiatorName', IPXE]])), Opcode.LoginResponse);
  assert.equal((t.statusClass << 8) | t.statusDetail, LoginStatus.SessionDoesNotExist);
  const n = one(new ConnectionState({ targets }).receive(login({ csg: 1, nsg: 1 }, [['InitiatorName', IPXE], ['TargetName', IQN]])), Opcode.LoginResponse);
  assert.equal(n.statusClass, 2);
  const c = new ConnectionState({ targets });
  c.receive(login({ csg: 0, nsg: 1 }, [['InitiatorName', IPXE], ['TargetName', IQN]]));
  const s = c.receive(login({ csg: 1, nsg: 3, isid: 1 }, []));
  assert.equal(one(s, Opcode.LoginResponse).statusClass, 2);
  assert.ok(s.close);
});

test('discovery session: SendTargets=All lists every target and portal, then Logout closes', () => {
  const c = new ConnectionState({ targets });
  const s = c.receive(login({ csg: 0, nsg: 3 }, [['InitiatorName', IPXE], ['SessionType', 'Discovery'], ['AuthMethod', 'None']]));
  assert.equal(one(s, Opcode.LoginResponse).statusClass, 0);
  assert.equal(c.session.sessionType, 'Discovery');
  const t = c.receive(inPdu({ opcode: Opcode.TextRequest, ...base, immediate: false, cont: false, lun: 0n, ttt: RESERVED_TAG, cmdSN: 0, expStatSN: 0, itt: 9 }, encodeText([['SendTargets', 'All']])));
  const r = one(t, Opcode.TextResponse);
  assert.equal(r.itt, 9);
  assert.equal(r.final, true);
  assert.equal(r.ttt, RESERVED_TAG);
  assert.equal(Buffer.from(r.data).toString('latin1'),
    `TargetName=${IQN}\0TargetAddress=10.0.0.1:3260,1\0TargetName=iqn.2026-12.org.twindisk:r1\0TargetAddress=10.0.0.1:3260,1\0TargetAddress=10.0.0.2:3260,1\0`);
  // A SCSI command has no place in a discovery session.
  const x = c.receive(scsi([0x00], 0, { cmdSN: 1 }));
  assert.equal(one(x, Opcode.Reject).reason, RejectReason.ProtocolError);
  const l = c.receive(inPdu({ opcode: Opcode.LogoutRequest, ...base, immediate: true, reasonCode: 0, cid: 0, cmdSN: 1, expStatSN: 0, itt: 10 }));
  const lr = one(l, Opcode.LogoutResponse);
  assert.deepEqual([lr.itt, lr.response], [10, LogoutResponseCode.ClosedSuccessfully]);
  assert.equal(l.close, 'logout');
  assert.equal(c.phase, 'closed');
});

test('a long SendTargets answer is split with C and a TTT, continued by the initiator', () => {
  const many = Array.from({ length: 40 }, (_, i) => ({ name: `iqn.2026-12.org.twindisk:volume-with-a-long-name-${i}`, disk, addresses: ['192.168.100.200:3260'] }));
  const c = new ConnectionState({ targets: many });
  c.receive(login({ csg: 0, nsg: 1 }, [['InitiatorName', IPXE], ['SessionType', 'Discovery']]));
  c.receive(login({ csg: 1, nsg: 3 }, [['MaxRecvDataSegmentLength', '512']]));
  const chunks: Uint8Array[] = [];
  let r = one(c.receive(inPdu({ opcode: Opcode.TextRequest, ...base, cont: false, lun: 0n, ttt: RESERVED_TAG, cmdSN: 0, expStatSN: 0, itt: 3 }, encodeText([['SendTargets', 'All']]))), Opcode.TextResponse);
  let sn = 1;
  while (!r.final) {
    assert.ok(r.cont && r.ttt !== RESERVED_TAG && r.data.length === 512);
    chunks.push(r.data);
    r = one(c.receive(inPdu({ opcode: Opcode.TextRequest, ...base, cont: false, lun: 0n, ttt: r.ttt, cmdSN: sn++, expStatSN: 0, itt: 3 })), Opcode.TextResponse);
  }
  chunks.push(r.data);
  // SendTargets repeats keys, which parseText refuses by design: compare the text.
  assert.deepEqual(Buffer.concat(chunks), Buffer.from(encodeText(many.flatMap((t) => [['TargetName', t.name], ['TargetAddress', '192.168.100.200:3260,1']] as [string, string][]))));
  assert.ok(sn > 2);
});

test('NOP-Out ping is echoed in a NOP-In; StatSN advances, ExpCmdSN follows CmdSN', () => {
  const c = ipxeLogin();
  const ping = Uint8Array.from([1, 2, 3, 4, 5]);
  const s = c.receive(inPdu({ opcode: Opcode.NopOut, ...base, immediate: false, lun: 0n, ttt: RESERVED_TAG, cmdSN: 0, expStatSN: 0, itt: 0x55 }, ping));
  const n = one(s, Opcode.NopIn);
  assert.deepEqual([n.itt, n.ttt, n.expCmdSN], [0x55, RESERVED_TAG, 1]);
  assert.deepEqual(n.data, ping);
  // An immediate NOP-Out with the reserved ITT (an answer to a target ping) gets no answer.
  const q = c.receive(inPdu({ opcode: Opcode.NopOut, ...base, immediate: true, lun: 0n, ttt: RESERVED_TAG, cmdSN: 1, expStatSN: 0, itt: RESERVED_TAG }));
  assert.equal(q.pdus.length, 0);
  // A command outside the window is silently ignored (RFC 7143 section 4.2.2.1).
  const old = c.receive(inPdu({ opcode: Opcode.NopOut, ...base, lun: 0n, ttt: RESERVED_TAG, cmdSN: 0, expStatSN: 0, itt: 0x56 }));
  assert.equal(old.pdus.length, 0);
  assert.match(old.log[0]!, /outside/);
});

test('INQUIRY through the machine: Data-In split at the initiator MaxRecvDataSegmentLength, S bit and GOOD on the last, residual', () => {
  cmdSN = 0;
  const c = ipxeLogin({}, 512);
  // INQUIRY EVPD page 0x83 would be short; take standard INQUIRY with allocation length 96 and EDTL 96.
  const s = c.receive(scsi([0x12, 0, 0, 0, 96, 0], 96, { itt: 0x21 }));
  const o = out(s);
  assert.equal(o.length, 1);
  const d = o[0]!.h;
  assert.ok(d.opcode === Opcode.DataIn);
  assert.ok(d.final && d.statusPresent && d.status === ScsiStatus.Good);
  assert.equal(d.itt, 0x21);
  const len = o[0]!.data.length;
  assert.ok(len <= 96);
  assert.equal(d.underflow, len < 96);
  assert.equal(d.residualCount, 96 - len);
  // VPD 0x83 (device identification) with EDTL 20: overflow residual; the data is cut at 20.
  const t = c.receive(scsi([0x12, 1, 0x83, 0, 255, 0], 20, { itt: 0x22 }));
  const p = one(t, Opcode.DataIn);
  assert.equal(p.data.length, 20);
  assert.ok(p.overflow && p.residualCount > 0);
});

test('a long Data-In is split into PDUs of MaxRecvDataSegmentLength with DataSN and offsets; only the last has status', () => {
  cmdSN = 0;
  const c = ipxeLogin({}, 512);
  // READ (10) of 4 blocks = 2048 bytes through completeRead, EDTL 4096 -> underflow 2048.
  const s = c.receive(scsi([0x28, 0, 0, 0, 0, 8, 0, 0, 4, 0], 4096, { itt: 0x31 }));
  assert.equal(s.pdus.length, 0);
  assert.deepEqual(s.ops, [{ kind: 'read', itt: 0x31, target: IQN, lba: 8n, blocks: 4, fua: false }]);
  assert.equal(c.pendingReads, 1);
  // The ITT is busy while the read runs.
  const busy = c.receive(scsi([0x00], 0, { itt: 0x31 }));
  assert.equal(one(busy, Opcode.Reject).reason, RejectReason.TaskInProgress);
  const data = Uint8Array.from({ length: 2048 }, (_, i) => i & 0xff);
  const r = c.completeRead(0x31, data);
  const o = out(r);
  assert.equal(o.length, 4);
  o.forEach((p, i) => {
    const h = p.h;
    assert.ok(h.opcode === Opcode.DataIn);
    assert.equal(h.dataSN, i);
    assert.equal(h.bufferOffset, i * 512);
    assert.equal(p.data.length, 512);
    assert.equal(h.statusPresent, i === 3);
  });
  const last = o[3]!.h;
  assert.ok(last.opcode === Opcode.DataIn && last.underflow && last.residualCount === 2048);
  assert.deepEqual(Buffer.concat(o.map((p) => p.data)), Buffer.from(data));
  assert.equal(c.pendingReads, 0);
  assert.throws(() => c.completeRead(0x31, data), SessionError);
});

test('READ CAPACITY (10) and a failed read: CHECK CONDITION in a SCSI Response with SenseLength then sense', () => {
  cmdSN = 0;
  const c = ipxeLogin();
  const cap = one(c.receive(scsi([0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8)), Opcode.DataIn);
  assert.deepEqual([...cap.data], [0, 0, 0x07, 0xff, 0, 0, 0x02, 0x00]);
  assert.ok(cap.statusPresent && !cap.underflow && !cap.overflow);
  c.receive(scsi([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], 512, { itt: 0x40 }));
  const r = one(c.completeRead(0x40, new Error('EIO')), Opcode.ScsiResponse);
  assert.equal(r.status, ScsiStatus.CheckCondition);
  const sense = readErrorAt(0n).sense;
  assert.equal((r.data[0]! << 8) | r.data[1]!, sense.length);
  assert.deepEqual(r.data.subarray(2), sense);
  // An unknown opcode: CHECK CONDITION at once; LBA beyond the end likewise.
  const u = one(c.receive(scsi([0xff], 0)), Opcode.ScsiResponse);
  assert.equal(u.status, ScsiStatus.CheckCondition);
  // TEST UNIT READY: GOOD with no data in a SCSI Response.
  const g = one(c.receive(scsi([0x00], 0, { read: false })), Opcode.ScsiResponse);
  assert.deepEqual([g.status, g.underflow, g.overflow, g.data.length], [ScsiStatus.Good, false, false, 0]);
  // A non-zero LUN: LOGICAL UNIT NOT SUPPORTED.
  const l = one(c.receive(scsi([0x00], 0, { lun: 1n << 48n })), Opcode.ScsiResponse);
  assert.equal(l.status, ScsiStatus.CheckCondition);
  assert.equal(l.data[2 + 12], 0x25);
});

test('CmdSN: a rejected command still takes its number; a gap closes the connection; a read in flight survives a logout', () => {
  cmdSN = 0;
  const c = ipxeLogin();
  c.receive(scsi([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], 512, { itt: 0x50 }));
  assert.equal(one(c.receive(scsi([0x00], 0, { itt: 0x50 })), Opcode.Reject).reason, RejectReason.TaskInProgress);
  const g = one(c.receive(scsi([0x00], 0, { itt: 0x51 })), Opcode.ScsiResponse);
  assert.equal(g.expCmdSN, 3);
  const l = c.receive(inPdu({ opcode: Opcode.LogoutRequest, ...base, immediate: true, reasonCode: 0, cid: 0, cmdSN: 3, expStatSN: 0, itt: 0x52 }));
  assert.equal(l.close, 'logout');
  const late = c.completeRead(0x50, new Uint8Array(512));
  assert.equal(late.pdus.length, 0);
  assert.equal(late.log.length, 1);
  const d = ipxeLogin();
  const gap = d.receive(scsi([0x00], 0, { cmdSN: 5 }));
  assert.match(gap.close!, /gap/);
});

test('commands before login close the connection; during login they get 0x020b; Data-Out and SNACK are rejected after', () => {
  const c = new ConnectionState({ targets });
  const s = c.receive(scsi([0x00], 0));
  assert.equal(s.pdus.length, 0);
  assert.match(s.close!, /before login/);
  const d = new ConnectionState({ targets });
  d.receive(login({ csg: 0, nsg: 1 }, [['InitiatorName', IPXE], ['TargetName', IQN]]));
  const t = d.receive(scsi([0x12, 0, 0, 0, 36, 0], 36));
  const r = one(t, Opcode.LoginResponse);
  assert.equal((r.statusClass << 8) | r.statusDetail, LoginStatus.InvalidDuringLogin);
  assert.ok(t.close);
  const e = ipxeLogin();
  const x = e.receive(inPdu({ opcode: Opcode.DataOut, ...base, lun: 0n, ttt: 5, expStatSN: 0, dataSN: 0, bufferOffset: 0, itt: 1 }, new Uint8Array(8)));
  assert.equal(one(x, Opcode.Reject).reason, RejectReason.ProtocolError);
  const y = e.receive(inPdu({ opcode: Opcode.Snack, ...base, snackType: 0, lun: 0n, ttt: RESERVED_TAG, expStatSN: 0, begRun: 0, runLength: 0, itt: 1 }));
  assert.equal(one(y, Opcode.Reject).reason, RejectReason.SnackReject);
  const z = e.receive(login({ csg: 0, nsg: 1 }, [['InitiatorName', IPXE]]));
  assert.equal(one(z, Opcode.Reject).reason, RejectReason.ProtocolError);
});

test('fuzz: random valid-looking PDUs in random phases never throw', () => {
  const rand = rng(0x15c5);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rand() * a.length)]!;
  const ops = [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10];
  for (let round = 0; round < 300; round++) {
    let c: ConnectionState;
    const phase = Math.floor(rand() * 3);
    if (phase === 2) c = ipxeLogin({}, 512);
    else {
      c = new ConnectionState({ targets });
      if (phase === 1) c.receive(login({ csg: 0, nsg: 1, transit: rand() < 0.5 }, [['InitiatorName', IPXE], ['TargetName', IQN]]));
    }
    for (let k = 0; k < 20; k++) {
      const bhs = new Uint8Array(48);
      for (let i = 0; i < 48; i++) bhs[i] = rand() < 0.5 ? 0 : Math.floor(rand() * 256);
      bhs[0] = (rand() < 0.3 ? 0x40 : 0) | pick(ops);
      bhs[4] = 0;
      const text = rand() < 0.5 ? encodeText([[pick(['SendTargets', 'InitiatorName', 'TargetName', 'AuthMethod', 'MaxRecvDataSegmentLength', 'X']), pick(['All', '', IQN, 'None', 'CHAP', '512', '0x10'])]]) : Uint8Array.from({ length: Math.floor(rand() * 40) }, () => Math.floor(rand() * 256));
      bhs[5] = 0; bhs[6] = (text.length >> 8) & 0xff; bhs[7] = text.length & 0xff;
      if (rand() < 0.5) { bhs.fill(0, 24, 28); bhs[27] = k; } // plausible CmdSN
      let pdus: InPdu[];
      try {
        pdus = new PduReader({ maxDataSegmentLength: 1 << 20 }).push(serializePdu({ bhs, data: text }));
      } catch (e) {
        assert.ok(e instanceof PduError);
        continue;
      }
      for (const p of pdus) {
        try {
          const s = c.receive(p);
          for (const o of s.pdus) parseBhs(o.bhs);
          for (const op of s.ops) {
            if (op.kind === 'read') c.completeRead(op.itt, rand() < 0.5 ? new Uint8Array(op.blocks * 512) : new Error('x'));
            else c.completeOp(op, rand() < 0.5 ? 'ok' : new Error('x'));
          }
        } catch (e) {
          assert.ok(e instanceof SessionError, String(e));
        }
      }
    }
  }
});

/** iPXE's keys: InitialR2T=Yes, ImmediateData=No. */
const IPXE_WRITE_KEYS: [string, string][] = [['InitialR2T', 'Yes'], ['ImmediateData', 'No']];

function writeCmd(lba: number, blocks: number, o: { itt: number; edtl?: number; final?: boolean; write?: boolean; data?: Uint8Array }): InPdu {
  const c = new Uint8Array(16);
  c.set([0x2a, 0, (lba >>> 24) & 0xff, (lba >>> 16) & 0xff, (lba >>> 8) & 0xff, lba & 0xff, 0, (blocks >> 8) & 0xff, blocks & 0xff, 0]);
  return inPdu({
    opcode: Opcode.ScsiCommand, ...base, final: o.final ?? true, read: false, write: o.write ?? true, attr: 1, lun: 0n,
    expectedDataTransferLength: o.edtl ?? blocks * 512, cmdSN: cmdSN++, expStatSN: 0, cdb: c, itt: o.itt,
  }, o.data);
}

function dataOut(itt: number, ttt: number, dataSN: number, bufferOffset: number, data: Uint8Array, final: boolean): InPdu {
  return inPdu({ opcode: Opcode.DataOut, ...base, final, lun: 0n, ttt, expStatSN: 0, dataSN, bufferOffset, itt }, data);
}

const pattern = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff);

test('iPXE write: InitialR2T=Yes, ImmediateData=No, one R2T then eight 512-byte Data-Out, F on the last; GOOD after completeWrite', () => {
  const c = ipxeLogin({}, 8192, IPXE_WRITE_KEYS);
  assert.equal(c.session.initialR2T, true);
  assert.equal(c.session.immediateData, false);
  const before = one(c.receive(scsi([0x00], 0)), Opcode.ScsiResponse); // TEST UNIT READY, to learn the SNs
  const itt = 0x5001;
  const s = c.receive(writeCmd(100, 8, { itt }));
  assert.equal(s.close, null);
  assert.equal(s.ops.length, 0);
  const r2t = one(s, Opcode.R2T);
  assert.equal(r2t.itt, itt);
  assert.equal(r2t.r2tSN, 0);
  assert.equal(r2t.bufferOffset, 0);
  assert.equal(r2t.desiredDataTransferLength, 4096);
  assert.notEqual(r2t.ttt, RESERVED_TAG);
  assert.equal(r2t.statSN, (before.statSN + 1) >>> 0); // R2T shows the next StatSN and does not take it
  const data = pattern(4096);
  for (let i = 0; i < 8; i++) {
    const d = c.receive(dataOut(itt, r2t.ttt, i, i * 512, data.subarray(i * 512, (i + 1) * 512), i === 7));
    assert.equal(d.pdus.length, 0);
    assert.equal(d.close, null);
    if (i < 7) assert.equal(d.ops.length, 0);
    else {
      assert.equal(d.ops.length, 1);
      const op = d.ops[0]!;
      assert.ok(op.kind === 'write');
      assert.equal(op.itt, itt);
      assert.equal(op.lba, 100n);
      assert.equal(op.blocks, 8);
      assert.equal(op.fua, false);
      assert.deepEqual(op.data, data);
    }
  }
  assert.throws(() => c.completeRead(itt, new Uint8Array(4096)), SessionError);
  const r = one(c.completeWrite(itt, 'ok'), Opcode.ScsiResponse);
  assert.equal(r.status, ScsiStatus.Good);
  assert.equal(r.itt, itt);
  assert.equal(r.statSN, (before.statSN + 1) >>> 0);
  assert.equal(r.expCmdSN, (before.expCmdSN + 1) >>> 0);
  assert.equal(r.maxCmdSN, (before.maxCmdSN + 1) >>> 0);
  assert.equal(c.pendingWrites, 0);
  assert.throws(() => c.completeWrite(itt, 'ok'), SessionError);
});

test('a write over MaxBurstLength gets R2Ts one at a time (MaxOutstandingR2T=1), each <= MaxBurstLength', () => {
  const c = ipxeLogin({}, 8192, [...IPXE_WRITE_KEYS, ['MaxBurstLength', '4096']]);
  const itt = 0x5101;
  const first = one(c.receive(writeCmd(0, 16, { itt })), Opcode.R2T);
  assert.equal(first.desiredDataTransferLength, 4096);
  const data = pattern(8192);
  const a = c.receive(dataOut(itt, first.ttt, 0, 0, data.subarray(0, 4096), true));
  const second = one(a, Opcode.R2T);
  assert.equal(second.r2tSN, 1);
  assert.equal(second.bufferOffset, 4096);
  assert.equal(second.desiredDataTransferLength, 4096);
  const b = c.receive(dataOut(itt, second.ttt, 0, 4096, data.subarray(4096), true));
  assert.equal(b.ops.length, 1);
  assert.deepEqual((b.ops[0] as { data: Uint8Array }).data, data);
});

test('immediate data and unsolicited Data-Out when ImmediateData=Yes and InitialR2T=No; the rest by R2T', () => {
  const c = ipxeLogin({}, 8192, [['InitialR2T', 'No'], ['ImmediateData', 'Yes'], ['FirstBurstLength', '2048']]);
  assert.equal(c.session.initialR2T, false);
  assert.equal(c.session.immediateData, true);
  const itt = 0x5201;
  const data = pattern(4096);
  const s = c.receive(writeCmd(8, 8, { itt, final: false, data: data.subarray(0, 1024) }));
  const r2t = one(s, Opcode.R2T); // the solicited part starts after FirstBurstLength
  assert.equal(r2t.bufferOffset, 2048);
  assert.equal(r2t.desiredDataTransferLength, 2048);
  assert.equal(c.receive(dataOut(itt, RESERVED_TAG, 0, 1024, data.subarray(1024, 1536), false)).pdus.length, 0);
  assert.equal(c.receive(dataOut(itt, RESERVED_TAG, 1, 1536, data.subarray(1536, 2048), true)).ops.length, 0);
  const d = c.receive(dataOut(itt, r2t.ttt, 0, 2048, data.subarray(2048), true));
  assert.equal(d.ops.length, 1);
  assert.deepEqual((d.ops[0] as { data: Uint8Array }).data, data);
  // All immediate: no R2T, the op at once.
  const e = c.receive(writeCmd(8, 2, { itt: 0x5202, data: pattern(1024) }));
  assert.equal(e.pdus.length, 0);
  assert.equal(e.ops.length, 1);
});

test('refused writes: short, overlapping, wrong TTT, wrong DataSN, immediate data not negotiated, W bit or EDTL wrong', () => {
  const data = pattern(4096);
  const start = (): { c: ConnectionState; ttt: number } => {
    const c = ipxeLogin({}, 8192, IPXE_WRITE_KEYS);
    return { c, ttt: one(c.receive(writeCmd(0, 8, { itt: 0x77 })), Opcode.R2T).ttt };
  };
  const refused = (s: Step): void => {
    assert.equal(one(s, Opcode.Reject).reason, RejectReason.ProtocolError);
    assert.ok(s.close);
    assert.equal(s.ops.length, 0);
  };
  { // short: F before the end of the R2T's window
    const { c, ttt } = start();
    refused(c.receive(dataOut(0x77, ttt, 0, 0, data.subarray(0, 2048), true)));
  }
  { // overlapping: the second PDU starts inside the first
    const { c, ttt } = start();
    assert.equal(c.receive(dataOut(0x77, ttt, 0, 0, data.subarray(0, 512), false)).pdus.length, 0);
    refused(c.receive(dataOut(0x77, ttt, 1, 256, data.subarray(0, 512), false)));
  }
  { // past the window
    const { c, ttt } = start();
    refused(c.receive(dataOut(0x77, ttt, 0, 0, pattern(4608), true)));
  }
  { // wrong TTT
    const { c, ttt } = start();
    refused(c.receive(dataOut(0x77, ttt + 1, 0, 0, data, true)));
  }
  { // DataSN out of order
    const { c, ttt } = start();
    refused(c.receive(dataOut(0x77, ttt, 1, 0, data.subarray(0, 512), false)));
  }
  { // unsolicited Data-Out under InitialR2T=Yes
    const { c } = start();
    refused(c.receive(dataOut(0x77, RESERVED_TAG, 0, 0, data.subarray(0, 512), false)));
  }
  { // immediate data with ImmediateData=No, and F=0 with InitialR2T=Yes: Reject, no op
    const c = ipxeLogin({}, 8192, IPXE_WRITE_KEYS);
    const s = c.receive(writeCmd(0, 1, { itt: 0x78, data: pattern(512) }));
    assert.equal(one(s, Opcode.Reject).reason, RejectReason.ProtocolError);
    const t = c.receive(writeCmd(0, 1, { itt: 0x79, final: false }));
    assert.equal(one(t, Opcode.Reject).reason, RejectReason.ProtocolError);
    assert.equal(c.pendingWrites, 0);
  }
  { // no W bit: CHECK CONDITION INVALID FIELD IN CDB; EDTL not blocks x 512: INVALID FIELD IN COMMAND INFORMATION UNIT
    // with the residual (RFC 7143 section 11.4.5.1): overflow when the CDB asks for more than the EDTL, underflow when less
    const c = ipxeLogin({}, 8192, IPXE_WRITE_KEYS);
    const cases = [
      { o: { itt: 0x80, write: false }, asc: [0x24, 0x00], res: [false, false, 0] },
      { o: { itt: 0x81, edtl: 4000 }, asc: [0x0e, 0x03], res: [true, false, 96] },
      { o: { itt: 0x82, edtl: 5000 }, asc: [0x0e, 0x03], res: [false, true, 904] },
    ] as const;
    for (const { o, asc, res } of cases) {
      const r = one(c.receive(writeCmd(0, 8, o)), Opcode.ScsiResponse);
      assert.equal(r.status, ScsiStatus.CheckCondition);
      assert.equal(r.data[2 + 2]! & 0x0f, 0x05); // ILLEGAL REQUEST
      assert.deepEqual([r.data[2 + 12], r.data[2 + 13]], asc);
      assert.deepEqual([r.overflow, r.underflow, r.residualCount], res);
    }
    assert.equal(c.pendingWrites, 0);
  }
});

test('a failed write: Error gives CHECK CONDITION MEDIUM ERROR / WRITE ERROR at the LBA', () => {
  const c = ipxeLogin({}, 8192, IPXE_WRITE_KEYS);
  const r2t = one(c.receive(writeCmd(42, 1, { itt: 0x90 })), Opcode.R2T);
  assert.equal(c.receive(dataOut(0x90, r2t.ttt, 0, 0, pattern(512), true)).ops.length, 1);
  const r = one(c.completeWrite(0x90, new Error('EIO')), Opcode.ScsiResponse);
  assert.equal(r.status, ScsiStatus.CheckCondition);
  assert.equal(r.data[2 + 2]! & 0x0f, 0x03); // MEDIUM ERROR
  assert.equal(r.data[2 + 12], 0x0c); // WRITE ERROR
});

test('SYNCHRONIZE CACHE (10) and (16): a sync op, GOOD after completeSync; an Error gives WRITE ERROR', () => {
  const c = ipxeLogin();
  const s = c.receive(scsi([0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0, { itt: 0xa0, read: false }));
  assert.equal(s.pdus.length, 0);
  assert.deepEqual(s.ops, [{ kind: 'sync', itt: 0xa0, target: IQN }]);
  assert.equal(one(c.completeSync(0xa0, 'ok'), Opcode.ScsiResponse).status, ScsiStatus.Good);
  assert.throws(() => c.completeSync(0xa0, 'ok'), SessionError);
  const t = c.receive(scsi([0x91, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0, { itt: 0xa1, read: false }));
  assert.equal(t.ops.length, 1);
  const r = one(c.completeSync(0xa1, new Error('EIO')), Opcode.ScsiResponse);
  assert.equal(r.status, ScsiStatus.CheckCondition);
  assert.equal(r.data[2 + 12], 0x0c);
});
