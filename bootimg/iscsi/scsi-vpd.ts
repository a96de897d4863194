// The SCSI disk description and its INQUIRY data: standard inquiry and the VPD pages (SPC-4 6.4, 7.8; SBC-3 6.5).
import { createHash } from 'node:crypto';
import { put16, put32, put64 } from './scsi-cdb.js';

/** What the target tells initiators about one LUN; build it with `makeScsiDisk`. */
export interface ScsiDisk {
  /** Capacity in logical blocks. Change it with `capacityChanged` while the disk is served. */
  blocks: bigint;
  /**
   * How many times the capacity changed while served (`capacityChanged`). Each session remembers the count it has seen
   * (from its login on) and owes its initiator a CAPACITY DATA HAS CHANGED unit attention while the two differ (tasks.ts).
   */
  capacityChanges: number;
  blockSize: 512 | 4096;
  /** Unit serial number (VPD 0x80), printable ASCII. */
  serial: string;
  /** 16-byte NAA IEEE Registered Extended designator (NAA 6), the same on every node serving the volume. */
  naa: Uint8Array;
  vendor: string; // 8 characters, space padded
  product: string; // 16 characters
  revision: string; // 4 characters
  writeCache: boolean;
  thinProvisioning: boolean;
  /** Whether an unmapped block reads back as zeros (LBPRZ). */
  unmapReadsZero: boolean;
  readOnly: boolean;
  /** Largest READ/WRITE/VERIFY transfer in blocks (VPD 0xB0 MAXIMUM TRANSFER LENGTH). */
  maxTransferBlocks: number;
  maxUnmapBlocks: number;
  maxUnmapDescriptors: number;
  maxWriteSameBlocks: number;
  /** Largest COMPARE AND WRITE in blocks (VPD 0xB0 byte 5, at most 255). */
  maxCompareAndWriteBlocks: number;
}

/** Options for `makeScsiDisk`; only `id`, `blocks` and `blockSize` are required. */
export interface ScsiDiskOptions {
  /** Stable volume id (e.g. the resource name and volume number): the NAA designator and default serial derive from it. */
  id: string;
  blocks: bigint;
  blockSize: 512 | 4096;
  serial?: string;
  product?: string;
  revision?: string;
  writeCache?: boolean;
  thinProvisioning?: boolean;
  unmapReadsZero?: boolean;
  readOnly?: boolean;
  maxTransferBlocks?: number;
  /** IEEE company id (24 bits) put in the NAA designator; the default is a locally assigned CID-shaped value. */
  companyId?: number;
}

/** Vendor identification in standard INQUIRY data. */
export const VENDOR = 'TWINDISK';
/**
 * Default company id for the NAA designator. twindisk owns no IEEE OUI; 0x5A7744 has the CID form
 * (second hex digit 0xA: locally assigned), so it collides with no registered OUI. Override with `companyId`.
 */
export const DEFAULT_COMPANY_ID = 0x5a7744;

/** Builds a ScsiDisk from a stable id; two calls with the same id and options give byte-identical identifiers. */
export function makeScsiDisk(o: ScsiDiskOptions): ScsiDisk {
  const h = createHash('sha256').update('twindisk-scsi-lu\0').update(o.id).digest();
  const maxTransfer = o.maxTransferBlocks ?? Math.floor((8 << 20) / o.blockSize);
  return {
    blocks: o.blocks,
    capacityChanges: 0,
    blockSize: o.blockSize,
    serial: o.serial ?? h.subarray(0, 10).toString('hex'),
    naa: naaRegisteredExtended(o.companyId ?? DEFAULT_COMPANY_ID, h.subarray(16, 32)),
    vendor: VENDOR,
    product: o.product ?? 'twindisk volume',
    revision: o.revision ?? '1.0',
    writeCache: o.writeCache ?? true,
    thinProvisioning: o.thinProvisioning ?? true,
    unmapReadsZero: o.unmapReadsZero ?? false,
    readOnly: o.readOnly ?? false,
    maxTransferBlocks: maxTransfer,
    maxUnmapBlocks: 0xffffffff,
    maxUnmapDescriptors: 256,
    maxWriteSameBlocks: maxTransfer,
    maxCompareAndWriteBlocks: 1,
  };
}

/**
 * A served disk's new capacity (online resize, larger or smaller): READ CAPACITY reports it from the next command on, and
 * every session logged in now gets a CAPACITY DATA HAS CHANGED unit attention on its next command (SAM-5's unit
 * attention conditions; ASC/ASCQ 2A/09 in SPC-4 Annex D). Setting the capacity it already has changes nothing.
 */
