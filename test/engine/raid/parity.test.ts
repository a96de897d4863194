// Tests of a stripe's parity in md's terms: P and Q as the kernel defines them, and every member (any two for raid6) rebuilt from the rest.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mdStripeMap, type MdGeometry } from '../../../engine/raid/geometry.js';
import {
  ALGORITHM_LEFT_ASYMMETRIC, ALGORITHM_LEFT_SYMMETRIC, ALGORITHM_PARITY_0, ALGORITHM_PARITY_N, ALGORITHM_RIGHT_SYMMETRIC,
  ALGORITHM_ROTATING_N_CONTINUE, ALGORITHM_ROTATING_ZERO_RESTART,
} from '../../../engine/raid/md-constants.js';
import { computeParity, reconstruct } from '../../../engine/raid/parity.js';
import { seededRandom } from '../../harness/random.js';

const LEN = 4096;

/** GF(2^8) with md's polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d), written out bit by bit: the independent reference for Q. */
function gfMul(a: number, b: number): number {
  let r = 0;
  for (; b; b >>= 1) {
    if (b & 1) r ^= a;
    a = (a << 1) ^ (a & 0x80 ? 0x11d : 0);
    a &= 0xff;
  }
  return r;
}

/** A stripe of random data blocks (P and Q blocks left empty) for stripe `stripe` of `g`. */
function stripeOf(g: MdGeometry, stripe: number, seed: number) {
  const rnd = seededRandom(seed);
  const map = mdStripeMap(g, stripe);
  const members = Array.from({ length: g.raidDisks }, () => new Uint8Array(LEN));
  for (const c of map.data) for (let i = 0; i < LEN; i++) members[c.disk]![i] = Math.floor(rnd() * 256);
  return { map, members };
}

const raid5: [string, MdGeometry][] = [
  ['raid5 left-symmetric, 4 members', { level: 5, layout: ALGORITHM_LEFT_SYMMETRIC, raidDisks: 4, chunkSectors: 8 }],
  ['raid5 left-asymmetric, 3 members', { level: 5, layout: ALGORITHM_LEFT_ASYMMETRIC, raidDisks: 3, chunkSectors: 8 }],
  ['raid5 right-symmetric, 5 members', { level: 5, layout: ALGORITHM_RIGHT_SYMMETRIC, raidDisks: 5, chunkSectors: 8 }],
  ['raid4 (parity last), 4 members', { level: 4, layout: ALGORITHM_PARITY_N, raidDisks: 4, chunkSectors: 8 }],
  ['raid5 parity-first, 4 members', { level: 5, layout: ALGORITHM_PARITY_0, raidDisks: 4, chunkSectors: 8 }],
];

for (const [name, g] of raid5) {
  test(`${name}: P is the XOR of the data, and any one member is rebuilt from the others`, () => {
    for (let stripe = 0; stripe < g.raidDisks + 1; stripe++) {
      const { map, members } = stripeOf(g, stripe, 100 + stripe);
      computeParity(g, map, members);
      for (let i = 0; i < LEN; i += 97) {
        let x = 0;
        for (const c of map.data) x ^= members[c.disk]![i]!;
        assert.equal(members[map.pDisk]![i], x, `P byte ${i} of stripe ${stripe}`);
      }
      const whole = members.map((m) => Uint8Array.from(m));
      for (let lost = 0; lost < g.raidDisks; lost++) {
        members[lost]!.fill(0xee);
        reconstruct(g, map, members, [lost]);
        assert.deepEqual(members[lost], whole[lost], `member ${lost} of stripe ${stripe} rebuilt`);
      }
    }
  });
}

const raid6: [string, MdGeometry][] = [
  ['raid6 left-symmetric (md\'s default), 6 members', { level: 6, layout: ALGORITHM_LEFT_SYMMETRIC, raidDisks: 6, chunkSectors: 8 }],
  ['raid6 rotating-zero-restart (dm-raid zr), 5 members', { level: 6, layout: ALGORITHM_ROTATING_ZERO_RESTART, raidDisks: 5, chunkSectors: 8 }],
  ['raid6 rotating-n-continue (dm-raid nc), 6 members', { level: 6, layout: ALGORITHM_ROTATING_N_CONTINUE, raidDisks: 6, chunkSectors: 8 }],
  ['raid6 parity-last, 4 members', { level: 6, layout: ALGORITHM_PARITY_N, raidDisks: 4, chunkSectors: 8 }],
];

for (const [name, g] of raid6) {
  test(`${name}: P and Q as md defines them, and any one or two members rebuilt from the others`, () => {
    for (let stripe = 0; stripe < g.raidDisks + 1; stripe++) {
      const { map, members } = stripeOf(g, stripe, 200 + stripe);
      computeParity(g, map, members);
      const q = map.qDisk!;
      for (let i = 0; i < LEN; i += 89) {
        let p = 0;
        let qq = 0;
        for (const c of map.data) {
          const d = members[c.disk]![i]!;
          p ^= d;
          let coef = 1;
          for (let k = 0; k < c.syndromeSlot!; k++) coef = gfMul(coef, 2);
          qq ^= gfMul(coef, d);
        }
        assert.equal(members[map.pDisk]![i], p, `P byte ${i} of stripe ${stripe}`);
        assert.equal(members[q]![i], qq, `Q byte ${i} of stripe ${stripe}`);
      }
      const whole = members.map((m) => Uint8Array.from(m));
      for (let a = 0; a < g.raidDisks; a++) {
        for (let b = a; b < g.raidDisks; b++) {
          const lost = a === b ? [a] : [a, b];
          for (const d of lost) members[d]!.fill(0xee);
          reconstruct(g, map, members, lost);
          for (const d of lost) assert.deepEqual(members[d], whole[d], `member ${d} of stripe ${stripe} rebuilt (lost ${lost.join(' and ')})`);
        }
      }
    }
  });
}

test('bad stripes are refused with a reason', () => {
  const g: MdGeometry = { level: 5, layout: ALGORITHM_LEFT_SYMMETRIC, raidDisks: 4, chunkSectors: 8 };
  const { map, members } = stripeOf(g, 0, 1);
  assert.throws(() => computeParity(g, map, members.slice(0, 3)), /needs 4 blocks, not 3/);
  assert.throws(() => computeParity(g, map, [...members.slice(0, 3), new Uint8Array(LEN / 2)]), /same length/);
  assert.throws(() => reconstruct(g, map, members, [0, 1]), /survives 1 missing member per stripe, not 2/);
  assert.throws(() => reconstruct(g, map, members, [7]), /in 0\.\.3/);
  assert.throws(() => computeParity({ level: 1, layout: 0, raidDisks: 2, chunkSectors: 8 }, map, members.slice(0, 2)), /raid1 has no parity/);
});
