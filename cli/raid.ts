// `twindisk raid ...`: md-compatible arrays (metadata 1.2, internal bitmap) on files or block devices, run offline.
//
// create, assemble and status read and write md's own format (engine/raid/array.ts), so `mdadm
// --examine` and the Linux kernel read what these commands write and the other way round. check,
// repair, resync and the rebuild of add/replace run the RAID layer in this process over the members
// (engine/raid/raid-volume.ts), with a progress bar on stderr. Every command locks its members (flock,
// as `serve` does): exclusively when it may write them, shared for assemble and status, so none runs
// against members a `serve --raid` holds. With --control PATH, status, fail, remove, add, replace,
// check, repair and resync ask a running `serve --raid --control PATH` (or a node whose disk is an
// array) instead (raidControlCall; engine/raid/membership.ts answers): check and repair then run in
// the background there, and `--wait` follows them to their result.
//
// Errors: a wrong command line (and a wrong array shape for create) exits 2, anything found at run
// time (a member of another array, a bad superblock, too few members, an I/O error) exits 1; the
// message names the member and says what to do. Nothing is written before every check has passed.
import fs from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { BackendError } from '../engine/backend.js';
import { lockDisk, type DiskLock } from '../engine/disk-lock.js';
import { FileBackend } from '../engine/file-backend.js';
import { MdArrayError, assembleArray, type MdArray, type MemberIo } from '../engine/raid/array.js';
import type { MdRaidLevel } from '../engine/raid/geometry.js';
import { formatBytes, mdstatSlots, raidStatus, type RaidStatus } from '../engine/raid/array-status.js';
import {
  RaidMembershipError, checkRebuildTarget, slotOf as slotOfArray, superblockUuid, type RaidCheckOutcome, type RaidCheckStarted, type RaidControlRequest,
  type RaidResyncAnswer, type RaidWork, type ServedRaidStatus,
} from '../engine/raid/membership.js';
import { NoMembersError } from '../engine/raid/served-array.js';
import { MD_MAX_SECTOR } from '../engine/raid/md-constants.js';
import { RaidVolume, type WorkOptions } from '../engine/raid/raid-volume.js';
import { controlCall } from '../daemon/control.js';
import { countArg, sizeArg } from './args.js';
import { CommandError, UsageError } from './errors.js';
import { ProgressBars } from './progress.js';

// ----------------------------------------------------------------------------------------- formats

/** md's chunk notation: 524288 -> "512K". */
function chunkText(bytes: number): string {
  return bytes % (1 << 20) === 0 ? `${bytes >> 20}M` : `${bytes >> 10}K`;
}

/** A rate: "50M/s", "50M" or "1048576" bytes a second. */
function rateArg(value: string): number {
  const n = sizeArg(value.replace(/\/s$/i, ''));
  if (!(n > 0)) throw new InvalidArgumentError('expected a rate above 0, e.g. 50M/s.');
  return n;
}

// ------------------------------------------------------------------------------------------ members

/** Members opened for a command, with their locks. */
export interface OpenMembers {
  members: MemberIo[];
  /** Files this command created (--size): removed again if the command fails. */
  created: string[];
  close(): void;
}

/**
 * Locks and opens each member (a file or block device, named as given); `readOnly` takes shared locks.
 * With `createSize`, a missing member file is created (sparse) with that size.
 */
export function openMembers(paths: readonly string[], purpose: string, o: { readOnly: boolean; createSize?: number }): OpenMembers {
  const seen = new Map<string, string>();
  for (const p of paths) {
    const abs = path.resolve(p);
    const before = seen.get(abs);
    if (before !== undefined) throw new UsageError(before === p ? `${p} is given twice: give each member once` : `${before} and ${p} are the same file: give each member once`);
    seen.set(abs, p);
  }
  const locks: DiskLock[] = [];
  const members: MemberIo[] = [];
  const created: string[] = [];
  const close = (): void => {
    for (const m of members) m.backend.close();
    for (const l of locks) l.release();
  };
  try {
    for (const p of paths) {
      const abs = path.resolve(p);
      const existed = fs.existsSync(abs);
      if (!existed && o.createSize === undefined) {
        throw new CommandError(`${p}: no such file or device (a member that is gone: leave it out, the array runs degraded without it; a new member file: pass --size to create it)`);
      }
      if (!existed) fs.mkdirSync(path.dirname(abs), { recursive: true });
      locks.push(lockDisk(abs, `${purpose} ${p}`, { shared: o.readOnly, create: o.createSize !== undefined }));
      if (!existed) created.push(abs);
      if (o.createSize !== undefined && fs.statSync(abs).isFile() && fs.statSync(abs).size === 0) fs.truncateSync(abs, o.createSize);
      members.push({ name: p, backend: new FileBackend({ path: abs, readOnly: o.readOnly }) });
    }
  } catch (e) {
    close();
    for (const f of created) fs.rmSync(f, { force: true });
    throw e;
  }
  return { members, created, close };
}

// ------------------------------------------------------------------------------------------- errors

/** md-level errors as the command line words them: the API's option names become flags, and a next step is added. */
export function cliError(e: unknown): unknown {
  if (e instanceof BackendError || e instanceof RaidMembershipError || e instanceof NoMembersError) return new CommandError(e.message);
  if (!(e instanceof MdArrayError)) return e;
  const msg = e.message
    .replace(/start it anyway with startDirtyDegraded/, 'start it anyway with --start-dirty-degraded (then check it: twindisk raid check)')
    .replace(/bitmapChunkBytes/g, '--bitmap-chunk')
    .replace(/\bchunkBytes\b/g, '--chunk')
    .replace(/\(markFaulty\)/, '(twindisk raid fail)');
  const next: Partial<Record<MdArrayError['code'], string>> = {
    'not-member': 'give the array\'s members (twindisk raid create makes new ones)',
    'bad-superblock': 'its md metadata is damaged: leave it out (the array runs degraded if the others suffice), then rebuild onto it with twindisk raid add --slot N MEMBER OTHERS...',
    foreign: 'give only the members of one array (twindisk raid status MEMBER shows the array a member belongs to)',
    mismatch: 'give only the members of one array',
    duplicate: 'give each member once',
    'too-few': 'give every member there is; without enough of them the data cannot be rebuilt',
    'member-size': 'give members of the same size (or --size to create new member files)',
    unsupported: 'assemble it with mdadm instead',
  };
  const hint = next[e.code];
  const text = hint !== undefined && !msg.includes(hint) ? `${msg}: ${hint}` : msg;
  return e.code === 'options' ? new UsageError(text) : new CommandError(text);
}

