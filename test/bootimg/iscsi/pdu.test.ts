// Tests of the iSCSI PDU codec: target encoders round-trip, initiator PDUs parse byte by byte, digests, the stream reader, and a fuzz run.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  BHS_LENGTH, LoginStage, LoginStatus, Opcode, RESERVED_TAG, RejectReason, ScsiStatus, LogoutResponseCode, TaskMgmtResponseCode, AsyncEvent,
} from '../../../bootimg/iscsi/constants.js';
import {
  PduError, PduReader, buildBhs, digest, encodeAsyncMessage, encodeDataIn, encodeLoginResponse, encodeLogoutResponse, encodeNopIn, encodeR2T,
  encodeReject, encodeScsiResponse, encodeTaskMgmtResponse, encodeTextResponse, getDigest, parseBhs, pduLength, pduParts, putDigest, serializePdu, ZERO_COPY_MIN,
  type Bhs, type Digests, type InPdu, type OutPdu,
} from '../../../bootimg/iscsi/pdu.js';
import { encodeText } from '../../../bootimg/iscsi/text.js';

const SN = { statSN: 0x1001, expCmdSN: 0x2002, maxCmdSN: 0x2042 };

function hex(s: string): Uint8Array {
  return Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
}

/** Deterministic PRNG (xorshift32) so failures reproduce. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

function refused(f: () => unknown, reason: RejectReason, re: RegExp): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof PduError, `expected PduError, got ${String(e)}`);
    assert.equal(e.reason, reason);
    assert.match(e.message, re);
    return true;
  });
}

/** One of each target PDU, made by its encoder. */
function targetPdus(): OutPdu[] {
  return [
    encodeScsiResponse({ ...SN, itt: 7, status: ScsiStatus.Good }),
    encodeScsiResponse({ ...SN, itt: 8, status: ScsiStatus.CheckCondition, sense: hex('700005000000000a00000000240000000000'), residual: { underflow: true, count: 512 } }),
    encodeDataIn({ itt: 9, dataSN: 0, bufferOffset: 0, data: new Uint8Array(512).fill(0xab), final: false, expCmdSN: SN.expCmdSN, maxCmdSN: SN.maxCmdSN }),
    encodeDataIn({
      itt: 9, dataSN: 1, bufferOffset: 512, data: new Uint8Array(13).fill(1), final: true, expCmdSN: SN.expCmdSN, maxCmdSN: SN.maxCmdSN,
      status: { status: ScsiStatus.Good, statSN: SN.statSN, residual: { underflow: true, count: 3 } },
    }),
    encodeR2T({ ...SN, itt: 10, lun: 0n, ttt: 0x55, r2tSN: 0, bufferOffset: 8192, desiredDataTransferLength: 65536 }),
    encodeLoginResponse({ ...SN, itt: 1, isid: 0x4000_2723_1234, tsih: 1, transit: true, csg: LoginStage.SecurityNegotiation, nsg: LoginStage.LoginOperationalNegotiation, data: encodeText([['AuthMethod', 'None']]) }),
    encodeLoginResponse({ ...SN, itt: 1, isid: 0x4000_2723_1234, tsih: 0, transit: false, csg: 0, nsg: 0, status: LoginStatus.TargetMovedTemporarily, data: encodeText([['TargetAddress', '10.0.0.2:3260,1']]) }),
    encodeTextResponse({ ...SN, itt: 2, final: true, data: encodeText([['TargetName', 'iqn.2026-12.org.twindisk:r0'], ['TargetAddress', '10.0.0.1:3260,1']]) }),
    encodeLogoutResponse({ ...SN, itt: 3, response: LogoutResponseCode.ClosedSuccessfully, time2Wait: 2, time2Retain: 20 }),
    encodeNopIn({ ...SN, itt: 4, ttt: RESERVED_TAG, data: Uint8Array.of(1, 2, 3) }),
    encodeNopIn({ ...SN, itt: RESERVED_TAG, ttt: 0x77, lun: 0x0001_0000_0000_0000n }),
    encodeReject({ ...SN, reason: RejectReason.ProtocolError, rejectedHeader: new Uint8Array(48).fill(0x3f) }),
    encodeTaskMgmtResponse({ ...SN, itt: 5, response: TaskMgmtResponseCode.FunctionComplete }),
    encodeAsyncMessage({ ...SN, asyncEvent: AsyncEvent.LogoutRequested, parameter3: 2 }),
  ];
}