export function capacityChanged(disk: ScsiDisk, blocks: bigint): void {
  if (blocks === disk.blocks) return;
  disk.blocks = blocks;
  disk.capacityChanges++;
}

/**
 * NAA IEEE Registered Extended designator (SPC-4 7.8.6.6.5, Table 492): NAA 6 in bits 7-4 of byte 0,
 * the 24-bit IEEE company id in byte 0 bits 3-0 through byte 3 bits 7-4, then a 36-bit vendor
 * specific identifier and a 64-bit extension, both taken from `hash` (at least 13 bytes).
 */
export function naaRegisteredExtended(companyId: number, hash: Uint8Array): Uint8Array {
  const b = new Uint8Array(16);
  b[0] = 0x60 | ((companyId >>> 20) & 0x0f);
  b[1] = (companyId >>> 12) & 0xff;
  b[2] = (companyId >>> 4) & 0xff;
  b[3] = ((companyId & 0x0f) << 4) | (hash[0]! & 0x0f);
  b.set(hash.subarray(1, 13), 4);
  return b;
}

/** Space-pads (or cuts) ASCII text to `n` bytes, for INQUIRY's fixed-width fields (SPC-4 4.4.1). */
function ascii(s: string, n: number): Uint8Array {
  const out = new Uint8Array(n).fill(0x20);
  for (let i = 0; i < Math.min(n, s.length); i++) {
    const c = s.charCodeAt(i);
    out[i] = c >= 0x20 && c < 0x7f ? c : 0x3f;
  }
  return out;
}

/** VPD pages served, strictly ascending as the Supported VPD Pages page must list them (SPC-4 7.8.13). */
export const VPD_PAGES = [0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2] as const;

/**
 * Standard INQUIRY data (SPC-4 6.4.2, Table 142), 96 bytes: direct-access block device, VERSION 6
 * (SPC-4), HISUP and response data format 2, CMDQUE, vendor/product/revision, version descriptors
 * (SPC-4 Table 144: SAM-5, SPC-4, SBC-3, iSCSI).
 */
export function standardInquiry(disk: ScsiDisk): Uint8Array {
  const b = new Uint8Array(96);
  b[0] = 0x00; // peripheral qualifier 0, device type 0 (direct access block device)
  b[2] = 0x06; // VERSION: SPC-4
  b[3] = 0x12; // HISUP=1, RESPONSE DATA FORMAT=2
  b[4] = b.length - 5; // ADDITIONAL LENGTH
  b[5] = 0x00; // SCCS, ACC, TPGS, 3PC, PROTECT: none
  b[7] = 0x02; // CMDQUE
  b.set(ascii(disk.vendor, 8), 8);
  b.set(ascii(disk.product, 16), 16);
  b.set(ascii(disk.revision, 4), 32);
  const versions = [0x00a0 /* SAM-5 */, 0x0460 /* SPC-4 */, 0x04c0 /* SBC-3 */, 0x0960 /* iSCSI */];
  versions.forEach((v, i) => put16(b, 58 + 2 * i, v));
  return b;
}

/** A VPD page with the 4-byte header (SPC-4 7.8.1, Table 474): device type 0, page code, page length. */
function vpdPage(code: number, body: Uint8Array): Uint8Array {
  const b = new Uint8Array(4 + body.length);
  b[1] = code;
  put16(b, 2, body.length);
  b.set(body, 4);
  return b;
}

/** Supported VPD Pages (SPC-4 7.8.13, Table 510): the page codes in ascending order, starting with 0x00. */
export function vpdSupportedPages(): Uint8Array {
  return vpdPage(0x00, Uint8Array.from(VPD_PAGES));
}

/** Unit Serial Number page (SPC-4 7.8.15, Table 512). */
export function vpdUnitSerial(disk: ScsiDisk): Uint8Array {
  return vpdPage(0x80, ascii(disk.serial, disk.serial.length));
}

/**
 * Device Identification page (SPC-4 7.8.6, Tables 482 and 483): the NAA designator (code set 1 binary,
 * association 0 logical unit, designator type 3 NAA) first, then a T10 vendor id designator (type 1,
 * code set 2 ASCII: vendor + serial, SPC-4 7.8.6.4).
 */