/** Runs a command's body, turning md errors into CLI errors. */
async function run(body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (e) {
    throw cliError(e);
  }
}

// ----------------------------------------------------------------------------------------- progress

/** One progress bar on stderr for long work: bytes done, rate, time left. */
function progressBar(label: string): { update: (done: number, total: number) => void; stop: () => void } {
  const bars = new ProgressBars({ stream: process.stderr });
  const t0 = Date.now();
  return {
    update: (done, total) => {
      const s = (Date.now() - t0) / 1000;
      const rate = s > 0 ? done / s : 0;
      const left = rate > 0 ? Math.ceil((total - done) / rate) : 0;
      bars.update([{
        name: label, percent: total > 0 ? (done / total) * 100 : 100,
        detail: `${formatBytes(done)} of ${formatBytes(total)}, ${formatBytes(Math.round(rate))}/s${done < total && rate > 0 ? `, ${left} s left` : ''}`,
      }]);
    },
    stop: () => bars.stop(),
  };
}

/** Runs `work` with a progress bar, and the work's options. */
async function withProgress<T>(label: string, rate: number | undefined, work: (o: WorkOptions) => Promise<T>): Promise<T> {
  const bar = progressBar(label);
  try {
    return await work({ progress: bar.update, ...(rate !== undefined ? { bytesPerSecond: rate } : {}) });
  } finally {
    bar.stop();
  }
}

// ------------------------------------------------------------------------------------------- status

/** The status as mdadm --detail and /proc/mdstat would put it. */
function statusText(s: RaidStatus, members: readonly string[], control?: string, work?: RaidWork | null): string {
  const lines: string[] = [];
  const state = [s.state === 'clean' ? 'clean' : 'active (dirty)', ...(s.degraded > 0 ? ['degraded'] : []), ...(s.resync.needed ? ['resync needed'] : [])];
  lines.push(`md (twindisk): ${s.level} ${members.join(' ')}`);
  lines.push(`      ${formatBytes(s.arrayBytes)}${s.chunkBytes ? ` ${chunkText(s.chunkBytes)} chunks` : ''}${s.layout ? ` ${s.layout}` : ''} ${s.mdstat}`);
  lines.push('');
  const row = (k: string, v: string): void => { lines.push(`${k.padStart(16)} : ${v}`); };
  row('Array UUID', s.uuid);
  row('Name', s.name);
  row('Raid Level', s.level);
  if (s.layout) row('Layout', s.layout);
  if (s.chunkBytes) row('Chunk Size', chunkText(s.chunkBytes));
  row('Array Size', `${formatBytes(s.arrayBytes)} (${s.arrayBytes} bytes)`);
  row('Used Dev Size', `${formatBytes(s.componentBytes)} (data from byte ${s.dataOffset})`);
  row('Raid Devices', String(s.raidDevices));
  row('State', state.join(', '));
  row('Events', String(s.events));
  if (s.bitmap === null) row('Bitmap', 'none (a resync after a crash covers the whole array)');
  else row('Bitmap', `internal, ${chunkText(s.bitmap.chunkBytes)} chunks, ${s.bitmap.dirtyChunks} of ${s.bitmap.chunks} dirty${s.bitmap.stale ? ' (it was stale: every chunk taken as dirty)' : ''}`);
  if (s.resync.needed) {
    row('Resync', s.resync.regions.length === 0
      ? 'needed, but nothing is dirty: twindisk raid resync records it done'
      : `needed: ${formatBytes(s.resync.arrayBytes)} of the array in ${s.resync.regions.length} region(s) (twindisk raid resync)`);
  } else {
    row('Resync', 'not needed');
  }
  if (work) row('Running', `${work.action}${work.slot !== undefined ? ` of slot ${work.slot} onto ${work.member}` : ''}: ${work.percent}% (${formatBytes(work.done)} of ${formatBytes(work.total)})`);
  lines.push('');
  lines.push('    Slot   State        Member');
  for (const m of s.members) {
    const st = m.state === 'in-sync' ? 'in sync' : m.state === 'recovering' ? 'rebuilding' : 'missing';
    const who = m.member ?? '-';
    const extra = m.state === 'recovering'
      ? control !== undefined ? '' : ` (${formatBytes(m.recoveredBytes ?? 0)} of ${formatBytes(s.componentBytes)} rebuilt; finish with twindisk raid add)`
      : m.reason ? ` (${m.reason})` : '';
    lines.push(`    ${String(m.slot).padStart(4)}   ${st.padEnd(12)} ${who}${extra}`);
  }
  for (const sp of s.spares) lines.push(`       -   spare        ${sp}`);
  for (const l of s.leftOut) lines.push(`       -   ${(l.why === 'stale' ? 'stale' : 'faulty').padEnd(12)} ${l.member} (${l.reason})`);
  if (s.degraded > 0) {
    const missing = s.members.filter((m) => m.state !== 'in-sync').map((m) => m.slot);
    const out = new Set(s.leftOut.map((l) => l.member));
    lines.push('');
    if (control !== undefined) {
      const empty = s.members.filter((m) => m.state === 'missing').map((m) => m.slot);
      if (empty.length > 0) lines.push(`degraded: rebuild while serving with twindisk raid add --control ${control} --slot ${empty[0]} NEW-MEMBER [--size SIZE]`);
      else lines.push('degraded: a rebuild is running');
    } else {
      lines.push(`degraded: rebuild with twindisk raid add --slot ${missing[0]} NEW-MEMBER ${members.filter((m) => !out.has(m)).join(' ')}`);
    }
  }
  return lines.join('\n') + '\n';
}

