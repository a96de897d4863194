// Tests of md placement: literal stripe tables per raid4/5/6 layout (worked out by hand from raid5_compute_sector),
// raid10 copies (from __raid10_find_phys), raid1, Q-syndrome slots, sizes, layout names and refusals.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ALGORITHM_LEFT_ASYMMETRIC, ALGORITHM_LEFT_ASYMMETRIC_6, ALGORITHM_LEFT_SYMMETRIC, ALGORITHM_LEFT_SYMMETRIC_6,
  ALGORITHM_PARITY_0, ALGORITHM_PARITY_0_6, ALGORITHM_PARITY_N, ALGORITHM_RIGHT_ASYMMETRIC, ALGORITHM_RIGHT_ASYMMETRIC_6,
  ALGORITHM_RIGHT_SYMMETRIC, ALGORITHM_RIGHT_SYMMETRIC_6, ALGORITHM_ROTATING_N_CONTINUE, ALGORITHM_ROTATING_N_RESTART,
  ALGORITHM_ROTATING_ZERO_RESTART, MdGeometryError, RAID5_LAYOUT_NAMES, RAID6_LAYOUT_NAMES, checkMdGeometry,
  mdArraySectors, mdDataDisks, mdLayoutName, mdMapSector, mdStripeBlock, mdStripeMap, mdStripeOfChunk, parseMdLayout,
  raid10FindPhys, raid10Layout, raid5ComputeSector, type MdGeometry, type MdRaidLevel,
} from '../../../engine/raid/geometry.js';

const CHUNK = 8; // sectors (4 KiB): small numbers in the tables below

/** Stripes 0..rows-1 as "D<chunk>"/"P"/"Q" per member, read through the inverse map (compute_blocknr). */
function render(g: MdGeometry, rows: number): string[] {
  return Array.from({ length: rows }, (_, s) => Array.from({ length: g.raidDisks }, (_, d) => {
    const b = mdStripeBlock(g, s, d);
    return b.kind === 'data' ? `D${b.chunk}` : b.kind.toUpperCase();
  }).join(' '));
}

/** Checks `table` both ways: the inverse map renders it, and raid5_compute_sector puts every chunk where it says. */
function expectTable(level: MdRaidLevel, layout: number, raidDisks: number, table: string[]): void {
  const g: MdGeometry = { level, layout, raidDisks, chunkSectors: CHUNK };
  assert.deepEqual(render(g, table.length), table, `raid${level} layout ${layout} on ${raidDisks} members`);
  table.forEach((row, stripe) => {
    const cells = row.split(' ');
    const q = cells.indexOf('Q');
    cells.forEach((cell, disk) => {
      if (!cell.startsWith('D')) return;
      const chunk = Number(cell.slice(1));
      const loc = raid5ComputeSector(g, chunk * CHUNK + 5);
      assert.deepEqual(loc, {
        dataDisk: disk, diskSector: stripe * CHUNK + 5, stripe, chunk, chunkOffset: 5, pDisk: cells.indexOf('P'), qDisk: q < 0 ? null : q,
      }, `chunk ${chunk}`);
    });
  });
}

test('raid5 left-symmetric (md\'s default), 4 members: the rotation the issue describes', () => {
  // Stripe 0: P on member 3, chunks 0,1,2 on 0,1,2. Stripe 1: P on 2, chunks 3,4,5 on 3,0,1.
  expectTable(5, ALGORITHM_LEFT_SYMMETRIC, 4, [
    'D0 D1 D2 P',
    'D4 D5 P D3',
    'D8 P D6 D7',
    'P D9 D10 D11',
    'D12 D13 D14 P',
  ]);
  expectTable(5, ALGORITHM_LEFT_SYMMETRIC, 5, ['D0 D1 D2 D3 P', 'D5 D6 D7 P D4', 'D10 D11 P D8 D9']);
});

