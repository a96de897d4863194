// One owner per disk: a flock(2) on a backing or metadata file, taken before anything is read or written.
//
// Every twindisk command that writes a disk (`up`, `create-md`, `serve`, the demo) takes this lock first
// and holds it for as long as it may write; a second one is refused with the holder's pid and command
// line, before it has opened (let alone rewritten) anything.
//
// Why flock and not fcntl(F_SETLK): POSIX record locks belong to the process and vanish when it closes
// *any* fd of the file (Metadata, LocalDisk and the queue workers all open their own). flock locks belong
// to the open file description: the lock fd holds it until release() or exit, whatever else the process
// opens and closes. A flock on another description of the same file conflicts even within one process,
// so a node never locks its own disk twice (`attach` re-opens the metadata under the lock the node holds).
// /proc/locks lists flock holders with their pid (OFD locks show -1), which names the holder in the
// refusal. The lock is advisory: it keeps twindisk processes apart, not other programs that do not ask.
import fs from 'node:fs';
import path from 'node:path';
import { EWOULDBLOCK, LOCK_EX, LOCK_NB, LOCK_SH, LOCK_UN, errno, flock } from './os.js';

/** A process holding a lock: its pid, command line (null when unreadable) and working directory. */
export interface LockHolder {
  pid: number;
  argv: string[] | null;
  cwd: string | null;
}

/** Why a lock was not taken: `busy` (another holder; `holders` names them), `missing` (no such file), `error`. */
export class DiskLockError extends Error {
  override readonly name = 'DiskLockError';
  constructor(message: string, readonly code: 'busy' | 'missing' | 'error', readonly holders: LockHolder[] = []) {
    super(message);
  }
}

/** A held lock; release() drops it (idempotent). */
export interface DiskLock {
  readonly path: string;
  readonly purpose: string;
  readonly shared: boolean;
  /** False once `path` names another file than the locked one (replaced, or removed). */
  stillNames(): boolean;
  release(): void;
}

export interface LockOptions {
  /** A shared lock (readers: `serve --read-only`): other shared locks are allowed, exclusive ones refused. */
  shared?: boolean;
  /** Create the file (empty) when it does not exist. */
  create?: boolean;
}

/**
 * Locks `file` (exclusive unless `opts.shared`) without waiting. `purpose` says what the lock is for, as
 * in "cannot PURPOSE: ..." ("start r0/alpha", "create-md for r0/alpha"). Throws DiskLockError: `busy`
 * names the holder and how to stop it; nothing else has been done to the file then.
 */
export function lockDisk(file: string, purpose: string, opts: LockOptions = {}): DiskLock {
  const shared = !!opts.shared;
  let fd: number;
  try {
    fd = fs.openSync(file, opts.create ? fs.constants.O_RDONLY | fs.constants.O_CREAT : fs.constants.O_RDONLY, 0o666);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      const dir = path.dirname(path.resolve(file));
      const why = opts.create && !fs.existsSync(dir) ? `the directory ${dir} does not exist (create it first: mkdir -p ${dir})` : `${file} does not exist`;
      throw new DiskLockError(`cannot ${purpose}: ${why}`, 'missing');
    }
    throw new DiskLockError(`cannot ${purpose}: cannot open ${file} to lock it: ${(e as Error).message}`, 'error');
  }
  if (flock(fd, (shared ? LOCK_SH : LOCK_EX) | LOCK_NB) !== 0) {
    const err = errno();
    fs.closeSync(fd);
    if (err !== EWOULDBLOCK) throw new DiskLockError(`cannot ${purpose}: cannot lock ${file}: errno ${err}`, 'error');
    const holders = lockHolders(file);
    throw new DiskLockError(`cannot ${purpose}: ${file} is in use by ${describeHolders(holders)}`, 'busy', holders);
  }
  const st = fs.fstatSync(fd, { bigint: true });
  let released = false;
  return {
    path: file, purpose, shared,
    stillNames: () => {
      try {
        const now = fs.statSync(file, { bigint: true });
        return now.dev === st.dev && now.ino === st.ino;
      } catch {
        return false;
      }
    },
    release: () => {
      if (released) return;
      released = true;
      flock(fd, LOCK_UN);
      fs.closeSync(fd);
    },
  };
}

/**
 * The processes holding a flock on `file`, from /proc/locks (matched on device and inode; on the inode
 * alone when no entry matches the device, as with some stacked file systems). Empty when none is visible
 * (a holder in another pid namespace shows as pid 0 or not at all).
 */
