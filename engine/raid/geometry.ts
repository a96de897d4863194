// md's data placement for raid1, raid4/5/6 and raid10: which member holds which sector; pure arithmetic.
//
// raid4/5/6 follow raid5_compute_sector (drivers/md/raid5.c): the array is cut into chunks of
// `chunkSectors`; chunk c belongs to stripe c / dataDisks and is the (c % dataDisks)-th data chunk of it;
// every member holds one chunk of each stripe at member sector `stripe * chunkSectors` (plus data_offset,
// which is the caller's). The layout decides which members hold P (and Q) in each stripe and in which
// order the data chunks fill the others. raid10 follows __raid10_find_phys (drivers/md/raid10.c); raid1
// puts every sector on every member at the same sector.
//
// Sector numbers are plain numbers (safe integers, so up to 2^53 sectors); member sectors are relative to
// the member's data_offset.
import {
  ALGORITHM_LEFT_ASYMMETRIC, ALGORITHM_LEFT_ASYMMETRIC_6, ALGORITHM_LEFT_SYMMETRIC, ALGORITHM_LEFT_SYMMETRIC_6,
  ALGORITHM_PARITY_0, ALGORITHM_PARITY_0_6, ALGORITHM_PARITY_N, ALGORITHM_RIGHT_ASYMMETRIC,
  ALGORITHM_RIGHT_ASYMMETRIC_6, ALGORITHM_RIGHT_SYMMETRIC, ALGORITHM_RIGHT_SYMMETRIC_6,
  ALGORITHM_ROTATING_N_CONTINUE, ALGORITHM_ROTATING_N_RESTART, ALGORITHM_ROTATING_ZERO_RESTART,
  MD_MIN_CHUNK_SECTORS, RAID10_DEFAULT_LAYOUT, RAID10_OFFSET_BIT,
} from './md-constants.js';

export {
  ALGORITHM_LEFT_ASYMMETRIC, ALGORITHM_LEFT_ASYMMETRIC_6, ALGORITHM_LEFT_SYMMETRIC, ALGORITHM_LEFT_SYMMETRIC_6,
  ALGORITHM_PARITY_0, ALGORITHM_PARITY_0_6, ALGORITHM_PARITY_N, ALGORITHM_PARITY_N_6, ALGORITHM_RIGHT_ASYMMETRIC,
  ALGORITHM_RIGHT_ASYMMETRIC_6, ALGORITHM_RIGHT_SYMMETRIC, ALGORITHM_RIGHT_SYMMETRIC_6,
  ALGORITHM_ROTATING_N_CONTINUE, ALGORITHM_ROTATING_N_RESTART, ALGORITHM_ROTATING_ZERO_RESTART,
  RAID10_DEFAULT_LAYOUT, RAID10_OFFSET_BIT,
} from './md-constants.js';

// ---------------------------------------------------------------------------------------------- types

/** The RAID levels whose placement this module knows. */
export type MdRaidLevel = 1 | 4 | 5 | 6 | 10;

/** An array's shape, as its superblock records it. */
export interface MdGeometry {
  level: MdRaidLevel;
  /** ALGORITHM_* for raid5/6; near/far/offset bits for raid10; ignored for raid1 and raid4. */
  layout: number;
  /** Members (slots), including missing ones. */
  raidDisks: number;
  /** Chunk size in sectors; ignored for raid1. */
  chunkSectors: number;
  /**
   * raid10 "far" layouts only: the superblock's `size` (sectors used on each member), which sets how far
   * apart the far copies are. Ignored elsewhere.
   */
  componentSectors?: number;
}

/** A geometry md would refuse to run; the message says what is wrong. */
export class MdGeometryError extends Error {
  override readonly name = 'MdGeometryError';
}

/** A sector on one member (relative to its data_offset). */
export interface DiskAddress {
  disk: number;
  sector: number;
}

/** Where raid4/5/6 put one array sector (raid5_compute_sector's outputs). */
export interface StripedLocation {
  /** The member holding the sector (`dd_idx`). */
  dataDisk: number;
  /** The sector on that member: `stripe * chunkSectors + chunkOffset`. */
  diskSector: number;
  /** The stripe number, and the array chunk number (`stripe * dataDisks + its index in the stripe`). */
  stripe: number;
  chunk: number;
  chunkOffset: number;
  /** The member holding P for this stripe (`pd_idx`). */
  pDisk: number;
  /** The member holding Q (`qd_idx`), or null below raid6. */
  qDisk: number | null;
}

