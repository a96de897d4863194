// The status page's recent events, derived by comparing two successive `status` snapshots of a node (pure).
import type { ServedRaidStatus } from '../../engine/raid/membership.js';
import type { PeerStatus, ResourceStatus } from '../../engine/replication/resource.js';

/** `status` as a node answers it on its control socket (daemon/node.ts): the resource's, plus its md array's. */
export type NodeStatus = ResourceStatus & { raid?: ServedRaidStatus; iscsi?: Record<string, number> };

export type EventKind = 'role' | 'disk' | 'quorum' | 'peer' | 'split-brain' | 'resync' | 'verify' | 'raid';

/** One thing that happened, as the page lists it. */
export interface StatusEvent {
  /** Milliseconds since the epoch, when the snapshot that showed it was taken. */
  at: number;
  kind: EventKind;
  level: 'info' | 'warn' | 'error';
  text: string;
}

const MiB = 1 << 20;
const size = (n: number): string => (n >= MiB ? `${(n / MiB).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`);

/** The events of one peer between `a` (absent: the peer was not in the last snapshot) and `b`. */
function peerEvents(me: string, name: string, a: PeerStatus, b: PeerStatus): Omit<StatusEvent, 'at'>[] {
  const out: Omit<StatusEvent, 'at'>[] = [];
  if (a.connection !== 'Connected' && b.connection === 'Connected') out.push({ kind: 'peer', level: 'info', text: `peer ${name} connected` });
  if (a.connection === 'Connected' && b.connection !== 'Connected') {
    out.push({ kind: 'peer', level: 'warn', text: `lost peer ${name} (${b.connection === 'StandAlone' ? 'disconnected: StandAlone' : 'Connecting again'})` });
  }
  if (a.role !== b.role && a.role !== 'Unknown' && b.role !== 'Unknown') {
    out.push({ kind: 'role', level: 'info', text: b.role === 'Primary' ? `${name} promoted to Primary` : `${name} demoted to Secondary` });
  } else if (a.role !== 'Primary' && b.role === 'Primary') {
    // Newly connected and already Primary: say who serves.
    out.push({ kind: 'role', level: 'info', text: `${name} is Primary` });
  }
  if (a.disk !== b.disk && a.disk !== 'DUnknown' && b.disk !== 'DUnknown') {
    const level = b.disk === 'Failed' || b.disk === 'Diskless' ? 'warn' : 'info';
    out.push({ kind: 'disk', level, text: b.disk === 'Diskless' ? `${name} detached its disk (was ${a.disk})` : `${name}'s disk ${a.disk} → ${b.disk}` });
  }
  if (!a.splitBrain && b.splitBrain) out.push({ kind: 'split-brain', level: 'error', text: `split brain with ${name}: ${b.splitBrain}` });
  else if (a.replication !== 'SplitBrain' && b.replication === 'SplitBrain' && !b.splitBrain) {
    out.push({ kind: 'split-brain', level: 'error', text: `split brain with ${name}` });
  }
  if (a.splitBrain && !b.splitBrain) out.push({ kind: 'split-brain', level: 'info', text: `split brain with ${name} resolved` });
  if (!a.resync && b.resync) {
    const r = b.resync;
    out.push({
      kind: 'resync', level: 'info',
      text: `resync ${r.asTarget ? `from ${name} to ${me}` : `from ${me} to ${name}`} started (${r.full ? 'full, ' : ''}${size(r.totalBytes - r.doneBytes)} to go)`,
    });
  }
  if (a.resync && !b.resync) {
    const r = a.resync;
    const last = b.lastResync;
    const done = last ? ` in ${last.seconds.toFixed(1)} s, ${size(last.asTarget ? last.bytesReceived : last.bytesSent)} moved` : '';
    out.push({
      kind: 'resync', level: b.outOfSyncBytes > 0 ? 'warn' : 'info',
      text: `resync ${r.asTarget ? `from ${name} to ${me}` : `from ${me} to ${name}`} ${b.outOfSyncBytes > 0 ? `stopped with ${size(b.outOfSyncBytes)} out of sync` : `finished${done}`}`,
    });
  }
  if (!a.verify?.running && b.verify?.running) out.push({ kind: 'verify', level: 'info', text: `verify with ${name} started` });
  if (a.verify?.running && b.verify && !b.verify.running) {
    const n = b.verify.outOfSyncBlocks;
    out.push({ kind: 'verify', level: n > 0 ? 'warn' : 'info', text: `verify with ${name} finished: ${n === 0 ? 'in sync' : `${n} blocks (${size(b.verify.outOfSyncBytes)}) out of sync`}` });
  }
  return out;
}

const NO_PEER: PeerStatus = {
  id: -1, connection: 'StandAlone', replication: 'Off', role: 'Unknown', disk: 'DUnknown', outOfSyncBytes: 0,
  stats: {} as PeerStatus['stats'],
};

/** What changed from snapshot `a` to snapshot `b` of the same node, as events stamped `at`; none for the first snapshot (`a` null). */
export function statusEvents(a: NodeStatus | null, b: NodeStatus, at: number): StatusEvent[] {
  if (a === null) return [];
  const out: Omit<StatusEvent, 'at'>[] = [];
  const me = b.node;
  if (a.role !== b.role) out.push({ kind: 'role', level: 'info', text: b.role === 'Primary' ? `${me} promoted to Primary` : `${me} demoted to Secondary` });
  if (a.disk !== b.disk) {
    if (b.disk === 'Diskless' && a.disk !== 'Diskless') out.push({ kind: 'disk', level: 'error', text: `${me} detached its disk (was ${a.disk})` });
    else if (a.disk === 'Diskless') out.push({ kind: 'disk', level: 'info', text: `${me} attached its disk (${b.disk})` });
    else out.push({ kind: 'disk', level: b.disk === 'Failed' ? 'error' : 'info', text: `${me}'s disk ${a.disk} → ${b.disk}` });
  }
  if (a.quorum && !b.quorum) out.push({ kind: 'quorum', level: 'error', text: `${me} lost quorum (${b.votes.have} of ${b.votes.needed} votes)` });
  if (!a.quorum && b.quorum) out.push({ kind: 'quorum', level: 'info', text: `${me} has quorum again (${b.votes.have} of ${b.votes.needed} votes)` });
  for (const [name, p] of Object.entries(b.peers)) out.push(...peerEvents(me, name, a.peers[name] ?? NO_PEER, p));
  const ra = a.raid;
  const rb = b.raid;
  if (ra && rb) {
    if (ra.degraded === 0 && rb.degraded > 0) out.push({ kind: 'raid', level: 'error', text: `md array degraded (${rb.degraded} of ${rb.raidDevices} slots out)` });
    if (ra.degraded > 0 && rb.degraded === 0) out.push({ kind: 'raid', level: 'info', text: 'md array in sync again' });
    if (!ra.work && rb.work) out.push({ kind: 'raid', level: 'info', text: `md array ${rb.work.action} started${rb.work.slot !== undefined ? ` on slot ${rb.work.slot}` : ''}` });
    if (ra.work && !rb.work) out.push({ kind: 'raid', level: 'info', text: `md array ${ra.work.action} ended` });
  }
  return out.map((e) => ({ at, ...e }));
}
