// iSCSI PDU codec (RFC 7143 section 11): Basic Header Segment parse/build, target PDU encoders, CRC32C digests, a streaming PDU reader.
import { crc32c } from '../../wasm/index.js';
import {
  BHS_LENGTH, BYTE0_IMMEDIATE, BYTE0_RESERVED, CMD_ATTR_MASK, CMD_FLAG_READ, CMD_FLAG_WRITE, DATAIN_FLAG_ACK, DATAIN_FLAG_OVERFLOW,
  DATAIN_FLAG_STATUS, DATAIN_FLAG_UNDERFLOW, DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH, DIGEST_LENGTH, FLAG_FINAL, ISCSI_VERSION,
  LOGIN_CSG_MASK, LOGIN_CSG_SHIFT, LOGIN_FLAG_CONTINUE, LOGIN_FLAG_TRANSIT, LOGIN_NSG_MASK, MAX_DATA_SEGMENT_FIELD, OPCODE_MASK,
  OPCODE_NAMES, Opcode, RESERVED_TAG, RSP_FLAG_BIDI_OVERFLOW, RSP_FLAG_BIDI_UNDERFLOW, RSP_FLAG_OVERFLOW, RSP_FLAG_UNDERFLOW,
  RejectReason, ScsiResponseCode, TEXT_FLAG_CONTINUE,
} from './constants.js';

/** A malformed or unacceptable PDU; `reason` is the Reject reason (RFC 7143 section 11.17.1) to answer with. */
export class PduError extends Error {
  override name = 'PduError';
  constructor(message: string, readonly reason: RejectReason, readonly header?: Uint8Array) {
    super(message);
  }
}

/** Fields every BHS has (RFC 7143 section 11.2.1). Lengths are in bytes (TotalAHSLength already times 4). */
interface BhsBase {
  immediate: boolean;
  final: boolean;
  totalAhsLength: number;
  dataSegmentLength: number;
  itt: number;
}

export interface NopOut extends BhsBase { opcode: Opcode.NopOut; lun: bigint; ttt: number; cmdSN: number; expStatSN: number }
export interface ScsiCommand extends BhsBase {
  opcode: Opcode.ScsiCommand; read: boolean; write: boolean; attr: number; lun: bigint;
  expectedDataTransferLength: number; cmdSN: number; expStatSN: number; cdb: Uint8Array;
}
export interface TaskMgmtRequest extends BhsBase {
  opcode: Opcode.TaskMgmtRequest; fn: number; lun: bigint; referencedTaskTag: number; cmdSN: number; expStatSN: number;
  refCmdSN: number; expDataSN: number;
}
export interface LoginRequest extends BhsBase {
  opcode: Opcode.LoginRequest; transit: boolean; cont: boolean; csg: number; nsg: number; versionMax: number; versionMin: number;
  isid: number; tsih: number; cid: number; cmdSN: number; expStatSN: number;
}
export interface TextRequest extends BhsBase { opcode: Opcode.TextRequest; cont: boolean; lun: bigint; ttt: number; cmdSN: number; expStatSN: number }
export interface DataOut extends BhsBase {
  opcode: Opcode.DataOut; lun: bigint; ttt: number; expStatSN: number; dataSN: number; bufferOffset: number;
}
export interface LogoutRequest extends BhsBase { opcode: Opcode.LogoutRequest; reasonCode: number; cid: number; cmdSN: number; expStatSN: number }
export interface SnackRequest extends BhsBase {
  opcode: Opcode.Snack; snackType: number; lun: bigint; ttt: number; expStatSN: number; begRun: number; runLength: number;
}
export interface NopIn extends BhsBase { opcode: Opcode.NopIn; lun: bigint; ttt: number; statSN: number; expCmdSN: number; maxCmdSN: number }
export interface ScsiResponse extends BhsBase {
  opcode: Opcode.ScsiResponse; bidiOverflow: boolean; bidiUnderflow: boolean; overflow: boolean; underflow: boolean;
  response: number; status: number; snackTag: number; statSN: number; expCmdSN: number; maxCmdSN: number; expDataSN: number;
  bidiResidualCount: number; residualCount: number;
}
export interface TaskMgmtResponse extends BhsBase {
  opcode: Opcode.TaskMgmtResponse; response: number; statSN: number; expCmdSN: number; maxCmdSN: number;
}
export interface LoginResponse extends BhsBase {
  opcode: Opcode.LoginResponse; transit: boolean; cont: boolean; csg: number; nsg: number; versionMax: number; versionActive: number;
  isid: number; tsih: number; statSN: number; expCmdSN: number; maxCmdSN: number; statusClass: number; statusDetail: number;
}
export interface TextResponse extends BhsBase {
  opcode: Opcode.TextResponse; cont: boolean; lun: bigint; ttt: number; statSN: number; expCmdSN: number; maxCmdSN: number;
}
export interface DataIn extends BhsBase {
  opcode: Opcode.DataIn; acknowledge: boolean; overflow: boolean; underflow: boolean; statusPresent: boolean; status: number;
  lun: bigint; ttt: number; statSN: number; expCmdSN: number; maxCmdSN: number; dataSN: number; bufferOffset: number; residualCount: number;
}
export interface LogoutResponse extends BhsBase {
  opcode: Opcode.LogoutResponse; response: number; statSN: number; expCmdSN: number; maxCmdSN: number; time2Wait: number; time2Retain: number;
}
export interface R2T extends BhsBase {
  opcode: Opcode.R2T; lun: bigint; ttt: number; statSN: number; expCmdSN: number; maxCmdSN: number; r2tSN: number;
  bufferOffset: number; desiredDataTransferLength: number;
}
export interface AsyncMessage extends BhsBase {
  opcode: Opcode.AsyncMessage; lun: bigint; statSN: number; expCmdSN: number; maxCmdSN: number; asyncEvent: number; asyncVCode: number;
  parameter1: number; parameter2: number; parameter3: number;
}
export interface Reject extends BhsBase {
  opcode: Opcode.Reject; reason: number; statSN: number; expCmdSN: number; maxCmdSN: number; dataSN: number;
}

