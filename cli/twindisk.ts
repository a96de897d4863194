#!/usr/bin/env node
// twindisk's command line: serve a disk to QEMU over vhost-user, run the demo, run the benchmarks.
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DiskLockError, lockDisk, type DiskLock } from '../engine/disk-lock.js';
import { Logger } from '../engine/log.js';
import { DEFAULT_POLL_US, VhostUserServer } from '../qemu-plugin/vhost-user/server.js';
import { CommandError, EXIT_CODES_HELP, EXIT_USAGE, UsageError, exitCodeFor } from './errors.js';
import { RESOURCE_USAGE, runResourceCommand } from './resource-commands.js';
import { runDemo } from './demo.js';
import { qemuAttachArgs } from './qemu-args.js';

const USAGE = `twindisk: replicated block storage for virtual machines

Usage:
  twindisk serve --image FILE --socket PATH [--queues N] [--read-only] [--block-size 512|4096] [--size SIZE] [--poll-us US] [--aio sync|io_uring]
      Serve FILE as a virtio-blk disk over vhost-user on PATH. With --size, FILE is created (sparse)
      when it does not exist. --poll-us: how long a queue worker polls its ring after work before it
      sleeps (default 50; 0 never polls). --aio io_uring keeps many requests per queue in flight
      (for disks slower than the page cache); sync (default) reads and writes in the queue's thread.
      Prints the QEMU options that attach the disk.
  twindisk demo [--dir DIR]
      Run a replicated resource of three nodes on loopback (alpha and beta with 1 GiB disks, gamma
      diskless; data under DIR, default ./demo), wait until the replicas are in sync, and print the
      QEMU command line that boots a guest on alpha's vhost-user socket. Stop with Ctrl-C.
  twindisk bench replication [--json] [--quick]
      Replicated write IOPS and throughput (protocol C, 2 and 3 replicas) against the same volume
      unreplicated, and resync throughput after a full and a 1% divergence.
  twindisk bench vhost [--json] [--quick] [--seconds S]
      Compare twindisk with qemu-storage-daemon (aio=io_uring) through the same vhost-user driver.
  twindisk bench kernels [--json] [--quick]
      Measure the WebAssembly kernels against their JS and native peers.

${RESOURCE_USAGE.trimStart()}
  twindisk gen-secret
      Print a new random secret for a resource file (32 random bytes, base64url).

Environment: TWINDISK_LOG_LEVEL=debug|info|warn|error, TWINDISK_LOG_FORMAT=json.
${EXIT_CODES_HELP}
`;

/** Parses sizes like 4096, 512K, 64M, 1G, 2T (binary units). */
export function parseSize(s: string): number {
  const m = /^(\d+)([KMGT]?)(i?B)?$/i.exec(s.trim());
  if (!m) throw new UsageError(`cannot read size "${s}": write it like 1G, 512M or 4096`);
  const mult = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'];
  return Number(m[1]) * mult;
}

/** The disk's serial number: stable for an image path, at most 20 bytes. */
function serialFor(image: string): string {
  return 'twindisk-' + createHash('sha1').update(path.resolve(image)).digest('hex').slice(0, 11);
}

interface ServeArgs {
  image: string;
  socket: string;
  queues: number;
  readOnly: boolean;
  blockSize: number;
  size?: number;
  pollUs?: number;
  aio?: 'sync' | 'io_uring';
}

function parseAio(v: string | undefined): 'sync' | 'io_uring' {
  if (v === undefined || v === 'sync' || v === 'io_uring') return v ?? 'sync';
  throw new UsageError(`--aio ${v}: choose sync or io_uring`);
}

async function serve(a: ServeArgs, banner: (server: VhostUserServer) => void): Promise<void> {
  const log = new Logger('twindisk');
  const create = a.size !== undefined && !fs.existsSync(a.image);
  if (create) {
    if (a.size! % a.blockSize !== 0) throw new UsageError(`--size ${a.size} is not a multiple of the ${a.blockSize}-byte block size`);
    fs.mkdirSync(path.dirname(path.resolve(a.image)), { recursive: true });
  }
  // The image has one owner: refused (before it is opened) while a node or another serve holds it.
  // --read-only shares the image with other read-only serves.
  let lock: DiskLock;
  try {
    lock = lockDisk(path.resolve(a.image), `serve ${a.image}`, { shared: a.readOnly, create });
  } catch (e) {
    if (e instanceof DiskLockError && e.code === 'missing' && !create) {
      throw new CommandError(`${e.message} (create it first, e.g. \`truncate -s 1G ${a.image}\`, or pass --size)`);
    }
    throw e;
  }
  try {
    if (create && fs.statSync(a.image).size === 0) {
      fs.truncateSync(a.image, a.size!);
      log.info('created image', { image: a.image, size: a.size });
    }
    await serveLocked(a, log, banner);
  } finally {
    lock.release();
  }
}

