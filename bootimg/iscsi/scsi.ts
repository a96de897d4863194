// The SCSI block-device command set the iSCSI target answers: CDB in, response bytes or a typed I/O operation out.
import { be16, be32, be64, cdbLength, Op, put16, put32, put64, ServiceAction } from './scsi-cdb.js';
import { mediumAccess, MEDIUM_OPS, outOfRange, type MediumResult } from './scsi-read-write.js';
import { checkCondition, encodeFixedSense, invalidField, invalidParameter, Sense, type CheckCondition, type SenseCondition } from './scsi-sense.js';
import { standardInquiry, vpdPageFor, type ScsiDisk } from './scsi-vpd.js';

export { capacityChanged, makeScsiDisk, type ScsiDisk, type ScsiDiskOptions } from './scsi-vpd.js';
export { checkCondition, miscompareAt, readErrorAt, writeErrorAt, Sense, type CheckCondition } from './scsi-sense.js';

/**
 * What a CDB asks for. `data-in`, `good` and `check` are complete answers; the others are I/O the
 * caller performs (with the Data-Out it receives, for writes) before it answers GOOD or CHECK CONDITION.
 */
export type ScsiResult =
  | { kind: 'data-in'; data: Uint8Array }
  /** good, check, read, write, verify (BYTCHK 0, 1 or 3), write-verify, or-write: see scsi-read-write.ts. */
  | MediumResult
  | { kind: 'sync'; lba: bigint; blocks: bigint; immed: boolean }
  /** UNMAP: receive `length` bytes of Data-Out, then decode them with `parseUnmapList`. */
  | { kind: 'unmap-params'; length: number }
  /** WRITE SAME: one block of Data-Out (none when `ndob`) written to every block of the range, or the range unmapped. */
  | { kind: 'write-same'; lba: bigint; blocks: number; unmap: boolean; ndob: boolean }
  /** COMPARE AND WRITE: Data-Out holds 2 x `blocks` blocks, the verify data then the write data (SBC-3 5.3). */
  | { kind: 'compare-and-write'; lba: bigint; blocks: number; fua: boolean }
  /** PERSISTENT RESERVE IN (SPC-4 6.15): answered from the target's Reservations. */
  | { kind: 'persistent-reserve-in'; serviceAction: number; allocationLength: number }
  /** PERSISTENT RESERVE OUT (SPC-4 6.16): receive the `length` (24) byte parameter list, then apply it to the Reservations. */
  | { kind: 'persistent-reserve-out'; serviceAction: number; scopeType: number; length: number };

/** One UNMAP block descriptor (SBC-3 5.28.2, Table 96). */
export interface UnmapRange {
  lba: bigint;
  blocks: number;
}

/**
 * Answers one CDB for `disk`. `expectedLength` is the iSCSI Expected Data Transfer Length (or any
 * transport limit): data-in is truncated to the smaller of it and the CDB's ALLOCATION LENGTH.
 * Never throws; any malformed CDB gets a CHECK CONDITION.
 */
export function handleCdb(cdb: Uint8Array, disk: ScsiDisk, expectedLength = Infinity): ScsiResult {
  if (cdb.length === 0) return invalidField(0);
  const op = cdb[0]!;
  const len = cdbLength(op);
  if (len === undefined) return checkCondition(Sense.invalidOpcode);
  if (cdb.length < len) return invalidField(cdb.length);
  // SAM-5 5.2: NACA in the CONTROL byte; this target does not support ACA.
  if (cdb[len - 1]! & 0x04) return invalidField(len - 1, 2);
  const r = dispatch(op, cdb, disk);
  if (r.kind === 'data-in' && r.data.length > expectedLength) {
    return { kind: 'data-in', data: r.data.subarray(0, Math.max(0, Math.floor(expectedLength))) };
  }
  return r;
}