/** PDUs an initiator sends (the target parses these). */
export type InitiatorBhs = NopOut | ScsiCommand | TaskMgmtRequest | LoginRequest | TextRequest | DataOut | LogoutRequest | SnackRequest;
/** PDUs a target sends. */
export type TargetBhs = NopIn | ScsiResponse | TaskMgmtResponse | LoginResponse | TextResponse | DataIn | LogoutResponse | R2T | AsyncMessage | Reject;
/** Any parsed Basic Header Segment. */
export type Bhs = InitiatorBhs | TargetBhs;

/** Limits applied while parsing, from the negotiated parameters. */
export interface BhsLimits {
  /** Our MaxRecvDataSegmentLength (RFC 7143 section 13.12); default 8192, its value during login. */
  maxDataSegmentLength?: number;
  /** Largest total AHS length in bytes we accept; default 0 (we use no AHS types). */
  maxAhsLength?: number;
}

/** Which digests are in use on a connection (RFC 7143 section 13.1). */
export interface Digests { header: boolean; data: boolean }
export const NO_DIGESTS: Digests = Object.freeze({ header: false, data: false });

function u16(b: Uint8Array, o: number): number { return (b[o]! << 8) | b[o + 1]!; }
function u24(b: Uint8Array, o: number): number { return (b[o]! << 16) | (b[o + 1]! << 8) | b[o + 2]!; }
function u32(b: Uint8Array, o: number): number { return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0; }
function u48(b: Uint8Array, o: number): number { return u16(b, o) * 0x1_0000_0000 + u32(b, o + 2); }
function u64(b: Uint8Array, o: number): bigint { return (BigInt(u32(b, o)) << 32n) | BigInt(u32(b, o + 4)); }
function put16(b: Uint8Array, o: number, v: number): void { b[o] = (v >>> 8) & 0xff; b[o + 1] = v & 0xff; }
function put24(b: Uint8Array, o: number, v: number): void { b[o] = (v >>> 16) & 0xff; b[o + 1] = (v >>> 8) & 0xff; b[o + 2] = v & 0xff; }
function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 24) & 0xff; b[o + 1] = (v >>> 16) & 0xff; b[o + 2] = (v >>> 8) & 0xff; b[o + 3] = v & 0xff;
}
function put48(b: Uint8Array, o: number, v: number): void { put16(b, o, Math.floor(v / 0x1_0000_0000)); put32(b, o + 2, v >>> 0); }
function put64(b: Uint8Array, o: number, v: bigint): void { put32(b, o, Number((v >> 32n) & 0xffff_ffffn)); put32(b, o + 4, Number(v & 0xffff_ffffn)); }

/** The padded length of a data segment: a multiple of 4 (RFC 7143 section 11.2.1.5 / 11.1). */
export function padded(n: number): number {
  return (n + 3) & ~3;
}

/**
 * Bytes on the wire of the PDU whose header is `bhs`: BHS, AHS, header digest, padded data, data digest.
 * The data digest is present only when there is a data segment (RFC 7143 section 11.1, the PDU layout:
 * the data digest follows the data segment, and is absent with it).
 */
export function pduLength(bhs: Pick<BhsBase, 'totalAhsLength' | 'dataSegmentLength'>, digests: Digests = NO_DIGESTS): number {
  let n = BHS_LENGTH + bhs.totalAhsLength + padded(bhs.dataSegmentLength);
  if (digests.header) n += DIGEST_LENGTH;
  if (digests.data && bhs.dataSegmentLength > 0) n += DIGEST_LENGTH;
  return n;
}

/** The segment lengths in a raw BHS, read without validating anything else (for framing). */
export function segmentLengths(bytes: Uint8Array): { totalAhsLength: number; dataSegmentLength: number } {
  if (bytes.length < BHS_LENGTH) throw new PduError(`a BHS is ${BHS_LENGTH} bytes, got ${bytes.length}`, RejectReason.ProtocolError);
  return { totalAhsLength: bytes[4]! * 4, dataSegmentLength: u24(bytes, 5) };
}

function checkLengths(bytes: Uint8Array, limits: BhsLimits): { totalAhsLength: number; dataSegmentLength: number } {
  const l = segmentLengths(bytes);
  const maxData = limits.maxDataSegmentLength ?? DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH;
  // RFC 7143 section 13.12: MaxRecvDataSegmentLength is "the maximum data segment length in bytes it can receive in an iSCSI PDU".
  if (l.dataSegmentLength > maxData) {
    throw new PduError(`data segment of ${l.dataSegmentLength} bytes exceeds MaxRecvDataSegmentLength ${maxData}`, RejectReason.ProtocolError);
  }
  const maxAhs = limits.maxAhsLength ?? 0;
  if (l.totalAhsLength > maxAhs) {
    throw new PduError(`total AHS length of ${l.totalAhsLength} bytes exceeds the ${maxAhs} accepted`, RejectReason.ProtocolError);
  }
  return l;
}

/**
 * Parses a 48-byte Basic Header Segment (RFC 7143 section 11.2.1) into a typed header per opcode.
 * Throws PduError for a short buffer, a set reserved bit in byte 0, an unknown opcode, a data segment
 * or AHS over `limits`, and Login/Text flag combinations the RFC forbids.
 */