test('raid5 left-asymmetric, right-asymmetric, right-symmetric, parity-first, parity-last; raid4', () => {
  expectTable(5, ALGORITHM_LEFT_ASYMMETRIC, 4, ['D0 D1 D2 P', 'D3 D4 P D5', 'D6 P D7 D8', 'P D9 D10 D11', 'D12 D13 D14 P']);
  expectTable(5, ALGORITHM_RIGHT_ASYMMETRIC, 4, ['P D0 D1 D2', 'D3 P D4 D5', 'D6 D7 P D8', 'D9 D10 D11 P', 'P D12 D13 D14']);
  expectTable(5, ALGORITHM_RIGHT_SYMMETRIC, 4, ['P D0 D1 D2', 'D5 P D3 D4', 'D7 D8 P D6', 'D9 D10 D11 P', 'P D12 D13 D14']);
  expectTable(5, ALGORITHM_PARITY_0, 4, ['P D0 D1 D2', 'P D3 D4 D5']);
  expectTable(5, ALGORITHM_PARITY_N, 4, ['D0 D1 D2 P', 'D3 D4 D5 P']);
  expectTable(4, 0, 4, ['D0 D1 D2 P', 'D3 D4 D5 P']);
  expectTable(4, ALGORITHM_LEFT_SYMMETRIC, 3, ['D0 D1 P', 'D2 D3 P'], ); // raid4 ignores the layout
  expectTable(5, ALGORITHM_LEFT_SYMMETRIC, 2, ['D0 P', 'P D1', 'D2 P']); // 2 members: a mirror in effect
});

test('raid6 md layouts, 5 members: P and Q side by side', () => {
  expectTable(6, ALGORITHM_LEFT_SYMMETRIC, 5, [
    'Q D0 D1 D2 P',
    'D3 D4 D5 P Q',
    'D7 D8 P Q D6',
    'D11 P Q D9 D10',
    'P Q D12 D13 D14',
    'Q D15 D16 D17 P',
  ]);
  expectTable(6, ALGORITHM_LEFT_ASYMMETRIC, 5, ['Q D0 D1 D2 P', 'D3 D4 D5 P Q', 'D6 D7 P Q D8', 'D9 P Q D10 D11', 'P Q D12 D13 D14']);
  expectTable(6, ALGORITHM_RIGHT_ASYMMETRIC, 5, ['P Q D0 D1 D2', 'D3 P Q D4 D5', 'D6 D7 P Q D8', 'D9 D10 D11 P Q', 'Q D12 D13 D14 P']);
  expectTable(6, ALGORITHM_RIGHT_SYMMETRIC, 5, ['P Q D0 D1 D2', 'D5 P Q D3 D4', 'D7 D8 P Q D6', 'D9 D10 D11 P Q', 'Q D12 D13 D14 P']);
  expectTable(6, ALGORITHM_PARITY_0, 5, ['P Q D0 D1 D2', 'P Q D3 D4 D5']);
  expectTable(6, ALGORITHM_PARITY_N, 5, ['D0 D1 D2 P Q', 'D3 D4 D5 P Q']);
  expectTable(6, ALGORITHM_LEFT_SYMMETRIC, 4, ['Q D0 D1 P', 'D2 D3 P Q', 'D5 P Q D4', 'P Q D6 D7']);
});

