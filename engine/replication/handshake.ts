// Deciding, when two nodes connect, who resyncs from whom: generation identifiers, bitmaps and split-brain policies.
// Pure functions: both ends run the same decision on the same two states and reach mirror-image answers.
import { STATE_CRASHED_PRIMARY, type DiskState, type Generations, type Role } from './frames.js';

/** What one side knows of a node when deciding. */
export interface NodeView {
  id: number;
  name: string;
  role: Role;
  disk: DiskState;
  flags: number;
  gens: Generations;
  promotedAt: number;
  /** Bits set in this node's bitmap toward the other node (its changes the other lacks). */
  outOfSyncBits: number;
  /** The generation this node's unfinished resync (as SyncTarget) copies; 0n: none. */
  resyncFrom: bigint;
}

export type Decision =
  | { kind: 'none' }
  /** `me` sends: bitmap-based unless `full`. */
  | { kind: 'source'; full: boolean; why: string }
  | { kind: 'target'; full: boolean; why: string }
  | { kind: 'split-brain'; why: string }
  | { kind: 'unrelated'; why: string };

/** The after-split-brain policies, as configured (drbd.conf words). */
export interface SplitBrainPolicy {
  afterSb0pri: string;
  afterSb1pri: string;
  afterSb2pri: string;
}

/** A generation identifier as logs and `status` show it: 16 hex digits. */
export const hex = (g: bigint): string => g.toString(16).padStart(16, '0');

/**
 * Decides the resync between `me` and `peer` from their generations (DRBD's UUID comparison):
 * equal current generations need nothing (or a bitmap resync when either side has marked blocks
 * or crashed as Primary); a side whose bitmap generation toward the other equals the other's current
 * one has exactly the changes in its bitmap; two sides that both moved on from the same generation
 * are a split brain; a generation found only in history means a full sync; anything else is
 * unrelated data.
 */
export function decideResync(me: NodeView, peer: NodeView): Decision {
  if (me.disk === 'Diskless' || peer.disk === 'Diskless' || me.disk === 'Failed' || peer.disk === 'Failed') return { kind: 'none' };
  const mc = me.gens.current;
  const pc = peer.gens.current;
  // An interrupted resync resumes where its SyncTarget's persisted bitmap says it stopped, while the
  // other side still holds the generation being copied (or moved on from it and tracked its changes
  // since in a bitmap based on it): the bitmap exchange adds those, so only what is left travels.
  if (resumes(me, peer)) return { kind: 'target', full: false, why: `resuming ${me.name}'s interrupted resync from generation ${hex(me.resyncFrom)}` };
  if (resumes(peer, me)) return { kind: 'source', full: false, why: `resuming ${peer.name}'s interrupted resync from generation ${hex(peer.resyncFrom)}` };
  if (mc === 0n && pc === 0n) return { kind: 'none' };
  if (mc === 0n) return { kind: 'target', full: true, why: `${me.name} has fresh metadata` };
  if (pc === 0n) return { kind: 'source', full: true, why: `${peer.name} has fresh metadata` };
  if (mc === pc) {
    const meCrashed = (me.flags & STATE_CRASHED_PRIMARY) !== 0;
    const peerCrashed = (peer.flags & STATE_CRASHED_PRIMARY) !== 0;
    const meInc = me.disk !== 'UpToDate';
    const peerInc = peer.disk !== 'UpToDate';
    if (meInc !== peerInc) {
      return meInc ? { kind: 'target', full: false, why: `${me.name} is ${me.disk}` } : { kind: 'source', full: false, why: `${peer.name} is ${peer.disk}` };
    }
    if (me.outOfSyncBits === 0 && peer.outOfSyncBits === 0 && !meCrashed && !peerCrashed) return { kind: 'none' };
    // Marked blocks (a crashed Primary's activity log, writes a dropped link missed, verify) are copied
    // from the node most likely to hold the newest data: the one that crashed as Primary, else the one
    // that marked changes, else a Primary, else the lower id.
    const meHas = me.outOfSyncBits > 0;
    const peerHas = peer.outOfSyncBits > 0;
    const meSource = meCrashed !== peerCrashed ? meCrashed
      : meHas !== peerHas ? meHas // the side that recorded changes the other lacks
      : me.role !== peer.role ? me.role === 'Primary'
      : me.id < peer.id;
    const why = meCrashed || peerCrashed ? `${meSource ? me.name : peer.name} was a crashed Primary` : 'blocks are marked out of sync';
    return meSource ? { kind: 'source', full: false, why } : { kind: 'target', full: false, why };
  }
  const myBase = me.gens.bitmap[peer.id] ?? 0n;
  const peerBase = peer.gens.bitmap[me.id] ?? 0n;
  const meOut = me.disk === 'Outdated';
  const peerOut = peer.disk === 'Outdated';
  const outdated = meOut ? me : peer;
  const upToDate = meOut ? peer : me;
  // ...unless the UpToDate side is an ancestor of the Outdated one (it missed writes the Outdated
  // side acknowledged before losing its quorum): then the generations below decide.
  const upToDateOlder = outdated.gens.history.includes(upToDate.gens.current) || (outdated.gens.bitmap[upToDate.id] ?? 0n) === upToDate.gens.current;
  if (meOut !== peerOut && upToDate.disk === 'UpToDate' && !upToDateOlder) {
    // Outdated data (a minority that lost its quorum mid-write) yields to UpToDate data whatever it
    // wrote since; the bitmaps cover the difference when both are based on a common generation.
    const bitmapOk = (myBase !== 0n && (myBase === pc || myBase === peerBase)) || (peerBase !== 0n && peerBase === mc);
    const why = `${meOut ? me.name : peer.name} is Outdated`;
    return meOut ? { kind: 'target', full: !bitmapOk, why } : { kind: 'source', full: !bitmapOk, why };
  }
  if (myBase !== 0n && myBase === pc) return { kind: 'source', full: false, why: `${peer.name} is at generation ${hex(pc)}, the base of ${me.name}'s bitmap` };
  if (peerBase !== 0n && peerBase === mc) return { kind: 'target', full: false, why: `${me.name} is at generation ${hex(mc)}, the base of ${peer.name}'s bitmap` };
  const related = (g: bigint, v: NodeView) => g !== 0n && (v.gens.current === g || v.gens.history.includes(g) || v.gens.bitmap.includes(g));
  if ((myBase !== 0n && related(myBase, peer)) || (peerBase !== 0n && related(peerBase, me))) {
    return { kind: 'split-brain', why: `both ${me.name} and ${peer.name} changed the data since generation ${hex(myBase || peerBase)}` };
  }
  if (me.gens.history.includes(pc)) return { kind: 'source', full: true, why: `${peer.name}'s generation ${hex(pc)} is in ${me.name}'s history` };
  if (peer.gens.history.includes(mc)) return { kind: 'target', full: true, why: `${me.name}'s generation ${hex(mc)} is in ${peer.name}'s history` };
  return { kind: 'unrelated', why: `${me.name} (${hex(mc)}) and ${peer.name} (${hex(pc)}) share no generation` };
}