export function parseBhs(bytes: Uint8Array, limits: BhsLimits = {}): Bhs {
  const { totalAhsLength, dataSegmentLength } = checkLengths(bytes, limits);
  const b0 = bytes[0]!;
  const b1 = bytes[1]!;
  // RFC 7143 section 11.2.1: byte 0 bit 0 (the most significant) is reserved ("."), sent as zero.
  if (b0 & BYTE0_RESERVED) throw new PduError('reserved bit in byte 0 is set', RejectReason.ProtocolError);
  const opcode = b0 & OPCODE_MASK;
  const base = { immediate: (b0 & BYTE0_IMMEDIATE) !== 0, final: (b1 & FLAG_FINAL) !== 0, totalAhsLength, dataSegmentLength, itt: u32(bytes, 16) };
  switch (opcode) {
    case Opcode.NopOut:
      return { opcode, ...base, lun: u64(bytes, 8), ttt: u32(bytes, 20), cmdSN: u32(bytes, 24), expStatSN: u32(bytes, 28) };
    case Opcode.ScsiCommand:
      return {
        opcode, ...base, read: (b1 & CMD_FLAG_READ) !== 0, write: (b1 & CMD_FLAG_WRITE) !== 0, attr: b1 & CMD_ATTR_MASK,
        lun: u64(bytes, 8), expectedDataTransferLength: u32(bytes, 20), cmdSN: u32(bytes, 24), expStatSN: u32(bytes, 28),
        cdb: bytes.slice(32, 48),
      };
    case Opcode.TaskMgmtRequest:
      return {
        opcode, ...base, fn: b1 & 0x7f, lun: u64(bytes, 8), referencedTaskTag: u32(bytes, 20), cmdSN: u32(bytes, 24),
        expStatSN: u32(bytes, 28), refCmdSN: u32(bytes, 32), expDataSN: u32(bytes, 36),
      };
    case Opcode.LoginRequest:
    case Opcode.LoginResponse: {
      const transit = (b1 & LOGIN_FLAG_TRANSIT) !== 0;
      const cont = (b1 & LOGIN_FLAG_CONTINUE) !== 0;
      const csg = (b1 & LOGIN_CSG_MASK) >> LOGIN_CSG_SHIFT;
      const nsg = b1 & LOGIN_NSG_MASK;
      // RFC 7143 section 11.12.2: "If the T bit is set to 1, the C bit MUST be set to 0."
      if (transit && cont) throw new PduError('login PDU has both T and C set', RejectReason.ProtocolError);
      // RFC 7143 section 11.12.3: stage value 2 is reserved; CSG can never be FullFeaturePhase.
      if (csg === 2 || csg === 3) throw new PduError(`login CSG ${csg} is not a login stage`, RejectReason.ProtocolError);
      if (transit && nsg === 2) throw new PduError('login NSG 2 is reserved', RejectReason.ProtocolError);
      const common = { ...base, final: transit, transit, cont, csg, nsg, versionMax: bytes[2]!, isid: u48(bytes, 8), tsih: u16(bytes, 14) };
      if (opcode === Opcode.LoginRequest) {
        return { opcode, ...common, versionMin: bytes[3]!, cid: u16(bytes, 20), cmdSN: u32(bytes, 24), expStatSN: u32(bytes, 28) };
      }
      return {
        opcode, ...common, versionActive: bytes[3]!, statSN: u32(bytes, 24), expCmdSN: u32(bytes, 28), maxCmdSN: u32(bytes, 32),
        statusClass: bytes[36]!, statusDetail: bytes[37]!,
      };
    }
    case Opcode.TextRequest:
    case Opcode.TextResponse: {
      const cont = (b1 & TEXT_FLAG_CONTINUE) !== 0;
      // RFC 7143 section 11.10.2: "A Text Request with the C bit set to 1 MUST have the F bit set to 0." (11.11.2 likewise).
      if (cont && base.final) throw new PduError('text PDU has both F and C set', RejectReason.ProtocolError);
      if (opcode === Opcode.TextRequest) {
        return { opcode, ...base, cont, lun: u64(bytes, 8), ttt: u32(bytes, 20), cmdSN: u32(bytes, 24), expStatSN: u32(bytes, 28) };
      }
      return { opcode, ...base, cont, lun: u64(bytes, 8), ttt: u32(bytes, 20), statSN: u32(bytes, 24), expCmdSN: u32(bytes, 28), maxCmdSN: u32(bytes, 32) };
    }
    case Opcode.DataOut:
      return {
        opcode, ...base, lun: u64(bytes, 8), ttt: u32(bytes, 20), expStatSN: u32(bytes, 28), dataSN: u32(bytes, 36), bufferOffset: u32(bytes, 40),
      };
    case Opcode.LogoutRequest:
      return { opcode, ...base, reasonCode: b1 & 0x7f, cid: u16(bytes, 20), cmdSN: u32(bytes, 24), expStatSN: u32(bytes, 28) };
    case Opcode.Snack:
      return {
        opcode, ...base, snackType: b1 & 0x0f, lun: u64(bytes, 8), ttt: u32(bytes, 20), expStatSN: u32(bytes, 28),
        begRun: u32(bytes, 40), runLength: u32(bytes, 44),
      };
    case Opcode.NopIn:
      return { opcode, ...base, lun: u64(bytes, 8), ttt: u32(bytes, 20), statSN: u32(bytes, 24), expCmdSN: u32(bytes, 28), maxCmdSN: u32(bytes, 32) };
    case Opcode.ScsiResponse:
      return {
        opcode, ...base, bidiOverflow: (b1 & RSP_FLAG_BIDI_OVERFLOW) !== 0, bidiUnderflow: (b1 & RSP_FLAG_BIDI_UNDERFLOW) !== 0,
        overflow: (b1 & RSP_FLAG_OVERFLOW) !== 0, underflow: (b1 & RSP_FLAG_UNDERFLOW) !== 0, response: bytes[2]!, status: bytes[3]!,
        snackTag: u32(bytes, 20), statSN: u32(bytes, 24), expCmdSN: u32(bytes, 28), maxCmdSN: u32(bytes, 32), expDataSN: u32(bytes, 36),
        bidiResidualCount: u32(bytes, 40), residualCount: u32(bytes, 44),
      };
    case Opcode.TaskMgmtResponse:
      return { opcode, ...base, response: bytes[2]!, statSN: u32(bytes, 24), expCmdSN: u32(bytes, 28), maxCmdSN: u32(bytes, 32) };
    case Opcode.DataIn:
      return {
        opcode, ...base, acknowledge: (b1 & DATAIN_FLAG_ACK) !== 0, overflow: (b1 & DATAIN_FLAG_OVERFLOW) !== 0,
        underflow: (b1 & DATAIN_FLAG_UNDERFLOW) !== 0, statusPresent: (b1 & DATAIN_FLAG_STATUS) !== 0, status: bytes[3]!,
        lun: u64(bytes, 8), ttt: u32(bytes, 20), statSN: u32(bytes, 24), expCmdSN: u32(bytes, 28), maxCmdSN: u32(bytes, 32),
        dataSN: u32(bytes, 36), bufferOffset: u32(bytes, 40), residualCount: u32(bytes, 44),
      };
    case Opcode.LogoutResponse:
      return {
        opcode, ...base, response: bytes[2]!, statSN: u32(bytes, 24), expCmdSN: u32(bytes, 28), maxCmdSN: u32(bytes, 32),
        time2Wait: u16(bytes, 40), time2Retain: u16(bytes, 42),
      };
    case Opcode.R2T:
      return {
        opcode, ...base, lun: u64(bytes, 8), ttt: u32(bytes, 20), statSN: u32(bytes, 24), expCmdSN: u32(bytes, 28), maxCmdSN: u32(bytes, 32),
        r2tSN: u32(bytes, 36), bufferOffset: u32(bytes, 40), desiredDataTransferLength: u32(bytes, 44),
      };
    case Opcode.AsyncMessage:
      return {
        opcode, ...base, lun: u64(bytes, 8), statSN: u32(bytes, 24), expCmdSN: u32(bytes, 28), maxCmdSN: u32(bytes, 32),
        asyncEvent: bytes[36]!, asyncVCode: bytes[37]!, parameter1: u16(bytes, 38), parameter2: u16(bytes, 40), parameter3: u16(bytes, 42),
      };
    case Opcode.Reject:
      return { opcode, ...base, reason: bytes[2]!, statSN: u32(bytes, 24), expCmdSN: u32(bytes, 28), maxCmdSN: u32(bytes, 32), dataSN: u32(bytes, 36) };
    default:
      // RFC 7143 section 11.17.1 lists "Command not supported" (0x05) as the Reject reason for an opcode the target does not know.
      throw new PduError(`unknown opcode 0x${opcode.toString(16).padStart(2, '0')}`, RejectReason.CommandNotSupported);
  }
}

