// The KVM probe behind `qemu run --accel auto|kvm`: it says why KVM is not usable, or null.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { kvmProblem } from '../../cli/kvm.js';

test('a missing device, a device that is not KVM, and this machine\'s /dev/kvm', () => {
  assert.match(kvmProblem('/nonexistent/kvm')!, /does not exist \(no KVM in this kernel or container/);
  assert.match(kvmProblem('/dev/null')!, /\/dev\/null is not a KVM device/);
  const here = kvmProblem();
  assert.ok(here === null || typeof here === 'string');
});
