// twindisk's md-compatible RAID against the Linux kernel's md, both ways, in one TCG guest: md assembles, reads and
// checks arrays twindisk created and wrote; twindisk assembles, reads, checks and reads degraded arrays md created and wrote.
//
// One boot serves both directions. Every array gets its own member files, attached as LUNs of one
// virtio-scsi controller (SCSI target 0 is a pattern disk the guest copies from). The guest first assembles
// twindisk's arrays with `mdadm --assemble`, reads them (md5) and runs md's "check" (mismatch_cnt);
// then it stops them and `mdadm --create`s a new array of the same level and layout on the same
// members (a full initial resync, no --assume-clean), copies pattern bytes onto it and stops it. After
// QEMU exits the host assembles those members with assembleArray and compares. The two directions
// write different bytes, so data left from the first cannot pass for the second.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import { defaultKernelVersion } from '../../../bootimg/guest.js';
import { missingModules } from '../../../bootimg/initramfs.js';
import { FileBackend } from '../../../engine/file-backend.js';
import { IoVector } from '../../../engine/iovec.js';
import { assembleArray, createArray, type MdArray, type MemberIo } from '../../../engine/raid/array.js';
import { parseMdLayout, type MdRaidLevel } from '../../../engine/raid/geometry.js';
import { MD_MAX_SECTOR } from '../../../engine/raid/md-constants.js';
import { RaidBackend } from '../../../engine/raid/raid-backend.js';
import { runGuest, type GuestResult } from '../../harness/guest.js';
import { tmpDir } from '../../harness/serve.js';

const MiB = 1 << 20;
/** Every member file: small, so the whole file stays within a minute and a half. */
const MEMBER_BYTES = 16 * MiB;
const PATTERN_BYTES = 64 * MiB;
const MDADM = '/sbin/mdadm';
const MD_MODULES = ['md_mod', 'raid1', 'raid10', 'raid456'];

/** One array shape, crossed both ways on the same members. */
interface MdCase {
  id: string;
  level: MdRaidLevel;
  /** mdadm's layout name (md's default when left out). */
  layout?: string;
  members: number;
  chunkKiB?: number;
  /** twindisk creates (a): its bitmap, and how parity starts out right (assume-clean on zeroed members, or a resync: scrub repair). */
  a: { bitmap: 'internal' | 'none'; initial: 'assume-clean' | 'resync' };
  /** mdadm creates (b). */
  b: { bitmap: 'internal' | 'none' };
}

const CASES: MdCase[] = [
  { id: 'raid1', level: 1, members: 2, a: { bitmap: 'internal', initial: 'resync' }, b: { bitmap: 'none' } },
  { id: 'raid4', level: 4, members: 3, chunkKiB: 64, a: { bitmap: 'none', initial: 'assume-clean' }, b: { bitmap: 'internal' } },
  { id: 'raid5-la', level: 5, layout: 'left-asymmetric', members: 3, chunkKiB: 64, a: { bitmap: 'none', initial: 'assume-clean' }, b: { bitmap: 'internal' } },
  { id: 'raid5-ra', level: 5, layout: 'right-asymmetric', members: 4, chunkKiB: 128, a: { bitmap: 'internal', initial: 'assume-clean' }, b: { bitmap: 'none' } },
  { id: 'raid5-ls', level: 5, layout: 'left-symmetric', members: 4, a: { bitmap: 'internal', initial: 'resync' }, b: { bitmap: 'internal' } },
  { id: 'raid5-rs', level: 5, layout: 'right-symmetric', members: 3, chunkKiB: 32, a: { bitmap: 'none', initial: 'assume-clean' }, b: { bitmap: 'none' } },
  { id: 'raid6-ls', level: 6, layout: 'left-symmetric', members: 5, chunkKiB: 64, a: { bitmap: 'internal', initial: 'assume-clean' }, b: { bitmap: 'none' } },
  { id: 'raid6-nc', level: 6, layout: 'ddf-N-continue', members: 4, chunkKiB: 64, a: { bitmap: 'none', initial: 'resync' }, b: { bitmap: 'internal' } },
  { id: 'raid10-n2', level: 10, layout: 'n2', members: 3, chunkKiB: 64, a: { bitmap: 'internal', initial: 'assume-clean' }, b: { bitmap: 'none' } },
  { id: 'raid10-n2x4', level: 10, layout: 'n2', members: 4, chunkKiB: 256, a: { bitmap: 'none', initial: 'assume-clean' }, b: { bitmap: 'internal' } },
];