test('raid6 DDF layouts (8 zr, 9 nr, 10 nc) and the *_6 layouts (raid5 on n-1 members, Q last)', () => {
  expectTable(6, ALGORITHM_ROTATING_ZERO_RESTART, 5, ['P Q D0 D1 D2', 'D3 P Q D4 D5', 'D6 D7 P Q D8', 'D9 D10 D11 P Q', 'Q D12 D13 D14 P']);
  expectTable(6, ALGORITHM_ROTATING_N_RESTART, 5, ['D0 D1 D2 P Q', 'D3 D4 P Q D5', 'D6 P Q D7 D8', 'P Q D9 D10 D11', 'Q D12 D13 D14 P']);
  expectTable(6, ALGORITHM_ROTATING_N_CONTINUE, 5, ['D0 D1 D2 Q P', 'D4 D5 Q P D3', 'D8 Q P D6 D7', 'Q P D9 D10 D11', 'P D12 D13 D14 Q']);
  expectTable(6, ALGORITHM_LEFT_ASYMMETRIC_6, 5, ['D0 D1 D2 P Q', 'D3 D4 P D5 Q', 'D6 P D7 D8 Q', 'P D9 D10 D11 Q', 'D12 D13 D14 P Q']);
  expectTable(6, ALGORITHM_RIGHT_ASYMMETRIC_6, 5, ['P D0 D1 D2 Q', 'D3 P D4 D5 Q', 'D6 D7 P D8 Q', 'D9 D10 D11 P Q', 'P D12 D13 D14 Q']);
  expectTable(6, ALGORITHM_LEFT_SYMMETRIC_6, 5, ['D0 D1 D2 P Q', 'D4 D5 P D3 Q', 'D8 P D6 D7 Q', 'P D9 D10 D11 Q']);
  expectTable(6, ALGORITHM_RIGHT_SYMMETRIC_6, 5, ['P D0 D1 D2 Q', 'D5 P D3 D4 Q', 'D7 D8 P D6 Q', 'D9 D10 D11 P Q']);
  expectTable(6, ALGORITHM_PARITY_0_6, 5, ['P D0 D1 D2 Q', 'P D3 D4 D5 Q']);
});

test('every raid4/5/6 layout: each stripe is a permutation, forward and inverse maps agree (3..8 members)', () => {
  const cases: [MdRaidLevel, number[]][] = [[4, [0]], [5, [...RAID5_LAYOUT_NAMES.keys()]], [6, [...RAID6_LAYOUT_NAMES.keys()]]];
  for (const [level, layouts] of cases) {
    for (const layout of layouts) {
      for (let n = level === 6 ? 4 : 3; n <= 8; n++) {
        const g: MdGeometry = { level, layout, raidDisks: n, chunkSectors: 16 };
        const dataDisks = mdDataDisks(g);
        for (let stripe = 0; stripe < 2 * n + 1; stripe++) {
          const m = mdStripeMap(g, stripe);
          const used = [m.pDisk, ...(m.qDisk === null ? [] : [m.qDisk]), ...m.data.map((d) => d.disk)];
          assert.deepEqual([...used].sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i), `raid${level}/${layout}/${n} stripe ${stripe}`);
          m.data.forEach((d, k) => {
            assert.equal(d.chunk, stripe * dataDisks + k);
            assert.equal(mdStripeOfChunk(g, d.chunk), stripe);
            const loc = raid5ComputeSector(g, d.chunk * 16 + 15);
            assert.equal(loc.dataDisk, d.disk);
            assert.equal(loc.diskSector, stripe * 16 + 15);
            assert.deepEqual(mdStripeBlock(g, stripe, d.disk), { kind: 'data', chunk: d.chunk });
          });
        }
      }
    }
  }
});

