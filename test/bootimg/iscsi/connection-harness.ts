// A test initiator for ConnectionState: builds PDUs as bytes (cut back by a PduReader, as the transport would), logs in, reads answers.
import assert from 'node:assert/strict';
import { Opcode, RESERVED_TAG } from '../../../bootimg/iscsi/constants.js';
import { ConnectionState, type ConnectionOptions, type Step, type TargetConfig } from '../../../bootimg/iscsi/connection-state.js';
import { PduReader, buildBhs, parseBhs, serializePdu, type Bhs, type InPdu, type InitiatorBhs, type TargetBhs } from '../../../bootimg/iscsi/pdu.js';
import { makeScsiDisk } from '../../../bootimg/iscsi/scsi.js';
import { encodeText } from '../../../bootimg/iscsi/text.js';

export const IQN = 'iqn.2026-12.org.twindisk:r0';
export const INITIATOR = 'iqn.1991-05.com.microsoft:node-a';

/** A fresh target (its own TargetConfig, hence its own Reservations) over a 2048-block disk. */
export function makeTarget(o: { blocks?: bigint; thin?: boolean } = {}): TargetConfig {
  const disk = makeScsiDisk({ id: 'r0/0', blocks: o.blocks ?? 2048n, blockSize: 512, thinProvisioning: o.thin ?? true });
  return { name: IQN, disk, addresses: ['10.0.0.1:3260'] };
}

/** Serializes an initiator PDU and cuts it back with a PduReader. */
export function inPdu(h: InitiatorBhs, data: Uint8Array = new Uint8Array(0)): InPdu {
  const r = new PduReader({ maxDataSegmentLength: 1 << 24 });
  const out = r.push(serializePdu({ bhs: buildBhs({ ...h, dataSegmentLength: data.length } as Bhs), data }));
  assert.equal(out.length, 1);
  return out[0]!;
}

export const base = { immediate: false, final: true, totalAhsLength: 0, dataSegmentLength: 0 };

export function out(s: Step): ({ h: TargetBhs; data: Uint8Array })[] {
  return s.pdus.map((p) => ({ h: parseBhs(p.bhs) as TargetBhs, data: p.data }));
}

/** The one PDU of `s`, which must have opcode `op`. */
export function one<T extends TargetBhs['opcode']>(s: Step, op: T): Extract<TargetBhs, { opcode: T }> & { data: Uint8Array } {
  const o = out(s);
  assert.equal(o.length, 1, `one PDU expected, got ${o.length}: ${o.map((x) => x.h.opcode).join(',')} ${s.log.join('; ')} ${s.close ?? ''}`);
  assert.equal(o[0]!.h.opcode, op);
  return { ...(o[0]!.h as Extract<TargetBhs, { opcode: T }>), data: o[0]!.data };
}

/** Sense key, ASC, ASCQ of a SCSI Response carrying sense (SenseLength then fixed-format sense). */
export function senseOf(data: Uint8Array): [number, number, number] {
  return [data[2 + 2]! & 0x0f, data[2 + 12]!, data[2 + 13]!];
}

/** INFORMATION (bytes 3-6 of the sense) of a SCSI Response carrying sense. */
export function informationOf(data: Uint8Array): number {
  return new DataView(data.buffer, data.byteOffset + 2 + 3, 4).getUint32(0);
}

/** One initiator session: logs in to `target`, numbers its commands, builds its PDUs. */
export class Initiator {
  readonly c: ConnectionState;
  cmdSN = 0;
  private nextItt = 0x100;

  constructor(target: TargetConfig, o: { isid?: number; name?: string; keys?: [string, string][]; opts?: Partial<ConnectionOptions> } = {}) {
    this.c = new ConnectionState({ targets: [target], allocateTsih: () => 0x42, ...o.opts });
    const login = (csg: number, nsg: number, keys: [string, string][]): Step => this.c.receive(inPdu({
      opcode: Opcode.LoginRequest, ...base, immediate: true, transit: true, cont: false, csg, nsg, versionMax: 0, versionMin: 0,
      isid: o.isid ?? 0x4000_0000_0001, tsih: 0, cid: 0, cmdSN: 0, expStatSN: 0, itt: 1,
    }, encodeText(keys)));
    assert.equal(one(login(0, 1, [['InitiatorName', o.name ?? INITIATOR], ['TargetName', target.name], ['AuthMethod', 'None']]), Opcode.LoginResponse).statusClass, 0);
    assert.equal(one(login(1, 3, [['MaxRecvDataSegmentLength', '65536'], ...(o.keys ?? [])]), Opcode.LoginResponse).statusClass, 0);
    assert.equal(this.c.phase, 'full');
  }

  itt(): number { return this.nextItt++; }

  /** A SCSI Command PDU; `data` is immediate data. */
  command(cdb: number[], o: { edtl?: number; read?: boolean; write?: boolean; final?: boolean; data?: Uint8Array; itt?: number; lun?: bigint; immediate?: boolean } = {}): InPdu {
    const c = new Uint8Array(16);
    c.set(cdb);
    const immediate = o.immediate ?? false;
    return inPdu({
      opcode: Opcode.ScsiCommand, ...base, immediate, final: o.final ?? true, read: o.read ?? false, write: o.write ?? false, attr: 1, lun: o.lun ?? 0n,
      expectedDataTransferLength: o.edtl ?? 0, cmdSN: immediate ? this.cmdSN : this.cmdSN++, expStatSN: 0, cdb: c, itt: o.itt ?? this.itt(),
    }, o.data);
  }

  /** Sends a command and returns the Step. */
  send(cdb: number[], o: Parameters<Initiator['command']>[1] = {}): Step {
    return this.c.receive(this.command(cdb, o));
  }

  dataOut(itt: number, ttt: number, dataSN: number, bufferOffset: number, data: Uint8Array, final = true): InPdu {
    return inPdu({ opcode: Opcode.DataOut, ...base, final, lun: 0n, ttt, expStatSN: 0, dataSN, bufferOffset, itt }, data);
  }

  /** A Task Management Function Request (immediate, as initiators send them). */
  tmf(fn: number, o: { ref?: number; refCmdSN?: number; lun?: bigint; itt?: number } = {}): InPdu {
    return inPdu({
      opcode: Opcode.TaskMgmtRequest, ...base, immediate: true, fn, lun: o.lun ?? 0n, referencedTaskTag: o.ref ?? RESERVED_TAG,
      cmdSN: this.cmdSN, expStatSN: 0, refCmdSN: o.refCmdSN ?? 0, expDataSN: 0, itt: o.itt ?? this.itt(),
    });
  }

  /** A Text Request. */
  text(data: Uint8Array, o: { cont?: boolean; ttt?: number; itt: number }): InPdu {
    return inPdu({
      opcode: Opcode.TextRequest, ...base, final: !o.cont, cont: o.cont ?? false, lun: 0n, ttt: o.ttt ?? RESERVED_TAG, cmdSN: this.cmdSN++,
      expStatSN: 0, itt: o.itt,
    }, data);
  }
}

/** A 24-byte PERSISTENT RESERVE OUT parameter list (SPC-4 Table 174). */
export function prParams(key: bigint, saKey: bigint, flags = 0): Uint8Array {
  const b = new Uint8Array(24);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, key);
  v.setBigUint64(8, saKey);
  b[20] = flags;
  return b;
}

/** CDB of PERSISTENT RESERVE OUT. */
export function prOutCdb(sa: number, type = 0): number[] {
  return [0x5f, sa, type, 0, 0, 0, 0, 0, 24, 0];
}
