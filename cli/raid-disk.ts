// `twindisk create-md` for a node whose disk is an md array: creates the array (or checks the one its members hold), then the replication metadata beside it.
import fs from 'node:fs';
import path from 'node:path';
import { lockNodeDisks } from '../daemon/node.js';
import { formatBytes, raidStatus } from '../engine/raid/array-status.js';
import { superblockUuid } from '../engine/raid/membership.js';
import { assembleArray, type MdArray } from '../engine/raid/array.js';
import { mdLayoutName, parseMdLayout } from '../engine/raid/geometry.js';
import { SECTOR } from '../engine/raid/md-constants.js';
import { mdadmDataOffset } from '../engine/raid/md-superblock.js';
import { RaidVolume } from '../engine/raid/raid-volume.js';
import type { NodeConfig, RaidDiskConfig, ResourceConfig } from '../engine/replication/config.js';
import { Metadata } from '../engine/replication/metadata.js';
import { CommandError } from './errors.js';
import { cliError, openMembers } from './raid.js';

export interface RaidDiskMdOptions {
  /**
   * The volume's usable bytes, as for a file disk: missing member files are created (sparse) just large
   * enough for an array of this size, and the replication metadata describes this many bytes (every
   * node of a resource needs the same). Without it, the members must exist and the whole array is used.
   */
  size?: number;
  force?: boolean;
  /** Once created: the node's replication metadata says UpToDate at the resource's first generation. */
  initialGeneration?: (md: Metadata) => void;
}

/** mdadm's default chunk (the array's when the resource file gives none). */
const DEFAULT_CHUNK = 512 << 10;

/**
 * Bytes of each new member for an array of at least `usable` bytes: the data each member carries
 * (whole chunks) plus the data offset mdadm would choose for a member of that size (which grows with it).
 */
export function memberBytesFor(r: RaidDiskConfig, usable: number): number {
  const n = r.members.length;
  const chunk = r.level === 1 ? 4096 : r.chunkBytes ?? DEFAULT_CHUNK;
  // Each member's share: raid1 mirrors all of it, raid10 (near 2) half of n copies, raid4/5 one parity, raid6 two.
  const share = r.level === 1 ? usable : r.level === 10 ? Math.ceil((2 * usable) / n) : Math.ceil(usable / (n - (r.level === 6 ? 2 : 1)));
  const component = Math.ceil(share / chunk) * chunk;
  let total = component + (1 << 20);
  for (let i = 0; i < 8; i++) {
    const next = component + Number(mdadmDataOffset(BigInt(total / SECTOR), r.level === 1 ? 0 : chunk / SECTOR)) * SECTOR;
    if (next === total) break;
    total = next;
  }
  return total;
}

/** How the array the members hold differs from the resource file's, or null when it matches. */
function mismatch(a: MdArray, want: RaidDiskConfig): string | null {
  const g = a.geometry;
  if (g.level !== want.level) return `they hold a raid${g.level} array, the resource file says raid${want.level}`;
  if (want.layout !== undefined && g.level !== 1 && g.layout !== parseMdLayout(want.level, want.layout)) {
    return `the array's layout is ${mdLayoutName(g.level, g.layout)}, the resource file says ${want.layout}`;
  }
  if (want.chunkBytes !== undefined && g.level !== 1 && g.chunkSectors * SECTOR !== want.chunkBytes) {
    return `the array's chunk is ${formatBytes(g.chunkSectors * SECTOR)}, the resource file says ${formatBytes(want.chunkBytes)}`;
  }
  if (g.raidDisks !== want.members.length) return `the array has ${g.raidDisks} slots, the resource file lists ${want.members.length} members`;
  return null;
}

/**
 * create-md on a node whose disk is an md array. Members without an md superblock: the array is
 * created on them as the resource file says (members this command creates are zero, so their parity
 * already holds: no initial resync; otherwise the node resyncs the array in the background once up).
 * Members of one array: it is assembled and checked against the file, and kept. Then the replication
 * metadata is created in the node's meta-disk, sized to the array.
 */