/** The RFC name of an opcode ("SCSI Data-Out"), or its hex value. */
export function opcodeName(opcode: number): string {
  return OPCODE_NAMES.get(opcode) ?? `opcode 0x${opcode.toString(16)}`;
}

function bit(v: boolean, mask: number): number { return v ? mask : 0; }

/**
 * Encodes a typed header as a 48-byte BHS; the inverse of parseBhs for every opcode (reserved fields are zero).
 * Throws RangeError for lengths the fields cannot hold.
 */
export function buildBhs(h: Bhs): Uint8Array {
  const b = new Uint8Array(BHS_LENGTH);
  if (h.totalAhsLength % 4 !== 0 || h.totalAhsLength > 255 * 4) throw new RangeError(`total AHS length ${h.totalAhsLength} is not a multiple of 4 up to 1020`);
  if (!Number.isInteger(h.dataSegmentLength) || h.dataSegmentLength < 0 || h.dataSegmentLength > MAX_DATA_SEGMENT_FIELD) {
    throw new RangeError(`data segment length ${h.dataSegmentLength} does not fit 24 bits`);
  }
  b[0] = bit(h.immediate, BYTE0_IMMEDIATE) | h.opcode;
  b[4] = h.totalAhsLength / 4;
  put24(b, 5, h.dataSegmentLength);
  put32(b, 16, h.itt);
  let b1 = bit(h.final, FLAG_FINAL);
  switch (h.opcode) {
    case Opcode.NopOut:
      put64(b, 8, h.lun); put32(b, 20, h.ttt); put32(b, 24, h.cmdSN); put32(b, 28, h.expStatSN);
      break;
    case Opcode.ScsiCommand:
      if (h.cdb.length > 16) throw new RangeError('a CDB longer than 16 bytes needs an extended CDB AHS');
      b1 |= bit(h.read, CMD_FLAG_READ) | bit(h.write, CMD_FLAG_WRITE) | (h.attr & CMD_ATTR_MASK);
      put64(b, 8, h.lun); put32(b, 20, h.expectedDataTransferLength); put32(b, 24, h.cmdSN); put32(b, 28, h.expStatSN);
      b.set(h.cdb, 32);
      break;
    case Opcode.TaskMgmtRequest:
      b1 |= h.fn & 0x7f;
      put64(b, 8, h.lun); put32(b, 20, h.referencedTaskTag); put32(b, 24, h.cmdSN); put32(b, 28, h.expStatSN);
      put32(b, 32, h.refCmdSN); put32(b, 36, h.expDataSN);
      break;
    case Opcode.LoginRequest:
    case Opcode.LoginResponse:
      b1 = bit(h.transit, LOGIN_FLAG_TRANSIT) | bit(h.cont, LOGIN_FLAG_CONTINUE) | ((h.csg << LOGIN_CSG_SHIFT) & LOGIN_CSG_MASK) | (h.nsg & LOGIN_NSG_MASK);
      b[2] = h.versionMax;
      put48(b, 8, h.isid); put16(b, 14, h.tsih);
      if (h.opcode === Opcode.LoginRequest) {
        b[3] = h.versionMin; put16(b, 20, h.cid); put32(b, 24, h.cmdSN); put32(b, 28, h.expStatSN);
      } else {
        b[3] = h.versionActive; put32(b, 24, h.statSN); put32(b, 28, h.expCmdSN); put32(b, 32, h.maxCmdSN);
        b[36] = h.statusClass; b[37] = h.statusDetail;
      }
      break;
    case Opcode.TextRequest:
      b1 |= bit(h.cont, TEXT_FLAG_CONTINUE);
      put64(b, 8, h.lun); put32(b, 20, h.ttt); put32(b, 24, h.cmdSN); put32(b, 28, h.expStatSN);
      break;
    case Opcode.TextResponse:
      b1 |= bit(h.cont, TEXT_FLAG_CONTINUE);
      put64(b, 8, h.lun); put32(b, 20, h.ttt); put32(b, 24, h.statSN); put32(b, 28, h.expCmdSN); put32(b, 32, h.maxCmdSN);
      break;
    case Opcode.DataOut:
      put64(b, 8, h.lun); put32(b, 20, h.ttt); put32(b, 28, h.expStatSN); put32(b, 36, h.dataSN); put32(b, 40, h.bufferOffset);
      break;
    case Opcode.LogoutRequest:
      b1 |= h.reasonCode & 0x7f;
      put16(b, 20, h.cid); put32(b, 24, h.cmdSN); put32(b, 28, h.expStatSN);
      break;
    case Opcode.Snack:
      b1 |= h.snackType & 0x0f;
      put64(b, 8, h.lun); put32(b, 20, h.ttt); put32(b, 28, h.expStatSN); put32(b, 40, h.begRun); put32(b, 44, h.runLength);
      break;
    case Opcode.NopIn:
      put64(b, 8, h.lun); put32(b, 20, h.ttt); put32(b, 24, h.statSN); put32(b, 28, h.expCmdSN); put32(b, 32, h.maxCmdSN);
      break;
    case Opcode.ScsiResponse:
      b1 |= bit(h.bidiOverflow, RSP_FLAG_BIDI_OVERFLOW) | bit(h.bidiUnderflow, RSP_FLAG_BIDI_UNDERFLOW) | bit(h.overflow, RSP_FLAG_OVERFLOW) | bit(h.underflow, RSP_FLAG_UNDERFLOW);
      b[2] = h.response; b[3] = h.status;
      put32(b, 20, h.snackTag); put32(b, 24, h.statSN); put32(b, 28, h.expCmdSN); put32(b, 32, h.maxCmdSN); put32(b, 36, h.expDataSN);
      put32(b, 40, h.bidiResidualCount); put32(b, 44, h.residualCount);
      break;
    case Opcode.TaskMgmtResponse:
      b[2] = h.response; put32(b, 24, h.statSN); put32(b, 28, h.expCmdSN); put32(b, 32, h.maxCmdSN);
      break;
    case Opcode.DataIn:
      b1 |= bit(h.acknowledge, DATAIN_FLAG_ACK) | bit(h.overflow, DATAIN_FLAG_OVERFLOW) | bit(h.underflow, DATAIN_FLAG_UNDERFLOW) | bit(h.statusPresent, DATAIN_FLAG_STATUS);
      b[3] = h.status;
      put64(b, 8, h.lun); put32(b, 20, h.ttt); put32(b, 24, h.statSN); put32(b, 28, h.expCmdSN); put32(b, 32, h.maxCmdSN);
      put32(b, 36, h.dataSN); put32(b, 40, h.bufferOffset); put32(b, 44, h.residualCount);
      break;
    case Opcode.LogoutResponse:
      b[2] = h.response; put32(b, 24, h.statSN); put32(b, 28, h.expCmdSN); put32(b, 32, h.maxCmdSN);
      put16(b, 40, h.time2Wait); put16(b, 42, h.time2Retain);
      break;
    case Opcode.R2T:
      put64(b, 8, h.lun); put32(b, 20, h.ttt); put32(b, 24, h.statSN); put32(b, 28, h.expCmdSN); put32(b, 32, h.maxCmdSN);
      put32(b, 36, h.r2tSN); put32(b, 40, h.bufferOffset); put32(b, 44, h.desiredDataTransferLength);
      break;
    case Opcode.AsyncMessage:
      put64(b, 8, h.lun); put32(b, 24, h.statSN); put32(b, 28, h.expCmdSN); put32(b, 32, h.maxCmdSN);
      b[36] = h.asyncEvent; b[37] = h.asyncVCode; put16(b, 38, h.parameter1); put16(b, 40, h.parameter2); put16(b, 42, h.parameter3);
      break;
    case Opcode.Reject:
      b[2] = h.reason; put32(b, 24, h.statSN); put32(b, 28, h.expCmdSN); put32(b, 32, h.maxCmdSN); put32(b, 36, h.dataSN);
      break;
  }
  b[1] = b1;
  return b;
}

