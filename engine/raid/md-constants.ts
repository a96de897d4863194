// The numbers of Linux md's on-disk format (version-1 superblock, internal write-intent bitmap, RAID layouts).
//
// Sources: include/uapi/linux/raid/md_p.h (superblock, feature bits, roles), drivers/md/md-bitmap.h
// (bitmap superblock), drivers/md/raid5.h (layout algorithms), and mdadm's super1.c/bitmap.h for what
// the user-space tool writes. Every value here is part of the on-disk format: changing one breaks
// compatibility with the kernel and with mdadm.

// ------------------------------------------------------------------------------------- superblock

/** `MD_SB_MAGIC`, the first le32 of every md superblock. */
export const MD_SB_MAGIC = 0xa92b4efc;
/** `major_version` of the version-1 superblock (1.0, 1.1 and 1.2 differ only in where it sits). */
export const MD_SB_MAJOR_VERSION = 1;
/** Bytes of `struct mdp_superblock_1` before `dev_roles[]`. */
export const MD_SB_1_HEADER_BYTES = 256;
/** Bytes the kernel reads for a version-1 superblock (`read_disk_sb(rdev, 4096)`); roles must fit in them. */
export const MD_SB_1_READ_BYTES = 4096;
/** Largest `max_dev` the kernel accepts: `(4096 - 256) / 2` (super_1_load). mdadm's MAX_DEVS is the same. */
export const MD_SB_1_MAX_DEV = (MD_SB_1_READ_BYTES - MD_SB_1_HEADER_BYTES) / 2;
/** Sectors are 512 bytes in every md field that counts sectors. */
export const SECTOR = 512;
/** Where a 1.2 superblock sits: 8 sectors (4 KiB) from the member's start. 1.1 sits at 0; 1.0 near the end. */
export const MD_SB_1_2_OFFSET = 8;
/** `MaxSector` as the superblock stores it in `resync_offset` for an array known to be in sync ("clean"). */
export const MD_MAX_SECTOR = (1n << 64n) - 1n;

/** `feature_map` bits (md_p.h). */
export const MD_FEATURE_BITMAP_OFFSET = 1;
export const MD_FEATURE_RECOVERY_OFFSET = 2;
export const MD_FEATURE_RESHAPE_ACTIVE = 4;
export const MD_FEATURE_BAD_BLOCKS = 8;
export const MD_FEATURE_REPLACEMENT = 16;
export const MD_FEATURE_RESHAPE_BACKWARDS = 32;
export const MD_FEATURE_NEW_OFFSET = 64;
export const MD_FEATURE_RECOVERY_BITMAP = 128;
export const MD_FEATURE_CLUSTERED = 256;
export const MD_FEATURE_JOURNAL = 512;
export const MD_FEATURE_PPL = 1024;
export const MD_FEATURE_MULTIPLE_PPLS = 2048;
export const MD_FEATURE_RAID0_LAYOUT = 4096;
/** Every bit the kernel knows (`MD_FEATURE_ALL`); super_1_load refuses a superblock with any other. */
export const MD_FEATURE_ALL = 0x1fff;

/** Names of the feature bits, for messages (lowest bit first). */
export const MD_FEATURE_NAMES: ReadonlyMap<number, string> = new Map([
  [MD_FEATURE_BITMAP_OFFSET, 'bitmap'],
  [MD_FEATURE_RECOVERY_OFFSET, 'recovery-offset'],
  [MD_FEATURE_RESHAPE_ACTIVE, 'reshape-active'],
  [MD_FEATURE_BAD_BLOCKS, 'bad-blocks'],
  [MD_FEATURE_REPLACEMENT, 'replacement'],
  [MD_FEATURE_RESHAPE_BACKWARDS, 'reshape-backwards'],
  [MD_FEATURE_NEW_OFFSET, 'new-offset'],
  [MD_FEATURE_RECOVERY_BITMAP, 'recovery-bitmap'],
  [MD_FEATURE_CLUSTERED, 'clustered'],
  [MD_FEATURE_JOURNAL, 'journal'],
  [MD_FEATURE_PPL, 'ppl'],
  [MD_FEATURE_MULTIPLE_PPLS, 'multiple-ppls'],
  [MD_FEATURE_RAID0_LAYOUT, 'raid0-layout'],
]);

/** `dev_roles[]` values that are not a slot number (md_p.h). A slot is 0..MD_DISK_ROLE_MAX. */
export const MD_DISK_ROLE_SPARE = 0xffff;
export const MD_DISK_ROLE_FAULTY = 0xfffe;
export const MD_DISK_ROLE_JOURNAL = 0xfffd;
export const MD_DISK_ROLE_MAX = 0xff00;

/** `devflags` bits. */
export const MD_DEVFLAG_WRITEMOSTLY = 1;
export const MD_DEVFLAG_FAILFAST = 2;