/** `target` was resyncing from the data `source` still holds (see decideResync). */
function resumes(target: NodeView, source: NodeView): boolean {
  const g = target.resyncFrom;
  return target.disk === 'Inconsistent' && g !== 0n && source.disk !== 'Inconsistent'
    && (source.gens.current === g || (source.gens.bitmap[target.id] ?? 0n) === g);
}

/**
 * Applies the configured after-split-brain policy: returns the resolution from `me`'s point of view
 * ('source' or 'target', always bitmap-based over both sides' changes) or null to stay disconnected.
 */
export function resolveSplitBrain(me: NodeView, peer: NodeView, policy: SplitBrainPolicy): 'source' | 'target' | null {
  const primaries = (me.role === 'Primary' ? 1 : 0) + (peer.role === 'Primary' ? 1 : 0);
  if (primaries === 2) return null; // after-sb-2pri: only "disconnect" is supported
  if (primaries === 1) {
    const meSecondary = me.role !== 'Primary';
    switch (policy.afterSb1pri) {
      case 'discard-secondary':
        return meSecondary ? 'target' : 'source';
      case 'consensus': {
        const r = resolve0(me, peer, policy.afterSb0pri);
        // Only when the 0pri policy would discard the Secondary's changes anyway.
        if (r === null) return null;
        return (r === 'target') === meSecondary ? r : null;
      }
      default:
        return null;
    }
  }
  return resolve0(me, peer, policy.afterSb0pri);
}

function resolve0(me: NodeView, peer: NodeView, p: string): 'source' | 'target' | null {
  const byLess = (a: number, b: number): 'source' | 'target' | null => (a === b ? null : a < b ? 'target' : 'source');
  switch (p) {
    case 'discard-zero-changes':
      if (me.outOfSyncBits === 0 && peer.outOfSyncBits === 0) return me.id < peer.id ? 'source' : 'target';
      if (me.outOfSyncBits === 0) return 'target';
      if (peer.outOfSyncBits === 0) return 'source';
      return null;
    case 'discard-least-changes':
      return byLess(me.outOfSyncBits, peer.outOfSyncBits);
    case 'discard-younger-primary':
      // The node promoted later is the younger Primary: its changes are discarded.
      return byLess(peer.promotedAt, me.promotedAt);
    case 'discard-older-primary':
      return byLess(me.promotedAt, peer.promotedAt);
    default:
      if (p.startsWith('discard-node-')) {
        const name = p.slice('discard-node-'.length);
        if (name === me.name) return 'target';
        if (name === peer.name) return 'source';
      }
      return null;
  }
}
