// Virtio split-ring and virtio-blk numbers, from the virtio 1.2 specification (sections 2.7 and 5.2).

/** Descriptor flags. */
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
/** Available ring flag: the driver does not want interrupts (ignored with EVENT_IDX). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** Used ring flag: the device does not want kicks (ignored with EVENT_IDX). */
export const VIRTQ_USED_F_NO_NOTIFY = 1;
/** "Queue Size ... The maximum Queue Size value is 32768." */
export const MAX_QUEUE_SIZE = 32768;
export const DESC_SIZE = 16;
/** Longest indirect table accepted (entries); longer ones are a malformed request. */
export const MAX_INDIRECT = 4096;

/** virtio-blk request types. */
export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_GET_LIFETIME = 10;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;
export const VIRTIO_BLK_T_SECURE_ERASE = 14;

/** virtio-blk status byte. */
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;

/** Request header (type u32, reserved u32, sector u64) and discard/write-zeroes segment sizes. */
export const BLK_HEADER_SIZE = 16;
export const BLK_DISCARD_SEGMENT_SIZE = 16;
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;
/** "The sector number indicates the offset (multiplied by 512)". */
export const SECTOR_SIZE = 512;
export const VIRTIO_BLK_ID_BYTES = 20;

/** Offsets in struct virtio_blk_config. */
export const CFG_CAPACITY = 0;
export const CFG_SIZE_MAX = 8;
export const CFG_SEG_MAX = 12;
export const CFG_BLK_SIZE = 20;
export const CFG_PHYSICAL_BLOCK_EXP = 24;
export const CFG_MIN_IO_SIZE = 26;
export const CFG_OPT_IO_SIZE = 28;
export const CFG_WRITEBACK = 32;
export const CFG_NUM_QUEUES = 34;
export const CFG_MAX_DISCARD_SECTORS = 36;
export const CFG_MAX_DISCARD_SEG = 40;
export const CFG_DISCARD_SECTOR_ALIGNMENT = 44;
export const CFG_MAX_WRITE_ZEROES_SECTORS = 48;
export const CFG_MAX_WRITE_ZEROES_SEG = 52;
export const CFG_WRITE_ZEROES_MAY_UNMAP = 56;
/** struct virtio_blk_config up to and including the secure-erase fields (Linux 5.19+). */
export const BLK_CONFIG_SIZE = 72;
