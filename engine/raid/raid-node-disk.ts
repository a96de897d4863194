// A replicated node's disk that is an md array: the NodeDisk the engine calls, over the array's own thread (raid-disk-thread.ts).
//
// DRBD on md: the replication engine sees one disk, and the array under it loses, rebuilds and
// resyncs members on its own; only when the array itself fails (more members gone than it survives)
// does an I/O error reach the engine, which then detaches the disk and serves through its peers.
//
// Each call posts the request on the array's channel and waits for its completion (the engine's
// calls are synchronous: node-disk.ts), so the engine's thread blocks for the array's I/O as it
// does for a file's pread. The *Async calls do the same, then settle on the next turn. Queue
// workers do not open the array themselves (`workerFile` is null): every guest request goes through
// the engine, which hands it on here. The array cannot change size while attached.
import { Worker } from 'node:worker_threads';
import { IoVector } from '../iovec.js';
import type { Fields, Level, Logger } from '../log.js';
import { EFD_CLOEXEC, EFD_NONBLOCK, EIO, close, eventfd } from '../os.js';
import type { ChannelSpec } from '../replication/channel.js';
import { DiskIoError, FaultInjectable, type DiskIo, type IoDone, type NodeDisk } from '../replication/node-disk.js';
import { ReplicatedBackend } from '../replication/replicated-backend.js';
import type { RaidStatus } from './array-status.js';
import type { RaidControlRequest, ServedRaidStatus } from './membership.js';

/** What the array's thread is started with. */
export interface RaidThreadData {
  members: string[];
  /** The eventfd the thread's channel host writes when a completion is posted (ours to close). */
  eventFd: number;
  /** Completes "cannot ..." in a member's lock refusal. */
  purpose: string;
  startDirtyDegraded: boolean;
  /** The log component of the thread's lines. */
  component: string;
  /** The node's control socket, named in advice (twindisk raid status --control ...). */
  control: string;
  /** One Int32: 1 while the thread runs; it stores 0 (and notifies) when it dies. */
  alive: SharedArrayBuffer;
}

export type RaidThreadRequest =
  | { id: number; cmd: 'control'; req: RaidControlRequest }
  | { id: number; cmd: 'close' };

export type RaidThreadReply =
  | { kind: 'log'; level: Level; component: string; msg: string; fields: Fields }
  | { kind: 'ready'; channel: ChannelSpec; size: number; status: RaidStatus }
  | { kind: 'failed'; message: string }
  | { kind: 'event'; event: 'member-failed'; slot: number; member: string }
  | { kind: 'answer'; id: number; result?: unknown; error?: string };


export interface RaidNodeDiskOptions {
  members: string[];
  /** Logs the thread's lines (they keep their own component). */
  log: Logger;
  /** The volume's block size: requests are multiples of it. */
  blockSize: number;
  purpose: string;
  /** The node's control socket (for advice in answers). */
  control: string;
  startDirtyDegraded?: boolean;
  /** Called (on the main thread) when the array fails a member and goes on degraded. */
  onMemberFailed?(slot: number, member: string): void;
}

const PENDING = 1;

/** An md array as a node's disk; see the file comment. */
export class RaidNodeDisk extends FaultInjectable implements NodeDisk {
  readonly workerFile = null;
  readonly resizable = false;
  /** The data area's bytes: the metadata's size once attached (at most the array's). */
  size: number;
  /** The array's bytes. */
  readonly arrayBytes: number;
  readonly path: string;
  private readonly iov = new IoVector(1);
  private status = PENDING;
  private readonly done = { complete: (st: number) => { this.status = st; } };
  private readonly alive: Int32Array;
  private closed = false;
  private nextId = 1;
  private readonly answers = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();

  private constructor(
    private readonly worker: Worker, private readonly b: ReplicatedBackend, private readonly eventFd: number,
    alive: SharedArrayBuffer, size: number, readonly members: readonly string[], private readonly log: Logger,
  ) {
    super();
    this.alive = new Int32Array(alive);
    // The engine's thread never sleeps on the channel's eventfd: it waits on the completion word
    // (Atomics.wait), which the thread notifies anyway. Saying it is always awake spares the thread an
    // eventfd write per batch of completions.
    b.idle(false);
    this.size = size;
    this.arrayBytes = size;
    this.path = `md array of ${members.join(',')}`;
  }