/** One flat dispatcher: one small function per command. */
function dispatch(op: number, cdb: Uint8Array, disk: ScsiDisk): ScsiResult {
  if (MEDIUM_OPS.has(op)) return mediumAccess(cdb, disk);
  switch (op) {
    case Op.TEST_UNIT_READY: return { kind: 'good' };
    case Op.REQUEST_SENSE: return requestSense(cdb);
    case Op.INQUIRY: return inquiry(cdb, disk);
    case Op.MODE_SENSE_6: return modeSense(cdb, disk, false);
    case Op.MODE_SENSE_10: return modeSense(cdb, disk, true);
    case Op.READ_CAPACITY_10: return readCapacity10(cdb, disk);
    case Op.SERVICE_ACTION_IN_16:
      if ((cdb[1]! & 0x1f) === ServiceAction.READ_CAPACITY_16) return readCapacity16(cdb, disk);
      return invalidField(1, 4); // SPC-4 4.2.5.1: an unsupported service action is an invalid field
    case Op.SYNCHRONIZE_CACHE_10: return synchronizeCache(cdb, disk, BigInt(be32(cdb, 2)), BigInt(be16(cdb, 7)));
    case Op.SYNCHRONIZE_CACHE_16: return synchronizeCache(cdb, disk, be64(cdb, 2), BigInt(be32(cdb, 10)));
    case Op.UNMAP: return unmap(cdb, disk);
    case Op.WRITE_SAME_10: return writeSame(cdb, disk, BigInt(be32(cdb, 2)), be16(cdb, 7));
    case Op.WRITE_SAME_16: return writeSame(cdb, disk, be64(cdb, 2), be32(cdb, 10));
    case Op.COMPARE_AND_WRITE: return compareAndWrite(cdb, disk);
    case Op.REPORT_LUNS: return reportLuns(cdb);
    case Op.MAINTENANCE_IN:
      if ((cdb[1]! & 0x1f) === ServiceAction.REPORT_SUPPORTED_OPERATION_CODES) return reportSupportedOpcodes(cdb, disk);
      return invalidField(1, 4);
    case Op.PERSISTENT_RESERVE_IN: return persistentReserveIn(cdb);
    case Op.PERSISTENT_RESERVE_OUT: return persistentReserveOut(cdb);
    case Op.START_STOP_UNIT: return startStopUnit(cdb);
    case Op.PREVENT_ALLOW_MEDIUM_REMOVAL: return preventAllowMediumRemoval(cdb);
    case Op.READ_DEFECT_DATA_10: return readDefectData(cdb, false);
    case Op.READ_DEFECT_DATA_12: return readDefectData(cdb, true);
    default: return checkCondition(Sense.invalidOpcode);
  }
}

/** Data-In truncated to the ALLOCATION LENGTH (SPC-4 4.2.5.6). */
function dataIn(data: Uint8Array, allocationLength: number): ScsiResult {
  return { kind: 'data-in', data: data.length > allocationLength ? data.subarray(0, allocationLength) : data };
}

/** INQUIRY (SPC-4 6.4.1, Table 141): EVPD in byte 1 bit 0, PAGE CODE in byte 2, ALLOCATION LENGTH in bytes 3-4. */
function inquiry(cdb: Uint8Array, disk: ScsiDisk): ScsiResult {
  const evpd = cdb[1]! & 0x01;
  const alloc = be16(cdb, 3);
  if (cdb[1]! & 0xfe) return invalidField(1); // CMDDT (obsolete) and reserved bits
  if (!evpd) {
    // SPC-4 6.4.1: "If the PAGE CODE field is not set to zero when the EVPD bit is set to zero, the
    // command shall be terminated with CHECK CONDITION ... INVALID FIELD IN CDB."
    if (cdb[2] !== 0) return invalidField(2);
    return dataIn(standardInquiry(disk), alloc);
  }
  const page = vpdPageFor(cdb[2]!, disk);
  if (!page) return invalidField(2);
  return dataIn(page, alloc);
}

/**
 * REQUEST SENSE (SPC-4 6.39), fixed format: the sense of `pending`, a unit attention condition the session holds (its
 * TaskSet passes it, and clears it when this answers data), else NO SENSE (iSCSI carries a command's sense with its status).
 */
export function requestSense(cdb: Uint8Array, pending: SenseCondition = Sense.noSense): ScsiResult {
  if (cdb[1]! & 0x01) return invalidField(1, 0); // DESC: descriptor format is not supported
  return dataIn(encodeFixedSense(pending), cdb[4]!);
}