// ------------------------------------------------------------------------------------------------ digests

/** CRC32C digest of `parts` in order (RFC 7143 section 13.1, "CRC32C" digest; RFC 3720 Appendix B.4 test vectors). */
export function digest(...parts: Uint8Array[]): number {
  let c = 0;
  for (const p of parts) c = crc32c(p, c);
  return c;
}

/**
 * Writes a digest at `off`. The CRC goes on the wire least significant byte first: RFC 3720 Appendix B.4
 * gives 32 zero bytes the CRC 0x8a9136aa and the bytes "aa 36 91 8a" (RFC 7143 section 13.1 keeps RFC 3720's CRC32C).
 */
export function putDigest(b: Uint8Array, off: number, crc: number): void {
  b[off] = crc & 0xff; b[off + 1] = (crc >>> 8) & 0xff; b[off + 2] = (crc >>> 16) & 0xff; b[off + 3] = (crc >>> 24) & 0xff;
}

/** Reads a digest written by putDigest. */
export function getDigest(b: Uint8Array, off: number): number {
  return (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16) | (b[off + 3]! << 24)) >>> 0;
}

// ------------------------------------------------------------------------------------------------ serializing

/** A target PDU ready to serialize: its BHS and its (unpadded) data segment. */
export interface OutPdu { bhs: Uint8Array; data: Uint8Array }

/**
 * The wire bytes of a PDU: BHS (its DataSegmentLength must equal data.length), optional AHS, header digest,
 * data padded with zeros to 4 bytes (RFC 7143 section 11.2.1.5 / 11.1), data digest over data and padding.
 */