// ------------------------------------------------------------------------------ a served array

/** Sends one request to a `serve --raid --control PATH` and returns its result; errors say what to do. */
export async function raidControlCall(control: string, req: RaidControlRequest, timeoutMs = 60_000): Promise<unknown> {
  let result: unknown;
  try {
    result = await controlCall(control, req, timeoutMs, {
      who: 'serve --raid',
      notRunning: (p) => `no serve --raid is running with control socket ${p}: start it with twindisk serve --raid MEMBER,... --control ${p}, or give the members to work offline`,
    });
  } catch (e) {
    const msg = (e as Error).message;
    // A plain `serve --image` or a node (daemon/control.ts) does not know the raid commands.
    if (/unknown command "raid-/.test(msg)) {
      if (/a served array takes/.test(msg)) throw new CommandError(`the serve --raid (or node) at ${control} does not take ${req.cmd}: it runs an older twindisk; restart it with this one, or stop it and use the offline command`);
      throw new CommandError(`${control} is the control socket of a serve --image or a node, not of serve --raid: give the --control PATH of serve --raid`);
    }
    throw new CommandError(msg);
  }
  // Every raid request answers an object; nothing means the other end took the request but has no handler for it.
  if (typeof result !== 'object' || result === null) {
    throw new CommandError(`the process at ${control} took ${req.cmd} but answered nothing: it does not run ${req.cmd} online (stop it and use the offline command)`);
  }
  return result;
}

/** "check: 3 mismatched sectors in 48 MiB of the array (read N bytes)", as the offline check prints it. */
function checkText(action: 'check' | 'repair', r: { mismatches: number; arrayBytes: number; bytesRead: number }): string {
  return `${action}: ${r.mismatches} mismatched sectors${action === 'repair' && r.mismatches > 0 ? ' rewritten' : ''} in ${formatBytes(r.arrayBytes)} of the array (read ${r.bytesRead} bytes)`;
}

/** What a repair rewrites on this level. */
function repairWords(mirrored: boolean): string {
  return mirrored ? 'the other copies from the first' : 'parity from the data';
}

/** The last online check's line in `raid status --control`. */
function lastCheckText(c: RaidCheckOutcome): string {
  if (c.error !== undefined) return `last ${c.action} failed after ${formatBytes(c.arrayBytes)}: ${c.error}`;
  if (c.stopped) return `last ${c.action} was stopped by a shutdown after ${formatBytes(c.arrayBytes)}: ${c.mismatches} mismatched sectors so far`;
  return `last ${checkText(c.action, c)}, ${c.seconds} s`;
}

async function statusOnline(control: string, o: { json?: boolean }): Promise<void> {
  const s = await raidControlCall(control, { cmd: 'raid-status' }) as ServedRaidStatus;
  if (o.json) {
    process.stdout.write(JSON.stringify(s, null, 2) + '\n');
    return;
  }
  const members = s.members.flatMap((m) => (m.member !== null ? [m.member] : []));
  let text = statusText(s, members, control, s.work);
  if (s.lastRebuild && !s.lastRebuild.ok) text += `last rebuild of slot ${s.lastRebuild.slot} onto ${s.lastRebuild.member} failed: ${s.lastRebuild.error}\n`;
  if (s.lastCheck) text += `${lastCheckText(s.lastCheck)}\n`;
  process.stdout.write(text);
}

async function failOnline(control: string, slot: number): Promise<void> {
  const s = await raidControlCall(control, { cmd: 'raid-fail', slot }) as ServedRaidStatus;
  process.stdout.write(`failed slot ${slot}: recorded in the other members' superblocks (events ${s.events}); the array is served degraded ${s.mdstat}\n`
    + `rebuild it while serving with: twindisk raid add --control ${control} --slot ${slot} NEW-MEMBER [--size SIZE]\n`);
}

async function removeOnline(control: string, slot: number): Promise<void> {
  const s = await raidControlCall(control, { cmd: 'raid-remove', slot }) as ServedRaidStatus;
  process.stdout.write(`removed the failed member of slot ${slot} from the superblocks (events ${s.events}); the array is served degraded ${s.mdstat}\n`
    + `rebuild it while serving with: twindisk raid add --control ${control} --slot ${slot} NEW-MEMBER [--size SIZE]\n`);
}

/** add and replace on a served array: the rebuild runs there, in the background. */
async function rebuildOnline(kind: 'add' | 'replace', control: string, newPath: string, o: { slot: number; size?: number; rate?: number; force?: boolean }): Promise<void> {
  const before = kind === 'replace' ? await raidControlCall(control, { cmd: 'raid-status' }) as ServedRaidStatus : null;
  const old = before?.members[o.slot]?.state !== 'missing' ? before?.members[o.slot]?.member ?? null : null;
  const req: RaidControlRequest = {
    cmd: kind === 'add' ? 'raid-add' : 'raid-replace', slot: o.slot, member: path.resolve(newPath),
    ...(o.size !== undefined ? { size: o.size } : {}), ...(o.rate !== undefined ? { rate: o.rate } : {}), ...(o.force ? { force: true } : {}),
  };
  const s = await raidControlCall(control, req) as ServedRaidStatus;
  if (old !== null) process.stdout.write(`failed ${old} (slot ${o.slot}): the array runs without its redundancy until the rebuild ends\n`);
  process.stdout.write(`rebuilding slot ${o.slot} onto ${newPath} while serving (${formatBytes(s.componentBytes)}); ${s.mdstat}\n`
    + `follow it with: twindisk raid status --control ${control}\n`);
}

/** How often `raid check --control --wait` asks for progress. */
const WAIT_POLL_MS = 200;

