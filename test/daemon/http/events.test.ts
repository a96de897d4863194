// daemon/http/events.ts: the status page's events from pairs of status snapshots.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { statusEvents, type NodeStatus } from '../../../daemon/http/events.js';
import type { PeerStatus } from '../../../engine/replication/resource.js';

function peer(p: Partial<PeerStatus> = {}): PeerStatus {
  return { id: 1, connection: 'Connected', replication: 'Established', role: 'Secondary', disk: 'UpToDate', outOfSyncBytes: 0, stats: {} as PeerStatus['stats'], ...p };
}

function node(s: Partial<NodeStatus> = {}, beta: Partial<PeerStatus> = {}): NodeStatus {
  return {
    resource: 'r0', node: 'alpha', role: 'Secondary', disk: 'UpToDate', size: 1 << 24, quorum: true, votes: { have: 2, needed: 2 }, clients: 0,
    generation: '0', stats: {} as NodeStatus['stats'], peers: { beta: peer(beta) }, ...s,
  };
}

const texts = (a: NodeStatus | null, b: NodeStatus): string[] => statusEvents(a, b, 1).map((e) => e.text);

test('no events for the first snapshot or an unchanged one', () => {
  assert.deepEqual(texts(null, node()), []);
  assert.deepEqual(texts(node(), node()), []);
});

test('roles, disks and quorum of this node and its peers', () => {
  assert.deepEqual(texts(node(), node({ role: 'Primary' })), ['alpha promoted to Primary']);
  assert.deepEqual(texts(node({ role: 'Primary' }), node()), ['alpha demoted to Secondary']);
  assert.deepEqual(texts(node(), node({}, { role: 'Primary' })), ['beta promoted to Primary']);
  assert.deepEqual(texts(node(), node({ disk: 'Diskless' })), ['alpha detached its disk (was UpToDate)']);
  assert.equal(statusEvents(node(), node({ disk: 'Diskless' }), 1)[0]!.level, 'error');
  assert.deepEqual(texts(node({ disk: 'Diskless' }), node({ disk: 'Inconsistent' })), ['alpha attached its disk (Inconsistent)']);
  assert.deepEqual(texts(node(), node({}, { disk: 'Diskless' })), ['beta detached its disk (was UpToDate)']);
  assert.deepEqual(texts(node(), node({ quorum: false, votes: { have: 1, needed: 2 } })), ['alpha lost quorum (1 of 2 votes)']);
});

test('peers connected and lost, split brain, resync and verify start and end', () => {
  const gone = { connection: 'Connecting' as const, replication: 'Off' as const, role: 'Unknown' as const, disk: 'DUnknown' as const };
  assert.deepEqual(texts(node(), node({}, gone)), ['lost peer beta (Connecting again)']);
  assert.deepEqual(texts(node({}, gone), node({}, { role: 'Primary' })), ['peer beta connected', 'beta is Primary']);
  assert.deepEqual(texts(node(), node({}, { replication: 'SplitBrain', splitBrain: 'both wrote' })), ['split brain with beta: both wrote']);
  const resync = { asTarget: true, full: false, checksums: false, percent: 0, doneBytes: 0, totalBytes: 2 << 20, rateBytesPerSec: 0, etaSeconds: null, bytesSent: 0, bytesReceived: 0 };
  assert.deepEqual(texts(node(), node({}, { replication: 'SyncTarget', resync })), ['resync from beta to alpha started (2.0 MiB to go)']);
  const last = { bytesSent: 0, bytesReceived: 2 << 20, bytesSkipped: 0, seconds: 1.5, full: false, asTarget: true };
  assert.deepEqual(texts(node({}, { replication: 'SyncTarget', resync }), node({}, { lastResync: last })), ['resync from beta to alpha finished in 1.5 s, 2.0 MiB moved']);
  const v = { running: true, percent: 1, outOfSyncBlocks: 0, outOfSyncBytes: 0, seconds: 0 };
  assert.deepEqual(texts(node(), node({}, { verify: v })), ['verify with beta started']);
  assert.deepEqual(texts(node({}, { verify: v }), node({}, { verify: { ...v, running: false, outOfSyncBlocks: 2, outOfSyncBytes: 8192 } })),
    ['verify with beta finished: 2 blocks (8.0 KiB) out of sync']);
});
