// The node's own disk as the replication engine sees it: synchronous positional I/O on the engine's thread, a few calls on a pool, injectable faults.
//
// Two kinds implement it: LocalDisk (a backing file or device, local-disk.ts) and RaidNodeDisk (an md
// array run on its own thread, engine/raid/raid-node-disk.ts). The engine never asks which one it
// has; it only asks `workerFile` whether the queue workers may open the disk themselves.
import { EINVAL, EIO } from '../os.js';

/** An injected fault: I/O of `kind` touching [offset, offset + length) fails with EIO. */
export interface Fault {
  kind: 'read' | 'write';
  offset: number;
  length: number;
}

/** Thrown by NodeDisk operations; `errno` is positive. */
export class DiskIoError extends Error {
  constructor(readonly op: string, readonly errno: number, readonly offset: number, readonly length: number) {
    super(`${op} of ${length} bytes at ${offset} failed: errno ${errno}`);
  }
}

/** Settles a pool call: null, or the error. */
export type IoDone = (err: Error | null) => void;

/** One read or write of a batch: `length` bytes at `offset`, from or into the start of `buf`. */
export interface DiskIo {
  buf: Uint8Array;
  length: number;
  offset: number;
}

export interface NodeDisk {
  /** What the disk is, for logs: a file's path, or the array and its members. */
  readonly path: string;
  /** The data area's bytes; an online resize of a file disk grows it (Resource.resizer). */
  size: number;
  /**
   * The file the queue workers may open to read and write the disk themselves (the fast paths of
   * channel.ts LOCAL_READS / LOCAL_WRITES), or null: every request then goes through the engine.
   */
  readonly workerFile: string | null;
  /** Whether the size can change while attached (a file: yes; an array's size is set by its members). */
  readonly resizable: boolean;

  /** Reads `length` bytes at `offset` into the start of `buf`. Throws DiskIoError. */
  read(buf: Uint8Array, length: number, offset: number): void;
  /** Writes the first `length` bytes of `buf` at `offset`. Throws DiskIoError. */
  write(buf: Uint8Array, length: number, offset: number): void;
  /** Makes completed writes durable. Throws DiskIoError. */
  sync(): void;
  /** Deallocates (`unmap`) or zeroes a range; both read back as zeroes. Throws DiskIoError. */
  trim(offset: number, length: number, unmap: boolean): void;
  /** `write()` off the engine's thread where the disk can: `buf` stays untouched until `done`. */
  writeAsync(buf: Uint8Array, length: number, offset: number, done: IoDone): void;
  /** `read()` off the engine's thread where the disk can: `buf` stays untouched until `done`. */
  readAsync(buf: Uint8Array, length: number, offset: number, done: IoDone): void;
  /** `sync()` off the engine's thread where the disk can. */
  syncAsync(done: IoDone): void;
  close(): void;
  /**
   * Optional: the reads (writes) of one batch at once, for a disk whose every call costs a hop to
   * another thread (an md array): one hop for the batch. Each item gets null when done, or its
   * DiskIoError. The engine then defers a batch's guest reads to its end, after its writes.
   */
  readBatch?(items: readonly DiskIo[]): (Error | null)[];
  writeBatch?(items: readonly DiskIo[]): (Error | null)[];

  /** Adds a fault (tests, and the control socket's `fault` request); `clearFaults` removes them all. */
  inject(f: Fault): void;
  clearFaults(): void;
  readonly hasFaults: boolean;
}

/** The faults injected into one disk, and the range check every call makes first. */
export class FaultList {
  private faults: Fault[] = [];

  add(f: Fault): void {
    this.faults.push(f);
  }

  clear(): void {
    this.faults = [];
  }

  get any(): boolean {
    return this.faults.length > 0;
  }

  /** Throws DiskIoError: EINVAL outside [0, size), EIO where an injected fault of `kind` overlaps. */
  check(kind: 'read' | 'write', offset: number, length: number, size: number): void {
    if (offset < 0 || length < 0 || offset + length > size) throw new DiskIoError(kind, EINVAL, offset, length);
    for (const f of this.faults) {
      if (f.kind === kind && offset < f.offset + f.length && f.offset < offset + length) throw new DiskIoError(kind, EIO, offset, length);
    }
  }
}

/** What both kinds of disk share: the faults injected into them (`inject`, `clearFaults`, `hasFaults` of NodeDisk). */
export abstract class FaultInjectable {
  protected readonly faults = new FaultList();

  inject(f: Fault): void {
    this.faults.add(f);
  }

  clearFaults(): void {
    this.faults.clear();
  }

  get hasFaults(): boolean {
    return this.faults.any;
  }
}