export function vpdDeviceIdentification(disk: ScsiDisk): Uint8Array {
  const naa = new Uint8Array(4 + 16);
  naa[0] = 0x01; // protocol identifier 0, code set 1 (binary)
  naa[1] = 0x03; // PIV 0, association 0 (LU), designator type 3 (NAA)
  naa[3] = 16;
  naa.set(disk.naa.subarray(0, 16), 4);
  const t10id = ascii(disk.vendor, 8);
  const serial = ascii(disk.serial, disk.serial.length);
  const t10 = new Uint8Array(4 + 8 + serial.length);
  t10[0] = 0x02; // code set 2 (ASCII)
  t10[1] = 0x01; // association 0, designator type 1 (T10 vendor id)
  t10[3] = 8 + serial.length;
  t10.set(t10id, 4);
  t10.set(serial, 12);
  const body = new Uint8Array(naa.length + t10.length);
  body.set(naa, 0);
  body.set(t10, naa.length);
  return vpdPage(0x83, body);
}

/**
 * Block Limits page (SBC-3 6.5.3, Table 197), page length 0x3C: WSNZ, maximum COMPARE AND WRITE
 * length, maximum and optimal transfer length, maximum UNMAP LBA and descriptor counts, unmap
 * granularity (one physical block), maximum WRITE SAME length.
 */
export function vpdBlockLimits(disk: ScsiDisk): Uint8Array {
  const b = new Uint8Array(0x3c);
  b[0] = 0x01; // byte 4: WSNZ (a WRITE SAME of zero blocks is refused)
  b[1] = Math.min(255, disk.maxCompareAndWriteBlocks); // byte 5
  put16(b, 2, 1); // bytes 6-7: OPTIMAL TRANSFER LENGTH GRANULARITY
  put32(b, 4, disk.maxTransferBlocks); // bytes 8-11: MAXIMUM TRANSFER LENGTH
  put32(b, 8, disk.maxTransferBlocks); // bytes 12-15: OPTIMAL TRANSFER LENGTH
  if (disk.thinProvisioning) {
    put32(b, 16, disk.maxUnmapBlocks); // bytes 20-23: MAXIMUM UNMAP LBA COUNT
    put32(b, 20, disk.maxUnmapDescriptors); // bytes 24-27: MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT
    put32(b, 24, 1); // bytes 28-31: OPTIMAL UNMAP GRANULARITY
    put32(b, 28, 0x80000000); // bytes 32-35: UGAVALID, alignment 0
  }
  put64(b, 32, BigInt(disk.maxWriteSameBlocks)); // bytes 36-43: MAXIMUM WRITE SAME LENGTH
  return vpdPage(0xb0, b);
}

/**
 * Block Device Characteristics page (SBC-3 6.5.2, Table 195), page length exactly 0x3C:
 * MEDIUM ROTATION RATE 1 (non-rotating medium), nominal form factor not reported.
 */
export function vpdBlockDeviceCharacteristics(): Uint8Array {
  const b = new Uint8Array(0x3c);
  put16(b, 0, 0x0001); // bytes 4-5: MEDIUM ROTATION RATE = non-rotating
  return vpdPage(0xb1, b);
}

/**
 * Logical Block Provisioning page (SBC-3 6.5.4, Table 199), page length 4: LBPU (UNMAP),
 * LBPWS and LBPWS10 (WRITE SAME with UNMAP), LBPRZ, provisioning type 2 (thin) when thin.
 */
export function vpdLogicalBlockProvisioning(disk: ScsiDisk): Uint8Array {
  const b = new Uint8Array(4);
  if (disk.thinProvisioning) {
    b[1] = 0x80 | 0x40 | 0x20 | (disk.unmapReadsZero ? 0x04 : 0); // byte 5: LBPU, LBPWS, LBPWS10, LBPRZ
    b[2] = 0x02; // byte 6: PROVISIONING TYPE thin
  }
  return vpdPage(0xb2, b);
}

/** The VPD page `code` for `disk`, or undefined when the page is not served. */
export function vpdPageFor(code: number, disk: ScsiDisk): Uint8Array | undefined {
  switch (code) {
    case 0x00: return vpdSupportedPages();
    case 0x80: return vpdUnitSerial(disk);
    case 0x83: return vpdDeviceIdentification(disk);
    case 0xb0: return vpdBlockLimits(disk);
    case 0xb1: return vpdBlockDeviceCharacteristics();
    case 0xb2: return vpdLogicalBlockProvisioning(disk);
    default: return undefined;
  }
}
