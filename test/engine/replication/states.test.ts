// The state rules: which combinations of role, disk and replication a change may produce, and the door that enforces them.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { StateError, invalidChange, type NodeState } from '../../../engine/replication/states.js';
import { makeConfig, makeNodes } from './sim.js';

const node = (o: Partial<NodeState> = {}): NodeState => ({
  role: 'Secondary', disk: 'UpToDate', attached: true, replication: new Map([['b', 'Established']]), upToDatePeer: false, ...o,
});

test('an attached disk is UpToDate, Inconsistent or Outdated; a node without one is Diskless', () => {
  for (const disk of ['UpToDate', 'Inconsistent', 'Outdated'] as const) assert.equal(invalidChange(node(), node({ disk })), null);
  assert.match(invalidChange(node(), node({ disk: 'Diskless' }))!, /attached disk cannot be Diskless/);
  assert.equal(invalidChange(node(), node({ attached: false, disk: 'Diskless' })), null);
  assert.match(invalidChange(node(), node({ attached: false, disk: 'UpToDate' }))!, /Diskless, not UpToDate/);
});

test('becoming Primary needs UpToDate data, local or at a peer; staying Primary does not', () => {
  assert.equal(invalidChange(node(), node({ role: 'Primary' })), null);
  assert.match(invalidChange(node({ disk: 'Outdated' }), node({ disk: 'Outdated', role: 'Primary' }))!, /UpToDate data/);
  assert.equal(invalidChange(node({ disk: 'Outdated' }), node({ disk: 'Outdated', role: 'Primary', upToDatePeer: true })), null);
  assert.equal(invalidChange(node({ attached: false, disk: 'Diskless' }), node({ attached: false, disk: 'Diskless', role: 'Primary', upToDatePeer: true })), null);
  // A Primary whose disk fails goes on diskless, even with no UpToDate peer (its I/O fails instead).
  assert.equal(invalidChange(node({ role: 'Primary' }), node({ role: 'Primary', attached: false, disk: 'Diskless' })), null);
});

test('a SyncTarget does not hold Outdated data; a SyncSource holds whole data', () => {
  const rep = (r: string) => new Map([['b', r as 'SyncTarget']]);
  assert.equal(invalidChange(node(), node({ disk: 'Inconsistent', replication: rep('SyncTarget') })), null);
  assert.match(invalidChange(node(), node({ disk: 'Outdated', replication: rep('SyncTarget') }))!, /resyncing from b while this node's data is Outdated/);
  assert.equal(invalidChange(node(), node({ replication: rep('SyncSource') })), null);
  assert.equal(invalidChange(node(), node({ disk: 'Outdated', replication: rep('SyncSource') })), null);
  assert.match(invalidChange(node(), node({ disk: 'Inconsistent', replication: rep('SyncSource') }))!, /SyncSource holds Inconsistent data/);
});

test('Resource.changeState refuses an invalid change and changes nothing', () => {
  const [a] = makeNodes(makeConfig(2));
  const seq = a!.md!.superblockSeq;
  let notified = 0;
  a!.onChange = () => notified++;
  assert.throws(() => a!.changeState({ disk: 'Diskless' }), StateError);
  assert.equal(a!.diskState, 'UpToDate');
  assert.equal(a!.md!.superblockSeq, seq, 'nothing persisted');
  assert.equal(notified, 0, 'nobody told');
  // A valid one goes through every step: persisted, announced, notified.
  a!.changeState({ disk: 'Outdated' });
  assert.equal(a!.diskState, 'Outdated');
  assert.equal(a!.md!.disk, 'Outdated');
  assert.equal(a!.md!.superblockSeq, seq + 1);
  assert.equal(notified, 1);
  a!.close();
});
