// Resource instances wired by in-memory links (frames still go through the codec), for deterministic failure scenarios.
import FakeTimers from '@sinonjs/fake-timers';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Logger } from '../../../engine/log.js';
import { ChannelOp, HEADROOM, type ChannelRequest } from '../../../engine/replication/channel.js';
import type { ResourceConfig } from '../../../engine/replication/config.js';
import type { ErrorCode, Frame } from '../../../engine/replication/frames.js';
import type { PeerLink } from '../../../engine/replication/link.js';
import { LocalDisk } from '../../../engine/replication/local-disk.js';
import { Metadata } from '../../../engine/replication/metadata.js';
import { Resource } from '../../../engine/replication/resource.js';
import { HandshakeSession } from '../../../engine/replication/session.js';
import { NONCE_SIZE, decodeFrame, encodeFrame } from '../../../engine/replication/wire.js';

export const SIZE = 1 << 20;

/** Timers and Date as the engine sees them in scenario tests: simulated once simulatedTime() is called. */
const real = { setTimeout: globalThis.setTimeout, setImmediate: globalThis.setImmediate };
let clock: FakeTimers.InstalledClock | null = null;

/**
 * Replaces timers, setImmediate and Date with a simulated clock for the rest of this test file: time
 * passes only in settle(), where every timer, link delivery and microtask due runs at once, in order.
 * So scenario tests are exact and do not wait.
 */
export function simulatedTime(): void {
  clock ??= FakeTimers.install({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'setImmediate', 'clearImmediate', 'Date'] });
}

/** Lets `ms` of time pass: simulated (at once, see simulatedTime), or real without it. */
export async function settle(ms: number): Promise<void> {
  if (!clock) return new Promise((r) => real.setTimeout(r, ms));
  for (let t = 0; t < ms; t++) {
    await clock.tickAsync(1);
    await diskWrites();
  }
}

/**
 * Waits on the real event loop for the local disks' writes on libuv's pool (a SyncTarget's resync
 * answers): simulated time stands still meanwhile, as if they took no time.
 */
async function diskWrites(): Promise<void> {
  for (let i = 0; LocalDisk.pendingIo > 0; i++) {
    if (i > 100_000) throw new Error('sim: a local disk write did not finish');
    await new Promise((r) => real.setImmediate(r));
  }
}

/**
 * `p`, with simulated time passing (a millisecond at a time) while a test awaits it, as real time
 * would: a guest request completes when its acknowledgements have been delivered. Time passes only
 * once it is awaited (`then`), so a request started and left pending changes nothing by itself.
 */
function pump<T>(p: Promise<T>): Promise<T> {
  if (!clock) return p;
  const c = clock;
  let done = false;
  void p.finally(() => { done = true; });
  let pumping: Promise<T> | null = null;
  const run = async (): Promise<T> => {
    for (let ms = 0; !done && ms < 60_000; ms++) {
      await c.tickAsync(1);
      await diskWrites();
    }
    return p;
  };
  return {
    then: (ok, fail) => (pumping ??= run()).then(ok, fail),
    catch: (fail) => (pumping ??= run()).catch(fail),
    finally: (f) => (pumping ??= run()).finally(f),
    [Symbol.toStringTag]: 'Promise',
  } as Promise<T>;
}

/** Waits on the real event loop for work the clock does not drive (an fdatasync on libuv's pool). */
export async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; !cond(); i++) {
    if (i > 5000) throw new Error(`${what}: not done within 5 s`);
    await new Promise((r) => real.setTimeout(r, 1));
  }
}

/** A resource of `n` nodes named n0..; `diskless` lists the ids without a disk. */
export function makeConfig(n: number, o: Partial<ResourceConfig> & { diskless?: number[] } = {}): ResourceConfig {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-sim-'));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  const nodes = Array.from({ length: n }, (_, i) => ({
    name: `n${i}`, id: i, host: '127.0.0.1', port: 1, address: '127.0.0.1:1',
    disk: (o.diskless ?? []).includes(i) ? null : path.join(dir, `d${i}`), raid: null, metaDisk: path.join(dir, `m${i}`),
    socket: null, iscsi: null, iscsiAdvertise: null, control: path.join(dir, `c${i}`), queues: 1,
  }));
  const { diskless: _d, ...rest } = o;
  void _d;
  return {
    file: path.join(dir, 'r.json'), dir, resource: 'r', protocol: 'C', secret: 'x', quorum: 'off', onNoQuorum: 'io-error', allowTwoPrimaries: false, iscsiTarget: "iqn.2026-12.io.twindisk:r",
    afterSb0pri: 'disconnect', afterSb1pri: 'disconnect', afterSb2pri: 'disconnect', resyncRate: 0, cMinRate: 0, csumsAlg: null,
    bitmapGranularity: 4096, alExtents: 64, blockSize: 512, tls: null, nodes, warnings: [], ...rest,
  };
}