export function serializePdu(pdu: OutPdu, digests: Digests = NO_DIGESTS, ahs: Uint8Array = new Uint8Array(0)): Uint8Array {
  const { bhs, data } = pdu;
  const l = segmentLengths(bhs);
  if (l.dataSegmentLength !== data.length) throw new RangeError(`BHS says ${l.dataSegmentLength} data bytes, got ${data.length}`);
  if (l.totalAhsLength !== ahs.length) throw new RangeError(`BHS says ${l.totalAhsLength} AHS bytes, got ${ahs.length}`);
  const out = new Uint8Array(pduLength(l, digests));
  out.set(bhs, 0);
  out.set(ahs, BHS_LENGTH);
  let o = BHS_LENGTH + ahs.length;
  if (digests.header) { putDigest(out, o, digest(out.subarray(0, o))); o += DIGEST_LENGTH; }
  out.set(data, o);
  const pd = padded(data.length);
  if (digests.data && data.length > 0) putDigest(out, o + pd, digest(out.subarray(o, o + pd)));
  return out;
}

/** Data segments at least this long go to the socket as they are (pduParts); shorter ones are copied into one buffer. */
export const ZERO_COPY_MIN = 16 * 1024;

/**
 * The wire bytes of a PDU as pieces whose concatenation is serializePdu(pdu, digests): the BHS with its header digest,
 * then, for a data segment of ZERO_COPY_MIN bytes or more, the caller's data itself (not copied) and a tail with the
 * padding and the data digest. A socket writes the pieces with one writev.
 */
export function pduParts(pdu: OutPdu, digests: Digests = NO_DIGESTS): Uint8Array[] {
  const { bhs, data } = pdu;
  if (data.length < ZERO_COPY_MIN) return [serializePdu(pdu, digests)];
  const l = segmentLengths(bhs);
  if (l.dataSegmentLength !== data.length) throw new RangeError(`BHS says ${l.dataSegmentLength} data bytes, got ${data.length}`);
  if (l.totalAhsLength !== 0) throw new RangeError('pduParts: target PDUs carry no AHS');
  const head = new Uint8Array(BHS_LENGTH + (digests.header ? DIGEST_LENGTH : 0));
  head.set(bhs, 0);
  if (digests.header) putDigest(head, BHS_LENGTH, digest(bhs));
  const pad = padded(data.length) - data.length;
  const tail = new Uint8Array(pad + (digests.data ? DIGEST_LENGTH : 0));
  if (digests.data) putDigest(tail, pad, digest(data, tail.subarray(0, pad)));
  return tail.length > 0 ? [head, data, tail] : [head, data];
}

// ------------------------------------------------------------------------------------------------ target PDU encoders

/** Sequence numbers every target response carries (RFC 7143 section 11.4.8 and elsewhere). */
export interface TargetSN { statSN: number; expCmdSN: number; maxCmdSN: number }

/** Residual over/underflow of a command (RFC 7143 section 11.4.5). */
export interface Residual { overflow?: boolean; underflow?: boolean; count?: number }

const base0 = { immediate: false, final: true, totalAhsLength: 0 };

/** Statuses a Data-In may carry: GOOD, CONDITION MET, INTERMEDIATE, INTERMEDIATE-CONDITION MET (RFC 7143 section 11.7.3). */
const DATAIN_STATUSES: ReadonlySet<number> = new Set([0x00, 0x04, 0x10, 0x14]);

/**
 * SCSI Response (RFC 7143 section 11.4). With sense data the data segment is SenseLength (2 bytes,
 * big-endian) followed by the sense bytes (section 11.4.7.2).
 */
export function encodeScsiResponse(p: TargetSN & { itt: number; status: number; response?: number; sense?: Uint8Array; residual?: Residual; expDataSN?: number }): OutPdu {
  let data = new Uint8Array(0);
  if (p.sense && p.sense.length > 0) {
    data = new Uint8Array(2 + p.sense.length);
    put16(data, 0, p.sense.length);
    data.set(p.sense, 2);
  }
  const r = p.residual ?? {};
  const bhs = buildBhs({
    opcode: Opcode.ScsiResponse, ...base0, dataSegmentLength: data.length, itt: p.itt, bidiOverflow: false, bidiUnderflow: false,
    overflow: r.overflow ?? false, underflow: r.underflow ?? false, response: p.response ?? ScsiResponseCode.CommandCompleted,
    status: p.status, snackTag: 0, statSN: p.statSN, expCmdSN: p.expCmdSN, maxCmdSN: p.maxCmdSN, expDataSN: p.expDataSN ?? 0,
    bidiResidualCount: 0, residualCount: r.overflow || r.underflow ? (r.count ?? 0) : 0,
  });
  return { bhs, data };
}

/**
 * SCSI Data-In (RFC 7143 section 11.7). Pass `status` on the last PDU of a read to carry the command's
 * status in it (the S bit, only with F); then the PDU has StatSN and the residual, and no SCSI Response
 * follows. Section 11.7.3: only a successful status may ride in Data-In; an error status with sense
 * data MUST go in a SCSI Response PDU.
 */
export function encodeDataIn(p: {
  itt: number; lun?: bigint; ttt?: number; dataSN: number; bufferOffset: number; data: Uint8Array; final: boolean; expCmdSN: number; maxCmdSN: number;
  status?: { status: number; statSN: number; residual?: Residual };
}): OutPdu {
  if (p.status && !p.final) throw new RangeError('a Data-In with status must be the final one (RFC 7143 section 11.7.3)');
  if (p.status && !DATAIN_STATUSES.has(p.status.status)) {
    throw new RangeError(`status 0x${p.status.status.toString(16)} must be sent in a SCSI Response, not Data-In (RFC 7143 section 11.7.3)`);
  }
  const r = p.status?.residual ?? {};
  const bhs = buildBhs({
    opcode: Opcode.DataIn, ...base0, final: p.final, dataSegmentLength: p.data.length, itt: p.itt, acknowledge: false,
    overflow: r.overflow ?? false, underflow: r.underflow ?? false, statusPresent: p.status !== undefined, status: p.status?.status ?? 0,
    lun: p.lun ?? 0n, ttt: p.ttt ?? RESERVED_TAG, statSN: p.status?.statSN ?? 0, expCmdSN: p.expCmdSN, maxCmdSN: p.maxCmdSN,
    dataSN: p.dataSN, bufferOffset: p.bufferOffset, residualCount: r.overflow || r.underflow ? (r.count ?? 0) : 0,
  });
  return { bhs, data: p.data };
}