/** READ CAPACITY (10) (SBC-3 5.15, Table 62): last LBA (0xFFFFFFFF when it does not fit) and block length. */
function readCapacity10(cdb: Uint8Array, disk: ScsiDisk): ScsiResult {
  // SBC-3 5.15.1: with PMI zero, a non-zero LOGICAL BLOCK ADDRESS is an invalid field.
  if (!(cdb[8]! & 0x01) && be32(cdb, 2) !== 0) return invalidField(2);
  const b = new Uint8Array(8);
  const last = disk.blocks - 1n;
  put32(b, 0, last > 0xfffffffen ? 0xffffffff : Number(last));
  put32(b, 4, disk.blockSize);
  return { kind: 'data-in', data: b };
}

/**
 * READ CAPACITY (16) (SBC-3 5.16, Table 66): 8-byte last LBA, block length, one logical block per
 * physical block, LBPME (byte 14 bit 7) when thin provisioned and LBPRZ (bit 6) when unmapped reads zero.
 */
function readCapacity16(cdb: Uint8Array, disk: ScsiDisk): ScsiResult {
  if (!(cdb[14]! & 0x01) && be64(cdb, 2) !== 0n) return invalidField(2);
  const b = new Uint8Array(32);
  put64(b, 0, disk.blocks - 1n);
  put32(b, 8, disk.blockSize);
  if (disk.thinProvisioning) b[14] = 0x80 | (disk.unmapReadsZero ? 0x40 : 0);
  return dataIn(b, be32(cdb, 10));
}

/** SYNCHRONIZE CACHE (10)/(16) (SBC-3 5.22, 5.23): NUMBER OF LOGICAL BLOCKS zero means through the last LBA. */
function synchronizeCache(cdb: Uint8Array, disk: ScsiDisk, lba: bigint, blocks: bigint): ScsiResult {
  if (lba > disk.blocks || lba + blocks > disk.blocks) return checkCondition(Sense.lbaOutOfRange);
  return { kind: 'sync', lba, blocks, immed: (cdb[1]! & 0x02) !== 0 };
}

/** UNMAP (SBC-3 5.28, Table 94): the descriptors arrive as Data-Out of PARAMETER LIST LENGTH bytes. */
function unmap(cdb: Uint8Array, disk: ScsiDisk): ScsiResult {
  if (!disk.thinProvisioning) return checkCondition(Sense.invalidOpcode);
  if (disk.readOnly) return checkCondition(Sense.writeProtected);
  if (cdb[1]! & 0x01) return invalidField(1, 0); // ANCHOR: anchored blocks are not supported
  const length = be16(cdb, 7);
  // SBC-3 5.28.1: "A PARAMETER LIST LENGTH set to zero specifies that no data shall be sent."
  if (length === 0) return { kind: 'good' };
  return { kind: 'unmap-params', length };
}

/**
 * Decodes UNMAP's parameter list (SBC-3 5.28.2, Tables 95-96): an 8-byte header then 16-byte block
 * descriptors (8-byte LBA, 4-byte block count). Zero-length descriptors are dropped; a range past the
 * end is LBA OUT OF RANGE; more descriptors or blocks than VPD 0xB0 allows is INVALID FIELD IN PARAMETER LIST.
 */
export function parseUnmapList(bytes: Uint8Array, disk: ScsiDisk): UnmapRange[] | CheckCondition {
  if (bytes.length === 0) return [];
  // SBC-3 5.28.2: a parameter list length greater than zero and less than eight is a PARAMETER LIST LENGTH ERROR.
  if (bytes.length < 8) return checkCondition(Sense.parameterListLengthError);
  const dataLength = be16(bytes, 0);
  const descLength = be16(bytes, 2);
  if (dataLength + 2 > bytes.length || descLength + 8 > bytes.length) return checkCondition(Sense.parameterListLengthError);
  const count = Math.floor(descLength / 16); // a trailing partial descriptor is ignored
  if (count > disk.maxUnmapDescriptors) return invalidParameter(2);
  const ranges: UnmapRange[] = [];
  let total = 0;
  for (let i = 0; i < count; i++) {
    const at = 8 + 16 * i;
    const lba = be64(bytes, at);
    const blocks = be32(bytes, at + 8);
    if (blocks === 0) continue;
    total += blocks;
    if (blocks > disk.maxUnmapBlocks || total > disk.maxUnmapBlocks) return invalidParameter(at + 8);
    const bad = outOfRange(disk, lba, BigInt(blocks));
    if (bad) return bad;
    ranges.push({ lba, blocks });
  }
  return ranges;
}

