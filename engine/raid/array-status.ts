// What an md array reports of itself: `raid status --json`'s object, as /proc/mdstat and mdadm --detail show it.
import type { MdArray, MdSlotState } from './array.js';
import { mdLayoutName } from './geometry.js';
import { MD_MAX_SECTOR, SECTOR } from './md-constants.js';

/** `[4/3] [UU_U]`, as /proc/mdstat shows it. */
export function mdstatSlots(states: readonly MdSlotState[]): string {
  const up = states.filter((s) => s.state === 'in-sync').length;
  return `[${states.length}/${up}] [${states.map((s) => (s.state === 'in-sync' ? 'U' : '_')).join('')}]`;
}

/** What `raid status --json` prints (and `raid status` shows as text). */
export interface RaidStatus {
  uuid: string;
  name: string;
  level: string;
  layout: string;
  /** Bytes; 0 for raid1. */
  chunkBytes: number;
  raidDevices: number;
  arrayBytes: number;
  /** Bytes of each member used for data, and where the data starts. */
  componentBytes: number;
  dataOffset: number;
  events: number;
  /** clean: shut down cleanly and in sync; dirty: writes may have been in flight, or never synced. */
  state: 'clean' | 'dirty';
  /** Slots not in sync. */
  degraded: number;
  mdstat: string;
  members: { slot: number; state: 'in-sync' | 'recovering' | 'missing'; member: string | null; recoveredBytes?: number; reason?: string }[];
  /** Members given but left out: stale (missed changes) or failed. */
  leftOut: { member: string; why: 'stale' | 'faulty'; slot: number | null; events: number; reason: string }[];
  spares: string[];
  bitmap: { chunkBytes: number; chunks: number; dirtyChunks: number; eventsCleared: number; stale: boolean } | null;
  resync: { needed: boolean; resyncOffset: string; regions: { arrayOffset: number; arrayLength: number }[]; arrayBytes: number };
}

export function raidStatus(a: MdArray): RaidStatus {
  const g = a.geometry;
  const bm = a.bitmap;
  const regions = a.resyncRegions();
  const layout = g.level === 1 ? '' : g.level === 4 ? 'parity-last' : mdLayoutName(g.level, g.layout);
  return {
    uuid: a.uuid, name: a.name, level: `raid${g.level}`, layout, chunkBytes: g.level === 1 ? 0 : g.chunkSectors * SECTOR,
    raidDevices: g.raidDisks, arrayBytes: a.arrayBytes, componentBytes: a.componentBytes, dataOffset: a.dataOffset,
    events: Number(a.events), state: a.clean ? 'clean' : 'dirty', degraded: a.degraded, mdstat: mdstatSlots(a.states),
    members: a.states.map((s, slot) => {
      if (s.state === 'in-sync') return { slot, state: s.state, member: s.member.name };
      if (s.state === 'recovering') return { slot, state: s.state, member: s.member.name, recoveredBytes: s.recoveryOffset * SECTOR };
      return { slot, state: s.state, member: null, reason: s.reason };
    }),
    leftOut: a.leftOut.map((l) => ({ member: l.member.name, why: l.why, slot: l.slot, events: Number(l.events), reason: l.reason })),
    spares: a.spares.map((m) => m.name),
    bitmap: bm === null ? null : {
      chunkBytes: bm.chunkBytes, chunks: bm.bits, dirtyChunks: bm.dirtyCount(), eventsCleared: Number(bm.superblock.eventsCleared), stale: bm.wasStale,
    },
    resync: {
      needed: a.resyncOffset !== MD_MAX_SECTOR,
      resyncOffset: a.resyncOffset === MD_MAX_SECTOR ? 'MaxSector' : String(a.resyncOffset),
      regions: regions.map((r) => ({ arrayOffset: r.arrayOffset, arrayLength: r.arrayLength })),
      arrayBytes: regions.reduce((n, r) => n + r.arrayLength, 0),
    },
  };
}

/** 1536 -> "1.5 KiB", 50331648 -> "48.0 MiB". */
export function formatBytes(n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} bytes` : `${v.toFixed(1)} ${units[u]}`;
}