/** `level` values. Levels are signed: linear and multipath are negative. */
export const MD_LEVEL_MULTIPATH = -4;
export const MD_LEVEL_LINEAR = -1;
export const MD_LEVEL_FAULTY = -5;

// ----------------------------------------------------------------------------------------- bitmap

/** `BITMAP_MAGIC`: "bitm" read as a little-endian u32. */
export const BITMAP_MAGIC = 0x6d746962;
/** Version 3: bits stored in host order (BITMAP_MAJOR_HOSTENDIAN); the oldest version the kernel reads. */
export const BITMAP_MAJOR_LO = 3;
export const BITMAP_MAJOR_HOSTENDIAN = 3;
/** Version 4: bits stored little-endian; what mdadm writes for an ordinary internal bitmap. */
export const BITMAP_MAJOR_HI = 4;
/** Version 5: clustered md (one bitmap per node); the newest version md_bitmap_read_sb accepts. */
export const BITMAP_MAJOR_CLUSTERED = 5;
/** Version 6: mdadm's lockless bitmap (a different kernel module); md_bitmap_read_sb refuses it. */
export const BITMAP_MAJOR_LOCKLESS = 6;
/** Bytes of `bitmap_super_t`; the bits follow it directly. */
export const BITMAP_SUPER_BYTES = 256;
/** Largest write-behind count (`COUNTER_MAX`, the bitmap counters are 14 bits). */
export const BITMAP_COUNTER_MAX = 16383;
/** Bit numbers (not masks) of `bitmap_super_t.state`. */
export const BITMAP_STALE = 1;
export const BITMAP_WRITE_ERROR = 2;
export const BITMAP_FIRST_USE = 3;
export const BITMAP_CLEAN = 4;
export const BITMAP_DAEMON_BUSY = 5;
export const BITMAP_HOSTENDIAN = 15;
/** Where mdadm puts an internal bitmap for a 1.1/1.2 superblock: 8 sectors (4 KiB) after it. */
export const MDADM_BITMAP_OFFSET_V1_2 = 8;
/** mdadm's default bitmap chunk when none is asked for: 64 MiB (or larger when the bits would not fit). */
export const MDADM_DEFAULT_BITMAP_CHUNK = 64 * 1024 * 1024;
/** mdadm's default seconds between bitmap flushes (`DEFAULT_BITMAP_DELAY`). */
export const MDADM_DEFAULT_BITMAP_DELAY = 5;

// ---------------------------------------------------------------------------------------- layouts

/** raid4/5/6 `layout` values (drivers/md/raid5.h). */
export const ALGORITHM_LEFT_ASYMMETRIC = 0;
export const ALGORITHM_RIGHT_ASYMMETRIC = 1;
/** md's and mdadm's default raid5/raid6 layout. */
export const ALGORITHM_LEFT_SYMMETRIC = 2;
export const ALGORITHM_RIGHT_SYMMETRIC = 3;
/** P (or P, Q) on the first device(s). */
export const ALGORITHM_PARITY_0 = 4;
/** P (or P, Q) on the last device(s); raid4's placement. */
export const ALGORITHM_PARITY_N = 5;
/** DDF PRL=6 RLQ=1 (dm-raid "raid6_zr"): right-asymmetric placement, Q computed in DDF order. */
export const ALGORITHM_ROTATING_ZERO_RESTART = 8;
/** DDF PRL=6 RLQ=2 (dm-raid "raid6_nr"): left-asymmetric shifted one stripe, DDF Q order. */
export const ALGORITHM_ROTATING_N_RESTART = 9;
/** DDF PRL=6 RLQ=3 (dm-raid "raid6_nc"): left-symmetric with Q before P, DDF Q order. */
export const ALGORITHM_ROTATING_N_CONTINUE = 10;
/** raid6 layouts that are a raid5 layout over the first n-1 devices with Q on the last. */
export const ALGORITHM_LEFT_ASYMMETRIC_6 = 16;
export const ALGORITHM_RIGHT_ASYMMETRIC_6 = 17;
export const ALGORITHM_LEFT_SYMMETRIC_6 = 18;
export const ALGORITHM_RIGHT_SYMMETRIC_6 = 19;
export const ALGORITHM_PARITY_0_6 = 20;
export const ALGORITHM_PARITY_N_6 = ALGORITHM_PARITY_N;

/** raid10 `layout` fields: near copies in bits 0-7, far copies in 8-15, "offset" bit 16, far-set version in 17-18. */
export const RAID10_OFFSET_BIT = 1 << 16;
/** mdadm's default raid10 layout: near=2 ("n2"). */
export const RAID10_DEFAULT_LAYOUT = 0x102;
/** The smallest chunk raid4/5/6/10 accept: one page (4 KiB on x86), in sectors. */
export const MD_MIN_CHUNK_SECTORS = 8;
/** mdadm's default chunk size: 512 KiB, in sectors. */
export const MDADM_DEFAULT_CHUNK_SECTORS = 1024;
