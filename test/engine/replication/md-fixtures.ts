// Shared fixtures of the metadata tests: temporary files, corruption, external metadata, a bit reader.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BITMAP_PAGE_BYTES, Metadata, type CreateOptions } from '../../../engine/replication/metadata.js';

export const MiB = 1 << 20;
export const PAGE_BITS = BITMAP_PAGE_BYTES * 8;

/** Runs `fn` with a fresh temporary directory, removed afterwards. */
export function withDir(fn: (dir: string) => void): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-md-'));
  try {
    fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A sparse file of `size` bytes. */
export function sparse(file: string, size: number): string {
  fs.writeFileSync(file, '');
  fs.truncateSync(file, size);
  return file;
}

/** Flips `len` bytes at `pos` of `file`, as a torn or misdirected write would leave them. */
export function corrupt(file: string, pos: number, len = 16): void {
  const fd = fs.openSync(file, 'r+');
  const b = Buffer.alloc(len);
  fs.readSync(fd, b, 0, len, pos);
  for (let i = 0; i < len; i++) b[i] = b[i]! ^ 0xa5;
  fs.writeSync(fd, b, 0, len, pos);
  fs.closeSync(fd);
}

export function readAt(file: string, pos: number, len: number): Buffer {
  const fd = fs.openSync(file, 'r');
  const b = Buffer.alloc(len);
  fs.readSync(fd, b, 0, len, pos);
  fs.closeSync(fd);
  return b;
}

export function writeAt(file: string, pos: number, data: Uint8Array): void {
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, data, 0, data.length, pos);
  fs.closeSync(fd);
}

/** External metadata for a `dataSize`-byte backing file in `dir`. */
export function external(dir: string, dataSize: number, extra: Partial<CreateOptions> = {}): CreateOptions {
  return {
    backingFile: sparse(path.join(dir, 'data.img'), dataSize),
    metaFile: path.join(dir, 'data.md'),
    nodeId: 0,
    peerIds: [1, 2],
    ...extra,
  };
}

/** The open report of the metadata at `loc`, closing it again without writing. */
export function reportOf(loc: { backingFile: string; metaFile: string | null }): Metadata['openReport'] {
  const md = Metadata.open(loc);
  md.abandon();
  return md.openReport;
}

export function bit(map: Uint8Array, i: number): boolean {
  return ((map[i >> 3]! >> (i & 7)) & 1) === 1;
}

/** xorshift32 stream of integers in [0, n). */
export function rng(seed: number): (n: number) => number {
  let x = seed | 1;
  return (n) => {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    return (x >>> 0) % n;
  };
}