const simLog = new Logger('sim');

/** Creates every node with fresh UpToDate metadata at one shared generation (as create-md --assume-clean). */
export function makeNodes(cfg: ResourceConfig): Resource[] {
  return cfg.nodes.map((me) => {
    const r = new Resource({ cfg, me, log: process.env.SIM_LOG ? new Logger(me.name) : simLog.child(me.name) });
    if (me.disk) {
      fs.writeFileSync(me.disk, Buffer.alloc(SIZE));
      const md = Metadata.create({
        backingFile: me.disk, metaFile: me.metaDisk, nodeId: me.id,
        peerIds: cfg.nodes.filter((x) => x.id !== me.id).map((x) => x.id), alExtentSize: 65536, alExtents: 8,
      });
      md.setInitialGeneration(0x1234n);
      md.disk = 'UpToDate';
      md.writeSuperblock();
      r.attach(md);
    }
    return r;
  });
}

/** Reopens a node's disk after a simulated crash (its metadata abandoned, not closed). */
export function restart(cfg: ResourceConfig, old: Resource): Resource {
  const me = old.me;
  const md = old.md!;
  old.close = () => undefined;
  // The crashed instance has no disk any more (its links still go down below).
  (old as { md: Metadata | null }).md = null;
  old.diskState = 'Diskless';
  for (const l of [...links.values()]) if (l.from === old || l.to === old) disconnect(l.from, l.to, 'crash');
  md.abandon();
  const r = new Resource({ cfg, me, log: simLog.child(`${me.name}'`) });
  r.attach(Metadata.open({ backingFile: me.disk!, metaFile: me.metaDisk }));
  return r;
}

class SimLink implements PeerLink {
  open = true;
  buffered = 0;
  delay = 0;
  twin!: SimLink;
  readonly peerId: number;
  constructor(readonly from: Resource, readonly to: Resource) {
    this.peerId = to.me.id;
  }
  send(f: Frame): void {
    if (!this.open) return;
    const bytes = Buffer.from(encodeFrame(f));
    const deliver = () => { if (this.open && this.twin.open) this.to.frame(this.twin, decodeFrame(bytes)); };
    if (this.delay) setTimeout(deliver, this.delay);
    else setImmediate(deliver);
  }
  /** Like a socket, reads the caller's bytes only when it delivers them (a reused slot shows). */
  sendEncoded(bytes: Buffer, onSent?: () => void): void {
    if (!this.open) return onSent?.();
    const deliver = () => {
      const copy = Buffer.from(bytes);
      onSent?.();
      if (this.open && this.twin.open) this.to.frame(this.twin, decodeFrame(copy));
    };
    if (this.delay) setTimeout(deliver, this.delay);
    else setImmediate(deliver);
  }
  close(_code: ErrorCode, msg: string): void {
    // A node an earlier test left running may close its old link: that must not cut the link a later
    // test made between nodes of the same ids.
    if (links.get(key(this.from, this.to)) !== this) {
      this.open = this.twin.open = false;
      return;
    }
    disconnect(this.from, this.to, `closed: ${msg}`);
  }
}

const links = new Map<string, SimLink>();
const key = (a: Resource, b: Resource) => `${a.me.id}-${b.me.id}`;

/**
 * The link handshake (engine/replication/session.ts) between two nodes, every frame through the codec,
 * as the transport runs it before the engine sees a link: the lower id dials. Throws when it fails.
 */