/** Ready To Transfer (RFC 7143 section 11.8): asks for `desiredDataTransferLength` bytes at `bufferOffset`. */
export function encodeR2T(p: TargetSN & { itt: number; lun: bigint; ttt: number; r2tSN: number; bufferOffset: number; desiredDataTransferLength: number }): OutPdu {
  return { bhs: buildBhs({ opcode: Opcode.R2T, ...base0, dataSegmentLength: 0, ...p }), data: new Uint8Array(0) };
}

/** Login Response (RFC 7143 section 11.13) carrying the text `data`; `status` is Status-Class << 8 | Status-Detail. */
export function encodeLoginResponse(p: TargetSN & {
  itt: number; isid: number; tsih: number; transit: boolean; cont?: boolean; csg: number; nsg: number; status?: number; data?: Uint8Array;
}): OutPdu {
  const data = p.data ?? new Uint8Array(0);
  const status = p.status ?? 0;
  const bhs = buildBhs({
    opcode: Opcode.LoginResponse, ...base0, final: p.transit, dataSegmentLength: data.length, itt: p.itt, transit: p.transit, cont: p.cont ?? false,
    csg: p.csg, nsg: p.transit ? p.nsg : 0, versionMax: ISCSI_VERSION, versionActive: ISCSI_VERSION, isid: p.isid, tsih: p.tsih,
    statSN: p.statSN, expCmdSN: p.expCmdSN, maxCmdSN: p.maxCmdSN, statusClass: (status >> 8) & 0xff, statusDetail: status & 0xff,
  });
  return { bhs, data };
}

/** Text Response (RFC 7143 section 11.11); `ttt` is 0xffffffff when final (section 11.11.4). */
export function encodeTextResponse(p: TargetSN & { itt: number; lun?: bigint; ttt?: number; final: boolean; cont?: boolean; data: Uint8Array }): OutPdu {
  const bhs = buildBhs({
    opcode: Opcode.TextResponse, ...base0, final: p.final, cont: p.cont ?? false, dataSegmentLength: p.data.length, itt: p.itt,
    lun: p.lun ?? 0n, ttt: p.ttt ?? RESERVED_TAG, statSN: p.statSN, expCmdSN: p.expCmdSN, maxCmdSN: p.maxCmdSN,
  });
  return { bhs, data: p.data };
}

/** Logout Response (RFC 7143 section 11.15). */
export function encodeLogoutResponse(p: TargetSN & { itt: number; response: number; time2Wait?: number; time2Retain?: number }): OutPdu {
  const bhs = buildBhs({
    opcode: Opcode.LogoutResponse, ...base0, dataSegmentLength: 0, itt: p.itt, response: p.response, statSN: p.statSN, expCmdSN: p.expCmdSN,
    maxCmdSN: p.maxCmdSN, time2Wait: p.time2Wait ?? 0, time2Retain: p.time2Retain ?? 0,
  });
  return { bhs, data: new Uint8Array(0) };
}

/**
 * NOP-In (RFC 7143 section 11.19). An answer to a NOP-Out echoes its ITT and data with TTT 0xffffffff;
 * a target ping has ITT 0xffffffff and a TTT of its own.
 */
export function encodeNopIn(p: TargetSN & { itt: number; ttt: number; lun?: bigint; data?: Uint8Array }): OutPdu {
  const data = p.data ?? new Uint8Array(0);
  const bhs = buildBhs({
    opcode: Opcode.NopIn, ...base0, dataSegmentLength: data.length, itt: p.itt, lun: p.lun ?? 0n, ttt: p.ttt,
    statSN: p.statSN, expCmdSN: p.expCmdSN, maxCmdSN: p.maxCmdSN,
  });
  return { bhs, data };
}

/** Reject (RFC 7143 section 11.17): the data segment is the rejected PDU's header, the ITT is 0xffffffff. */
export function encodeReject(p: TargetSN & { reason: RejectReason; rejectedHeader: Uint8Array; dataSN?: number }): OutPdu {
  const data = p.rejectedHeader.slice(0, BHS_LENGTH);
  const bhs = buildBhs({
    opcode: Opcode.Reject, ...base0, dataSegmentLength: data.length, itt: RESERVED_TAG, reason: p.reason, statSN: p.statSN,
    expCmdSN: p.expCmdSN, maxCmdSN: p.maxCmdSN, dataSN: p.dataSN ?? 0,
  });
  return { bhs, data };
}

/** Task Management Function Response (RFC 7143 section 11.6). */
export function encodeTaskMgmtResponse(p: TargetSN & { itt: number; response: number }): OutPdu {
  return { bhs: buildBhs({ opcode: Opcode.TaskMgmtResponse, ...base0, dataSegmentLength: 0, ...p }), data: new Uint8Array(0) };
}

/** Asynchronous Message (RFC 7143 section 11.9), e.g. event 1 "logout requested" with Parameter3 = Time2Wait. */
export function encodeAsyncMessage(p: TargetSN & { asyncEvent: number; lun?: bigint; parameter1?: number; parameter2?: number; parameter3?: number; data?: Uint8Array }): OutPdu {
  const data = p.data ?? new Uint8Array(0);
  const bhs = buildBhs({
    opcode: Opcode.AsyncMessage, ...base0, dataSegmentLength: data.length, itt: RESERVED_TAG, lun: p.lun ?? 0n, statSN: p.statSN,
    expCmdSN: p.expCmdSN, maxCmdSN: p.maxCmdSN, asyncEvent: p.asyncEvent, asyncVCode: 0, parameter1: p.parameter1 ?? 0,
    parameter2: p.parameter2 ?? 0, parameter3: p.parameter3 ?? 0,
  });
  return { bhs, data };
}

