// Tests of the resync decision and the split-brain policies: generations, bitmaps, crashed primaries.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { STATE_CRASHED_PRIMARY, type DiskState, type Role } from '../../../engine/replication/frames.js';
import { decideResync, resolveSplitBrain, type NodeView } from '../../../engine/replication/handshake.js';

function node(id: number, current: bigint, o: { bitmap?: Record<number, bigint>; history?: bigint[]; role?: Role; disk?: DiskState; flags?: number; bits?: number; promotedAt?: number; resyncFrom?: bigint } = {}): NodeView {
  const bitmap = new Array<bigint>(32).fill(0n);
  for (const [k, v] of Object.entries(o.bitmap ?? {})) bitmap[Number(k)] = v;
  return {
    id, name: ['alpha', 'beta', 'gamma'][id]!, role: o.role ?? 'Secondary', disk: o.disk ?? 'UpToDate', flags: o.flags ?? 0,
    gens: { current, bitmap, history: o.history ?? [] }, promotedAt: o.promotedAt ?? 0, outOfSyncBits: o.bits ?? 0,
    resyncFrom: o.resyncFrom ?? 0n,
  };
}

/** Both sides must reach mirror-image decisions. */
function decide(a: NodeView, b: NodeView) {
  const da = decideResync(a, b);
  const db = decideResync(b, a);
  const mirror: Record<string, string> = { none: 'none', source: 'target', target: 'source', 'split-brain': 'split-brain', unrelated: 'unrelated' };
  assert.equal(db.kind, mirror[da.kind], `mirror of ${da.kind}`);
  if ('full' in da && 'full' in db) assert.equal(da.full, db.full);
  return da;
}

test('equal generations and clean bitmaps: nothing to do', () => {
  assert.equal(decide(node(0, 10n), node(1, 10n)).kind, 'none');
  assert.equal(decide(node(0, 0n, { disk: 'Inconsistent' }), node(1, 0n, { disk: 'Inconsistent' })).kind, 'none');
});

test('a diskless side never resyncs', () => {
  assert.equal(decide(node(0, 10n), node(1, 0n, { disk: 'Diskless' })).kind, 'none');
});

test('fresh metadata against data: full sync from the side with data', () => {
  const d = decide(node(0, 10n), node(1, 0n, { disk: 'Inconsistent' }));
  assert.equal(d.kind, 'source');
  assert.ok('full' in d && d.full);
});

test('the bitmap generation matches the peer: bitmap-based sync in that direction', () => {
  // alpha wrote while beta was away: alpha's bitmap toward beta is relative to 10, beta still at 10.
  const d = decide(node(0, 20n, { bitmap: { 1: 10n }, history: [10n], bits: 37 }), node(1, 10n));
  assert.equal(d.kind, 'source');
  assert.ok('full' in d && !d.full);
});

test('both moved on from the same generation: split brain', () => {
  const a = node(0, 20n, { bitmap: { 1: 10n }, history: [10n], bits: 3 });
  const b = node(1, 30n, { bitmap: { 0: 10n }, history: [10n], bits: 5 });
  assert.equal(decide(a, b).kind, 'split-brain');
});

test('a generation found only in history: full sync', () => {
  const d = decide(node(0, 40n, { history: [30n, 20n] }), node(1, 20n));
  assert.equal(d.kind, 'source');
  assert.ok('full' in d && d.full);
});

test('no shared generation: unrelated data', () => {
  assert.equal(decide(node(0, 40n, { history: [30n] }), node(1, 50n, { history: [60n] })).kind, 'unrelated');
});

test('equal generations with marked blocks: the crashed Primary is the source, else the side that marked changes, else the Primary, else the lower id', () => {
  assert.equal(decide(node(0, 10n, { bits: 7 }), node(1, 10n, { flags: STATE_CRASHED_PRIMARY, bits: 4 })).kind, 'target');
  // A write the peer missed (its link dropped mid-write) is marked only on the side that has it.
  assert.equal(decide(node(0, 10n), node(1, 10n, { bits: 2 })).kind, 'target');
  assert.equal(decide(node(0, 10n, { bits: 2 }), node(1, 10n, { role: 'Primary' })).kind, 'source');
  assert.equal(decide(node(0, 10n, { bits: 2 }), node(1, 10n, { role: 'Primary', bits: 1 })).kind, 'target');
  assert.equal(decide(node(0, 10n, { bits: 2 }), node(1, 10n, { bits: 3 })).kind, 'source');
});