const dir = tmpDir('twindisk-raid-md-');
const patternFile = path.join(dir, 'pattern.img');

/** Each case's member files, in slot order; SCSI target 1 + the member's index overall (target 0 is the pattern disk). */
const layoutOf = (() => {
  let next = 1;
  return new Map(CASES.map((c) => {
    const targets = Array.from({ length: c.members }, (_, i) => next + i);
    next += c.members;
    return [c.id, { targets, files: targets.map((t) => path.join(dir, `${c.id}-${t}.img`)) }];
  }));
})();
const membersOf = (c: MdCase) => layoutOf.get(c.id)!;
/** The md device and the pattern disk offset (MiB) of case i. */
const mdOf = (c: MdCase) => `md${CASES.indexOf(c)}`;
const skipOf = (c: MdCase) => CASES.indexOf(c);

/** Deterministic bytes (xorshift32 words) for `seed`; the two directions use different seeds. */
function pattern(bytes: number, seed: number): Buffer {
  const w = new Uint32Array(bytes / 4);
  let x = (Math.imul(seed + 1, 0x9e3779b9) >>> 0) || 1;
  for (let i = 0; i < w.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    w[i] = x >>> 0;
  }
  return Buffer.from(w.buffer);
}

const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');

function io(raid: RaidBackend, op: 'read' | 'write', buf: Uint8Array, offset: number): Promise<void> {
  const iov = new IoVector(1);
  iov.push(buf, 0, buf.length, 0);
  return new Promise((resolve, reject) => {
    const done = { complete: (st: number) => (st === 0 ? resolve() : reject(new Error(`${op} of ${buf.length} bytes at ${offset}: status ${st}`))) };
    if (op === 'read') raid.read(iov, offset, done);
    else raid.write(iov, offset, false, done);
  });
}

function raidOver(a: MdArray): RaidBackend {
  return new RaidBackend({
    geometry: a.geometry, members: a.slots.map((m) => m?.backend ?? null), dataOffset: a.dataOffset, componentBytes: a.componentBytes,
    intent: a.bitmap ?? undefined, onMemberFailed: (slot, reason) => a.memberFailed(slot, reason),
  });
}

const open = (files: string[]): MemberIo[] => files.map((f) => ({ name: f, backend: new FileBackend({ path: f }) }));

/** What twindisk wrote to each array of direction (a): its size and md5. */
const written = new Map<string, { bytes: number; md5: string; uuid: string; layout: number; chunk: number }>();

/**
 * Direction (a) on the host: twindisk creates the array on zeroed member files, brings parity right
 * (assume-clean, true of zeroes; or a full resync through scrub repair, recorded as md records it),
 * writes every byte of it in requests of mixed sizes (full stripes and read-modify-writes), and
 * marks it clean.
 */
async function twindiskWrites(c: MdCase): Promise<void> {
  const { files } = membersOf(c);
  for (const f of files) {
    fs.writeFileSync(f, '');
    fs.truncateSync(f, MEMBER_BYTES);
  }
  const a = await createArray(open(files), {
    level: c.level, ...(c.layout ? { layout: c.layout } : {}), ...(c.chunkKiB ? { chunkBytes: c.chunkKiB * 1024 } : {}),
    bitmap: c.a.bitmap, name: `a-${c.id}`, homehost: 'twin', assumeClean: c.a.initial === 'assume-clean',
  });
  const raid = raidOver(a);
  try {
    if (c.a.initial === 'resync') {
      const regions = a.resyncRegions();
      assert.ok(regions.length > 0, 'a new array needs its initial resync');
      await raid.scrub('repair');
      for (const r of regions) a.bitmap?.markInSync(r);
      await a.recordResync(MD_MAX_SECTOR);
    }
    await a.recordDirty();
    const data = pattern(a.arrayBytes, 1000 + CASES.indexOf(c));
    const sizes = [MiB, 4096, 300 * 1024, 96 * 1024, 2 * MiB, 512];
    for (let off = 0, i = 0; off < data.length; i++) {
      const len = Math.min(sizes[i % sizes.length]!, data.length - off);
      await io(raid, 'write', data.subarray(off, off + len), off);
      off += len;
    }
    await a.recordClean();
    assert.equal(a.clean, true);
    written.set(c.id, { bytes: a.arrayBytes, md5: md5(data), uuid: a.uuid, layout: a.geometry.layout, chunk: a.geometry.chunkSectors * 512 });
  } finally {
    a.close();
    raid.close();
  }
}