test('every target PDU encoder round-trips through parseBhs and buildBhs', () => {
  const opcodes = new Set<number>();
  for (const p of targetPdus()) {
    assert.equal(p.bhs.length, BHS_LENGTH);
    const h = parseBhs(p.bhs, { maxDataSegmentLength: 1 << 20 });
    opcodes.add(h.opcode);
    assert.equal(h.dataSegmentLength, p.data.length);
    assert.deepEqual(buildBhs(h), p.bhs, `opcode 0x${h.opcode.toString(16)} re-encoded differently`);
  }
  assert.deepEqual([...opcodes].sort((a, b) => a - b), [0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x31, 0x32, 0x3f]);
});

test('target encoders put each field where the RFC says', () => {
  const [, rsp, , lastIn, r2t, login, redirect] = targetPdus();
  // SCSI Response with sense: SenseLength then the sense bytes (RFC 7143 section 11.4.7.2); underflow flag and residual.
  const h = parseBhs(rsp!.bhs);
  assert.ok(h.opcode === Opcode.ScsiResponse);
  assert.equal(h.status, ScsiStatus.CheckCondition);
  assert.ok(h.underflow && !h.overflow);
  assert.equal(h.residualCount, 512);
  assert.equal((rsp!.data[0]! << 8) | rsp!.data[1]!, 18);
  assert.equal(rsp!.data[2], 0x70);
  assert.equal(rsp!.bhs[1], 0x82);
  // Data-In carrying status: F and S set, StatSN, residual.
  const d = parseBhs(lastIn!.bhs);
  assert.ok(d.opcode === Opcode.DataIn);
  assert.equal(lastIn!.bhs[1], 0x80 | 0x02 | 0x01);
  assert.ok(d.statusPresent && d.final);
  assert.equal(d.statSN, SN.statSN);
  assert.equal(d.residualCount, 3);
  assert.equal(d.bufferOffset, 512);
  assert.throws(() => encodeDataIn({ itt: 1, dataSN: 0, bufferOffset: 0, data: new Uint8Array(1), final: false, expCmdSN: 1, maxCmdSN: 1, status: { status: 0, statSN: 1 } }), RangeError);
  assert.throws(() => encodeDataIn({ itt: 1, dataSN: 0, bufferOffset: 0, data: new Uint8Array(1), final: true, expCmdSN: 1, maxCmdSN: 1, status: { status: ScsiStatus.CheckCondition, statSN: 1 } }), /SCSI Response/);
  // R2T
  assert.deepEqual(r2t!.bhs.subarray(36, 48), hex('00000000 00002000 00010000'));
  // Login Response: T=1 CSG=0 NSG=1 -> 0x81; ISID/TSIH; status class/detail.
  assert.equal(login!.bhs[0], 0x23);
  assert.equal(login!.bhs[1], 0x81);
  assert.deepEqual(login!.bhs.subarray(8, 16), hex('400027231234 0001'));
  assert.deepEqual(redirect!.bhs.subarray(36, 38), hex('0101'));
  assert.equal(redirect!.bhs[1], 0x00);
});