  /** Starts the array's thread and assembles the array; rejects with md's reason (naming the member) when it cannot. */
  static open(o: RaidNodeDiskOptions): Promise<RaidNodeDisk> {
    const eventFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (eventFd < 0) return Promise.reject(new Error('eventfd() failed: out of file descriptors?'));
    const alive = new SharedArrayBuffer(4);
    new Int32Array(alive)[0] = 1;
    const data: RaidThreadData = {
      members: o.members, eventFd, purpose: o.purpose, startDirtyDegraded: !!o.startDirtyDegraded, component: `${o.log.component}/raid`, control: o.control, alive,
    };
    const worker = new Worker(new URL('./raid-disk-thread.js', import.meta.url), { workerData: data });
    return new Promise((resolve, reject) => {
      let disk: RaidNodeDisk | null = null;
      const fail = (e: Error): void => {
        close(eventFd);
        void worker.terminate();
        reject(e);
      };
      worker.on('message', (m: RaidThreadReply) => {
        switch (m.kind) {
          case 'log':
            o.log.child('raid')[m.level](m.msg, m.fields);
            return;
          case 'failed':
            return fail(new Error(`cannot assemble the node's md array: ${m.message}`));
          case 'ready': {
            if (m.size % o.blockSize !== 0) {
              return fail(new Error(`the md array holds ${m.size} bytes, not a whole number of ${o.blockSize}-byte blocks`));
            }
            const b = new ReplicatedBackend({
              kind: 'replicated', channel: m.channel, size: m.size, blockSize: o.blockSize, local: null, hot: null, name: 'md',
            });
            disk = new RaidNodeDisk(worker, b, eventFd, alive, m.size, o.members, o.log);
            resolve(disk);
            return;
          }
          case 'event':
            o.onMemberFailed?.(m.slot, m.member);
            return;
          case 'answer': {
            const a = disk?.answers.get(m.id);
            if (!a) return;
            disk!.answers.delete(m.id);
            if (m.error !== undefined) a.reject(new Error(m.error));
            else a.resolve(m.result);
          }
        }
      });
      worker.on('error', (e) => {
        o.log.error(`the md array's thread failed: ${e.stack ?? e.message}`);
        if (!disk) fail(e);
        else for (const a of disk.answers.values()) a.reject(e);
      });
    });
  }

  /** A request of membership.ts (raid-status, raid-fail, raid-add) run on the array; its answer. */
  control(req: RaidControlRequest): Promise<unknown> {
    return this.ask({ id: 0, cmd: 'control', req });
  }

  /** The array's status, with its running work and last rebuild. */
  arrayStatus(): Promise<ServedRaidStatus> {
    return this.control({ cmd: 'raid-status' }) as Promise<ServedRaidStatus>;
  }

