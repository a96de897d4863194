// The medium-access CDBs of the SCSI block command set (SBC-3 5.x): READ, WRITE, VERIFY, WRITE AND VERIFY, ORWRITE and
// PRE-FETCH in their 6, 10, 12 and 16-byte forms, decoded and range-checked into the I/O the caller performs.
// Section numbers are those of SBC-3 r36.
import { be16, be24, be32, be64, Op } from './scsi-cdb.js';
import { checkCondition, invalidField, Sense, type CheckCondition } from './scsi-sense.js';
import type { ScsiDisk } from './scsi-vpd.js';

/** What a medium-access CDB asks for (a subset of ScsiResult). */
export type MediumResult =
  | { kind: 'good' }
  | CheckCondition
  | { kind: 'read'; lba: bigint; blocks: number; fua: boolean }
  | { kind: 'write'; lba: bigint; blocks: number; fua: boolean }
  /** VERIFY: bytchk 0 checks the medium only; 1 compares `blocks` blocks of Data-Out; 3 compares one block against each (SBC-3 5.29). */
  | { kind: 'verify'; lba: bigint; blocks: number; bytchk: 0 | 1 | 3 }
  /** WRITE AND VERIFY: `blocks` blocks of Data-Out written, then read back; with `bytchk` compared with the Data-Out (SBC-3 5.38). */
  | { kind: 'write-verify'; lba: bigint; blocks: number; bytchk: boolean }
  /** ORWRITE (16): `blocks` blocks of Data-Out ORed into the blocks on the medium, atomically (SBC-3 5.5). */
  | { kind: 'or-write'; lba: bigint; blocks: number; fua: boolean };

/** Where the LBA and TRANSFER LENGTH fields of a 10, 12 and 16-byte medium-access CDB are, and their widths. */
interface Layout { lba: (cdb: Uint8Array) => bigint; length: (cdb: Uint8Array) => number; lengthByte: number }

const TEN: Layout = { lba: (c) => BigInt(be32(c, 2)), length: (c) => be16(c, 7), lengthByte: 7 };
const TWELVE: Layout = { lba: (c) => BigInt(be32(c, 2)), length: (c) => be32(c, 6), lengthByte: 6 };
const SIXTEEN: Layout = { lba: (c) => be64(c, 2), length: (c) => be32(c, 10), lengthByte: 10 };

/** LBA range check (SBC-3 4.5): an LBA past the last, or a range ending past it, is LBA OUT OF RANGE. */
export function outOfRange(disk: ScsiDisk, lba: bigint, blocks: bigint): CheckCondition | undefined {
  if (lba >= disk.blocks || lba + blocks > disk.blocks) return checkCondition(Sense.lbaOutOfRange);
  return undefined;
}

/**
 * The blocks a medium-access CDB names, checked: a TRANSFER LENGTH over the transfer limit is INVALID FIELD IN CDB (at
 * `lengthByte`), a range past the end LBA OUT OF RANGE, and zero blocks GOOD (SBC-3: "A TRANSFER LENGTH field set to zero
 * specifies that no logical blocks shall be transferred ... not an error"). Returns the result to answer, or the extent.
 */
function extent(disk: ScsiDisk, lba: bigint, blocks: number, lengthByte: number): MediumResult | { lba: bigint; blocks: number } {
  if (blocks > disk.maxTransferBlocks) return invalidField(lengthByte);
  const bad = outOfRange(disk, lba, BigInt(blocks));
  if (bad) return bad;
  if (blocks === 0) return { kind: 'good' };
  return { lba, blocks };
}

/** Decodes a medium-access CDB (the opcodes of MEDIUM_OPS); anything else is INVALID COMMAND OPERATION CODE. */
export function mediumAccess(cdb: Uint8Array, disk: ScsiDisk): MediumResult {
  switch (cdb[0]) {
    case Op.READ_6: return readWrite6(cdb, disk, 'read');
    case Op.WRITE_6: return readWrite6(cdb, disk, 'write');
    case Op.READ_10: return readWrite(cdb, disk, 'read', TEN);
    case Op.READ_12: return readWrite(cdb, disk, 'read', TWELVE);
    case Op.READ_16: return readWrite(cdb, disk, 'read', SIXTEEN);
    case Op.WRITE_10: return readWrite(cdb, disk, 'write', TEN);
    case Op.WRITE_12: return readWrite(cdb, disk, 'write', TWELVE);
    case Op.WRITE_16: return readWrite(cdb, disk, 'write', SIXTEEN);
    case Op.VERIFY_10: return verify(cdb, disk, TEN);
    case Op.VERIFY_12: return verify(cdb, disk, TWELVE);
    case Op.VERIFY_16: return verify(cdb, disk, SIXTEEN);
    case Op.WRITE_AND_VERIFY_10: return writeAndVerify(cdb, disk, TEN);
    case Op.WRITE_AND_VERIFY_12: return writeAndVerify(cdb, disk, TWELVE);
    case Op.WRITE_AND_VERIFY_16: return writeAndVerify(cdb, disk, SIXTEEN);
    case Op.ORWRITE_16: return orWrite(cdb, disk);
    case Op.PRE_FETCH_10: return preFetch(cdb, disk, TEN);
    case Op.PRE_FETCH_16: return preFetch(cdb, disk, SIXTEEN);
    default: return checkCondition(Sense.invalidOpcode);
  }
}

/** The opcodes `mediumAccess` decodes. */
export const MEDIUM_OPS: ReadonlySet<number> = new Set([
  Op.READ_6, Op.WRITE_6, Op.READ_10, Op.READ_12, Op.READ_16, Op.WRITE_10, Op.WRITE_12, Op.WRITE_16, Op.VERIFY_10, Op.VERIFY_12,
  Op.VERIFY_16, Op.WRITE_AND_VERIFY_10, Op.WRITE_AND_VERIFY_12, Op.WRITE_AND_VERIFY_16, Op.ORWRITE_16, Op.PRE_FETCH_10, Op.PRE_FETCH_16,
]);