test('a Login Request as iPXE sends it parses byte by byte', () => {
  // iPXE: immediate, T=1, CSG=SecurityNegotiation, NSG=LoginOperationalNegotiation; ISID of the IANA-enterprise type (0x40 | Fen Systems 10019).
  const text = encodeText([
    ['InitiatorName', 'iqn.2010-04.org.ipxe:00000000-0000-0000-0000-000000000000'],
    ['TargetName', 'iqn.2026-12.org.twindisk:r0'], ['SessionType', 'Normal'], ['AuthMethod', 'None'],
  ]);
  const bhs = new Uint8Array(48);
  bhs.set([0x43, 0x81, 0x00, 0x00, 0x00, 0x00, (text.length >> 8) & 0xff, text.length & 0xff]);
  bhs.set(hex('40 00 27 23 ab cd 00 00'), 8); // ISID, TSIH 0
  bhs.set(hex('49 53 43 53'), 16); // ITT "ISCS"
  bhs.set(hex('0000 0000 00000000 00000000'), 20); // CID 0, CmdSN 0, ExpStatSN 0
  const h = parseBhs(bhs);
  assert.ok(h.opcode === Opcode.LoginRequest);
  assert.equal(h.immediate, true);
  assert.equal(h.transit, true);
  assert.equal(h.final, true);
  assert.equal(h.cont, false);
  assert.equal(h.csg, LoginStage.SecurityNegotiation);
  assert.equal(h.nsg, LoginStage.LoginOperationalNegotiation);
  assert.equal(h.versionMax, 0);
  assert.equal(h.versionMin, 0);
  assert.equal(h.isid, 0x4000_2723_abcd);
  assert.equal(h.tsih, 0);
  assert.equal(h.itt, 0x4953_4353);
  assert.equal(h.cid, 0);
  assert.equal(h.dataSegmentLength, text.length);
  assert.equal(pduLength(h), 48 + ((text.length + 3) & ~3));
  // Operational stage: T=1, CSG=1, NSG=3 -> 0x87.
  bhs[1] = 0x87;
  const op = parseBhs(bhs);
  assert.ok(op.opcode === Opcode.LoginRequest && op.csg === 1 && op.nsg === 3);
});

test('a SCSI READ(10) command parses byte by byte', () => {
  const bhs = hex(`
    01 c1 00 00  00 000000  0000000000000000
    00000012  00001000  00000005  00000003
    28 00 00000800 00 0008 00 000000000000`);
  const h = parseBhs(bhs);
  assert.ok(h.opcode === Opcode.ScsiCommand);
  assert.equal(h.immediate, false);
  assert.equal(h.final, true);
  assert.equal(h.read, true);
  assert.equal(h.write, false);
  assert.equal(h.attr, 1); // SIMPLE
  assert.equal(h.lun, 0n);
  assert.equal(h.itt, 0x12);
  assert.equal(h.expectedDataTransferLength, 4096);
  assert.equal(h.cmdSN, 5);
  assert.equal(h.expStatSN, 3);
  assert.deepEqual(h.cdb, hex('28 00 00000800 00 0008 00 000000000000'));
  assert.deepEqual(buildBhs(h), bhs);
});

test('a SCSI Data-Out parses byte by byte', () => {
  const bhs = hex(`
    05 80 00 00  00 000200  0000000000000000
    00000013  00000055  00000000  00000004
    00000000  00000002  00002000  00000000`);
  const h = parseBhs(bhs);
  assert.ok(h.opcode === Opcode.DataOut);
  assert.equal(h.final, true);
  assert.equal(h.dataSegmentLength, 512);
  assert.equal(h.itt, 0x13);
  assert.equal(h.ttt, 0x55);
  assert.equal(h.expStatSN, 4);
  assert.equal(h.dataSN, 2);
  assert.equal(h.bufferOffset, 0x2000);
  assert.equal(pduLength(h, { header: true, data: true }), 48 + 4 + 512 + 4);
  assert.equal(pduLength({ totalAhsLength: 0, dataSegmentLength: 0 }, { header: true, data: true }), 52);
});