/** One data chunk of a stripe. */
export interface StripeChunk {
  /** Array chunk number: the array's sectors `[chunk * chunkSectors, (chunk + 1) * chunkSectors)`. */
  chunk: number;
  disk: number;
  /**
   * raid6: this chunk's index in the Q syndrome (Q = sum of g^slot * D), as set_syndrome_sources orders
   * them; null below raid6. md layouts number the data members from the one after Q; the DDF layouts
   * (8, 9, 10) use the member index itself, over `syndromeDisks` = raidDisks slots with P and Q as zero.
   */
  syndromeSlot: number | null;
}

/** The inverse view of one stripe: what every member holds in it. */
export interface StripeMap {
  stripe: number;
  /** Sector (on every member) where this stripe's chunks start. */
  diskSector: number;
  pDisk: number;
  qDisk: number | null;
  /** The data chunks in array order; a full-stripe write covers exactly these. */
  data: StripeChunk[];
  /** raid6: the number of syndrome slots (raidDisks - 2, or raidDisks for the DDF layouts); null below. */
  syndromeDisks: number | null;
}

/** What one member holds in one stripe (compute_blocknr's answer). */
export type StripeBlock = { kind: 'data'; chunk: number } | { kind: 'p' } | { kind: 'q' };

/** Where every copy of one array sector lives, and the stripe's parity members (raid4/5/6). */
export interface MdPlacement {
  /** raid4/5/6: the one data location. raid1/raid10: every copy, in the order the kernel lists them. */
  copies: DiskAddress[];
  pDisk: number | null;
  qDisk: number | null;
  /** raid4/5/6: the stripe number; null for mirrors. */
  stripe: number | null;
}

// ------------------------------------------------------------------------------------- layout names

/** mdadm's raid5 layout names (r5layout, maps.c), number to name. */
export const RAID5_LAYOUT_NAMES: ReadonlyMap<number, string> = new Map([
  [ALGORITHM_LEFT_ASYMMETRIC, 'left-asymmetric'],
  [ALGORITHM_RIGHT_ASYMMETRIC, 'right-asymmetric'],
  [ALGORITHM_LEFT_SYMMETRIC, 'left-symmetric'],
  [ALGORITHM_RIGHT_SYMMETRIC, 'right-symmetric'],
  [ALGORITHM_PARITY_0, 'parity-first'],
  [ALGORITHM_PARITY_N, 'parity-last'],
]);

/** mdadm's raid6 layout names (r6layout, maps.c), number to name. */
export const RAID6_LAYOUT_NAMES: ReadonlyMap<number, string> = new Map([
  ...RAID5_LAYOUT_NAMES,
  [ALGORITHM_ROTATING_ZERO_RESTART, 'ddf-zero-restart'],
  [ALGORITHM_ROTATING_N_RESTART, 'ddf-N-restart'],
  [ALGORITHM_ROTATING_N_CONTINUE, 'ddf-N-continue'],
  [ALGORITHM_LEFT_ASYMMETRIC_6, 'left-asymmetric-6'],
  [ALGORITHM_RIGHT_ASYMMETRIC_6, 'right-asymmetric-6'],
  [ALGORITHM_LEFT_SYMMETRIC_6, 'left-symmetric-6'],
  [ALGORITHM_RIGHT_SYMMETRIC_6, 'right-symmetric-6'],
  [ALGORITHM_PARITY_0_6, 'parity-first-6'],
]);

/** Other names mdadm accepts for raid5 layouts (its aliases; for raid5 the "ddf" names are md layouts). */
const RAID5_ALIASES: ReadonlyMap<string, number> = new Map([
  ['default', ALGORITHM_LEFT_SYMMETRIC], ['la', ALGORITHM_LEFT_ASYMMETRIC], ['ra', ALGORITHM_RIGHT_ASYMMETRIC],
  ['ls', ALGORITHM_LEFT_SYMMETRIC], ['rs', ALGORITHM_RIGHT_SYMMETRIC],
  ['ddf-zero-restart', ALGORITHM_RIGHT_ASYMMETRIC], ['ddf-n-restart', ALGORITHM_LEFT_ASYMMETRIC],
  ['ddf-n-continue', ALGORITHM_LEFT_SYMMETRIC],
]);