test('raid6 Q-syndrome slots: md counts data members from the one after Q; DDF uses member indexes', () => {
  const ls = mdStripeMap({ level: 6, layout: ALGORITHM_LEFT_SYMMETRIC, raidDisks: 5, chunkSectors: CHUNK }, 2);
  assert.deepEqual(ls.data.map((d) => d.syndromeSlot), [0, 1, 2], 'left-symmetric: slot = index in the stripe');
  assert.equal(ls.syndromeDisks, 3);
  // left-asymmetric stripe 3 is "D9 P Q D10 D11": counting starts after Q (member 3): D10, D11, then D9.
  const la = mdStripeMap({ level: 6, layout: ALGORITHM_LEFT_ASYMMETRIC, raidDisks: 5, chunkSectors: CHUNK }, 3);
  assert.deepEqual(la.data.map((d) => [d.chunk, d.disk, d.syndromeSlot]), [[9, 0, 2], [10, 3, 0], [11, 4, 1]]);
  // Q on the last member: counting starts at member 0.
  const pn = mdStripeMap({ level: 6, layout: ALGORITHM_PARITY_N, raidDisks: 5, chunkSectors: CHUNK }, 0);
  assert.deepEqual(pn.data.map((d) => d.syndromeSlot), [0, 1, 2]);
  // DDF: "D4 D5 Q P D3": slots are member numbers, over 5 slots (P and Q zero).
  const nc = mdStripeMap({ level: 6, layout: ALGORITHM_ROTATING_N_CONTINUE, raidDisks: 5, chunkSectors: CHUNK }, 1);
  assert.deepEqual(nc.data.map((d) => [d.chunk, d.syndromeSlot]), [[3, 4], [4, 0], [5, 1]]);
  assert.equal(nc.syndromeDisks, 5);
  const r5 = mdStripeMap({ level: 5, layout: ALGORITHM_LEFT_SYMMETRIC, raidDisks: 4, chunkSectors: CHUNK }, 1);
  assert.deepEqual(r5, {
    stripe: 1, diskSector: CHUNK, pDisk: 2, qDisk: null, syndromeDisks: null,
    data: [{ chunk: 3, disk: 3, syndromeSlot: null }, { chunk: 4, disk: 0, syndromeSlot: null }, { chunk: 5, disk: 1, syndromeSlot: null }],
  });
});

/** The member chunk rows of a raid10 array: which array chunk each member holds in each row. */
function raid10Grid(g: MdGeometry, chunks: number, rows: number): string[] {
  const grid = Array.from({ length: rows }, () => new Array<string>(g.raidDisks).fill('.'));
  for (let c = 0; c < chunks; c++) {
    for (const { disk, sector } of raid10FindPhys(g, c * g.chunkSectors + 3)) {
      assert.equal(sector % g.chunkSectors, 3, 'copies keep the offset in the chunk');
      grid[Math.floor(sector / g.chunkSectors)]![disk] = String(c);
    }
  }
  return grid.map((r) => r.join(' '));
}

test('raid10 near=2 (0x102): copies on neighbouring members, wrapping to the next row', () => {
  const g4: MdGeometry = { level: 10, layout: 0x102, raidDisks: 4, chunkSectors: CHUNK };
  assert.deepEqual(raid10Grid(g4, 4, 2), ['0 0 1 1', '2 2 3 3']);
  assert.deepEqual(raid10FindPhys(g4, 2 * CHUNK + 1), [{ disk: 0, sector: CHUNK + 1 }, { disk: 1, sector: CHUNK + 1 }]);
  const g3: MdGeometry = { level: 10, layout: 0x102, raidDisks: 3, chunkSectors: CHUNK };
  assert.deepEqual(raid10Grid(g3, 6, 4), ['0 0 1', '1 2 2', '3 3 4', '4 5 5']);
  assert.deepEqual(raid10FindPhys(g3, CHUNK), [{ disk: 2, sector: 0 }, { disk: 0, sector: CHUNK }], 'the second copy wraps');
  assert.deepEqual(raid10Grid({ level: 10, layout: 0x103, raidDisks: 4, chunkSectors: CHUNK }, 4, 3), ['0 0 0 1', '1 1 2 2', '2 3 3 3']);
  assert.deepEqual(mdMapSector(g4, 5), { copies: [{ disk: 0, sector: 5 }, { disk: 1, sector: 5 }], pDisk: null, qDisk: null, stripe: null });
});