/**
 * WRITE SAME (10)/(16) (SBC-3 5.41, 5.42): UNMAP in byte 1 bit 3, ANCHOR bit 4, NDOB (16 only) bit 0;
 * LBDATA/PBDATA are refused. VPD 0xB0 sets WSNZ, so zero blocks is INVALID FIELD IN CDB.
 */
function writeSame(cdb: Uint8Array, disk: ScsiDisk, lba: bigint, blocks: number): ScsiResult {
  const is16 = cdb[0] === Op.WRITE_SAME_16;
  const lengthByte = is16 ? 10 : 7;
  if (cdb[1]! & 0xe0) return invalidField(1, 7); // WRPROTECT
  if (cdb[1]! & 0x10) return invalidField(1, 4); // ANCHOR
  if (cdb[1]! & 0x06) return invalidField(1, 2); // PBDATA/LBDATA (obsolete)
  if (!is16 && cdb[1]! & 0x01) return invalidField(1, 0); // reserved in WRITE SAME (10)
  if (disk.readOnly) return checkCondition(Sense.writeProtected);
  const unmap = (cdb[1]! & 0x08) !== 0;
  const ndob = is16 && (cdb[1]! & 0x01) !== 0;
  if (unmap && !disk.thinProvisioning) return invalidField(1, 3);
  if (blocks === 0 || blocks > disk.maxWriteSameBlocks) return invalidField(lengthByte);
  const bad = outOfRange(disk, lba, BigInt(blocks));
  if (bad) return bad;
  return { kind: 'write-same', lba, blocks, unmap, ndob };
}

/** COMPARE AND WRITE (SBC-3 5.3, Table 15): LBA bytes 2-9, NUMBER OF LOGICAL BLOCKS byte 13 (VPD 0xB0 limit). */
function compareAndWrite(cdb: Uint8Array, disk: ScsiDisk): ScsiResult {
  if (cdb[1]! & 0xe0) return invalidField(1, 7); // WRPROTECT
  if (disk.readOnly) return checkCondition(Sense.writeProtected);
  const lba = be64(cdb, 2);
  const blocks = cdb[13]!;
  if (blocks > disk.maxCompareAndWriteBlocks) return invalidField(13);
  const bad = outOfRange(disk, lba, BigInt(blocks));
  if (bad) return bad;
  // SBC-3 5.3: "A NUMBER OF LOGICAL BLOCKS field set to zero specifies that no read operations shall be performed ..."
  if (blocks === 0) return { kind: 'good' };
  return { kind: 'compare-and-write', lba, blocks, fua: (cdb[1]! & 0x08) !== 0 };
}

/** PERSISTENT RESERVE IN (SPC-4 6.15.1, Table 162): SERVICE ACTION 0-3 in byte 1, ALLOCATION LENGTH in bytes 7-8. */
function persistentReserveIn(cdb: Uint8Array): ScsiResult {
  const serviceAction = cdb[1]! & 0x1f;
  if (serviceAction > 3) return invalidField(1, 4);
  return { kind: 'persistent-reserve-in', serviceAction, allocationLength: be16(cdb, 7) };
}

/**
 * PERSISTENT RESERVE OUT (SPC-4 6.16.1, Table 171): SERVICE ACTION in byte 1 (REGISTER AND MOVE, 7, is not supported),
 * SCOPE and TYPE in byte 2, PARAMETER LIST LENGTH in bytes 5-8. SPC-4 6.16.3: with SPEC_I_PT 0 the list is 24 bytes, "If
 * the parameter list length is not 24 ... the command shall be terminated with ... PARAMETER LIST LENGTH ERROR".
 */
function persistentReserveOut(cdb: Uint8Array): ScsiResult {
  const serviceAction = cdb[1]! & 0x1f;
  if (serviceAction > 6) return invalidField(1, 4);
  const length = be32(cdb, 5);
  if (length !== 24) return checkCondition(Sense.parameterListLengthError);
  return { kind: 'persistent-reserve-out', serviceAction, scopeType: cdb[2]!, length };
}