test('malformed headers are refused with a Reject reason', () => {
  const ok = buildBhs({ opcode: Opcode.NopOut, immediate: true, final: true, totalAhsLength: 0, dataSegmentLength: 0, itt: 1, lun: 0n, ttt: RESERVED_TAG, cmdSN: 1, expStatSN: 1 });
  parseBhs(ok);
  refused(() => parseBhs(ok.subarray(0, 47)), RejectReason.ProtocolError, /48 bytes/);
  const b = ok.slice();
  b[0] = 0x80;
  refused(() => parseBhs(b), RejectReason.ProtocolError, /reserved bit/);
  for (const op of [0x07, 0x0f, 0x11, 0x1c, 0x27, 0x30, 0x3e]) {
    b[0] = op;
    refused(() => parseBhs(b), RejectReason.CommandNotSupported, /unknown opcode/);
  }
  const big = ok.slice();
  big.set([0x00, 0x20, 0x01], 5); // 8193 bytes
  refused(() => parseBhs(big), RejectReason.ProtocolError, /MaxRecvDataSegmentLength 8192/);
  assert.equal(parseBhs(big, { maxDataSegmentLength: 8193 }).dataSegmentLength, 8193);
  const ahs = ok.slice();
  ahs[4] = 5;
  refused(() => parseBhs(ahs), RejectReason.ProtocolError, /AHS/);
  assert.equal(parseBhs(ahs, { maxAhsLength: 20 }).totalAhsLength, 20);
  const login = new Uint8Array(48);
  login[0] = 0x43;
  login[1] = 0xc1; // T and C
  refused(() => parseBhs(login), RejectReason.ProtocolError, /both T and C/);
  login[1] = 0x82; // NSG 2
  refused(() => parseBhs(login), RejectReason.ProtocolError, /NSG 2/);
  login[1] = 0x0b; // CSG 2
  refused(() => parseBhs(login), RejectReason.ProtocolError, /CSG 2/);
  const text = new Uint8Array(48);
  text[0] = 0x04;
  text[1] = 0xc0;
  refused(() => parseBhs(text), RejectReason.ProtocolError, /both F and C/);
});