test('equal generations, one side Inconsistent (an interrupted resync): the UpToDate side is the source', () => {
  assert.equal(decide(node(0, 10n, { disk: 'Inconsistent' }), node(1, 10n)).kind, 'target');
});

test('split-brain policies resolve from both sides consistently', () => {
  const policy = (p0: string, p1 = 'disconnect') => ({ afterSb0pri: p0, afterSb1pri: p1, afterSb2pri: 'disconnect' });
  const a = node(0, 20n, { bitmap: { 1: 10n }, bits: 0, promotedAt: 1000 });
  const b = node(1, 30n, { bitmap: { 0: 10n }, bits: 9, promotedAt: 2000 });
  const both = (p: ReturnType<typeof policy>, x = a, y = b) => [resolveSplitBrain(x, y, p), resolveSplitBrain(y, x, p)];
  assert.deepEqual(both(policy('disconnect')), [null, null]);
  assert.deepEqual(both(policy('discard-zero-changes')), ['target', 'source']);
  assert.deepEqual(both(policy('discard-least-changes')), ['target', 'source']);
  assert.deepEqual(both(policy('discard-younger-primary')), ['source', 'target']);
  assert.deepEqual(both(policy('discard-older-primary')), ['target', 'source']);
  assert.deepEqual(both(policy('discard-node-beta')), ['source', 'target']);
  // Both changed: discard-zero-changes cannot decide.
  const a2 = { ...a, outOfSyncBits: 4 };
  assert.deepEqual(both(policy('discard-zero-changes'), a2, b), [null, null]);
  // One Primary: discard-secondary keeps the Primary's data.
  const ap = { ...a2, role: 'Primary' as Role };
  assert.deepEqual(both(policy('disconnect', 'discard-secondary'), ap, b), ['source', 'target']);
  // Two Primaries are never resolved automatically.
  assert.deepEqual(both(policy('discard-zero-changes'), ap, { ...b, role: 'Primary' }), [null, null]);
});

test('Outdated data (a minority that lost its quorum mid-write) yields to UpToDate data, by bitmap when both share a base', () => {
  // alpha wrote without quorum after the split (base 10); beta went on as Primary (base 10 as well).
  const a = node(0, 20n, { bitmap: { 1: 10n }, history: [10n], disk: 'Outdated', bits: 1 });
  const b = node(1, 30n, { bitmap: { 0: 10n }, history: [10n], bits: 5 });
  const d = decide(a, b);
  assert.equal(d.kind, 'target');
  assert.ok('full' in d && !d.full);
  // No shared base: a full sync, still from the UpToDate side.
  const d2 = decide(node(0, 20n, { disk: 'Outdated' }), node(1, 30n));
  assert.equal(d2.kind, 'target');
  assert.ok('full' in d2 && d2.full);
  // Inconsistent data is never overwritten this way: it may hold writes nobody else has.
  assert.equal(decide(node(0, 20n, { disk: 'Inconsistent' }), node(1, 30n)).kind, 'unrelated');
});

test('an interrupted resync resumes from the bitmap while the source holds the generation it copied', () => {
  // A fresh target (generation 0) that had started a full sync to generation 10.
  const target = node(1, 0n, { disk: 'Inconsistent', resyncFrom: 10n, bits: 300 });
  let d = decide(node(0, 10n), target);
  assert.equal(d.kind, 'source');
  assert.ok('full' in d && !d.full, 'not full: the rest of the bitmap only');
  assert.match(d.kind === 'source' ? d.why : '', /resuming beta's interrupted resync/);
  // The source wrote meanwhile: a new generation whose bitmap toward the target is based on 10.
  d = decide(node(0, 20n, { bitmap: { 1: 10n }, history: [10n] }), target);
  assert.equal(d.kind, 'source');
  assert.ok('full' in d && !d.full);
  // A partial resync (the target had older data at 5) resumes too.
  d = decide(node(0, 20n, { bitmap: { 1: 5n }, history: [5n] }), node(1, 5n, { disk: 'Inconsistent', resyncFrom: 20n }));
  assert.equal(d.kind, 'source');
  assert.ok('full' in d && !d.full);
  // The source's data is no longer the generation being copied (and no bitmap based on it): the old rules apply.
  d = decide(node(0, 30n, { history: [20n, 10n] }), target);
  assert.equal(d.kind, 'source');
  assert.ok('full' in d && d.full, 'fresh metadata against unrelated progress: full sync');
  // An Inconsistent "source" never resumes anyone (whatever follows, handshake() copies only whole data).
  d = decide(node(0, 10n, { disk: 'Inconsistent' }), target);
  assert.ok(d.kind === 'source' && d.full && !/resuming/.test(d.why));
});