function authenticate(a: Resource, b: Resource): void {
  const [dialler, acceptor] = a.me.id < b.me.id ? [a, b] : [b, a];
  const session = (r: Resource, role: 'dialler' | 'acceptor') => new HandshakeSession({
    role, secret: r.cfg.secret, resource: r.cfg.resource, myId: r.me.id, nonce: randomBytes(NONCE_SIZE),
    ...(role === 'dialler' ? { peerId: acceptor.me.id } : {}),
  });
  const ends = [session(dialler, 'dialler'), session(acceptor, 'acceptor')] as const;
  const up = [false, false];
  let inFlight: [number, Frame][] = ends.flatMap((e, i) => e.start().send.map((f): [number, Frame] => [1 - i, f]));
  while (inFlight.length > 0) {
    const next: [number, Frame][] = [];
    for (const [to, f] of inFlight) {
      const step = ends[to]!.receive(decodeFrame(Buffer.from(encodeFrame(f))));
      next.push(...step.send.map((g): [number, Frame] => [1 - to, g]));
      if (step.outcome.kind === 'up') up[to] = true;
      else if (step.outcome.kind !== 'continue') throw new Error(`sim: handshake ${dialler.me.name} -> ${acceptor.me.name} failed: ${JSON.stringify(step.outcome)}`);
    }
    inFlight = next;
  }
  if (!up[0] || !up[1]) throw new Error(`sim: handshake ${dialler.me.name} -> ${acceptor.me.name} did not finish`);
}

export function connect(a: Resource, b: Resource): SimLink {
  authenticate(a, b);
  const la = new SimLink(a, b);
  const lb = new SimLink(b, a);
  la.twin = lb;
  lb.twin = la;
  links.set(key(a, b), la);
  links.set(key(b, a), lb);
  a.linkUp(la);
  b.linkUp(lb);
  return la;
}

export function link(a: Resource, b: Resource): SimLink {
  return links.get(key(a, b))!;
}

export function disconnect(a: Resource, b: Resource, why = 'test'): void {
  const la = links.get(key(a, b));
  const lb = links.get(key(b, a));
  if (!la || !lb || !la.open) return;
  la.open = lb.open = false;
  links.delete(key(a, b));
  links.delete(key(b, a));
  a.linkDown(la, why);
  b.linkDown(lb, why);
}

/** A guest write through `r` (as its channel would deliver it); resolves with the status. */
export function write(r: Resource, offset: number, length: number, fill: number): Promise<number> {
  return pump(new Promise((resolve) => {
    const slotBuffer = Buffer.alloc(HEADROOM + length, fill);
    const req = { channel: { complete: (_slot: number, st: number) => resolve(st) }, slot: 0, op: ChannelOp.Write, offset, length, flags: 0, data: slotBuffer.subarray(HEADROOM), slotBuffer };
    submit(r, req as unknown as ChannelRequest);
  }));
}

/** Submits a request as a channel does; the batch ends at the end of this turn (channel: after its drain). */
export function submit(r: Resource, req: ChannelRequest): void {
  r.requests.request(req);
  queueMicrotask(() => r.requests.endBatch());
}

/** A guest read through `r`. */
export function read(r: Resource, offset: number, length: number): Promise<{ status: number; data: Buffer }> {
  return pump(new Promise((resolve) => {
    const data = Buffer.alloc(length);
    const req = { channel: { complete: (_slot: number, status: number) => resolve({ status, data }) }, slot: 0, op: ChannelOp.Read, offset, length, flags: 0, data };
    submit(r, req as unknown as ChannelRequest);
  }));
}

/** One byte of a node's local disk. */
export function byteAt(r: Resource, offset: number): number {
  const b = Buffer.alloc(1);
  r.disk!.read(b, 1, offset);
  return b[0]!;
}

/**
 * The promise replication makes: any two linked nodes with disks that both call themselves UpToDate,
 * Established and without out-of-sync blocks toward each other hold the same bytes.
 */
export function assertConverged(nodes: Resource[]): void {
  for (const a of nodes) {
    for (const b of nodes) {
      if (a === b || !a.disk || !b.disk) continue;
      const sa = a.status().peers[b.me.name]!;
      const sb = b.status().peers[a.me.name]!;
      if (sa.replication !== 'Established' || a.diskState !== 'UpToDate' || b.diskState !== 'UpToDate') continue;
      if (sa.outOfSyncBytes !== 0 || sb.outOfSyncBytes !== 0) continue;
      const da = Buffer.alloc(SIZE);
      const db = Buffer.alloc(SIZE);
      a.disk.read(da, SIZE, 0);
      b.disk.read(db, SIZE, 0);
      if (!da.equals(db)) {
        let i = 0;
        while (da[i] === db[i]) i++;
        throw new Error(`${a.me.name} and ${b.me.name} report being in sync but differ first at byte ${i} (${da[i]} vs ${db[i]})`);
      }
    }
  }
}
