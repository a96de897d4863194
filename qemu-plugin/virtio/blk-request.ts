// virtio-blk requests parsed: a popped descriptor chain in, a typed request out (header, data, segment, status byte). No I/O here.
import type { IoVector } from '../../engine/iovec.js';
import { copyFromVector } from '../../engine/iovec.js';
import {
  BLK_DISCARD_SEGMENT_SIZE, BLK_HEADER_SIZE, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
} from './constants.js';
import type { GuestMemory } from './memory.js';
import type { Chain } from './virtqueue.js';

/** What a request asks for. */
export const enum BlkOp {
  Read,
  Write,
  Flush,
  GetId,
  Discard,
  WriteZeroes,
  /** A type this device does not know (`type` says which). */
  Unsupported,
  /** The chain or the header is unusable (`error` says why). */
  Malformed,
}

/**
 * A virtio-blk request as the driver laid it out, checked for syntax only: whether the device can
 * and may do it (range, alignment, read-only, features) is the executor's to decide. One per request
 * slot, refilled by `parseBlkRequest`, so parsing allocates nothing.
 */
export class BlkRequest {
  op = BlkOp.Malformed;
  /** The header's type field (VIRTIO_BLK_T_*). */
  type = 0;
  /** The header's sector (512-byte units); -1 when it is 2^53 or more (no disk is that large). */
  sector = 0;
  /**
   * The data: device-readable bytes after the header (writes, and the discard / write-zeroes
   * segments), or device-writable bytes before the status byte (reads, GET_ID). Views of the chain's vectors.
   */
  data: IoVector | null = null;
  /** Discard / write-zeroes: the first segment's sector (-1 as above), sector count and flags. */
  segSector = 0;
  segSectors = 0;
  segFlags = 0;
  /** Malformed: why. */
  error: string | null = null;
  /** Where the status byte goes (a guest memory view and an offset), or null when no byte is safe to write. */
  statusBuf: Uint8Array | null = null;
  statusOff = 0;
  /** Room for a header or segment split across descriptors. */
  readonly scratch = new Uint8Array(BLK_HEADER_SIZE);
}

/** A little-endian u64 sector at `b[o]` as a number; -1 when it is 2^53 or more. */
function sectorAt(b: Uint8Array, o: number): number {
  const lo = (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
  const hi = (b[o + 4]! | (b[o + 5]! << 8) | (b[o + 6]! << 16) | (b[o + 7]! << 24)) >>> 0;
  return hi >= 0x200000 ? -1 : hi * 4294967296 + lo;
}

function u32At(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

function malformed(r: BlkRequest, why: string): void {
  r.op = BlkOp.Malformed;
  r.error = why;
}

/**
 * Parses the chain popped into `c` into `r`. The chain's vectors are trimmed in place: the status
 * byte off the writable end, the header off the readable front. Never throws; a chain that cannot
 * be a request becomes `BlkOp.Malformed`, with its status byte located where that is safe.
 */
export function parseBlkRequest(c: Chain, mem: GuestMemory, r: BlkRequest): void {
  const rd = c.rd;
  const wr = c.wr;
  r.statusBuf = null;
  r.data = null;
  r.error = null;
  if (c.error !== null) {
    if (c.errRegion >= 0) {
      r.statusBuf = mem.regions[c.errRegion]!.u8;
      r.statusOff = c.errOff;
    }
    return malformed(r, c.error);
  }
  // "The final status byte is written by the device": the last byte of the writable part.
  if (wr.bytes < 1) return malformed(r, 'request has no writable status byte');
  const last = wr.count - 1;
  r.statusBuf = wr.bufs[last]!;
  r.statusOff = wr.offs[last]! + wr.lens[last]! - 1;
  wr.consumeBack(1);
  if (rd.bytes < BLK_HEADER_SIZE) return malformed(r, 'request header is shorter than 16 bytes');
  // Header: le32 type, le32 reserved, le64 sector. Read in place when the first segment holds it.
  let b = rd.bufs[0]!;
  let o = rd.offs[0]!;
  if (rd.lens[0]! < BLK_HEADER_SIZE) {
    copyFromVector(rd, 0, r.scratch, BLK_HEADER_SIZE);
    b = r.scratch;
    o = 0;
  }
  const type = u32At(b, o);
  r.type = type;
  r.sector = sectorAt(b, o + 8);
  rd.consumeFront(BLK_HEADER_SIZE);
  switch (type) {
    case VIRTIO_BLK_T_IN:
      r.op = BlkOp.Read;
      r.data = wr;
      return;
    case VIRTIO_BLK_T_OUT:
      r.op = BlkOp.Write;
      r.data = rd;
      return;
    case VIRTIO_BLK_T_FLUSH:
      r.op = BlkOp.Flush;
      return;
    case VIRTIO_BLK_T_GET_ID:
      r.op = BlkOp.GetId;
      r.data = wr;
      return;
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
      r.op = type === VIRTIO_BLK_T_DISCARD ? BlkOp.Discard : BlkOp.WriteZeroes;
      r.data = rd;
      // Segment: le64 sector, le32 num_sectors, le32 flags. How many segments may come is the executor's limit.
      if (rd.bytes >= BLK_DISCARD_SEGMENT_SIZE) {
        copyFromVector(rd, 0, r.scratch, BLK_DISCARD_SEGMENT_SIZE);
        r.segSector = sectorAt(r.scratch, 0);
        r.segSectors = u32At(r.scratch, 8);
        r.segFlags = u32At(r.scratch, 12);
      }
      return;
    default:
      r.op = BlkOp.Unsupported;
  }
}