/**
 * READ (6) / WRITE (6) (SBC-3 5.11, 5.33): a 21-bit LBA in byte 1 bits 4-0 and bytes 2-3, TRANSFER LENGTH in byte 4
 * where "A TRANSFER LENGTH field set to zero specifies that 256 logical blocks shall be read" (written); no FUA, no protection.
 */
function readWrite6(cdb: Uint8Array, disk: ScsiDisk, kind: 'read' | 'write'): MediumResult {
  if (cdb[1]! & 0xe0) return invalidField(1, 7); // reserved
  if (kind === 'write' && disk.readOnly) return checkCondition(Sense.writeProtected);
  const e = extent(disk, BigInt(be24(cdb, 1) & 0x1fffff), cdb[4] === 0 ? 256 : cdb[4]!, 4);
  if ('kind' in e) return e;
  return { kind, lba: e.lba, blocks: e.blocks, fua: false };
}

/** READ/WRITE (10), (12) and (16) (SBC-3 5.12-5.14, 5.34-5.36): protection fields refused, DPO ignored, FUA in byte 1 bit 3. */
function readWrite(cdb: Uint8Array, disk: ScsiDisk, kind: 'read' | 'write', at: Layout): MediumResult {
  if (cdb[1]! & 0xe0) return invalidField(1, 7); // RDPROTECT/WRPROTECT: no protection information
  if (kind === 'write' && disk.readOnly) return checkCondition(Sense.writeProtected);
  const e = extent(disk, at.lba(cdb), at.length(cdb), at.lengthByte);
  if ('kind' in e) return e;
  return { kind, lba: e.lba, blocks: e.blocks, fua: (cdb[1]! & 0x08) !== 0 };
}

/** VERIFY (10)/(12)/(16) (SBC-3 5.29-5.31): BYTCHK in byte 1 bits 2-1; 2 is reserved. */
function verify(cdb: Uint8Array, disk: ScsiDisk, at: Layout): MediumResult {
  if (cdb[1]! & 0xe0) return invalidField(1, 7); // VRPROTECT
  const bytchk = (cdb[1]! >> 1) & 0x03;
  if (bytchk === 2) return invalidField(1, 2);
  const e = extent(disk, at.lba(cdb), at.length(cdb), at.lengthByte);
  if ('kind' in e) return e;
  return { kind: 'verify', lba: e.lba, blocks: e.blocks, bytchk: bytchk as 0 | 1 | 3 };
}

/**
 * WRITE AND VERIFY (10)/(12)/(16) (SBC-3 5.38-5.40): WRPROTECT refused, DPO ignored, BYTCHK in byte 1 bits 2-1 where
 * 00b verifies the medium only and 01b compares the written data; 10b and 11b are reserved for this command (the one-block
 * 11b form belongs to VERIFY). A TRANSFER LENGTH of zero writes nothing and is not an error.
 */
function writeAndVerify(cdb: Uint8Array, disk: ScsiDisk, at: Layout): MediumResult {
  if (cdb[1]! & 0xe0) return invalidField(1, 7); // WRPROTECT
  const bytchk = (cdb[1]! >> 1) & 0x03;
  if (bytchk > 1) return invalidField(1, 2);
  if (disk.readOnly) return checkCondition(Sense.writeProtected);
  const e = extent(disk, at.lba(cdb), at.length(cdb), at.lengthByte);
  if ('kind' in e) return e;
  return { kind: 'write-verify', lba: e.lba, blocks: e.blocks, bytchk: bytchk === 1 };
}

/**
 * ORWRITE (16) (SBC-3 5.5): ORPROTECT refused, DPO ignored, FUA in byte 1 bit 3, LBA bytes 2-9, TRANSFER LENGTH
 * bytes 10-13. "A TRANSFER LENGTH field set to zero specifies that no logical blocks shall be transferred ... This condition
 * shall not be considered an error."
 */
function orWrite(cdb: Uint8Array, disk: ScsiDisk): MediumResult {
  if (cdb[1]! & 0xe0) return invalidField(1, 7); // ORPROTECT
  if (disk.readOnly) return checkCondition(Sense.writeProtected);
  const e = extent(disk, SIXTEEN.lba(cdb), SIXTEEN.length(cdb), SIXTEEN.lengthByte);
  if ('kind' in e) return e;
  return { kind: 'or-write', lba: e.lba, blocks: e.blocks, fua: (cdb[1]! & 0x08) !== 0 };
}

/**
 * PRE-FETCH (10)/(16) (SBC-3 5.8, 5.9): IMMED in byte 1 bit 1, PREFETCH LENGTH in bytes 7-8 / 10-13 (zero: through the last
 * LBA). The range is checked like a read's. SBC-3: "If the specified logical blocks were successfully transferred to the
 * cache, the device server shall return CONDITION MET status. If the cache does not have sufficient capacity to accept all
 * of the specified logical blocks, the device server shall transfer to the cache as many ... as fit ... and shall return
 * GOOD status." This target keeps no cache of its own (its capacity is zero), so nothing is transferred and the answer is GOOD.
 */
function preFetch(cdb: Uint8Array, disk: ScsiDisk, at: Layout): MediumResult {
  const lba = at.lba(cdb);
  const length = BigInt(at.length(cdb));
  const bad = outOfRange(disk, lba, length === 0n ? disk.blocks - lba : length);
  return bad ?? { kind: 'good' };
}