/**
 * START STOP UNIT (SBC-3 r36 5.25): POWER CONDITION in byte 4 bits 7-4, POWER CONDITION MODIFIER in byte 3, LOEJ bit 1 and
 * START bit 0 of byte 4. The logical unit has no power conditions (no Power Condition mode page), so a POWER CONDITION or
 * modifier other than 0 (START_VALID) is an invalid field. START 1 asks for the active state, where the unit always is:
 * GOOD (with LOEJ 1, "load the medium", the medium is loaded already). START 0 would stop the unit for every session of
 * the target (and, replicated, on every node) and is refused as an invalid field, as Linux LIO does; IMMED changes nothing.
 */
function startStopUnit(cdb: Uint8Array): ScsiResult {
  if (cdb[4]! & 0xf0) return invalidField(4, 7);
  if (cdb[3]! & 0x0f) return invalidField(3, 3);
  if (!(cdb[4]! & 0x01)) return invalidField(4, 0);
  return { kind: 'good' };
}

/**
 * PREVENT ALLOW MEDIUM REMOVAL (SBC-3 r36 5.10): PREVENT in byte 4 bits 1-0, 00b allow and 01b prevent; 10b and 11b are
 * obsolete (media changers) and refused. The medium is not removable (INQUIRY RMB 0), so nothing can remove it and both
 * states hold trivially: GOOD, with nothing to remember.
 */
function preventAllowMediumRemoval(cdb: Uint8Array): ScsiResult {
  if (cdb[4]! & 0x02) return invalidField(4, 1);
  return { kind: 'good' };
}

/**
 * READ DEFECT DATA (10)/(12) (SBC-3 r36 5.18, 5.19): REQ_PLIST (bit 4), REQ_GLIST (bit 3) and DEFECT LIST FORMAT (bits 2-0) in
 * byte 2 (10) or byte 1 (12); ALLOCATION LENGTH in bytes 7-8 (10) or 6-9 (12). The volume has no defects: the lists asked
 * for are returned valid (PLISTV, GLISTV) and empty, in the requested format (an empty list has the same bytes in every
 * format), after a 4-byte (10) or 8-byte (12, with GENERATION CODE 0) header. Format 111b is reserved.
 */
function readDefectData(cdb: Uint8Array, twelve: boolean): ScsiResult {
  const flagsByte = twelve ? 1 : 2;
  const flags = cdb[flagsByte]! & 0x1f;
  if ((flags & 0x07) === 0x07) return invalidField(flagsByte, 2);
  const b = new Uint8Array(twelve ? 8 : 4);
  b[1] = flags; // PLISTV = REQ_PLIST, GLISTV = REQ_GLIST, DEFECT LIST FORMAT as requested; DEFECT LIST LENGTH 0
  return dataIn(b, twelve ? be32(cdb, 6) : be16(cdb, 7));
}

/** REPORT LUNS (SPC-4 6.33, Table 282): LUN 0 only; an ALLOCATION LENGTH under 16 is INVALID FIELD IN CDB. */
function reportLuns(cdb: Uint8Array): ScsiResult {
  const alloc = be32(cdb, 6);
  if (alloc < 16) return invalidField(6);
  const select = cdb[2]!;
  if (select > 0x02 && !(select >= 0x10 && select <= 0x12)) return invalidField(2);
  const b = new Uint8Array(16);
  put32(b, 0, 8); // LUN LIST LENGTH: one 8-byte LUN, LUN 0
  return dataIn(b, alloc);
}

/** MODE SENSE pages served, in page-code order (SPC-4 7.5.1). */
const MODE_PAGES = [0x08, 0x0a, 0x1c] as const;