test('CRC32C digests match RFC 3720 Appendix B.4 and go on the wire least significant byte first', () => {
  assert.equal(digest(new Uint8Array(32)), 0x8a9136aa);
  assert.equal(digest(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
  assert.equal(digest(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e);
  assert.equal(digest(Uint8Array.from({ length: 32 }, (_, i) => 31 - i)), 0x113fdb5c);
  // The SCSI READ(10) command PDU of Appendix B.4.
  const read = hex(`01c00000 00000000 00000000 00000000 14000000 00000400 00000014 00000018
                    28000000 00000000 02000000 00000000`);
  assert.equal(digest(read), 0xd9963a56);
  assert.equal(digest(read.subarray(0, 10), read.subarray(10)), 0xd9963a56);
  const b = new Uint8Array(4);
  putDigest(b, 0, 0x8a9136aa);
  assert.deepEqual(b, hex('aa36918a'));
  assert.equal(getDigest(b, 0), 0x8a9136aa);
  // A serialized PDU carries both digests where pduLength says.
  const nop = encodeNopIn({ ...SN, itt: 1, ttt: RESERVED_TAG, data: Uint8Array.of(9, 8, 7, 6, 5) });
  const wire = serializePdu(nop, { header: true, data: true });
  assert.equal(wire.length, 48 + 4 + 8 + 4);
  assert.equal(getDigest(wire, 48), digest(wire.subarray(0, 48)));
  assert.deepEqual(wire.subarray(52, 60), Uint8Array.of(9, 8, 7, 6, 5, 0, 0, 0));
  assert.equal(getDigest(wire, 60), digest(wire.subarray(52, 60)));
});

/** A stream of initiator-style and target PDUs with data, as serialized bytes. */
function stream(digests: Digests): { wire: Uint8Array; pdus: OutPdu[] } {
  const pdus = targetPdus();
  const parts = pdus.map((p) => serializePdu(p, digests));
  return { wire: new Uint8Array(Buffer.concat(parts)), pdus };
}

function collect(reader: PduReader, wire: Uint8Array, sizes: () => number): InPdu[] {
  const out: InPdu[] = [];
  for (let o = 0; o < wire.length;) {
    const n = Math.min(wire.length - o, sizes());
    out.push(...reader.push(wire.slice(o, o + n)));
    o += n;
  }
  assert.equal(reader.pending, 0);
  return out;
}

function sameAs(got: InPdu[], pdus: OutPdu[]): void {
  assert.equal(got.length, pdus.length);
  for (let i = 0; i < pdus.length; i++) {
    assert.deepEqual(new Uint8Array(got[i]!.bhs), pdus[i]!.bhs);
    assert.deepEqual(new Uint8Array(got[i]!.data), pdus[i]!.data);
    assert.equal(got[i]!.dataDigestError, false);
    assert.deepEqual(got[i]!.header, parseBhs(pdus[i]!.bhs, { maxDataSegmentLength: 65536 }));
  }
}

test('PduReader yields whole PDUs fed one byte at a time, in random chunks, and all at once', () => {
  for (const digests of [{ header: false, data: false }, { header: true, data: true }, { header: true, data: false }]) {
    const { wire, pdus } = stream(digests);
    sameAs(collect(new PduReader({ digests, maxDataSegmentLength: 65536 }), wire, () => 1), pdus);
    const r = rng(42);
    for (let round = 0; round < 20; round++) sameAs(collect(new PduReader({ digests, maxDataSegmentLength: 65536 }), wire, () => 1 + Math.floor(r() * 200)), pdus);
    // All at once: views into the one chunk, no copy.
    const whole = new PduReader({ digests, maxDataSegmentLength: 65536 });
    const got = whole.push(wire);
    sameAs(got, pdus);
    assert.ok(got.every((p) => p.bhs.buffer === wire.buffer));
  }
});

test('PduReader refuses an oversized PDU from its first 48 bytes', () => {
  const bhs = buildBhs({ opcode: Opcode.DataOut, immediate: false, final: true, totalAhsLength: 0, dataSegmentLength: 0xff_ffff, itt: 1, lun: 0n, ttt: 1, expStatSN: 0, dataSN: 0, bufferOffset: 0 });
  const reader = new PduReader();
  assert.deepEqual(reader.push(bhs.subarray(0, 47)), []);
  refused(() => reader.push(bhs.subarray(47)), RejectReason.ProtocolError, /exceeds MaxRecvDataSegmentLength/);
  refused(() => reader.push(new Uint8Array(1)), RejectReason.ProtocolError, /exceeds/); // failed for good
  const r2 = new PduReader({ maxDataSegmentLength: 1 << 20 });
  r2.setLimits({ maxDataSegmentLength: 512 });
  refused(() => r2.push(bhs), RejectReason.ProtocolError, /512/);
});

test('PduReader reports a data digest error and stays in step; a header digest error fails it', () => {
  const digests = { header: true, data: true };
  const { wire, pdus } = stream(digests);
  const bad = wire.slice();
  const firstLen = pduLength(parseBhs(pdus[0]!.bhs), digests);
  const second = pduLength(parseBhs(pdus[1]!.bhs), digests);
  bad[firstLen + 52] ^= 1; // a data byte of the second PDU
  const got = new PduReader({ digests, maxDataSegmentLength: 65536 }).push(bad);
  assert.equal(got.length, pdus.length);
  assert.deepEqual(got.map((p) => p.dataDigestError), pdus.map((_, i) => i === 1));
  const hdr = wire.slice();
  hdr[firstLen + second + 20] ^= 0x80; // a header byte of the third PDU
  const reader = new PduReader({ digests, maxDataSegmentLength: 65536 });
  assert.equal(reader.push(hdr).length, 2); // the two good PDUs before it
  assert.match(reader.error!.message, /header digest/);
  assert.equal(reader.error!.header![0], 0x25);
  refused(() => reader.push(new Uint8Array(0)), RejectReason.ProtocolError, /header digest/);
  const alone = new PduReader({ digests, maxDataSegmentLength: 65536 });
  refused(() => alone.push(hdr.subarray(firstLen + second)), RejectReason.ProtocolError, /header digest/);
  // setDigests switches after login.
  const plain = new PduReader({ maxDataSegmentLength: 65536 });
  plain.setDigests(digests);
  assert.equal(plain.push(wire).length, pdus.length);
});

/** Sample headers of every opcode, as fuzz seeds. */
function seeds(): Uint8Array[] {
  const init: Bhs[] = [
    { opcode: Opcode.NopOut, immediate: true, final: true, totalAhsLength: 0, dataSegmentLength: 4, itt: 1, lun: 0n, ttt: RESERVED_TAG, cmdSN: 1, expStatSN: 2 },
    { opcode: Opcode.TaskMgmtRequest, immediate: true, final: true, totalAhsLength: 0, dataSegmentLength: 0, itt: 2, fn: 1, lun: 0n, referencedTaskTag: 9, cmdSN: 3, expStatSN: 4, refCmdSN: 2, expDataSN: 0 },
    { opcode: Opcode.TextRequest, immediate: true, final: true, cont: false, totalAhsLength: 0, dataSegmentLength: 16, itt: 3, lun: 0n, ttt: RESERVED_TAG, cmdSN: 5, expStatSN: 6 },
    { opcode: Opcode.LogoutRequest, immediate: true, final: true, totalAhsLength: 0, dataSegmentLength: 0, itt: 4, reasonCode: 0, cid: 0, cmdSN: 7, expStatSN: 8 },
    { opcode: Opcode.Snack, immediate: false, final: true, totalAhsLength: 0, dataSegmentLength: 0, itt: 5, snackType: 1, lun: 0n, ttt: 0, expStatSN: 9, begRun: 1, runLength: 2 },
  ];
  const out = init.map((h) => buildBhs(h));
  for (const h of init) assert.deepEqual(parseBhs(buildBhs(h)), h);
  out.push(hex('01c1000000000000000000000000000000000012000010000000000500000003280000000800000008000000000000'));
  out.push(hex('43810000000000a5400027231234000000000001000000000000000000000000000000000000000000000000000000'));
  for (const p of targetPdus()) out.push(p.bhs);
  return out;
}

test('fuzz: random and mutated headers either parse (and rebuild to the same header) or throw PduError', () => {
  const r = rng(0x15c51);
  const all = seeds();
  let parsed = 0;
  let refusedCount = 0;
  const outer = new Uint8Array(64);
  for (let i = 0; i < 20000; i++) {
    let b: Uint8Array;
    if (i % 4 === 0) {
      b = Uint8Array.from({ length: 48 }, () => Math.floor(r() * 256));
    } else {
      b = all[Math.floor(r() * all.length)]!.slice();
      const flips = 1 + Math.floor(r() * 4);
      for (let k = 0; k < flips; k++) {
        const at = Math.floor(r() * 48);
        b[at] = r() < 0.5 ? b[at]! ^ (1 << Math.floor(r() * 8)) : Math.floor(r() * 256);
      }
    }
    if (i % 10 === 0) b = b.slice(0, Math.floor(r() * 49));
    // The same bytes inside a larger buffer at an offset, with noise around them: parsing must see only the view.
    for (let k = 0; k < outer.length; k++) outer[k] = Math.floor(r() * 256);
    outer.set(b, 8);
    const view = outer.subarray(8, 8 + b.length);
    const limits = { maxDataSegmentLength: r() < 0.5 ? 8192 : 0xff_ffff, maxAhsLength: r() < 0.5 ? 0 : 1020 };
    let h: Bhs;
    try {
      h = parseBhs(b, limits);
    } catch (e) {
      assert.ok(e instanceof PduError, `input ${Buffer.from(b).toString('hex')} threw ${String(e)}`);
      refused(() => parseBhs(view, limits), e.reason, /./);
      refusedCount++;
      continue;
    }
    parsed++;
    assert.deepEqual(parseBhs(view, limits), h);
    for (const v of Object.values(h)) if (typeof v === 'number') assert.ok(Number.isInteger(v) && v >= 0, `field ${v} of ${Buffer.from(b).toString('hex')}`);
    assert.deepEqual(parseBhs(buildBhs(h), limits), h);
  }
  assert.ok(parsed > 1000 && refusedCount > 1000, `parsed ${parsed}, refused ${refusedCount}`);
});

test('fuzz: PduReader on mutated streams in random chunks yields PDUs or throws PduError', () => {
  const r = rng(7);
  const digests = { header: true, data: true };
  const { wire } = stream(digests);
  for (let i = 0; i < 1500; i++) {
    const b = wire.slice();
    const flips = Math.floor(r() * 4);
    for (let k = 0; k < flips; k++) b[Math.floor(r() * b.length)] = Math.floor(r() * 256);
    const reader = new PduReader({ digests: r() < 0.5 ? digests : { header: false, data: false }, maxDataSegmentLength: 65536 });
    try {
      for (let o = 0; o < b.length;) {
        const n = Math.min(b.length - o, 1 + Math.floor(r() * 300));
        for (const p of reader.push(b.subarray(o, o + n))) {
          assert.equal(p.bhs.length, 48);
          assert.equal(p.data.length, p.header.dataSegmentLength);
        }
        o += n;
      }
    } catch (e) {
      assert.ok(e instanceof PduError, `threw ${String(e)}`);
      assert.ok(e.header === undefined || e.header.length === 48);
    }
  }
});

test('PduReader passes an AHS through when allowed, with the header digest covering it', () => {
  const h: Bhs = { opcode: Opcode.NopOut, immediate: true, final: true, totalAhsLength: 8, dataSegmentLength: 3, itt: 1, lun: 0n, ttt: RESERVED_TAG, cmdSN: 1, expStatSN: 1 };
  const ahs = Uint8Array.of(0, 5, 1, 0, 1, 2, 3, 4);
  const digests = { header: true, data: true };
  const wire = serializePdu({ bhs: buildBhs(h), data: Uint8Array.of(7, 7, 7) }, digests, ahs);
  assert.equal(wire.length, 48 + 8 + 4 + 4 + 4);
  assert.equal(getDigest(wire, 56), digest(wire.subarray(0, 56)));
  const [p] = new PduReader({ digests, maxAhsLength: 8 }).push(wire);
  assert.deepEqual(new Uint8Array(p!.ahs), ahs);
  assert.deepEqual(new Uint8Array(p!.data), Uint8Array.of(7, 7, 7));
  refused(() => new PduReader({ digests }).push(wire), RejectReason.ProtocolError, /AHS/);
});

test('pduParts: the pieces concatenate to serializePdu for every size and digest setting; large data is not copied', () => {
  for (const len of [0, 3, 512, ZERO_COPY_MIN - 1, ZERO_COPY_MIN, ZERO_COPY_MIN + 3, 262144 + 2]) {
    const data = new Uint8Array(len).map((_, i) => (i * 7 + 1) & 0xff);
    const pdu = encodeDataIn({ expCmdSN: 2, maxCmdSN: 3, itt: 9, dataSN: 0, bufferOffset: 0, data, final: true, status: { status: 0, statSN: 1 } });
    for (const digests of [{ header: false, data: false }, { header: true, data: false }, { header: false, data: true }, { header: true, data: true }]) {
      const parts = pduParts(pdu, digests);
      assert.deepEqual(Buffer.concat(parts), Buffer.from(serializePdu(pdu, digests)), `${len} bytes, ${JSON.stringify(digests)}`);
      if (len >= ZERO_COPY_MIN) assert.equal(parts[1], pdu.data, 'the data segment is the caller\'s own buffer');
      else assert.equal(parts.length, 1);
    }
  }
});
