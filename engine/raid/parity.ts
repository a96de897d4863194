// A stripe's parity as md computes it (P = XOR, Q = the RAID-6 syndrome over GF(2^8), polynomial 0x11d), on the wasm kernels; no I/O.
//
// A stripe is handed over as one block per member, indexed by member number (`members[disk]`), all
// the same length (a chunk, or the part of one a request touches). Which member holds P, Q and each data
// chunk, and the order the syndrome takes the data in, come from geometry.ts's mdStripeMap, so every
// layout md knows (including the DDF ones, whose P and Q members count as zero blocks in the syndrome)
// is computed the same way the kernel does. The blocks are the callers' buffers: nothing is copied in.
import { raid6GenPQ, raid6Recover, xorInto } from '../../wasm/index.js';
import { MdGeometryError, type MdGeometry, type StripeMap } from './geometry.js';

/** Zero blocks by length, for the syndrome slots of DDF layouts that hold no data (never written). */
const zeroes = new Map<number, Uint8Array>();
function zero(len: number): Uint8Array {
  let z = zeroes.get(len);
  if (!z) zeroes.set(len, (z = new Uint8Array(len)));
  return z;
}

function checkStripe(g: MdGeometry, members: readonly Uint8Array[]): number {
  if (g.level !== 4 && g.level !== 5 && g.level !== 6) throw new MdGeometryError(`raid${g.level} has no parity`);
  if (members.length !== g.raidDisks) throw new MdGeometryError(`a stripe of this ${g.raidDisks}-member array needs ${g.raidDisks} blocks, not ${members.length}`);
  const len = members[0]!.length;
  if (members.some((m) => m.length !== len)) throw new MdGeometryError('the blocks of one stripe must all have the same length');
  return len;
}

/** raid6: the stripe's blocks in syndrome order ([D_0 .. D_n-1], then P, then Q), as raid6GenPQ and raid6Recover take them. */
function syndromeOrder(map: StripeMap, members: readonly Uint8Array[], len: number): { blocks: Uint8Array[]; slotOfDisk: Map<number, number> } {
  const n = map.syndromeDisks!;
  const blocks: (Uint8Array | undefined)[] = new Array(n);
  const slotOfDisk = new Map<number, number>();
  for (const c of map.data) {
    blocks[c.syndromeSlot!] = members[c.disk]!;
    slotOfDisk.set(c.disk, c.syndromeSlot!);
  }
  for (let i = 0; i < n; i++) blocks[i] ??= zero(len); // DDF: P's and Q's own slots are zero
  slotOfDisk.set(map.pDisk, n);
  slotOfDisk.set(map.qDisk!, n + 1);
  return { blocks: [...(blocks as Uint8Array[]), members[map.pDisk]!, members[map.qDisk!]!], slotOfDisk };
}

/**
 * Computes the stripe's parity from its data blocks into `members[map.pDisk]` (and, raid6,
 * `members[map.qDisk]`): what a full-stripe write stores without reading anything.
 */
export function computeParity(g: MdGeometry, map: StripeMap, members: readonly Uint8Array[]): void {
  const len = checkStripe(g, members);
  if (g.level !== 6) return xorInto(members[map.pDisk]!, map.data.map((c) => members[c.disk]!));
  const { blocks } = syndromeOrder(map, members, len);
  const n = map.syndromeDisks!;
  raid6GenPQ(blocks.slice(0, n), blocks[n]!, blocks[n + 1]!);
}

/**
 * Rebuilds the blocks of the members in `missing` (one for raid4/5, one or two for raid6: data, P or Q)
 * from the others, in place: a degraded read, or a rebuild onto a new member.
 */
export function reconstruct(g: MdGeometry, map: StripeMap, members: readonly Uint8Array[], missing: readonly number[]): void {
  const len = checkStripe(g, members);
  const lost = [...new Set(missing)];
  const limit = g.level === 6 ? 2 : 1;
  if (lost.length === 0) return;
  if (lost.length > limit) throw new MdGeometryError(`raid${g.level} survives ${limit} missing member${limit > 1 ? 's' : ''} per stripe, not ${lost.length}`);
  if (lost.some((d) => !Number.isInteger(d) || d < 0 || d >= g.raidDisks)) throw new MdGeometryError(`missing members must be in 0..${g.raidDisks - 1}`);
  if (g.level !== 6) {
    const d = lost[0]!;
    // P is the XOR of the data; a data block is the XOR of P and the other data blocks.
    const others = map.data.map((c) => c.disk).concat(map.pDisk).filter((x) => x !== d);
    return xorInto(members[d]!, others.map((x) => members[x]!));
  }
  const { blocks, slotOfDisk } = syndromeOrder(map, members, len);
  raid6Recover(blocks, lost.map((d) => slotOfDisk.get(d)!));
}
