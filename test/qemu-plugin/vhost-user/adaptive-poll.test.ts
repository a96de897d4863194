// The queue workers' adaptive polling window: it grows while the next work comes soon after the last, shrinks to nothing when it comes later than the longest window.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AdaptivePoll, POLL_START_US } from '../../../qemu-plugin/vhost-user/adaptive-poll.js';

test('a worker starts without polling and grows its window by doubling while gaps are shorter than the maximum', () => {
  const p = new AdaptivePoll(50);
  assert.equal(p.windowUs, 0);
  const seen: number[] = [];
  for (let i = 0; i < 6; i++) {
    p.gap(10); // work came back 10 µs after the last: a window that long would have caught it
    seen.push(p.windowUs);
  }
  // 4, 8, then 10 µs gaps are caught by a 16 µs window: no more growth.
  assert.deepEqual(seen, [POLL_START_US, 8, 16, 16, 16, 16]);
});

test('the window never passes the maximum, and gaps it catches leave it alone', () => {
  const p = new AdaptivePoll(50);
  for (let i = 0; i < 10; i++) p.gap(49);
  assert.equal(p.windowUs, 50);
  p.gap(30);
  assert.equal(p.windowUs, 50);
});

test('gaps longer than the maximum halve the window, down to no polling at all', () => {
  const p = new AdaptivePoll(64);
  for (let i = 0; i < 10; i++) p.gap(60);
  assert.equal(p.windowUs, 64);
  const seen: number[] = [];
  for (let i = 0; i < 6; i++) {
    p.gap(500); // a starved guest: its next request came 0.5 ms later
    seen.push(p.windowUs);
  }
  assert.deepEqual(seen, [32, 16, 8, 4, 0, 0]);
  // And it comes back as soon as work comes soon again.
  p.gap(3);
  assert.equal(p.windowUs, POLL_START_US);
});

test('a maximum of 0 never polls, and a fixed window (initial = maximum) stays fixed under short gaps', () => {
  const off = new AdaptivePoll(0, 50);
  off.gap(1);
  off.gap(1000);
  assert.equal(off.windowUs, 0);
  const fixed = new AdaptivePoll(50, 50);
  fixed.gap(20);
  assert.equal(fixed.windowUs, 50);
});
