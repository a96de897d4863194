// The states of a node and the one door every change goes through: validated first, then persisted and announced.
//
// DRBD's drbd_state.c: a change of role, disk state or a peer's replication state is checked as a whole
// (is the new combination allowed, is the transition allowed?) before anything is assigned;
// Resource.changeState() then fans it out in a fixed order: persist, local reads, announce to peers,
// notify. This file holds the rules; it is pure.
import type { DiskState, Role } from './frames.js';
import type { Replication } from './frame-rules.js';

/** Why a role change was refused, in words a user can act on. */
export class RoleError extends Error {}

/** A state change that breaks the rules below: a bug in the engine, never a user's mistake. */
export class StateError extends Error {}

/** What the rules look at: the node's state before or after a change. */
export interface NodeState {
  role: Role;
  disk: DiskState;
  /** The node has its disk attached (metadata open). */
  attached: boolean;
  /** Replication state toward each peer, by name. */
  replication: ReadonlyMap<string, Replication>;
  /** Some peer is connected, past its handshake, with UpToDate data. */
  upToDatePeer: boolean;
}

/** Disk states a node with an attached disk may be in (persisted in its metadata). */
const ATTACHED_DISK: ReadonlySet<DiskState> = new Set(['UpToDate', 'Inconsistent', 'Outdated']);

/**
 * Null when the change from `from` to `to` is allowed, else why not. The rules:
 * - a node with its disk attached is UpToDate, Inconsistent or Outdated; without one, Diskless;
 * - becoming Primary needs UpToDate data, local or at a connected peer;
 * - a SyncTarget's own data is Inconsistent while it copies (or UpToDate already, when it copies from
 *   several sources and one of them finished first); a SyncSource's is whole (UpToDate or Outdated).
 */
export function invalidChange(from: NodeState, to: NodeState): string | null {
  if (to.attached !== ATTACHED_DISK.has(to.disk)) {
    return to.attached ? `an attached disk cannot be ${to.disk}` : `without a disk the node is Diskless, not ${to.disk}`;
  }
  if (from.role !== 'Primary' && to.role === 'Primary' && to.disk !== 'UpToDate' && !to.upToDatePeer) {
    return 'a node becomes Primary only with UpToDate data, its own or a connected peer\'s';
  }
  for (const [peer, r] of to.replication) {
    if (r === 'SyncTarget' && to.disk !== 'Inconsistent' && to.disk !== 'UpToDate') return `resyncing from ${peer} while this node's data is ${to.disk}`;
    if (r === 'SyncSource' && to.disk !== 'UpToDate' && to.disk !== 'Outdated') return `${peer}'s SyncSource holds ${to.disk} data`;
  }
  return null;
}