/** One mode page for page control `pc` (0 current, 1 changeable, 2 default); no page is changeable. */
function modePage(code: number, disk: ScsiDisk, pc: number): Uint8Array {
  switch (code) {
    case 0x08: { // Caching (SBC-3 6.4.5, Table 186), page length 0x12
      const b = new Uint8Array(20);
      b[0] = 0x08;
      b[1] = 0x12;
      if (pc !== 1 && disk.writeCache) b[2] = 0x04; // WCE
      return b;
    }
    case 0x0a: { // Control (SPC-4 7.5.8, Table 457), page length 0x0A
      const b = new Uint8Array(12);
      b[0] = 0x0a;
      b[1] = 0x0a;
      if (pc !== 1) {
        b[3] = 0x10; // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering; QERR 0
        put16(b, 8, 0xffff); // BUSY TIMEOUT PERIOD: unlimited
      }
      return b;
    }
    default: { // 0x1C Informational Exceptions Control (SPC-4 7.5.11, Table 471), page length 0x0A
      const b = new Uint8Array(12);
      b[0] = 0x1c;
      b[1] = 0x0a;
      if (pc !== 1) b[2] = 0x08; // DEXCPT: no informational exceptions are reported
      return b;
    }
  }
}

/**
 * MODE SENSE (6)/(10) (SPC-4 6.11, 6.12): header (SPC-4 7.5.5, Tables 453-454) with DPOFUA (and WP
 * when read-only) in the device-specific parameter (SBC-3 6.4.1, Table 183), a short or long LBA
 * block descriptor unless DBD (SBC-3 6.4.2), then the requested page or all pages (0x3F).
 */
function modeSense(cdb: Uint8Array, disk: ScsiDisk, ten: boolean): ScsiResult {
  const dbd = (cdb[1]! & 0x08) !== 0;
  const llbaa = ten && (cdb[1]! & 0x10) !== 0;
  const pc = cdb[2]! >> 6;
  const page = cdb[2]! & 0x3f;
  const subpage = cdb[3]!;
  const alloc = ten ? be16(cdb, 7) : cdb[4]!;
  if (pc === 3) return checkCondition({ ...Sense.savingParametersNotSupported, field: { cd: true, byte: 2, bit: 7 } });
  let pages: Uint8Array[];
  if (page === 0x3f && (subpage === 0x00 || subpage === 0xff)) pages = MODE_PAGES.map((p) => modePage(p, disk, pc));
  else if ((MODE_PAGES as readonly number[]).includes(page) && subpage === 0x00) pages = [modePage(page, disk, pc)];
  else return invalidField(subpage !== 0 ? 3 : 2);
  let desc = new Uint8Array(0);
  if (!dbd) {
    if (llbaa) { // long LBA block descriptor (SBC-3 6.4.2.3, Table 182)
      desc = new Uint8Array(16);
      put64(desc, 0, pc === 1 ? 0n : disk.blocks);
      if (pc !== 1) put32(desc, 12, disk.blockSize);
    } else { // short LBA block descriptor (SBC-3 6.4.2.2, Table 181)
      desc = new Uint8Array(8);
      if (pc !== 1) {
        put32(desc, 0, disk.blocks > 0xffffffffn ? 0xffffffff : Number(disk.blocks));
        put32(desc, 4, disk.blockSize); // byte 4 reserved, bytes 5-7 LOGICAL BLOCK LENGTH
      }
    }
  }
  const headerLength = ten ? 8 : 4;
  const pagesLength = pages.reduce((n, p) => n + p.length, 0);
  const b = new Uint8Array(headerLength + desc.length + pagesLength);
  const deviceSpecific = (disk.readOnly ? 0x80 : 0) | 0x10; // WP, DPOFUA
  if (ten) {
    put16(b, 0, b.length - 2); // MODE DATA LENGTH excludes itself
    b[3] = deviceSpecific;
    b[4] = llbaa && !dbd ? 0x01 : 0; // LONGLBA
    put16(b, 6, desc.length);
  } else {
    b[0] = b.length - 1;
    b[2] = deviceSpecific;
    b[3] = desc.length;
  }
  b.set(desc, headerLength);
  let at = headerLength + desc.length;
  for (const p of pages) {
    b.set(p, at);
    at += p.length;
  }
  return dataIn(b, alloc);
}

/** One supported command: opcode, service action, and its CDB USAGE DATA (SPC-4 6.35.3, Table 294). */
interface CommandInfo {
  op: number;
  sa?: number;
  usage: number[];
}

