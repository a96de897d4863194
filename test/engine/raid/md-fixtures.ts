// Shared fixtures for the md format tests: a valid 1.2 superblock, a patch helper, a seeded PRNG and the mdadm binary.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { MD_FEATURE_BITMAP_OFFSET, MD_MAX_SECTOR } from '../../../engine/raid/md-constants.js';
import { mdSuperblockChecksum, mdTime, parseMdUuid, type MdSuperblockFields } from '../../../engine/raid/md-superblock.js';

export const ARRAY_UUID = '01234567:89abcdef:00112233:44556677';
export const DEVICE_UUID = 'ffeeddcc:bbaa9988:77665544:33221100';
/** 128 MiB members. */
export const MEMBER_SECTORS = 262144n;

/**
 * Member 2 (slot 2) of a 4-member raid5 (left-symmetric, 512 KiB chunks) with an internal bitmap
 * 8 sectors after the superblock, data at 16 MiB: the shape mdadm creates, field by field.
 */
export function sampleSuperblock(over: Partial<MdSuperblockFields> = {}): MdSuperblockFields {
  const dataOffset = 32768n;
  return {
    featureMap: MD_FEATURE_BITMAP_OFFSET, setUuid: parseMdUuid(ARRAY_UUID), setName: 'twin:r5',
    ctime: mdTime(1_700_000_000), level: 5, layout: 2, size: 200704n, chunkSectors: 1024, raidDisks: 4,
    bitmapOffset: 8, ppl: null, newLevel: 0, reshapePosition: 0n, deltaDisks: 0, newLayout: 0, newChunk: 0, newOffset: 0,
    dataOffset, dataSize: MEMBER_SECTORS - dataOffset, superOffset: 8n, recoveryOffset: 0n, devNumber: 2,
    cntCorrectedRead: 0, deviceUuid: parseMdUuid(DEVICE_UUID), devflags: 0, bblogShift: 0, bblogSize: 8,
    bblogOffset: 16, utime: mdTime(1_700_000_100), events: 42n, resyncOffset: MD_MAX_SECTOR, devRoles: [0, 1, 2, 3],
    ...over,
  };
}

/** A copy of `sb` changed by `edit` (a DataView on the copy), with the checksum recomputed so later checks run. */
export function patched(sb: Uint8Array, edit: (dv: DataView, b: Uint8Array) => void): Uint8Array {
  const b = sb.slice();
  const dv = new DataView(b.buffer);
  edit(dv, b);
  dv.setUint32(216, mdSuperblockChecksum(b), true);
  return b;
}

export { seededRandom } from '../../harness/random.js';

/** The mdadm binary, or null when it is not installed. */
function findMdadm(): string | null {
  for (const p of ['mdadm', '/usr/sbin/mdadm', '/sbin/mdadm']) {
    const r = spawnSync(p, ['--version'], { encoding: 'utf8', timeout: 10_000 });
    if (r.error === undefined && /mdadm/.test(`${r.stdout}${r.stderr}`)) return p;
  }
  return null;
}

export const MDADM = findMdadm();

/** The cross-checks against mdadm need it: missing, they fail (scripts/setup.sh installs it). */
export function needMdadm(): void {
  if (MDADM === null) throw new Error('mdadm is not installed, so the cross-checks against it cannot run: run scripts/setup.sh as root (or apt-get install mdadm)');
}

/** Runs mdadm and returns its "Key : value" lines as a map (the first of each key). */
export function mdadm(args: string[]): Map<string, string> {
  needMdadm();
  const r = spawnSync(MDADM!, args, { encoding: 'utf8', timeout: 20_000 });
  assert.equal(r.status, 0, `mdadm ${args.join(' ')} failed: ${r.stderr}`);
  const out = new Map<string, string>();
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*([^:]+?)\s+:\s?(.*)$/.exec(line);
    if (m && !out.has(m[1]!)) out.set(m[1]!, m[2]!.trim());
  }
  return out;
}