/** mdadm's options for direction (b). */
function mdadmCreateOptions(c: MdCase): string {
  return [
    `--level=${c.level}`, ...(c.layout ? [`--layout=${c.layout}`] : []), ...(c.chunkKiB ? [`--chunk=${c.chunkKiB}`] : []),
    `--raid-devices=${c.members}`, `--bitmap=${c.b.bitmap}`, `--name=b-${c.id}`,
  ].join(' ');
}

/** The guest's script: (a) for every case, then (b) for every case; each prints `A:id key=value...` / `B:id key=value...` lines. */
function guestScript(): string {
  const devs = (c: MdCase) => membersOf(c).targets.map((t) => `$sd_${t}`).join(' ');
  const disks = 1 + CASES.reduce((n, c) => n + c.members, 0);
  return `
export MDADM_NO_UDEV=1
mkdir -p /run/mdadm
n=0
while [ "$(ls /sys/block | grep -c '^sd')" -lt ${disks} ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n+1)); done
# sd names follow probe order: find each SCSI target's (0:0:T:0) as $sd_T.
for d in /sys/block/sd*; do t=$(readlink $d/device); t=\${t##*/}; t=\${t#0:0:}; eval "sd_\${t%:0}=/dev/\${d##*/}"; done
echo "disks=$(ls /sys/block | grep -c '^sd')"
idle() { while [ -e /sys/block/$1/md/sync_action ] && [ "$(cat /sys/block/$1/md/sync_action)" != idle ]; do sleep 0.2; done; }
report() {
  s=/sys/block/$2/md
  echo "$1 level=$(cat $s/level) layout=$(cat $s/layout) chunk=$(cat $s/chunk_size) disks=$(cat $s/raid_disks) degraded=$(cat $s/degraded) state=$(cat $s/array_state) resync=$(cat $s/resync_start) sectors=$(cat /sys/block/$2/size)"
  mdadm --detail --export /dev/$2 | sed -n -e "s/^MD_UUID=/$1 uuid=/p" -e "s/^MD_NAME=/$1 name=/p" -e "s/^MD_METADATA=/$1 metadata=/p"
}
# (a) md assembles what twindisk wrote: the bitmap as twindisk left it, then md's view, the bytes, a check.
a_assemble() {
  tag=$1; md=$2; bitmap=$3; shift 3
  if [ "$bitmap" = internal ]; then mdadm -X $1 | sed -n "s/.*, \\([0-9]*\\) dirty.*/$tag dirty=\\1/p"; fi
  out=$(mdadm --assemble /dev/$md --run "$@" 2>&1) || { echo "$tag assemble-failed: $out"; return 1; }
  report $tag $md
}
a_check() {
  tag=$1; md=$2
  idle $md
  echo "$tag md5=$(dd if=/dev/$md bs=1M 2>/dev/null | md5sum | cut -d' ' -f1)"
  echo check > /sys/block/$md/md/sync_action
  idle $md
  echo "$tag mismatch=$(cat /sys/block/$md/md/mismatch_cnt)"
  mdadm --stop /dev/$md >/dev/null 2>&1 && echo "$tag stopped=1"
}
# (b) md creates an array (full initial resync), copies pattern bytes from MiB $3 of the pattern disk onto it, stops it.
b_create() {
  tag=$1; md=$2; skip=$3; shift 3
  out=$(mdadm --create /dev/$md --run --metadata=1.2 --homehost=twin "$@" 2>&1) || { echo "$tag create-failed: $out"; return 1; }
  idle $md
  report $tag $md
  bytes=$(( $(cat /sys/block/$md/size) * 512 ))
  bs=1048576; while [ $((bytes % bs)) -ne 0 ]; do bs=$((bs / 2)); done
  dd if=$sd_0 of=/dev/$md bs=$bs skip=$((skip * 1048576 / bs)) count=$((bytes / bs)) iflag=direct oflag=direct 2>/dev/null && echo "$tag wrote=$bytes"
  mdadm --stop /dev/$md >/dev/null 2>&1 && echo "$tag stopped=1"
}
${CASES.map((c) => `a_assemble A:${c.id} ${mdOf(c)} ${c.a.bitmap} ${devs(c)}`).join('\n')}
${CASES.map((c) => `a_check A:${c.id} ${mdOf(c)} &`).join('\n')}
wait
${CASES.map((c) => `b_create B:${c.id} ${mdOf(c)} ${skipOf(c)} ${mdadmCreateOptions(c)} ${devs(c)} &`).join('\n')}
wait
cat /proc/mdstat
`;
}