async function serveLocked(a: ServeArgs, log: Logger, banner: (server: VhostUserServer) => void): Promise<void> {
  const server = new VhostUserServer({
    socketPath: a.socket,
    backend: { kind: 'file', path: path.resolve(a.image), readOnly: a.readOnly, blockSize: a.blockSize, aio: a.aio ?? 'sync' },
    numQueues: a.queues,
    serial: serialFor(a.image),
    pollUs: a.pollUs ?? DEFAULT_POLL_US,
  });
  await server.start();
  banner(server);
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info(`${sig} received: shutting down`);
      server.close().then(resolve, (e) => {
        log.error(`shutdown failed: ${e}`);
        resolve();
      });
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
}

function num(v: string | undefined, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`${name} ${v}: expected a positive whole number`);
  return n;
}

async function main(argv: string[]): Promise<number> {
  const cmd = argv[0];
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(USAGE);
    return cmd ? 0 : EXIT_USAGE;
  }
  if (cmd === 'gen-secret') {
    parseArgs({ args: argv.slice(1), strict: true, options: {} });
    process.stdout.write(randomBytes(32).toString('base64url') + '\n');
    return 0;
  }
  if (cmd === 'serve') {
    const { values } = parseArgs({
      args: argv.slice(1), strict: true,
      options: {
        image: { type: 'string' }, socket: { type: 'string' }, queues: { type: 'string' },
        'read-only': { type: 'boolean' }, 'block-size': { type: 'string' }, size: { type: 'string' },
        'poll-us': { type: 'string' }, aio: { type: 'string' },
      },
    });
    if (!values.image) throw new UsageError('serve needs --image FILE (the raw image to serve)');
    if (!values.socket) throw new UsageError('serve needs --socket PATH (where QEMU connects)');
    const blockSize = num(values['block-size'], '--block-size', 512);
    if (blockSize !== 512 && blockSize !== 4096) throw new UsageError(`--block-size ${blockSize}: use 512 or 4096`);
    const queues = num(values.queues, '--queues', 1);
    if (queues > 64) throw new UsageError(`--queues ${queues}: choose 1 to 64 queues`);
    const pollUs = values['poll-us'] === undefined ? DEFAULT_POLL_US : Number(values['poll-us']);
    if (!Number.isInteger(pollUs) || pollUs < 0) throw new UsageError(`--poll-us ${values['poll-us']}: expected a whole number of microseconds, 0 or more`);
    await serve({
      image: values.image, socket: values.socket, queues, readOnly: !!values['read-only'], blockSize,
      pollUs,
      aio: parseAio(values.aio),
      ...(values.size ? { size: parseSize(values.size) } : {}),
    }, () => {
      process.stdout.write(`twindisk: serving ${values.image} on ${values.socket}; attach it with:\n  ${qemuAttachArgs(values.socket!, queues).join(' ')}\n`);
    });
    return 0;
  }
  if (cmd === 'demo') {
    const { values } = parseArgs({ args: argv.slice(1), strict: true, options: { dir: { type: 'string' } } });
    await runDemo(path.resolve(values.dir ?? 'demo'));
    return 0;
  }
  if (cmd === 'bench') {
    const what = argv[1];
    const { values } = parseArgs({
      args: argv.slice(2), strict: true,
      options: { json: { type: 'boolean' }, quick: { type: 'boolean' }, seconds: { type: 'string' } },
    });
    if (what === 'vhost') {
      const { runVhostBench } = await import('../bench/vhost.js');
      await runVhostBench({ json: !!values.json, quick: !!values.quick, seconds: values.seconds ? Number(values.seconds) : undefined });
      return 0;
    }
    if (what === 'kernels') {
      const mod = await import('../bench/kernels.js' as string).catch(() => null);
      if (!mod) throw new CommandError('the kernel benchmark is not built: run `npm run build` first');
      await mod.runKernelBench({ json: !!values.json, quick: !!values.quick });
      return 0;
    }
    if (what === 'replication') {
      const { runReplicationBench } = await import('../bench/replication.js');
      await runReplicationBench({ json: !!values.json, quick: !!values.quick });
      return 0;
    }
    throw new UsageError(`unknown benchmark "${what ?? ''}": choose vhost, kernels or replication`);
  }
  const code = await runResourceCommand(cmd, argv.slice(1));
  if (code !== null) return code;
  throw new UsageError(`unknown command "${cmd}"; run \`twindisk help\``);
}

// Exit codes (cli/errors.ts): 0 success, 1 a run-time failure, 2 a wrong command line or resource file.
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    const { code, plain } = exitCodeFor(e);
    process.stderr.write(`twindisk: ${(e as Error).message ?? e}\n`);
    if (!plain && process.env.TWINDISK_LOG_LEVEL === 'debug') process.stderr.write(`${(e as Error).stack}\n`);
    process.exit(code);
  },
);