/** check and repair on a served array: started in the background there; with `wait`, followed with a progress bar to the result. */
async function scrubOnline(mode: 'check' | 'repair', control: string, o: { rate?: number; wait?: boolean }): Promise<void> {
  const started = await raidControlCall(control, { cmd: mode === 'check' ? 'raid-check' : 'raid-repair', ...(o.rate !== undefined ? { rate: o.rate } : {}) }) as RaidCheckStarted;
  const mirrored = started.level === 'raid1' || started.level === 'raid10';
  if (!o.wait) {
    process.stdout.write(`${mode} started while serving (${formatBytes(started.arrayBytes)} of the array); follow it with: twindisk raid status --control ${control}\n`
      + `(its result, md's mismatch count, is shown there once it ends; --wait waits for it here)\n`);
    return;
  }
  const bar = progressBar(mode);
  let outcome: RaidCheckOutcome | null = null;
  try {
    for (let idle = 0; outcome === null;) {
      let s: ServedRaidStatus;
      try {
        s = await raidControlCall(control, { cmd: 'raid-status' }) as ServedRaidStatus;
      } catch (e) {
        throw new CommandError(`the served array went away before the ${mode} ended (${(e as Error).message}); its log says how far the ${mode} got`);
      }
      if (s.lastCheck?.id === started.checkId) {
        outcome = s.lastCheck;
        break;
      }
      if (s.work?.id === started.checkId) {
        bar.update(s.work.done, s.work.total);
        idle = 0;
      } else if (++idle > 25) {
        throw new CommandError(`the ${mode} started at ${control} is no longer running and left no result: see the log of the served array`);
      }
      await new Promise((r) => setTimeout(r, WAIT_POLL_MS));
    }
  } finally {
    bar.stop();
  }
  if (outcome.error !== undefined) throw new CommandError(`${mode} failed after ${formatBytes(outcome.arrayBytes)}: ${outcome.error}`);
  if (outcome.stopped) {
    throw new CommandError(`the served array shut down during the ${mode}, after ${formatBytes(outcome.arrayBytes)} of ${formatBytes(started.arrayBytes)} `
      + `(${outcome.mismatches} mismatched sectors so far): run it again once it serves`);
  }
  process.stdout.write(`${checkText(mode, outcome)}\n`);
  if (mode === 'check' && outcome.mismatches > 0) process.stdout.write(`the members disagree: twindisk raid repair --control ${control} rewrites ${repairWords(mirrored)}\n`);
}

async function resyncOnline(control: string): Promise<void> {
  const a = await raidControlCall(control, { cmd: 'raid-resync' }) as RaidResyncAnswer;
  process.stdout.write(`${a.message}\n`);
}

/** The members argument with --control: none (serve knows them). */
function noMembersWithControl(paths: readonly string[], cmd: string): void {
  if (paths.length > 0) throw new UsageError(`raid ${cmd} --control talks to the running serve --raid, which knows its members: leave out ${paths.join(' ')}`);
}

/** The members argument without --control: at least one. */
function needMembers(paths: readonly string[], cmd: string): void {
  if (paths.length === 0) throw new UsageError(`raid ${cmd} needs the array's members (offline), or --control PATH of a running serve --raid`);
}

// ------------------------------------------------------------------------------------------ commands

interface CommonOptions { startDirtyDegraded?: boolean }

/** Assembles the volume on opened members; reports members left out on stderr. */
async function assembleVolume(open: OpenMembers, o: CommonOptions): Promise<RaidVolume> {
  const vol = await RaidVolume.assemble(open.members, { startDirtyDegraded: !!o.startDirtyDegraded });
  for (const l of vol.array.leftOut) process.stderr.write(`twindisk: left out ${l.reason}\n`);
  return vol;
}

/** `[4/3] [UU_U]: slot 2 (c.img is stale: ...)`: which slots are not in sync, and why. */
function degradedText(a: MdArray): string {
  const why = a.states.flatMap((s, slot) => {
    if (s.state === 'in-sync') return [];
    return [`slot ${slot} (${s.state === 'missing' ? s.reason : `${s.member.name} is being rebuilt`})`];
  });
  return `${mdstatSlots(a.states)}: ${why.join(', ')}`;
}

/** The slot's state; a slot the array does not have is a usage error here (the offline commands take --slot). */
function slotOf(vol: RaidVolume, slot: number): ReturnType<typeof slotOfArray> {
  if (slot >= vol.array.geometry.raidDisks) throw new UsageError(`--slot ${slot}: this array has slots 0 to ${vol.array.geometry.raidDisks - 1}`);
  return slotOfArray(vol, slot);
}

/** The usual ending: clean superblocks, members closed and unlocked (also after an error). */
async function finish(vol: RaidVolume | null, open: OpenMembers): Promise<void> {
  try {
    await vol?.close();
  } finally {
    open.close();
  }
}

interface CreateOptions extends CommonOptions {
  level?: string; layout?: string; chunk?: number; bitmap: 'internal' | 'none'; bitmapChunk?: number; name?: string;
  assumeClean?: boolean; size?: number; force?: boolean;
}