export function lockHolders(file: string): LockHolder[] {
  let st: fs.BigIntStats;
  let table: string;
  try {
    st = fs.statSync(file, { bigint: true });
    table = fs.readFileSync('/proc/locks', 'utf8');
  } catch {
    return [];
  }
  // glibc's dev_t: major in bits 8..19 and 32..63, minor in bits 0..7 and 20..31.
  const major = ((st.dev >> 8n) & 0xfffn) | ((st.dev >> 32n) & ~0xfffn);
  const minor = (st.dev & 0xffn) | ((st.dev >> 12n) & ~0xffn);
  const exact: number[] = [];
  const byInode: number[] = [];
  for (const line of table.split('\n')) {
    // "1: FLOCK  ADVISORY  WRITE 1234 fd:01:1234567 0 EOF"; waiters read "1: -> FLOCK ...".
    const f = line.trim().split(/\s+/);
    if (f.length < 6 || f[1] !== 'FLOCK') continue;
    const pid = Number(f[4]);
    const id = /^([0-9a-f]+):([0-9a-f]+):([0-9]+)$/i.exec(f[5]!);
    if (!id || !Number.isInteger(pid) || pid <= 0 || BigInt(id[3]!) !== st.ino) continue;
    const list = BigInt('0x' + id[1]) === major && BigInt('0x' + id[2]) === minor ? exact : byInode;
    if (!list.includes(pid)) list.push(pid);
  }
  return (exact.length > 0 ? exact : byInode).map(holderInfo);
}

function holderInfo(pid: number): LockHolder {
  let argv: string[] | null = null;
  let cwd: string | null = null;
  try {
    const raw = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    argv = raw.split('\0');
    if (argv[argv.length - 1] === '') argv.pop();
  } catch { /* gone, or not ours to read */ }
  try {
    cwd = fs.readlinkSync(`/proc/${pid}/cwd`);
  } catch { /* idem */ }
  return { pid, argv, cwd };
}

function shellWord(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The twindisk arguments of a holder's command line (after `node .../twindisk.js` or `twindisk`), or null when it is not twindisk. */
function twindiskArgs(argv: string[]): string[] | null {
  // argv[0] is `twindisk` itself, or node followed by its own flags and then the script.
  const i = argv.findIndex((a, k) => /(^|\/)twindisk(\.js)?$/.test(a) && argv.slice(1, k).every((f) => f.startsWith('-')));
  return i < 0 ? null : argv.slice(i + 1);
}

function optionOf(args: string[], name: string): string | null {
  for (let k = 0; k < args.length; k++) {
    if (args[k] === name && k + 1 < args.length) return args[k + 1]!;
    if (args[k]!.startsWith(`${name}=`)) return args[k]!.slice(name.length + 1);
  }
  return null;
}

/** "twindisk up --config /a/r0.json --node alpha (pid 1234): stop that node first (twindisk down ...)". */
export function describeHolders(holders: LockHolder[]): string {
  if (holders.length === 0) return 'another process (its lock is not listed in /proc/locks: another pid namespace?)';
  const parts = holders.map((h) => {
    const td = h.argv ? twindiskArgs(h.argv) : null;
    const cmd = h.argv === null ? 'a process' : td !== null ? ['twindisk', ...td].map(shellWord).join(' ') : h.argv.map(shellWord).join(' ');
    return { h, td, text: `${cmd} (pid ${h.pid})` };
  });
  const first = parts[0]!;
  let advice = `stop ${holders.length > 1 ? 'them' : 'it'} first`;
  if (holders.length === 1 && first.td !== null) {
    const sub = first.td[0];
    const config = optionOf(first.td, '--config');
    const node = optionOf(first.td, '--node');
    if (sub === 'up' && config !== null && node !== null) {
      const abs = first.h.cwd !== null ? path.resolve(first.h.cwd, config) : config;
      advice = `stop that node first (twindisk down --config ${shellWord(abs)} --node ${shellWord(node)})`;
    } else if (sub === 'serve' || sub === 'demo') {
      advice = `stop it first (Ctrl-C in its terminal, or kill ${first.h.pid})`;
    } else if (sub === 'create-md') {
      advice = 'let it finish first';
    }
  }
  return `${parts.map((p) => p.text).join(', ')}: ${advice}`;
}