  private ask(req: RaidThreadRequest): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error('the md array is closed'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.answers.set(id, { resolve, reject });
      this.worker.postMessage({ ...req, id });
    });
  }

  read(buf: Uint8Array, length: number, offset: number): void {
    this.faults.check('read', offset, length, this.size);
    this.iov.reset();
    this.iov.push(buf, 0, length, 0);
    this.call('read', offset, length, () => this.b.read(this.iov, offset, this.done));
  }

  write(buf: Uint8Array, length: number, offset: number): void {
    this.faults.check('write', offset, length, this.size);
    this.iov.reset();
    this.iov.push(buf, 0, length, 0);
    this.call('write', offset, length, () => this.b.write(this.iov, offset, false, this.done));
  }

  sync(): void {
    this.call('flush', 0, 0, () => this.b.flush(this.done));
  }

  trim(offset: number, length: number, unmap: boolean): void {
    this.faults.check('write', offset, length, this.size);
    // Zeroes either way: a discard on an array need not read back as zeroes, and the engine relies on it.
    this.call('trim', offset, length, () => this.b.writeZeroes(offset, length, unmap, this.done));
  }

  readBatch(items: readonly DiskIo[]): (Error | null)[] {
    return this.callMany('read', items);
  }

  writeBatch(items: readonly DiskIo[]): (Error | null)[] {
    return this.callMany('write', items);
  }

  writeAsync(buf: Uint8Array, length: number, offset: number, done: IoDone): void {
    this.later(() => this.write(buf, length, offset), done);
  }

  readAsync(buf: Uint8Array, length: number, offset: number, done: IoDone): void {
    this.later(() => this.read(buf, length, offset), done);
  }

  syncAsync(done: IoDone): void {
    this.later(() => this.sync(), done);
  }

  /**
   * Stops the array's thread: it stops a resync where it is, flushes, records the array clean and
   * closes the members. The engine calls it synchronously; the thread finishes on its own, and
   * `closed()` resolves once it has (the daemon waits for it before it releases anything else).
   */
  close(): void {
    if (this.closed) return;
    this.closing = this.ask({ id: 0, cmd: 'close' }).then(() => undefined, (e: Error) => {
      this.log.error(`closing the md array failed: ${e.message}`);
    }).finally(() => {
      this.b.close();
      close(this.eventFd);
      void this.worker.terminate();
    });
    this.closed = true;
  }

  private closing: Promise<void> = Promise.resolve();

  /** Resolves once the array is closed (after close()). */
  whenClosed(): Promise<void> {
    return this.closing;
  }

  /** Runs `op` now and settles `done` on the next turn, as a pool call would. */
  private later(op: () => void, done: IoDone): void {
    let err: Error | null = null;
    try {
      op();
    } catch (e) {
      err = e as Error;
    }
    setImmediate(() => done(err));
  }

  /** Vectors and completions of a batch, reused. */
  private readonly batchIov: IoVector[] = [];
  private readonly batchStatus: number[] = [];
  private readonly batchDone: { complete(st: number): void }[] = [];

  /**
   * Submits every item (those an injected fault or the range check refuses get their error at once),
   * rings once, and waits until all have completed: one hop to the array's thread for the batch.
   */
  private callMany(op: 'read' | 'write', items: readonly DiskIo[]): (Error | null)[] {
    const out: (Error | null)[] = new Array<Error | null>(items.length).fill(null);
    if (this.closed) return out.map(() => new DiskIoError(op, EIO, 0, 0));
    for (let i = 0; i < items.length; i++) {
      const it = items[i]!;
      try {
        this.faults.check(op, it.offset, it.length, this.size);
      } catch (e) {
        out[i] = e as Error;
        continue;
      }
      while (this.batchIov.length <= i) {
        const k = this.batchIov.length;
        this.batchIov.push(new IoVector(1));
        this.batchStatus.push(PENDING);
        this.batchDone.push({ complete: (st: number) => { this.batchStatus[k] = st; } });
      }
      const iov = this.batchIov[i]!;
      iov.reset();
      iov.push(it.buf, 0, it.length, 0);
      this.batchStatus[i] = PENDING;
      if (op === 'read') this.b.read(iov, it.offset, this.batchDone[i]!);
      else this.b.write(iov, it.offset, false, this.batchDone[i]!);
    }
    if (!this.drain()) {
      for (let i = 0; i < items.length; i++) if (out[i] === null && this.batchStatus[i] === PENDING) out[i] = new DiskIoError(op, EIO, items[i]!.offset, items[i]!.length);
      return out;
    }
    for (let i = 0; i < items.length; i++) {
      const st = this.batchStatus[i]!;
      if (out[i] === null && st < 0) out[i] = new DiskIoError(op, -st, items[i]!.offset, items[i]!.length);
    }
    return out;
  }

  /** Submits one request and waits for its completion; throws DiskIoError on a failed one, or when the thread is gone. */
  private call(op: string, offset: number, length: number, submit: () => void): void {
    if (this.closed) throw new DiskIoError(op, EIO, offset, length);
    this.status = PENDING;
    submit();
    if (!this.drain()) throw new DiskIoError(op, EIO, offset, length);
    if (this.status < 0) throw new DiskIoError(op, -this.status, offset, length);
  }

  /**
   * Waits until every request submitted has completed (calls are synchronous: nothing else is in
   * flight); false when the array's thread died first (the disk is closed then).
   */
  private drain(): boolean {
    const gone = (): boolean => Atomics.load(this.alive, 0) === 0;
    while (this.b.inFlight() > 0) {
      if (gone()) {
        this.closed = true;
        return false;
      }
      this.b.waitOne(gone);
    }
    return true;
  }
}
