// SCSI operation codes and CDB field readers for the iSCSI target's block-device command set (SPC-4, SBC-3).

/** Operation codes this target knows (SPC-4 Annex E.3, Table E.2; SBC-3 Table 13). */
export const Op = {
  TEST_UNIT_READY: 0x00,
  REQUEST_SENSE: 0x03,
  READ_6: 0x08,
  WRITE_6: 0x0a,
  INQUIRY: 0x12,
  MODE_SELECT_6: 0x15,
  MODE_SENSE_6: 0x1a,
  START_STOP_UNIT: 0x1b,
  PREVENT_ALLOW_MEDIUM_REMOVAL: 0x1e,
  READ_CAPACITY_10: 0x25,
  READ_10: 0x28,
  WRITE_10: 0x2a,
  WRITE_AND_VERIFY_10: 0x2e,
  VERIFY_10: 0x2f,
  PRE_FETCH_10: 0x34,
  SYNCHRONIZE_CACHE_10: 0x35,
  READ_DEFECT_DATA_10: 0x37,
  WRITE_SAME_10: 0x41,
  UNMAP: 0x42,
  MODE_SELECT_10: 0x55,
  MODE_SENSE_10: 0x5a,
  PERSISTENT_RESERVE_IN: 0x5e,
  PERSISTENT_RESERVE_OUT: 0x5f,
  READ_16: 0x88,
  COMPARE_AND_WRITE: 0x89,
  WRITE_16: 0x8a,
  ORWRITE_16: 0x8b,
  WRITE_AND_VERIFY_16: 0x8e,
  VERIFY_16: 0x8f,
  PRE_FETCH_16: 0x90,
  SYNCHRONIZE_CACHE_16: 0x91,
  WRITE_SAME_16: 0x93,
  SERVICE_ACTION_IN_16: 0x9e,
  REPORT_LUNS: 0xa0,
  MAINTENANCE_IN: 0xa3,
  READ_12: 0xa8,
  WRITE_12: 0xaa,
  WRITE_AND_VERIFY_12: 0xae,
  VERIFY_12: 0xaf,
  READ_DEFECT_DATA_12: 0xb7,
} as const;

/** Service actions used with SERVICE ACTION IN (16) and MAINTENANCE IN. */
export const ServiceAction = {
  READ_CAPACITY_16: 0x10, // SBC-3 5.16
  REPORT_SUPPORTED_OPERATION_CODES: 0x0c, // SPC-4 6.35
} as const;

/**
 * CDB length implied by the group code (opcode bits 7-5; SAM-5 5.2, SPC-4 4.2.5.1):
 * group 0 is 6 bytes, 1 and 2 are 10, 4 is 16, 5 is 12; 3 (variable) and 6/7 (vendor) are undefined here.
 */
export function cdbLength(opcode: number): number | undefined {
  switch (opcode >> 5) {
    case 0: return 6;
    case 1: case 2: return 10;
    case 4: return 16;
    case 5: return 12;
    default: return undefined;
  }
}

/** Reads a big-endian 16-bit CDB field. */
export function be16(b: Uint8Array, at: number): number {
  return (b[at]! << 8) | b[at + 1]!;
}

/** Reads a big-endian 24-bit CDB field. */
export function be24(b: Uint8Array, at: number): number {
  return (b[at]! << 16) | (b[at + 1]! << 8) | b[at + 2]!;
}

/** Reads a big-endian 32-bit CDB field (unsigned). */
export function be32(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) >>> 0) + ((b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!);
}

/** Reads a big-endian 64-bit CDB field as a bigint. */
export function be64(b: Uint8Array, at: number): bigint {
  return (BigInt(be32(b, at)) << 32n) | BigInt(be32(b, at + 4));
}

/** Writes a big-endian 16-bit field. */
export function put16(b: Uint8Array, at: number, v: number): void {
  b[at] = (v >>> 8) & 0xff;
  b[at + 1] = v & 0xff;
}

/** Writes a big-endian 32-bit field. */
export function put32(b: Uint8Array, at: number, v: number): void {
  b[at] = (v >>> 24) & 0xff;
  b[at + 1] = (v >>> 16) & 0xff;
  b[at + 2] = (v >>> 8) & 0xff;
  b[at + 3] = v & 0xff;
}

/** Writes a big-endian 64-bit field. */
export function put64(b: Uint8Array, at: number, v: bigint): void {
  const u = BigInt.asUintN(64, v);
  put32(b, at, Number(u >> 32n));
  put32(b, at + 4, Number(u & 0xffffffffn));
}