const ff4 = [0xff, 0xff, 0xff, 0xff];
const ff8 = [...ff4, ...ff4];
/** Every command this target supports, in opcode order (the CONTROL byte's NACA is not supported, so its mask is 0). */
export const SUPPORTED_COMMANDS: readonly CommandInfo[] = [
  { op: Op.TEST_UNIT_READY, usage: [0x00, 0, 0, 0, 0, 0] },
  { op: Op.REQUEST_SENSE, usage: [0x03, 0x00, 0, 0, 0xff, 0] },
  { op: Op.READ_6, usage: [0x08, 0x1f, 0xff, 0xff, 0xff, 0] },
  { op: Op.WRITE_6, usage: [0x0a, 0x1f, 0xff, 0xff, 0xff, 0] },
  { op: Op.INQUIRY, usage: [0x12, 0x01, 0xff, 0xff, 0xff, 0] },
  { op: Op.MODE_SENSE_6, usage: [0x1a, 0x08, 0xff, 0xff, 0xff, 0] },
  { op: Op.START_STOP_UNIT, usage: [0x1b, 0x01, 0, 0x0f, 0xf3, 0] },
  { op: Op.PREVENT_ALLOW_MEDIUM_REMOVAL, usage: [0x1e, 0, 0, 0, 0x03, 0] },
  { op: Op.READ_CAPACITY_10, usage: [0x25, 0, ...ff4, 0, 0, 0x01, 0] },
  { op: Op.READ_10, usage: [0x28, 0x18, ...ff4, 0, 0xff, 0xff, 0] },
  { op: Op.WRITE_10, usage: [0x2a, 0x18, ...ff4, 0, 0xff, 0xff, 0] },
  { op: Op.WRITE_AND_VERIFY_10, usage: [0x2e, 0x16, ...ff4, 0, 0xff, 0xff, 0] },
  { op: Op.VERIFY_10, usage: [0x2f, 0x16, ...ff4, 0, 0xff, 0xff, 0] },
  { op: Op.PRE_FETCH_10, usage: [0x34, 0x02, ...ff4, 0, 0xff, 0xff, 0] },
  { op: Op.SYNCHRONIZE_CACHE_10, usage: [0x35, 0x02, ...ff4, 0, 0xff, 0xff, 0] },
  { op: Op.READ_DEFECT_DATA_10, usage: [0x37, 0, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0] },
  { op: Op.WRITE_SAME_10, usage: [0x41, 0x08, ...ff4, 0, 0xff, 0xff, 0] },
  { op: Op.UNMAP, usage: [0x42, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0] },
  { op: Op.MODE_SENSE_10, usage: [0x5a, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0] },
  ...[0, 1, 2, 3].map((sa) => ({ op: Op.PERSISTENT_RESERVE_IN, sa, usage: [0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0] })),
  ...[0, 1, 2, 3, 4, 5, 6].map((sa) => ({ op: Op.PERSISTENT_RESERVE_OUT, sa, usage: [0x5f, 0x1f, 0xff, 0, 0, ...ff4, 0] })),
  { op: Op.READ_16, usage: [0x88, 0x18, ...ff8, ...ff4, 0, 0] },
  { op: Op.COMPARE_AND_WRITE, usage: [0x89, 0x18, ...ff8, 0, 0, 0, 0xff, 0, 0] },
  { op: Op.WRITE_16, usage: [0x8a, 0x18, ...ff8, ...ff4, 0, 0] },
  { op: Op.ORWRITE_16, usage: [0x8b, 0x18, ...ff8, ...ff4, 0, 0] },
  { op: Op.WRITE_AND_VERIFY_16, usage: [0x8e, 0x16, ...ff8, ...ff4, 0, 0] },
  { op: Op.VERIFY_16, usage: [0x8f, 0x16, ...ff8, ...ff4, 0, 0] },
  { op: Op.PRE_FETCH_16, usage: [0x90, 0x02, ...ff8, ...ff4, 0, 0] },
  { op: Op.SYNCHRONIZE_CACHE_16, usage: [0x91, 0x02, ...ff8, ...ff4, 0, 0] },
  { op: Op.WRITE_SAME_16, usage: [0x93, 0x09, ...ff8, ...ff4, 0, 0] },
  { op: Op.SERVICE_ACTION_IN_16, sa: ServiceAction.READ_CAPACITY_16, usage: [0x9e, 0x1f, ...ff8, ...ff4, 0x01, 0] },
  { op: Op.REPORT_LUNS, usage: [0xa0, 0, 0xff, 0, 0, 0, ...ff4, 0, 0] },
  { op: Op.MAINTENANCE_IN, sa: ServiceAction.REPORT_SUPPORTED_OPERATION_CODES, usage: [0xa3, 0x1f, 0x87, 0xff, 0xff, 0xff, ...ff4, 0, 0] },
  { op: Op.READ_12, usage: [0xa8, 0x18, ...ff4, ...ff4, 0, 0] },
  { op: Op.WRITE_12, usage: [0xaa, 0x18, ...ff4, ...ff4, 0, 0] },
  { op: Op.WRITE_AND_VERIFY_12, usage: [0xae, 0x16, ...ff4, ...ff4, 0, 0] },
  { op: Op.VERIFY_12, usage: [0xaf, 0x16, ...ff4, ...ff4, 0, 0] },
  { op: Op.READ_DEFECT_DATA_12, usage: [0xb7, 0x1f, ...ff4, ...ff4, 0, 0] },
];