async function create(paths: string[], o: CreateOptions): Promise<void> {
  if (o.level === undefined) throw new UsageError('raid create needs --level 1|4|5|6|10');
  const level = Number(o.level) as MdRaidLevel;
  if (level === 1 && o.chunk !== undefined) throw new UsageError('raid1 has no chunk size: leave --chunk out');
  if (o.bitmap === 'none' && o.bitmapChunk !== undefined) throw new UsageError('--bitmap-chunk goes with --bitmap internal');
  const given = paths.filter((p) => p !== 'missing');
  if (given.length === 0) throw new UsageError('raid create needs at least one member that is not "missing"');
  const open = openMembers(given, 'raid create', { readOnly: false, ...(o.size !== undefined ? { createSize: o.size } : {}) });
  let ok = false;
  let vol: RaidVolume | null = null;
  try {
    await run(async () => {
      if (!o.force) {
        for (const m of open.members) {
          const uuid = superblockUuid(m);
          if (uuid !== null) {
            throw new CommandError(`${m.name} already holds an md superblock (array ${uuid}): it may be a member of an array; give another member, or --force to overwrite it`);
          }
        }
        const sizes = open.members.map((m) => m.backend.info.size);
        const small = Math.min(...sizes);
        const big = Math.max(...sizes);
        if (big > small * 1.01) {
          const a = open.members[sizes.indexOf(small)]!;
          const b = open.members[sizes.indexOf(big)]!;
          throw new CommandError(`${b.name} has ${big} bytes and ${a.name} ${small}: the smallest member sets every member's size, so ${formatBytes(big - small)} of ${b.name} would go unused; give members of one size, or --force`);
        }
      }
      let k = 0;
      const slots = paths.map((p) => (p === 'missing' ? null : open.members[k++]!));
      vol = await RaidVolume.create(slots, {
        level, bitmap: o.bitmap, assumeClean: !!o.assumeClean,
        ...(o.layout !== undefined ? { layout: o.layout } : {}),
        ...(o.chunk !== undefined ? { chunkBytes: o.chunk } : {}),
        ...(o.bitmapChunk !== undefined ? { bitmapChunkBytes: o.bitmapChunk } : {}),
        ...(o.name !== undefined ? { name: o.name } : {}),
      });
      const s = raidStatus(vol.array);
      process.stdout.write(`twindisk: created ${s.level} array ${s.uuid} (name ${s.name}): ${s.raidDevices} members, ${formatBytes(s.arrayBytes)}`
        + `${s.chunkBytes ? `, ${chunkText(s.chunkBytes)} chunks` : ''}${s.layout ? `, ${s.layout}` : ''}`
        + `, ${s.bitmap ? `internal bitmap of ${chunkText(s.bitmap.chunkBytes)} chunks` : 'no bitmap'}\n`);
      for (const m of s.members) process.stdout.write(`  slot ${m.slot}: ${m.member ?? `missing`}\n`);
      if (s.resync.needed) {
        process.stdout.write(`the array needs its initial resync (${level === 1 || level === 10 ? 'mirrors' : 'parity'} not yet in sync): twindisk raid resync ${given.join(' ')}\n`);
      }
      for (const f of open.created) process.stdout.write(`  created ${f} (${formatBytes(o.size!)}, sparse)\n`);
      ok = true;
    });
  } finally {
    await finish(vol, open).catch(() => undefined);
    if (!ok) for (const f of open.created) fs.rmSync(f, { force: true });
  }
}

async function assemble(paths: string[], o: CommonOptions): Promise<void> {
  const open = openMembers(paths, 'raid assemble', { readOnly: true });
  let array: MdArray | null = null;
  try {
    await run(async () => {
      array = await assembleArray(open.members, { startDirtyDegraded: !!o.startDirtyDegraded });
      const s = raidStatus(array);
      process.stdout.write(`twindisk: found ${s.level} array ${s.uuid} (name ${s.name}), events ${s.events}, ${s.state}${s.degraded ? ', degraded' : ''}: ${s.mdstat}\n`);
      process.stdout.write(`  ${formatBytes(s.arrayBytes)}${s.chunkBytes ? `, ${chunkText(s.chunkBytes)} chunks` : ''}${s.layout ? `, ${s.layout}` : ''}\n`);
      for (const m of s.members) {
        const what = m.state === 'in-sync' ? 'in sync' : m.state === 'recovering' ? `rebuilding (${formatBytes(m.recoveredBytes ?? 0)} done)` : `missing: ${m.reason}`;
        process.stdout.write(`  slot ${m.slot}: ${m.member ?? '-'}  ${what}\n`);
      }
      for (const sp of s.spares) process.stdout.write(`  spare: ${sp}\n`);
      for (const l of s.leftOut) process.stdout.write(`  left out (${l.why}): ${l.reason}\n`);
      if (s.resync.needed) process.stdout.write(`  resync needed: ${formatBytes(s.resync.arrayBytes)} in ${s.resync.regions.length} region(s) (twindisk raid resync)\n`);
    });
  } finally {
    (array as MdArray | null)?.close();
    open.close();
  }
}

async function status(paths: string[], o: { json?: boolean }): Promise<void> {
  const open = openMembers(paths, 'raid status', { readOnly: true });
  let array: MdArray | null = null;
  try {
    await run(async () => {
      // Nothing is written: a dirty degraded array is shown as it is.
      array = await assembleArray(open.members, { startDirtyDegraded: true });
      const s = raidStatus(array);
      process.stdout.write(o.json ? JSON.stringify(s, null, 2) + '\n' : statusText(s, paths));
    });
  } finally {
    (array as MdArray | null)?.close();
    open.close();
  }
}

async function scrub(mode: 'check' | 'repair', paths: string[], o: CommonOptions & { rate?: number }): Promise<void> {
  const open = openMembers(paths, `raid ${mode}`, { readOnly: false }); // a check too rewrites blocks that fail to read
  let vol: RaidVolume | null = null;
  try {
    await run(async () => {
      vol = await assembleVolume(open, o);
      if (vol.backend.degraded > 0) {
        throw new CommandError(`the array is degraded ${degradedText(vol.array)}: ${mode} compares every member, so rebuild the missing one first (twindisk raid add)`);
      }
      const r = await withProgress(mode, o.rate, (w) => vol!.scrub(mode, w));
      process.stdout.write(`${checkText(mode, r)}\n`);
      if (mode === 'check' && r.mismatches > 0) process.stdout.write(`the members disagree: twindisk raid repair ${paths.join(' ')} rewrites ${repairWords(vol.array.geometry.level === 1 || vol.array.geometry.level === 10)}\n`);
    });
  } finally {
    await finish(vol, open);
  }
}