/** The `TAG key=value ...` lines the guest printed, by tag. */
function parseReport(output: string): Map<string, Map<string, string>> {
  const out = new Map<string, Map<string, string>>();
  for (const line of output.split('\n')) {
    const m = /^([AB]:[\w-]+) (.*)$/.exec(line.trim());
    if (!m) continue;
    const kv = out.get(m[1]!) ?? new Map<string, string>();
    for (const tok of m[2]!.split(/\s+/)) {
      const e = tok.indexOf('=');
      if (e > 0) kv.set(tok.slice(0, e), tok.slice(e + 1));
      else kv.set(tok.replace(/:$/, ''), m[2]!);
    }
    out.set(m[1]!, kv);
  }
  return out;
}

let guest: GuestResult;
let report: Map<string, Map<string, string>>;

before(async () => {
  const setup = 'run scripts/setup.sh (as root: it installs mdadm and linux-image-amd64)';
  if (!fs.existsSync(MDADM)) throw new Error(`${MDADM} is missing, so md cannot be cross-checked: ${setup}`);
  const version = defaultKernelVersion();
  const missing = missingModules(version, MD_MODULES);
  if (missing.length) throw new Error(`kernel ${version} has no ${missing.join(', ')} module, so md cannot be cross-checked: ${setup}`);
  fs.writeFileSync(patternFile, pattern(PATTERN_BYTES, 7));
  for (const c of CASES) await twindiskWrites(c);
  guest = await runGuest({
    scsiFiles: [patternFile, ...CASES.flatMap((c) => membersOf(c).files)],
    modules: MD_MODULES,
    programs: [MDADM],
    memoryMiB: 512,
    script: guestScript(),
    timeoutMs: 240_000,
  });
  report = parseReport(guest.output);
  assert.equal(guest.exitCode, 0, guest.output);
});

/** The guest's key=value for a tag, failing with the console when it is missing. */
function said(tag: string, key: string): string {
  const v = report.get(tag)?.get(key);
  assert.ok(v !== undefined, `the guest printed no ${key} for ${tag}; console:\n${guest.output}`);
  return v;
}

/** md's layout number for the case's layout name (raid1 and raid4 have none to name). */
function mdLayoutNumber(c: MdCase): number | null {
  return c.level === 1 || c.level === 4 ? null : parseMdLayout(c.level, c.layout ?? 'default');
}