/** Other names for raid6 layouts: mdadm's aliases and dm-raid's short names for the DDF layouts. */
const RAID6_ALIASES: ReadonlyMap<string, number> = new Map([
  ['default', ALGORITHM_LEFT_SYMMETRIC], ['la', ALGORITHM_LEFT_ASYMMETRIC], ['ra', ALGORITHM_RIGHT_ASYMMETRIC],
  ['ls', ALGORITHM_LEFT_SYMMETRIC], ['rs', ALGORITHM_RIGHT_SYMMETRIC],
  ['zr', ALGORITHM_ROTATING_ZERO_RESTART], ['nr', ALGORITHM_ROTATING_N_RESTART], ['nc', ALGORITHM_ROTATING_N_CONTINUE],
]);

/** raid10 layout fields. */
export interface Raid10Layout {
  near: number;
  far: number;
  /** "offset" layout: far copies in the next chunk row instead of the far half of the member. */
  offset: boolean;
  /** Bits 17-18: 0 the original far sets (the whole array), 1 the buggy "improved" one, 2 far sets of near*far members. */
  farSetVersion: number;
}

/** Splits a raid10 `layout` into its fields (setup_geo in raid10.c). */
export function raid10Layout(layout: number): Raid10Layout {
  return { near: layout & 0xff, far: (layout >>> 8) & 0xff, offset: (layout & RAID10_OFFSET_BIT) !== 0, farSetVersion: layout >>> 17 };
}

/**
 * The layout's name as mdadm prints it: "left-symmetric", "ddf-N-restart", "near=2", "near=2, far=2",
 * "offset=2"; raid1 and raid4 have none (""). An unknown value reads "-unknown-", as in mdadm.
 */
export function mdLayoutName(level: number, layout: number): string {
  if (level === 5) return RAID5_LAYOUT_NAMES.get(layout) ?? '-unknown-';
  if (level === 6) return RAID6_LAYOUT_NAMES.get(layout) ?? '-unknown-';
  if (level === 10) {
    const l = raid10Layout(layout);
    const parts: string[] = [];
    if (l.near !== 1) parts.push(`near=${l.near}`);
    if (l.far !== 1) parts.push(`${l.offset ? 'offset' : 'far'}=${l.far}`);
    return l.near * l.far === 1 ? [...parts, 'NO REDUNDANCY'].join(', ') : parts.join(', ');
  }
  return '';
}

/**
 * Parses a layout name for `level`: mdadm's names and aliases ("left-symmetric", "ls", "default",
 * "parity-first", "ddf-N-restart", "left-symmetric-6", ...), dm-raid's "zr"/"nr"/"nc" for raid6, and for
 * raid10 "n2"/"f2"/"o2" (mdadm's parse_layout_10) or "near=2"-style names; a decimal number is taken as
 * is. Case does not matter. Throws MdGeometryError listing the valid names.
 */
export function parseMdLayout(level: MdRaidLevel, name: string): number {
  const s = name.trim().toLowerCase();
  if (/^\d+$/.test(s)) return Number(s);
  if (level === 1 || level === 4) {
    if (s === 'default' || s === '') return 0;
    throw new MdGeometryError(`raid${level} has no layouts: omit "${name}"`);
  }
  if (level === 10) {
    const short = /^([nfo])(\d+)$/.exec(s);
    const long = /^(near|far|offset)=(\d+)$/.exec(s);
    const m = short ?? long;
    const copies = m ? Number(m[2]) : NaN;
    if (s === 'default') return RAID10_DEFAULT_LAYOUT;
    if (m && copies >= 1 && copies <= 200) {
      const kind = m[1]![0];
      if (kind === 'n') return 0x100 + copies;
      if (kind === 'o') return RAID10_OFFSET_BIT + (copies << 8) + 1;
      return (copies << 8) + 1;
    }
    throw new MdGeometryError(`"${name}" is not a raid10 layout: use n<copies>, f<copies> or o<copies> (e.g. n2, md's default)`);
  }
  const names = level === 5 ? RAID5_LAYOUT_NAMES : RAID6_LAYOUT_NAMES;
  for (const [n, v] of names) if (v.toLowerCase() === s) return n;
  const alias = (level === 5 ? RAID5_ALIASES : RAID6_ALIASES).get(s);
  if (alias !== undefined) return alias;
  throw new MdGeometryError(`"${name}" is not a raid${level} layout: use one of ${[...names.values()].join(', ')}`);
}