async function fail(paths: string[], o: CommonOptions & { slot: number }): Promise<void> {
  const open = openMembers(paths, 'raid fail', { readOnly: false });
  let vol: RaidVolume | null = null;
  try {
    await run(async () => {
      vol = await assembleVolume(open, o);
      const st = slotOf(vol, o.slot);
      if (st.state === 'missing') throw new CommandError(`slot ${o.slot} holds no member (${st.reason}): nothing to fail`);
      await vol.fail(o.slot, 'failed with twindisk raid fail');
      process.stdout.write(`failed slot ${o.slot} (${st.member.name}): recorded in the other members' superblocks (events ${vol.array.events}); the array runs degraded ${mdstatSlots(vol.array.states)}\n`
        + `rebuild it with: twindisk raid add --slot ${o.slot} NEW-MEMBER ${paths.filter((p) => p !== st.member.name).join(' ')}\n`);
    });
  } finally {
    await finish(vol, open);
  }
}

async function remove(paths: string[], o: CommonOptions & { slot: number }): Promise<void> {
  const open = openMembers(paths, 'raid remove', { readOnly: false });
  let vol: RaidVolume | null = null;
  try {
    await run(async () => {
      vol = await assembleVolume(open, o);
      const st = slotOf(vol, o.slot);
      if (st.state === 'missing') {
        process.stdout.write(`slot ${o.slot} is already out of the array (${st.reason}): nothing to write\n`);
        return;
      }
      await vol.fail(o.slot, 'removed with twindisk raid remove');
      await vol.remove(o.slot);
      process.stdout.write(`removed ${st.member.name} from slot ${o.slot} (events ${vol.array.events}); the array runs degraded ${mdstatSlots(vol.array.states)}\n`);
    });
  } finally {
    await finish(vol, open);
  }
}

interface RebuildOptions extends CommonOptions { slot: number; size?: number; rate?: number; force?: boolean }

/** add and replace: rebuild `slot` onto NEW (replace fails the slot's member first). */
async function rebuild(kind: 'add' | 'replace', newPath: string, paths: string[], o: RebuildOptions): Promise<void> {
  if (paths.some((p) => path.resolve(p) === path.resolve(newPath))) {
    throw new UsageError(`${newPath} is both the new member and one of the array's members: give the members without it`);
  }
  const open = openMembers(paths, `raid ${kind}`, { readOnly: false });
  let fresh: OpenMembers;
  try {
    fresh = openMembers([newPath], `raid ${kind}`, { readOnly: false, ...(o.size !== undefined ? { createSize: o.size } : {}) });
  } catch (e) {
    open.close();
    throw e;
  }
  const member = fresh.members[0]!;
  let vol: RaidVolume | null = null;
  /** Whether anything was written: until then a member file this command created is removed on failure. */
  let touched = false;
  try {
    await run(async () => {
      vol = await assembleVolume(open, o);
      const st = checkRebuildTarget(vol, kind, o.slot, member, newPath, !!o.force);
      if (st.state !== 'missing') {
        const old = st.member.name;
        touched = true;
        await vol.fail(o.slot, 'replaced with twindisk raid replace');
        process.stdout.write(`failed ${old} (slot ${o.slot}); ${vol.array.geometry.level === 1 || vol.array.geometry.level === 10 ? 'its copy' : 'its chunks'} are rebuilt onto ${newPath} from the other members\n`);
      }
      const t0 = Date.now();
      touched = true;
      await withProgress(`rebuild slot ${o.slot}`, o.rate, (w) => vol!.rebuild(o.slot, member, w));
      const s = (Date.now() - t0) / 1000;
      const bytes = vol.array.componentBytes;
      process.stdout.write(`rebuilt slot ${o.slot} onto ${newPath}: ${formatBytes(bytes)} in ${s.toFixed(1)} s (${formatBytes(Math.round(bytes / Math.max(s, 0.001)))}/s); `
        + `${vol.backend.degraded === 0 ? 'the array is whole again' : 'the array is still degraded'} ${mdstatSlots(vol.array.states)}\n`);
      if (vol.array.resyncOffset !== MD_MAX_SECTOR) process.stdout.write(`a resync is still needed: twindisk raid resync ${[...paths, newPath].join(' ')}\n`);
    });
  } finally {
    try {
      await finish(vol, open);
    } finally {
      fresh.close();
      if (!touched) for (const f of fresh.created) fs.rmSync(f, { force: true });
    }
  }
}

async function resync(paths: string[], o: CommonOptions & { rate?: number }): Promise<void> {
  const open = openMembers(paths, 'raid resync', { readOnly: false });
  let vol: RaidVolume | null = null;
  try {
    await run(async () => {
      vol = await assembleVolume(open, o);
      if (vol.array.resyncOffset === MD_MAX_SECTOR) {
        process.stdout.write('nothing to resync: the array is in sync\n');
        return;
      }
      const r = await withProgress('resync', o.rate, (w) => vol!.resync(w));
      process.stdout.write(`resync: read ${r.bytesRead} bytes (${formatBytes(r.bytesRead)}) over ${r.regions} region(s) covering ${r.arrayBytes} bytes of the array; `
        + `${r.mismatches} mismatched sectors rewritten; the array is in sync\n`);
    });
  } finally {
    await finish(vol, open);
  }
}

// ----------------------------------------------------------------------------------- declarations