/** Command timeouts descriptor (SPC-4 6.35.4, Table 295): length 0x0A, timeouts not specified. */
function timeoutsDescriptor(): Uint8Array {
  const b = new Uint8Array(12);
  put16(b, 0, 0x0a);
  return b;
}

/**
 * REPORT SUPPORTED OPERATION CODES (SPC-4 6.35): REPORTING OPTIONS 0 gives the all-commands format
 * (Tables 291-292, 8-byte descriptors, 20 with RCTD); 1, 2 and 3 (SPC-5) give the one-command format (Table 293)
 * with SUPPORT 3 (supported) or 1 (not supported) and the CDB usage data.
 */
function reportSupportedOpcodes(cdb: Uint8Array, disk: ScsiDisk): ScsiResult {
  // UNMAP answers INVALID COMMAND OPERATION CODE on a disk without thin provisioning, so it is not listed there.
  const commands = disk.thinProvisioning ? SUPPORTED_COMMANDS : SUPPORTED_COMMANDS.filter((c) => c.op !== Op.UNMAP);
  const rctd = (cdb[2]! & 0x80) !== 0;
  const options = cdb[2]! & 0x07;
  const op = cdb[3]!;
  const sa = be16(cdb, 4);
  const alloc = be32(cdb, 6);
  if (options === 0) {
    const size = rctd ? 20 : 8;
    const b = new Uint8Array(4 + commands.length * size);
    put32(b, 0, b.length - 4); // COMMAND DATA LENGTH
    commands.forEach((c, i) => {
      const at = 4 + i * size;
      b[at] = c.op;
      put16(b, at + 2, c.sa ?? 0);
      b[at + 5] = (rctd ? 0x02 : 0) | (c.sa !== undefined ? 0x01 : 0); // CTDP, SERVACTV
      put16(b, at + 6, c.usage.length);
      if (rctd) b.set(timeoutsDescriptor(), at + 8);
    });
    return dataIn(b, alloc);
  }
  if (options < 1 || options > 3) return invalidField(2, 2);
  const sameOp = commands.filter((c) => c.op === op);
  const hasServiceActions = sameOp.length > 0 && sameOp[0]!.sa !== undefined;
  // SPC-4 6.35.2: REPORTING OPTIONS 1 for a command that has service actions, or 2 for one that has none, is an invalid field.
  if (options === 1 && hasServiceActions) return invalidField(2, 2);
  if (options === 2 && sameOp.length > 0 && !hasServiceActions) return invalidField(2, 2);
  // SPC-5 6.36.2 REPORTING OPTIONS 3 (what Linux sends with a service action): the service action counts only where the opcode has them.
  const found = sameOp.find((c) => !hasServiceActions || c.sa === sa);
  const usage = found ? found.usage : [];
  const b = new Uint8Array(4 + usage.length + (rctd && found ? 12 : 0));
  b[1] = (rctd && found ? 0x80 : 0) | (found ? 0x03 : 0x01); // CTDP, SUPPORT
  put16(b, 2, usage.length);
  b.set(usage, 4);
  if (rctd && found) b.set(timeoutsDescriptor(), 4 + usage.length);
  return dataIn(b, alloc);
}