test('raid10 far=2 and offset=2: far copies one stride down on the next member', () => {
  // 64 sectors per member, 8-sector chunks: 8 rows, the far copies start at row 4 (stride 32 sectors).
  const far: MdGeometry = { level: 10, layout: 0x201, raidDisks: 4, chunkSectors: CHUNK, componentSectors: 64 };
  assert.deepEqual(raid10Grid(far, 16, 8), [
    '0 1 2 3', '4 5 6 7', '8 9 10 11', '12 13 14 15',
    '3 0 1 2', '7 4 5 6', '11 8 9 10', '15 12 13 14',
  ]);
  assert.equal(mdArraySectors(far, 64), 16 * CHUNK);
  const far3: MdGeometry = { level: 10, layout: 0x201, raidDisks: 3, chunkSectors: CHUNK, componentSectors: 48 };
  assert.deepEqual(raid10Grid(far3, 9, 6), ['0 1 2', '3 4 5', '6 7 8', '2 0 1', '5 3 4', '8 6 7']);
  const offset: MdGeometry = { level: 10, layout: 0x10201, raidDisks: 4, chunkSectors: CHUNK };
  assert.deepEqual(raid10Grid(offset, 8, 4), ['0 1 2 3', '3 0 1 2', '4 5 6 7', '7 4 5 6']);
  // Far-set version 2: far sets of near*far = 2 members, copies swap within each pair.
  const sets: MdGeometry = { level: 10, layout: (2 << 17) | 0x201, raidDisks: 4, chunkSectors: CHUNK, componentSectors: 64 };
  assert.deepEqual(raid10Grid(sets, 16, 8).slice(4, 5), ['1 0 3 2']);
  assert.throws(() => raid10FindPhys({ ...far, componentSectors: undefined }, 0), /needs componentSectors/);
});

test('raid1: every member holds every sector at the same place', () => {
  const g: MdGeometry = { level: 1, layout: 0, raidDisks: 3, chunkSectors: 0 };
  assert.deepEqual(mdMapSector(g, 12345).copies, [0, 1, 2].map((disk) => ({ disk, sector: 12345 })));
  assert.equal(mdArraySectors(g, 1000), 1000);
});

test('array sizes: raid5_size and raid10_size', () => {
  // mdadm --examine of the 4-member raid5 fixture says "Array Size : 301056 KiB".
  assert.equal(mdArraySectors({ level: 5, layout: 2, raidDisks: 4, chunkSectors: 1024 }, 200704), 301056 * 2);
  assert.equal(mdArraySectors({ level: 5, layout: 2, raidDisks: 4, chunkSectors: 1024 }, 200704 + 1023), 301056 * 2, 'whole chunks only');
  assert.equal(mdArraySectors({ level: 6, layout: 2, raidDisks: 6, chunkSectors: 128 }, 1280), 1280 * 4);
  assert.equal(mdArraySectors({ level: 10, layout: 0x102, raidDisks: 3, chunkSectors: CHUNK }, 101 * CHUNK), 151 * CHUNK);
  assert.equal(mdArraySectors({ level: 10, layout: 0x102, raidDisks: 4, chunkSectors: CHUNK }, 100 * CHUNK), 200 * CHUNK);
  const p = mdMapSector({ level: 6, layout: 2, raidDisks: 5, chunkSectors: CHUNK }, 3 * CHUNK);
  assert.deepEqual(p, { copies: [{ disk: 0, sector: CHUNK }], pDisk: 3, qDisk: 4, stripe: 1 });
});