/** Declares `twindisk raid ...` on the program. */
export function addRaidCommands(program: Command): void {
  const raid = program.command('raid')
    .summary('md-compatible RAID 1/4/5/6/10 on files or block devices (create, status, check, rebuild)')
    .description('md-compatible arrays (metadata 1.2, internal write-intent bitmap) on files or block devices: mdadm and the\n'
      + 'Linux kernel assemble what twindisk creates, and twindisk what mdadm creates. These commands work offline;\n'
      + '`twindisk serve --raid MEMBER,...` serves an array, and with --control PATH (instead of the members) status,\n'
      + 'fail, remove, add, replace, check, repair and resync act on it while it serves. MEMBERs may be given in any\n'
      + 'order: their superblocks say which slot each holds.');
  const slotOption = (): Option => new Option('--slot <n>', 'the slot (md role) to act on, 0 to members-1 (required)').argParser(countArg(0, 255));
  const sddOption = (): Option => new Option('--start-dirty-degraded', 'start a raid4/5/6 that is degraded and was not shut down cleanly (its parity may be wrong where writes were in flight)');
  const rateOption = (what: string): Option => new Option('--rate <size/s>', `at most this many bytes a second ${what}, e.g. 50M/s`).argParser(rateArg);
  const needSlot = (o: { slot?: number }, cmd: string): number => {
    if (o.slot === undefined) throw new UsageError(`raid ${cmd} needs --slot N (the slot, 0 to members-1: twindisk raid status shows them)`);
    return o.slot;
  };

  raid.command('create')
    .summary('create an array (writes md superblocks and the bitmap; nothing else)')
    .description('Create an md array on MEMBERs, in slot order ("missing" leaves a slot empty: a degraded array).\n'
      + 'Without --assume-clean the array needs its initial resync (twindisk raid resync) before its redundancy holds.')
    .argument('<members...>', 'member files or block devices, in slot order')
    .addOption(new Option('--level <n>', 'RAID level (required)').choices(['1', '4', '5', '6', '10']))
    .option('--layout <name>', 'raid5/6: left-symmetric (default), right-symmetric, left-asymmetric, right-asymmetric, parity-first, ...; raid10: n2 (default), f2, o2')
    .addOption(new Option('--chunk <size>', 'chunk size (raid4/5/6/10), a power of two of at least 4K; default 512K').argParser(sizeArg))
    .addOption(new Option('--bitmap <kind>', 'internal write-intent bitmap: after a crash only its dirty regions are resynced').choices(['internal', 'none']).default('internal'))
    .addOption(new Option('--bitmap-chunk <size>', 'bytes one bitmap bit covers (default: mdadm\'s, at least 64M)').argParser(sizeArg))
    .option('--name <name>', 'the array\'s name (default twindisk)')
    .option('--assume-clean', 'the members hold the same data already (e.g. all zeroes): no initial resync')
    .addOption(new Option('--size <size>', 'create missing member files with this size (sparse), e.g. 10G').argParser(sizeArg))
    .option('--force', 'overwrite members that hold an md superblock, and accept members of different sizes')
    .action((paths: string[], o: CreateOptions) => create(paths, o));

  raid.command('assemble')
    .summary('find the array on MEMBERs and say what would run (writes nothing)')
    .description('Read MEMBERs\' superblocks and assemble the array as md would: members ordered by slot, stale members\n'
      + '(behind in events) and failed ones left out, members of another array refused. Prints what it found; writes nothing.')
    .argument('<members...>', 'member files or block devices')
    .addOption(sddOption())
    .action((paths: string[], o: CommonOptions) => assemble(paths, o));

  const controlOption = (): Option => new Option('--control <path>', 'act on the array a running serve --raid serves, through its --control socket (no members then)');

  raid.command('status')
    .summary('show the array as mdadm --detail and /proc/mdstat do (writes nothing)')
    .argument('[members...]', 'member files or block devices (offline)')
    .option('--json', 'print the status as JSON')
    .addOption(controlOption())
    .action((paths: string[], o: { json?: boolean; control?: string }) => {
      if (o.control !== undefined) {
        noMembersWithControl(paths, 'status');
        return statusOnline(o.control, o);
      }
      needMembers(paths, 'status');
      return status(paths, o);
    });

  /** --start-dirty-degraded is for assembling (offline): refused with --control. */
  const noSddWithControl = (o: CommonOptions): void => {
    if (o.startDirtyDegraded) throw new UsageError('--start-dirty-degraded goes with the members (offline); the served array is running already');
  };

  for (const mode of ['check', 'repair'] as const) {
    raid.command(mode)
      .summary(mode === 'check' ? 'read the whole array and count mismatched sectors (md\'s check)' : 'read the whole array and rewrite what does not match (md\'s repair)')
      .description((mode === 'check'
        ? 'Read every stripe (or every copy) and count the sectors whose parity or copies disagree (md\'s mismatch_cnt).\nRead errors met on the way are repaired from the other members.'
        : 'Read every stripe (or every copy) and rewrite parity from the data (mirrors: the other copies from the first).')
        + `\nWith --control, the served array runs it in the background (md's echo ${mode} > sync_action): progress and\n`
        + 'the result in twindisk raid status --control; --wait follows it here and prints the result.')
      .argument('[members...]', 'member files or block devices (offline)')
      .addOption(rateOption('read from the members'))
      .addOption(sddOption())
      .addOption(controlOption())
      .option('--wait', 'with --control: follow the progress until the end and print the result')
      .action((paths: string[], o: CommonOptions & { rate?: number; control?: string; wait?: boolean }) => {
        if (o.control !== undefined) {
          noMembersWithControl(paths, mode);
          noSddWithControl(o);
          return scrubOnline(mode, o.control, o);
        }
        if (o.wait) throw new UsageError(`--wait goes with --control (a served array's ${mode} runs in the background); offline, raid ${mode} runs to its end anyway`);
        needMembers(paths, mode);
        return scrub(mode, paths, o);
      });
  }

  raid.command('fail')
    .summary('mark a member faulty in the superblocks (mdadm --fail); with --control, in a served array')
    .argument('[members...]', 'member files or block devices (offline)')
    .addOption(slotOption())
    .addOption(sddOption())
    .addOption(controlOption())
    .action((paths: string[], o: CommonOptions & { slot?: number; control?: string }) => {
      const slot = needSlot(o, 'fail');
      if (o.control !== undefined) {
        noMembersWithControl(paths, 'fail');
        noSddWithControl(o);
        return failOnline(o.control, slot);
      }
      needMembers(paths, 'fail');
      return fail(paths, { ...o, slot });
    });

  const rangeArg = (v: string): { offset: number; length: number } => {
    const m = /^([^+]+)\+([^+]+)$/.exec(v);
    if (!m) throw new InvalidArgumentError('expected OFFSET+LENGTH in bytes of the member, e.g. 17M+4K.');
    return { offset: sizeArg(m[1]!), length: sizeArg(m[2]!) };
  };
  raid.command('inject')
    .summary('make a member of a served array fail, for testing (a bad range, a failing write, a vanished disk)')
    .description('Fault injection into the member of a slot of a running serve --raid, or of a node whose disk is an md array,\n'
      + 'through its --control socket (nbdkit\'s error filter, dm-flakey): reads or writes of member bytes OFFSET+LENGTH fail\n'
      + 'with EIO (--times N times, or until --clear; a read error heals once the range is rewritten, as a remapped bad\n'
      + 'sector does: md\'s read-error repair does that), or the member vanishes (every operation fails: it is failed).\n'
      + 'Offsets count from the member\'s start (md\'s superblock is at 4K, data at the data offset raid status shows).')
    .addOption(slotOption())
    .addOption(controlOption().makeOptionMandatory())
    .addOption(new Option('--read-error <offset+length>', 'reads touching these member bytes fail').argParser(rangeArg))
    .addOption(new Option('--write-error <offset+length>', 'writes touching these member bytes fail').argParser(rangeArg))
    .option('--vanish', 'the member is gone: every operation fails')
    .option('--clear', 'remove the member\'s faults (and bring a vanished one back)')
    .addOption(new Option('--times <n>', 'fail this many matching operations, then stop').argParser(countArg(1, 1 << 30)))
    .action(async (o: { slot?: number; control: string; readError?: { offset: number; length: number }; writeError?: { offset: number; length: number }; vanish?: boolean; clear?: boolean; times?: number }) => {
      const slot = needSlot(o, 'inject');
      const kinds = [o.readError && 'read-error', o.writeError && 'write-error', o.vanish && 'vanish', o.clear && 'clear'].filter(Boolean) as string[];
      if (kinds.length !== 1) throw new UsageError('raid inject takes one of --read-error OFFSET+LENGTH, --write-error OFFSET+LENGTH, --vanish, --clear');
      if (o.times !== undefined && !o.readError && !o.writeError) throw new UsageError('--times goes with --read-error or --write-error');
      const range = o.readError ?? o.writeError;
      const req = range
        ? { cmd: 'raid-inject' as const, slot, kind: kinds[0] as 'read-error' | 'write-error', offset: range.offset, length: range.length, ...(o.times !== undefined ? { times: o.times } : {}) }
        : { cmd: 'raid-inject' as const, slot, kind: kinds[0] as 'vanish' | 'clear' };
      const a = await raidControlCall(o.control, req) as { member: string; faults: number };
      process.stdout.write(`slot ${slot} (${a.member}): ${kinds[0]}${range ? ` at ${range.offset}+${range.length}` : ''}; ${a.faults} fault(s) active\n`);
    });

  raid.command('remove')
    .summary('take a member out of the array: failed, then dropped from the superblocks (mdadm --fail --remove)')
    .description('Offline: fail the slot\'s member and drop it from the superblocks. With --control (mdadm --remove on a\n'
      + 'running array): drop the failed member of the slot; a member in sync is failed first with twindisk raid fail --control.')
    .argument('[members...]', 'member files or block devices (offline)')
    .addOption(slotOption())
    .addOption(sddOption())
    .addOption(controlOption())
    .action((paths: string[], o: CommonOptions & { slot?: number; control?: string }) => {
      const slot = needSlot(o, 'remove');
      if (o.control !== undefined) {
        noMembersWithControl(paths, 'remove');
        noSddWithControl(o);
        return removeOnline(o.control, slot);
      }
      needMembers(paths, 'remove');
      return remove(paths, { ...o, slot });
    });

  for (const kind of ['add', 'replace'] as const) {
    raid.command(kind)
      .summary(kind === 'add'
        ? 'rebuild an empty (missing or failed) slot onto a new member, with a progress bar'
        : 'fail a slot\'s member and rebuild it onto a new member, with a progress bar')
      .description(kind === 'add'
        ? 'Write NEW\'s superblock and bitmap, rebuild the slot\'s data onto it from the other members, then record it in sync.'
        : 'Fail the member in the slot (if it is there), then rebuild its data onto NEW as add does. Unlike md\'s hot\n'
          + 'replace, the old member is not read: the array runs without its redundancy until the rebuild ends.')
      .argument('<new>', 'the new member (created with --size when missing)')
      .argument('[members...]', 'the array\'s members (offline)')
      .addOption(slotOption())
      .addOption(new Option('--size <size>', 'create NEW with this size (sparse) when it does not exist').argParser(sizeArg))
      .addOption(rateOption('written to the new member'))
      .option('--force', 'rebuild onto NEW even if it holds another array\'s superblock')
      .addOption(sddOption())
      .addOption(controlOption())
      .action((newPath: string, paths: string[], o: RebuildOptions & { slot?: number; control?: string }) => {
        const slot = needSlot(o, kind);
        if (o.control !== undefined) {
          noMembersWithControl(paths, kind);
          noSddWithControl(o);
          return rebuildOnline(kind, o.control, newPath, { ...o, slot });
        }
        needMembers(paths, kind);
        return rebuild(kind, newPath, paths, { ...o, slot });
      });
  }

  raid.command('resync')
    .summary('bring parity or copies in sync: after create, or the dirty bitmap regions after a crash')
    .description('Repair what may be out of sync: everything after create (without --assume-clean), and after an unclean\n'
      + 'shutdown only the regions the write-intent bitmap marks dirty (without a bitmap, the whole array). Prints the\n'
      + 'bytes it read. A served array resyncs on its own (at start, and after the rebuild of a degraded one): with\n'
      + '--control, this says whether a resync runs, is not needed, or waits for a rebuild.')
    .argument('[members...]', 'member files or block devices (offline)')
    .addOption(rateOption('read from the members'))
    .addOption(sddOption())
    .addOption(controlOption())
    .action((paths: string[], o: CommonOptions & { rate?: number; control?: string }) => {
      if (o.control !== undefined) {
        noMembersWithControl(paths, 'resync');
        noSddWithControl(o);
        if (o.rate !== undefined) throw new UsageError('--rate goes with the members (offline): a served array\'s resync runs at its own pace');
        return resyncOnline(o.control);
      }
      needMembers(paths, 'resync');
      return resync(paths, o);
    });
}