// ---------------------------------------------------------------------------------------- validation

const RAID5_LAYOUTS = new Set(RAID5_LAYOUT_NAMES.keys());
const RAID6_LAYOUTS = new Set(RAID6_LAYOUT_NAMES.keys());
const DDF_LAYOUTS = new Set([ALGORITHM_ROTATING_ZERO_RESTART, ALGORITHM_ROTATING_N_RESTART, ALGORITHM_ROTATING_N_CONTINUE]);

function isPow2(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

/**
 * Throws MdGeometryError unless md would run an array of this shape: raid1 with at least one member;
 * raid4/5 with at least 2 and raid6 with at least 4; a layout the personality knows (raid5: 0-5, raid6:
 * 0-5, 8-10, 16-20, raid10: near*far copies from 2 to raidDisks, far-set version 0-2); a chunk that is a
 * power of two of at least one page (8 sectors); for raid10 far layouts, `componentSectors`.
 */
export function checkMdGeometry(g: MdGeometry): void {
  const n = g.raidDisks;
  if (!Number.isInteger(n) || n < 1) throw new MdGeometryError(`raidDisks ${n} is invalid: an array has at least one member`);
  if (g.level === 1) return;
  if (g.level !== 4 && g.level !== 5 && g.level !== 6 && g.level !== 10) {
    throw new MdGeometryError(`raid level ${String(g.level)} is not handled here: use 1, 4, 5, 6 or 10`);
  }
  if (!isPow2(g.chunkSectors) || g.chunkSectors < MD_MIN_CHUNK_SECTORS) {
    throw new MdGeometryError(`chunk of ${g.chunkSectors} sectors is invalid: md wants a power of two of at least ${MD_MIN_CHUNK_SECTORS} sectors (4 KiB)`);
  }
  if ((g.level === 4 || g.level === 5) && n < 2) throw new MdGeometryError(`raid${g.level} needs at least 2 members, not ${n}`);
  if (g.level === 6 && n < 4) throw new MdGeometryError(`raid6 needs at least 4 members, not ${n}`);
  if (g.level === 5 && !RAID5_LAYOUTS.has(g.layout)) {
    throw new MdGeometryError(
      `raid5 layout ${g.layout} is not supported by md: use 0-5 (${[...RAID5_LAYOUT_NAMES.values()].join(', ')})`,
    );
  }
  if (g.level === 6 && !RAID6_LAYOUTS.has(g.layout)) throw new MdGeometryError(`raid6 layout ${g.layout} is not supported by md: use 0-5, 8-10 or 16-20`);
  if (g.level === 10) {
    if (g.layout >>> 19 !== 0 || g.layout < 0 || g.layout >>> 17 > 2) {
      throw new MdGeometryError(
        `raid10 layout 0x${g.layout.toString(16)} has unknown bits: md knows near (bits 0-7), far (8-15), offset (16) and far-set version 0-2 (17-18)`,
      );
    }
    const l = raid10Layout(g.layout);
    const copies = l.near * l.far;
    if (copies < 2 || copies > n) {
      throw new MdGeometryError(
        `raid10 layout ${mdLayoutName(10, g.layout)} makes ${copies} copies on ${n} members: md needs 2..${n} copies`,
      );
    }
    if (l.farSetVersion === 1 && Math.floor(n / l.far) < l.far) {
      throw new MdGeometryError(
        'raid10 far-set version 1 with these counts does not keep copies apart: md warns it is unsafe; recreate with version 2',
      );
    }
    if (l.far > 1 && !l.offset && (g.componentSectors === undefined || !Number.isSafeInteger(g.componentSectors) || g.componentSectors < 0)) {
      throw new MdGeometryError('a raid10 far layout needs componentSectors (the superblock\'s size): the far copies sit one stride (a fraction of it) apart');
    }
  }
}

/** Members that hold data in each stripe: raidDisks less one (raid4/5) or two (raid6). */
export function mdDataDisks(g: MdGeometry): number {
  if (g.level === 6) return g.raidDisks - 2;
  if (g.level === 4 || g.level === 5) return g.raidDisks - 1;
  throw new MdGeometryError(`raid${g.level} has no parity stripes`);
}

// ------------------------------------------------------------------------------------------ raid4/5/6

/** pd_idx, qd_idx and the member of the stripe's `k`-th data chunk, as raid5_compute_sector sets them. */
function stripeSlots(g: MdGeometry, stripe: number, k: number): { dd: number; pd: number; qd: number | null } {
  const n = g.raidDisks;
  const dataDisks = mdDataDisks(g);
  let dd = k;
  let pd: number;
  let qd: number | null = null;
  if (g.level === 4) return { dd, pd: dataDisks, qd };
  if (g.level === 5) {
    switch (g.layout) {
      case ALGORITHM_LEFT_ASYMMETRIC:
        pd = dataDisks - (stripe % n);
        if (dd >= pd) dd++;
        break;
      case ALGORITHM_RIGHT_ASYMMETRIC:
        pd = stripe % n;
        if (dd >= pd) dd++;
        break;
      case ALGORITHM_LEFT_SYMMETRIC:
        pd = dataDisks - (stripe % n);
        dd = (pd + 1 + dd) % n;
        break;
      case ALGORITHM_RIGHT_SYMMETRIC:
        pd = stripe % n;
        dd = (pd + 1 + dd) % n;
        break;
      case ALGORITHM_PARITY_0:
        pd = 0;
        dd++;
        break;
      case ALGORITHM_PARITY_N:
        pd = dataDisks;
        break;
      default:
        throw new MdGeometryError(`raid5 layout ${g.layout} is not supported by md`);
    }
    return { dd, pd, qd };
  }
  // raid6
  /** P then Q side by side, wrapping as "Q D D D P" when P is last (the *_ASYMMETRIC and DDF restart layouts). */
  const pqAdjacent = (p: number): void => {
    pd = p;
    qd = pd + 1;
    if (pd === n - 1) {
      dd++; // Q D D D P
      qd = 0;
    } else if (dd >= pd) {
      dd += 2; // D D P Q D
    }
  };
  switch (g.layout) {
    case ALGORITHM_LEFT_ASYMMETRIC:
      pqAdjacent(n - 1 - (stripe % n));
      break;
    case ALGORITHM_RIGHT_ASYMMETRIC:
    case ALGORITHM_ROTATING_ZERO_RESTART: // same placement; Q is computed in DDF order
      pqAdjacent(stripe % n);
      break;
    case ALGORITHM_ROTATING_N_RESTART: // left-asymmetric one stripe on: the first stripe is D D D P Q
      pqAdjacent(n - 1 - ((stripe + 1) % n));
      break;
    case ALGORITHM_LEFT_SYMMETRIC:
      pd = n - 1 - (stripe % n);
      qd = (pd + 1) % n;
      dd = (pd + 2 + dd) % n;
      break;
    case ALGORITHM_RIGHT_SYMMETRIC:
      pd = stripe % n;
      qd = (pd + 1) % n;
      dd = (pd + 2 + dd) % n;
      break;
    case ALGORITHM_PARITY_0:
      pd = 0;
      qd = 1;
      dd += 2;
      break;
    case ALGORITHM_PARITY_N:
      pd = dataDisks;
      qd = dataDisks + 1;
      break;
    case ALGORITHM_ROTATING_N_CONTINUE: // left-symmetric with Q before P
      pd = n - 1 - (stripe % n);
      qd = (pd + n - 1) % n;
      dd = (pd + 1 + dd) % n;
      break;
    case ALGORITHM_LEFT_ASYMMETRIC_6: // raid5 layouts over the first n-1 members, Q on the last
      pd = dataDisks - (stripe % (n - 1));
      if (dd >= pd) dd++;
      qd = n - 1;
      break;
    case ALGORITHM_RIGHT_ASYMMETRIC_6:
      pd = stripe % (n - 1);
      if (dd >= pd) dd++;
      qd = n - 1;
      break;
    case ALGORITHM_LEFT_SYMMETRIC_6:
      pd = dataDisks - (stripe % (n - 1));
      dd = (pd + 1 + dd) % (n - 1);
      qd = n - 1;
      break;
    case ALGORITHM_RIGHT_SYMMETRIC_6:
      pd = stripe % (n - 1);
      dd = (pd + 1 + dd) % (n - 1);
      qd = n - 1;
      break;
    case ALGORITHM_PARITY_0_6:
      pd = 0;
      dd++;
      qd = n - 1;
      break;
    default:
      throw new MdGeometryError(`raid6 layout ${g.layout} is not supported by md`);
  }
  return { dd, pd: pd!, qd };
}

/**
 * raid5_compute_sector for raid4/5/6: the member and member sector holding array sector `sector`, with
 * the stripe's P and Q members. The caller adds the member's data_offset.
 */
export function raid5ComputeSector(g: MdGeometry, sector: number): StripedLocation {
  checkMdGeometry(g);
  checkSector(sector);
  const chunkOffset = sector % g.chunkSectors;
  const chunk = Math.floor(sector / g.chunkSectors);
  const dataDisks = mdDataDisks(g);
  const stripe = Math.floor(chunk / dataDisks);
  const { dd, pd, qd } = stripeSlots(g, stripe, chunk % dataDisks);
  return { dataDisk: dd, diskSector: stripe * g.chunkSectors + chunkOffset, stripe, chunk, chunkOffset, pDisk: pd, qDisk: qd };
}

/**
 * Stripe `stripe` seen whole: its P/Q members and its data chunks in array order, with their Q-syndrome
 * slots for raid6 (raid6_d0 and raid6_idx_to_slot in raid5.c). A full-stripe write of chunks
 * `data[0].chunk ..` needs no read: parity comes from these chunks alone.
 */
export function mdStripeMap(g: MdGeometry, stripe: number): StripeMap {
  checkMdGeometry(g);
  checkSector(stripe);
  const dataDisks = mdDataDisks(g);
  const data: StripeChunk[] = [];
  let pd = 0;
  let qd: number | null = null;
  for (let k = 0; k < dataDisks; k++) {
    const s = stripeSlots(g, stripe, k);
    pd = s.pd;
    qd = s.qd;
    data.push({ chunk: stripe * dataDisks + k, disk: s.dd, syndromeSlot: null });
  }
  let syndromeDisks: number | null = null;
  if (g.level === 6 && qd !== null) {
    const n = g.raidDisks;
    const ddf = DDF_LAYOUTS.has(g.layout);
    syndromeDisks = ddf ? n : n - 2;
    const slotOf = new Map<number, number>();
    const d0 = ddf ? 0 : qd === n - 1 ? 0 : qd + 1;
    let count = 0;
    let i = d0;
    do {
      if (ddf) slotOf.set(i, i); // DDF: every member has its own slot, P and Q's are zero
      else if (i !== pd && i !== qd) slotOf.set(i, count++);
      i = (i + 1) % n;
    } while (i !== d0);
    for (const c of data) c.syndromeSlot = slotOf.get(c.disk)!;
  }
  return { stripe, diskSector: stripe * g.chunkSectors, pDisk: pd, qDisk: qd, data, syndromeDisks };
}

/** What member `disk` holds in stripe `stripe`: a data chunk (its array chunk number), P or Q (compute_blocknr). */
export function mdStripeBlock(g: MdGeometry, stripe: number, disk: number): StripeBlock {
  if (!Number.isInteger(disk) || disk < 0 || disk >= g.raidDisks) throw new MdGeometryError(`member ${disk} is not in a ${g.raidDisks}-member array`);
  const m = mdStripeMap(g, stripe);
  if (disk === m.pDisk) return { kind: 'p' };
  if (disk === m.qDisk) return { kind: 'q' };
  const c = m.data.find((d) => d.disk === disk);
  if (c === undefined) throw new MdGeometryError(`layout ${g.layout} leaves member ${disk} unused in stripe ${stripe}: the layout table is inconsistent`);
  return { kind: 'data', chunk: c.chunk };
}

/** The stripe holding array chunk `chunk` (raid4/5/6). */
export function mdStripeOfChunk(g: MdGeometry, chunk: number): number {
  return Math.floor(chunk / mdDataDisks(g));
}

// --------------------------------------------------------------------------------------------- raid10

interface Raid10Geo {
  near: number;
  far: number;
  offset: boolean;
  farSetSize: number;
  chunk: number;
  stride: number;
  devSectors: number | null;
}

/** setup_geo and calc_sectors (raid10.c): the far-set size and the distance between far copies. */
function raid10Geo(g: MdGeometry): Raid10Geo {
  const l = raid10Layout(g.layout);
  const n = g.raidDisks;
  const farSetSize = l.farSetVersion === 0 ? n : l.farSetVersion === 1 ? Math.floor(n / l.far) : l.far * l.near;
  const chunk = g.chunkSectors;
  let stride = chunk;
  let devSectors: number | null = null;
  if (g.componentSectors !== undefined) {
    let size = Math.floor(g.componentSectors / chunk);
    size = Math.floor(size / l.far);
    size = Math.floor((size * n) / l.near); // chunks in the array
    size = Math.ceil((size * l.near * l.far) / n); // chunks used on each member
    devSectors = size * chunk;
    if (!l.offset) stride = Math.floor(size / l.far) * chunk;
  }
  return { near: l.near, far: l.far, offset: l.offset, farSetSize, chunk, stride, devSectors };
}

/**
 * __raid10_find_phys: every copy of array sector `sector`, near copies first (each followed by its far
 * copies), as the kernel lists them. Near copies sit on consecutive members (wrapping to the next chunk
 * row); far copies one stride further down on a shifted member.
 */
export function raid10FindPhys(g: MdGeometry, sector: number): DiskAddress[] {
  checkMdGeometry(g);
  checkSector(sector);
  if (g.level !== 10) throw new MdGeometryError(`raid10FindPhys is for raid10, not raid${g.level}`);
  const geo = raid10Geo(g);
  const n = g.raidDisks;
  const lastFarSetStart = (Math.floor(n / geo.farSetSize) - 1) * geo.farSetSize;
  const lastFarSetSize = geo.farSetSize + (n % geo.farSetSize);
  const chunk = Math.floor(sector / geo.chunk) * geo.near;
  let stripe = Math.floor(chunk / n);
  let dev = chunk % n;
  if (geo.offset) stripe *= geo.far;
  let base = stripe * geo.chunk + (sector % geo.chunk); // the first copy's member sector
  const out: DiskAddress[] = [];
  for (let i = 0; i < geo.near; i++) {
    let d = dev;
    let s = base;
    out.push({ disk: d, sector: s });
    for (let f = 1; f < geo.far; f++) {
      const set = Math.floor(d / geo.farSetSize);
      d += geo.near;
      if (n % geo.farSetSize !== 0 && d > lastFarSetStart) {
        d = ((d - lastFarSetStart) % lastFarSetSize) + lastFarSetStart;
      } else {
        d = (d % geo.farSetSize) + geo.farSetSize * set;
      }
      s += geo.stride;
      out.push({ disk: d, sector: s });
    }
    dev++;
    if (dev >= n) {
      dev = 0;
      base += geo.chunk;
    }
  }
  return out;
}

// -------------------------------------------------------------------------------------------- any level

/** Where array sector `sector` lives: every copy (mirrors) or the data member and the stripe's parity. */
export function mdMapSector(g: MdGeometry, sector: number): MdPlacement {
  checkMdGeometry(g);
  checkSector(sector);
  if (g.level === 1) {
    return { copies: Array.from({ length: g.raidDisks }, (_, disk) => ({ disk, sector })), pDisk: null, qDisk: null, stripe: null };
  }
  if (g.level === 10) return { copies: raid10FindPhys(g, sector), pDisk: null, qDisk: null, stripe: null };
  const l = raid5ComputeSector(g, sector);
  return { copies: [{ disk: l.dataDisk, sector: l.diskSector }], pDisk: l.pDisk, qDisk: l.qDisk, stripe: l.stripe };
}

/**
 * Sectors of array data when each member gives `componentSectors` (the superblock's `size`): raid1 the
 * member size; raid4/5/6 whole chunks times data members (raid5_size); raid10 raid10_size over the
 * per-member sectors calc_sectors settles on.
 */
export function mdArraySectors(g: MdGeometry, componentSectors: number): number {
  checkMdGeometry(g);
  checkSector(componentSectors);
  if (g.level === 1) return componentSectors;
  if (g.level === 10) {
    const l = raid10Layout(g.layout);
    const dev = raid10Geo({ ...g, componentSectors }).devSectors!;
    let size = Math.floor(dev / g.chunkSectors);
    size = Math.floor(size / l.far);
    size = Math.floor((size * g.raidDisks) / l.near);
    return size * g.chunkSectors;
  }
  return Math.floor(componentSectors / g.chunkSectors) * g.chunkSectors * mdDataDisks(g);
}

function checkSector(s: number): void {
  if (!Number.isSafeInteger(s) || s < 0) throw new MdGeometryError(`sector ${s} is invalid: use a non-negative safe integer`);
}
