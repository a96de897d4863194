// A pure writer for "newc" cpio archives (the initramfs format): entries in, bytes out.

export type CpioEntry =
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'file'; path: string; data: Uint8Array; mode?: number }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'char' | 'block'; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

function record(ino: number, mode: number, nlink: number, data: Uint8Array, name: string, rdevMajor = 0, rdevMinor = 0): Buffer {
  const nameBytes = Buffer.from(name + '\0');
  const header = '070701' + [ino, mode, 0, 0, nlink, 0, data.length, 0, 0, rdevMajor, rdevMinor, nameBytes.length, 0].map(hex8).join('');
  const head = Buffer.from(header, 'ascii');
  return Buffer.concat([head, nameBytes, Buffer.alloc(pad4(head.length + nameBytes.length)), data, Buffer.alloc(pad4(data.length))]);
}

/**
 * Encodes entries as a newc cpio archive ending in the TRAILER!!! record. Paths are stored without a
 * leading slash; parent directories must be listed before their contents.
 */
export function writeCpio(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  for (const e of entries) {
    const name = e.path.replace(/^\/+/, '');
    if (!name) throw new Error('cpio entry with an empty path');
    switch (e.type) {
      case 'dir':
        parts.push(record(ino++, S_IFDIR | (e.mode ?? 0o755), 2, new Uint8Array(0), name));
        break;
      case 'file':
        parts.push(record(ino++, S_IFREG | (e.mode ?? 0o644), 1, e.data, name));
        break;
      case 'symlink':
        parts.push(record(ino++, S_IFLNK | 0o777, 1, Buffer.from(e.target), name));
        break;
      case 'char':
      case 'block':
        parts.push(record(ino++, (e.type === 'char' ? S_IFCHR : S_IFBLK) | (e.mode ?? 0o600), 1, new Uint8Array(0), name, e.major, e.minor));
        break;
    }
  }
  parts.push(record(0, 0, 1, new Uint8Array(0), 'TRAILER!!!'));
  return Buffer.concat(parts);
}

/** Parses a newc archive back into (path, mode, data) records: for tests and inspection. */
export function readCpio(b: Uint8Array): { path: string; mode: number; data: Buffer }[] {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const out: { path: string; mode: number; data: Buffer }[] = [];
  let off = 0;
  for (;;) {
    if (off + 110 > buf.length) throw new Error(`cpio: truncated header at ${off}`);
    if (buf.toString('ascii', off, off + 6) !== '070701') throw new Error(`cpio: bad magic at ${off}`);
    const field = (i: number) => parseInt(buf.toString('ascii', off + 6 + i * 8, off + 14 + i * 8), 16);
    const mode = field(1);
    const size = field(6);
    const namesize = field(11);
    const name = buf.toString('utf8', off + 110, off + 110 + namesize - 1);
    off += 110 + namesize;
    off += pad4(off);
    if (name === 'TRAILER!!!') return out;
    out.push({ path: name, mode, data: buf.subarray(off, off + size) });
    off += size + pad4(size);
  }
}