export async function createRaidDiskMd(cfg: ResourceConfig, me: NodeConfig, o: RaidDiskMdOptions): Promise<void> {
  const want = me.raid!;
  const peerIds = cfg.nodes.filter((n) => n.id !== me.id).map((n) => n.id);
  const metaDir = path.dirname(me.metaDisk);
  if (!fs.existsSync(metaDir)) throw new CommandError(`cannot create ${me.metaDisk}: the directory ${metaDir} does not exist (create it first: mkdir -p ${metaDir})`);
  const metaExisted = fs.existsSync(me.metaDisk);
  const locks = lockNodeDisks(cfg, me, `create-md for ${cfg.resource}/${me.name}`, { meta: true });
  let open: ReturnType<typeof openMembers> | null = null;
  let vol: RaidVolume | null = null;
  let ok = false;
  try {
    const memberBytes = o.size !== undefined ? memberBytesFor(want, o.size) : undefined;
    open = openMembers(want.members, `create-md for ${cfg.resource}/${me.name}:`, { readOnly: false, ...(memberBytes !== undefined ? { createSize: memberBytes } : {}) });
    const members = open.members;
    const held = members.map((m) => superblockUuid(m));
    const fresh = open.created.length === members.length;
    try {
      if (held.every((u) => u === null) || o.force) {
        vol = await RaidVolume.create(members, {
          level: want.level, bitmap: want.bitmap, assumeClean: fresh, name: `${cfg.resource}-${me.name}`,
          ...(want.layout !== undefined ? { layout: want.layout } : {}),
          ...(want.chunkBytes !== undefined ? { chunkBytes: want.chunkBytes } : {}),
        });
        const s = raidStatus(vol.array);
        process.stdout.write(`${me.name}: created ${s.level} array ${s.uuid} on ${want.members.join(', ')}: ${formatBytes(s.arrayBytes)}`
          + `${s.layout ? `, ${s.layout}` : ''}${s.bitmap ? ', internal bitmap' : ', no bitmap'}\n`);
        for (const f of open.created) process.stdout.write(`  created ${f} (${formatBytes(memberBytes!)}, sparse)\n`);
        if (s.resync.needed) process.stdout.write(`  its initial resync runs in the background once the node is up\n`);
      } else {
        const other = held.findIndex((u) => u === null);
        if (other >= 0) {
          throw new CommandError(`${members[other]!.name} holds no md superblock but ${members[held.findIndex((u) => u !== null)]!.name} does: `
            + 'give members of one array, or --force to create a new array on all of them (their data is lost)');
        }
        const array = await assembleArray(members, {});
        const why = mismatch(array, want);
        const s = raidStatus(array);
        array.close();
        if (why !== null) throw new CommandError(`the members of ${me.name}'s disk do not match the resource file: ${why}; fix the file, or --force to create a new array (their data is lost)`);
        process.stdout.write(`${me.name}: keeping the ${s.level} array ${s.uuid} its members hold: ${formatBytes(s.arrayBytes)}, ${s.mdstat}\n`);
      }
    } catch (e) {
      throw cliError(e);
    }
    const arrayBytes = vol !== null ? vol.backend.info.size : (await sizeOfArray(members));
    await vol?.close();
    vol = null;
    if (o.size !== undefined && o.size > arrayBytes) {
      throw new CommandError(`--size ${o.size} is more than the ${arrayBytes} bytes ${me.name}'s md array holds: give a smaller size, or larger members`);
    }
    const md = Metadata.create({
      backingFile: me.disk!, backingSize: o.size ?? arrayBytes, metaFile: me.metaDisk, nodeId: me.id, peerIds,
      granularity: cfg.bitmapGranularity, alExtents: cfg.alExtents, force: !!o.force,
    });
    try {
      o.initialGeneration?.(md);
      process.stdout.write(`${me.name}: metadata created on ${me.metaDisk}; ${md.dataSize} usable bytes, ${md.disk}\n`);
    } finally {
      md.close();
    }
    ok = true;
  } finally {
    await vol?.close().catch(() => undefined);
    open?.close();
    if (!ok) for (const f of open?.created ?? []) fs.rmSync(f, { force: true });
    if (!ok && !metaExisted) fs.rmSync(me.metaDisk, { force: true }); // the empty file the lock created
    for (const l of locks) l.release();
  }
}

/** The bytes of the array `members` hold (assembled again, read only). */
async function sizeOfArray(members: Parameters<typeof assembleArray>[0]): Promise<number> {
  const a = await assembleArray(members, {});
  try {
    return a.arrayBytes;
  } finally {
    a.close();
  }
}