for (const c of CASES) {
  const what = `${c.id} (${c.members} members${c.layout ? `, ${c.layout}` : ''}${c.chunkKiB ? `, ${c.chunkKiB}K chunks` : ''}, bitmap ${c.a.bitmap}, ${c.a.initial})`;
  test(`md assembles, reads and checks twindisk's ${what}`, () => {
    const tag = `A:${c.id}`;
    const w = written.get(c.id)!;
    assert.equal(said(tag, 'level'), `raid${c.level}`);
    assert.equal(Number(said(tag, 'layout')), w.layout, 'md reads the layout twindisk wrote');
    if (mdLayoutNumber(c) !== null) assert.equal(w.layout, mdLayoutNumber(c));
    if (c.level !== 1) assert.equal(Number(said(tag, 'chunk')), w.chunk);
    assert.equal(Number(said(tag, 'disks')), c.members);
    assert.equal(said(tag, 'degraded'), '0');
    assert.equal(said(tag, 'uuid'), w.uuid);
    assert.equal(said(tag, 'name'), `twin:a-${c.id}`);
    assert.equal(said(tag, 'resync'), 'none', 'md takes the array as in sync: no resync');
    assert.match(said(tag, 'state'), /^(clean|active|active-idle)$/);
    if (c.a.bitmap === 'internal') assert.equal(said(tag, 'dirty'), '0', 'twindisk left no dirty bitmap bit');
    assert.equal(Number(said(tag, 'sectors')) * 512, w.bytes, 'same array size');
    assert.equal(said(tag, 'md5'), w.md5, 'md reads the bytes twindisk wrote');
    assert.equal(said(tag, 'mismatch'), '0', 'md\'s check finds parity and mirrors consistent');
    assert.equal(said(tag, 'stopped'), '1');
  });
}

for (const c of CASES) {
  const what = `${c.id} (${c.members} members${c.layout ? `, ${c.layout}` : ''}${c.chunkKiB ? `, ${c.chunkKiB}K chunks` : ''}, bitmap ${c.b.bitmap})`;
  test(`twindisk assembles, reads, checks and reads degraded md's ${what}`, async () => {
    const tag = `B:${c.id}`;
    assert.equal(said(tag, 'level'), `raid${c.level}`);
    if (mdLayoutNumber(c) !== null) assert.equal(Number(said(tag, 'layout')), mdLayoutNumber(c), 'mdadm took the layout asked for');
    assert.equal(said(tag, 'resync'), 'none', 'md finished its initial resync before the data was written');
    assert.equal(said(tag, 'stopped'), '1');
    const bytes = Number(said(tag, 'wrote'));
    assert.equal(bytes, Number(said(tag, 'sectors')) * 512);
    const expect = fs.readFileSync(patternFile).subarray(skipOf(c) * MiB, skipOf(c) * MiB + bytes);
    assert.equal(expect.length, bytes, 'the pattern disk holds the whole array');
    const { files } = membersOf(c);

    const a = await assembleArray(open(files));
    const raid = raidOver(a);
    try {
      assert.equal(a.uuid, said(tag, 'uuid'));
      assert.equal(a.name, `b-${c.id}`);
      assert.equal(a.geometry.level, c.level);
      assert.equal(a.geometry.layout, Number(said(tag, 'layout')), 'twindisk reads the layout md wrote');
      if (c.level !== 1) assert.equal(a.geometry.chunkSectors * 512, Number(said(tag, 'chunk')));
      assert.equal(a.bitmap !== null, c.b.bitmap === 'internal', 'twindisk finds md\'s bitmap');
      assert.equal(a.clean, true, 'md stopped it clean');
      assert.equal(a.degraded, 0);
      assert.equal(a.arrayBytes, bytes, 'same array size');
      const got = Buffer.alloc(bytes);
      await io(raid, 'read', got, 0);
      assert.ok(got.equals(expect), `twindisk reads the bytes md wrote (md5 ${md5(got)}, expected ${md5(expect)})`);
      const scrub = await raid.scrub('check');
      assert.equal(scrub.mismatches, 0, 'twindisk\'s check finds md\'s parity and mirrors consistent');
    } finally {
      a.close();
      raid.close();
    }

    // Degraded: the most members the level can lose (one; two for raid6), starting at a slot that moves with the case.
    const lose = c.level === 6 ? 2 : 1;
    const first = CASES.indexOf(c) % c.members;
    const gone = new Set(Array.from({ length: lose }, (_, i) => (first + i) % c.members));
    const d = await assembleArray(open(files.filter((_, i) => !gone.has(i))));
    const draid = raidOver(d);
    try {
      assert.equal(d.degraded, lose);
      const got = Buffer.alloc(bytes);
      await io(draid, 'read', got, 0);
      assert.ok(got.equals(expect), `twindisk reads md's bytes with slots ${[...gone].join(', ')} missing`);
    } finally {
      d.close();
      draid.close();
    }
  });
}