// ------------------------------------------------------------------------------------------------ streaming reader

/** One whole PDU from the stream. `bhs`, `ahs` and `data` may be views into the chunks given to push. */
export interface InPdu {
  header: Bhs; bhs: Uint8Array; ahs: Uint8Array; data: Uint8Array;
  /** The data digest did not match: discard the data and answer with Reject reason DataDigestError. */
  dataDigestError: boolean;
}

/** PduReader options: digests in use and the limits of BhsLimits. */
export interface PduReaderOptions extends BhsLimits { digests?: Digests }

/**
 * Cuts a TCP byte stream into PDUs. push() takes chunks of any size and returns the PDUs completed by it.
 * A PDU within one chunk is returned as views of it (the caller must not reuse chunk buffers); one spanning
 * chunks is copied once. The size is checked from the first 48 bytes, before the rest is buffered.
 * A data digest error is reported on the PDU (dataDigestError) so the caller can Reject it and go on (RFC 7143
 * section 7.8); any other error throws PduError (with the offending header) and leaves the reader failed for good.
 */
export class PduReader {
  private chunks: Uint8Array[] = [];
  private offset = 0; // into chunks[0]
  private buffered = 0;
  private failed: PduError | null = null;
  private digests: Digests;
  private limits: BhsLimits;

  constructor(opts: PduReaderOptions = {}) {
    this.digests = opts.digests ?? NO_DIGESTS;
    this.limits = { maxDataSegmentLength: opts.maxDataSegmentLength ?? DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH, maxAhsLength: opts.maxAhsLength ?? 0 };
  }

  /** Switches digests (they start with the first PDU after the last Login Response, RFC 7143 section 13.1). */
  setDigests(d: Digests): void { this.digests = d; }

  /** Changes the limits (after negotiating MaxRecvDataSegmentLength). */
  setLimits(l: BhsLimits): void { this.limits = { ...this.limits, ...l }; }

  /** Bytes held waiting for the rest of a PDU. */
  get pending(): number { return this.buffered; }

  /** The error that failed the reader, or null. Check it after push when push returned PDUs. */
  get error(): PduError | null { return this.failed; }

  /**
   * Adds a chunk; returns every PDU it completes, in order. On a malformed PDU it throws PduError, unless
   * PDUs before it were completed by this chunk: then those are returned, `error` is set, and the next push throws.
   */
  push(chunk: Uint8Array): InPdu[] {
    if (this.failed) throw this.failed;
    if (chunk.length > 0) { this.chunks.push(chunk); this.buffered += chunk.length; }
    const out: InPdu[] = [];
    for (;;) {
      let pdu: InPdu | null;
      try {
        pdu = this.next();
      } catch (e) {
        if (out.length > 0) return out;
        throw e;
      }
      if (!pdu) return out;
      out.push(pdu);
    }
  }

  /** The next whole PDU, or null when more bytes are needed. */
  private next(): InPdu | null {
    if (this.buffered < BHS_LENGTH) return null;
    const head = this.peek(BHS_LENGTH);
    let lengths;
    try {
      lengths = checkLengths(head, this.limits);
    } catch (e) {
      throw this.fail(e, head);
    }
    const total = pduLength(lengths, this.digests);
    if (this.buffered < total) return null;
    const pdu = this.take(total);
    const ahsEnd = BHS_LENGTH + lengths.totalAhsLength;
    let o = ahsEnd;
    const bhs = pdu.subarray(0, BHS_LENGTH);
    if (this.digests.header) {
      // RFC 7143 section 7.8: after a header digest error the PDU boundaries cannot be trusted; at ERL 0 the connection is closed.
      if (getDigest(pdu, o) !== digest(pdu.subarray(0, o))) throw this.fail(new PduError('header digest mismatch', RejectReason.ProtocolError), bhs);
      o += DIGEST_LENGTH;
    }
    let header: Bhs;
    try {
      header = parseBhs(bhs, this.limits);
    } catch (e) {
      throw this.fail(e, bhs);
    }
    const pd = padded(lengths.dataSegmentLength);
    // RFC 7143 section 7.8: a PDU with a data digest error is discarded and answered with a Reject
    // "Data (payload) Digest Error"; the stream stays in step, so the reader goes on.
    const dataDigestError = this.digests.data && lengths.dataSegmentLength > 0 && getDigest(pdu, o + pd) !== digest(pdu.subarray(o, o + pd));
    return { header, bhs, ahs: pdu.subarray(BHS_LENGTH, ahsEnd), data: pdu.subarray(o, o + lengths.dataSegmentLength), dataDigestError };
  }

  private fail(e: unknown, header: Uint8Array): PduError {
    this.failed = e instanceof PduError ? new PduError(e.message, e.reason, e.header ?? header.slice()) : new PduError(String(e), RejectReason.ProtocolError, header.slice());
    return this.failed;
  }

  /** The first n buffered bytes, contiguous; a view when they are in one chunk, else a copy. */
  private peek(n: number): Uint8Array {
    const first = this.chunks[0]!;
    if (first.length - this.offset >= n) return first.subarray(this.offset, this.offset + n);
    const out = new Uint8Array(n);
    let got = 0;
    let off = this.offset;
    for (const c of this.chunks) {
      const k = Math.min(n - got, c.length - off);
      out.set(c.subarray(off, off + k), got);
      got += k;
      off = 0;
      if (got === n) break;
    }
    return out;
  }

  /** Removes and returns the first n buffered bytes (n <= buffered). */
  private take(n: number): Uint8Array {
    const out = this.peek(n);
    let left = n;
    while (left > 0) {
      const c = this.chunks[0]!;
      const avail = c.length - this.offset;
      if (avail > left) { this.offset += left; left = 0; } else { left -= avail; this.chunks.shift(); this.offset = 0; }
    }
    this.buffered -= n;
    return out;
  }
}
