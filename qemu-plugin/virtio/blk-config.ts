// virtio-blk's device side as the driver negotiates it: the feature bits offered and the config space (struct virtio_blk_config).
import type { BackendInfo } from '../../engine/backend.js';
import {
  BLK_CONFIG_SIZE, CFG_BLK_SIZE, CFG_CAPACITY, CFG_DISCARD_SECTOR_ALIGNMENT, CFG_MAX_DISCARD_SECTORS, CFG_MAX_DISCARD_SEG,
  CFG_MAX_WRITE_ZEROES_SECTORS, CFG_MAX_WRITE_ZEROES_SEG, CFG_MIN_IO_SIZE, CFG_NUM_QUEUES, CFG_OPT_IO_SIZE, CFG_PHYSICAL_BLOCK_EXP,
  CFG_SEG_MAX, CFG_WRITEBACK, CFG_WRITE_ZEROES_MAY_UNMAP, SECTOR_SIZE,
} from './constants.js';

/** Segments per request twindisk advertises (seg_max); requests are at most this many data segments. */
export const SEG_MAX = 254;
/** Largest discard / write-zeroes request, in sectors (32 MiB), and segments per such request. */
export const MAX_DISCARD_SECTORS = 65536;
export const MAX_DISCARD_SEG = 1;

/** Feature bit numbers (VIRTIO_BLK_F_*) a virtio-blk device over `info` offers. */
export function blkFeatureBits(info: BackendInfo, numQueues: number): number[] {
  const f = [2 /* SEG_MAX */, 6 /* BLK_SIZE */, 9 /* FLUSH */, 10 /* TOPOLOGY */, 11 /* CONFIG_WCE */];
  if (numQueues > 1) f.push(12 /* MQ */);
  if (info.readOnly) f.push(5 /* RO */);
  if (info.canDiscard) f.push(13 /* DISCARD */);
  if (info.canWriteZeroes) f.push(14 /* WRITE_ZEROES */);
  return f;
}

/** What the config space is made from. */
export interface BlkConfigParams {
  info: BackendInfo;
  numQueues: number;
  writeback: boolean;
}

/** Encodes struct virtio_blk_config (little-endian, BLK_CONFIG_SIZE bytes). */
export function encodeBlkConfig(p: BlkConfigParams): Uint8Array {
  const b = new Uint8Array(BLK_CONFIG_SIZE);
  const dv = new DataView(b.buffer);
  const sectors = p.info.size / SECTOR_SIZE;
  dv.setUint32(CFG_CAPACITY, sectors % 4294967296, true);
  dv.setUint32(CFG_CAPACITY + 4, Math.floor(sectors / 4294967296), true);
  dv.setUint32(CFG_SEG_MAX, SEG_MAX, true);
  dv.setUint32(CFG_BLK_SIZE, p.info.blockSize, true);
  dv.setUint8(CFG_PHYSICAL_BLOCK_EXP, 0);
  dv.setUint16(CFG_MIN_IO_SIZE, 1, true);
  dv.setUint32(CFG_OPT_IO_SIZE, 0, true);
  dv.setUint8(CFG_WRITEBACK, p.writeback ? 1 : 0);
  dv.setUint16(CFG_NUM_QUEUES, p.numQueues, true);
  const align = p.info.blockSize / SECTOR_SIZE;
  if (p.info.canDiscard) {
    dv.setUint32(CFG_MAX_DISCARD_SECTORS, MAX_DISCARD_SECTORS, true);
    dv.setUint32(CFG_MAX_DISCARD_SEG, MAX_DISCARD_SEG, true);
    dv.setUint32(CFG_DISCARD_SECTOR_ALIGNMENT, align, true);
  }
  if (p.info.canWriteZeroes) {
    dv.setUint32(CFG_MAX_WRITE_ZEROES_SECTORS, MAX_DISCARD_SECTORS, true);
    dv.setUint32(CFG_MAX_WRITE_ZEROES_SEG, MAX_DISCARD_SEG, true);
    dv.setUint8(CFG_WRITE_ZEROES_MAY_UNMAP, p.info.canDiscard ? 1 : 0);
  }
  return b;
}