test('layout names: mdadm\'s names, aliases, dm-raid\'s zr/nr/nc, raid10 n2/f2/o2', () => {
  assert.equal(mdLayoutName(5, 2), 'left-symmetric');
  assert.equal(mdLayoutName(5, 5), 'parity-last');
  assert.equal(mdLayoutName(5, 9), '-unknown-');
  assert.equal(mdLayoutName(6, 8), 'ddf-zero-restart');
  assert.equal(mdLayoutName(6, 10), 'ddf-N-continue');
  assert.equal(mdLayoutName(6, 18), 'left-symmetric-6');
  assert.equal(mdLayoutName(10, 0x102), 'near=2');
  assert.equal(mdLayoutName(10, 0x201), 'far=2');
  assert.equal(mdLayoutName(10, 0x10201), 'offset=2');
  assert.equal(mdLayoutName(10, 0x202), 'near=2, far=2');
  assert.equal(mdLayoutName(1, 0), '');
  for (const [n, name] of RAID6_LAYOUT_NAMES) assert.equal(parseMdLayout(6, name), n);
  for (const [n, name] of RAID5_LAYOUT_NAMES) assert.equal(parseMdLayout(5, name), n);
  assert.equal(parseMdLayout(5, 'ls'), 2);
  assert.equal(parseMdLayout(5, 'default'), 2);
  assert.equal(parseMdLayout(5, 'ddf-N-restart'), 0, 'raid5: the DDF names are md layouts');
  assert.equal(parseMdLayout(6, 'ddf-N-restart'), 9);
  assert.equal(parseMdLayout(6, 'ZR'), 8);
  assert.equal(parseMdLayout(6, 'nr'), 9);
  assert.equal(parseMdLayout(6, 'nc'), 10);
  assert.equal(parseMdLayout(6, '19'), 19);
  assert.equal(parseMdLayout(10, 'n2'), 0x102);
  assert.equal(parseMdLayout(10, 'f2'), 0x201);
  assert.equal(parseMdLayout(10, 'o3'), 0x10301);
  assert.equal(parseMdLayout(10, 'near=3'), 0x103);
  assert.equal(parseMdLayout(4, 'default'), 0);
  assert.throws(() => parseMdLayout(5, 'diagonal'), /not a raid5 layout: use one of left-asymmetric, right-asymmetric/);
  assert.throws(() => parseMdLayout(10, 'x2'), /n<copies>/);
  assert.throws(() => parseMdLayout(1, 'ls'), /raid1 has no layouts/);
  assert.deepEqual(raid10Layout(0x10201), { near: 1, far: 2, offset: true, farSetVersion: 0 });
});

test('geometry refusals: what md would not run', () => {
  const bad = (g: MdGeometry, msg: RegExp): void => assert.throws(() => checkMdGeometry(g), (e: unknown) => e instanceof MdGeometryError && msg.test(e.message));
  bad({ level: 5, layout: 2, raidDisks: 4, chunkSectors: 12 }, /chunk of 12 sectors is invalid: md wants a power of two/);
  bad({ level: 5, layout: 2, raidDisks: 4, chunkSectors: 4 }, /at least 8 sectors/);
  bad({ level: 5, layout: 8, raidDisks: 4, chunkSectors: 8 }, /raid5 layout 8 is not supported by md: use 0-5/);
  bad({ level: 6, layout: 11, raidDisks: 5, chunkSectors: 8 }, /raid6 layout 11/);
  bad({ level: 6, layout: 2, raidDisks: 3, chunkSectors: 8 }, /raid6 needs at least 4 members, not 3/);
  bad({ level: 5, layout: 2, raidDisks: 1, chunkSectors: 8 }, /raid5 needs at least 2/);
  bad({ level: 10, layout: 0x101, raidDisks: 4, chunkSectors: 8 }, /makes 1 copies on 4 members/);
  bad({ level: 10, layout: 0x105, raidDisks: 4, chunkSectors: 8 }, /makes 5 copies/);
  bad({ level: 10, layout: 1 << 19 | 0x102, raidDisks: 4, chunkSectors: 8 }, /unknown bits/);
  bad({ level: 0 as MdRaidLevel, layout: 0, raidDisks: 4, chunkSectors: 8 }, /raid level 0 is not handled/);
  bad({ level: 1, layout: 0, raidDisks: 0, chunkSectors: 0 }, /at least one member/);
  assert.throws(() => raid5ComputeSector({ level: 5, layout: 2, raidDisks: 4, chunkSectors: 8 }, -1), /sector -1 is invalid/);
  assert.throws(() => mdStripeBlock({ level: 5, layout: 2, raidDisks: 4, chunkSectors: 8 }, 0, 4), /member 4 is not in a 4-member array/);
  assert.throws(() => mdDataDisks({ level: 1, layout: 0, raidDisks: 2, chunkSectors: 0 }), /no parity stripes/);
});
