#!/usr/bin/env node
// twindisk's command line: serve a disk to QEMU over vhost-user, run and manage replicated resources,
// run the demo and the benchmarks. The commands and their options are declared with commander, which
// parses and checks them and writes every --help from these declarations.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { IpxeTargetError, MAX_LUN, ipxeScript, parseIscsiTarget } from '../bootimg/ipxe.js';
import { DiskLockError, lockDisk, type DiskLock } from '../engine/disk-lock.js';
import { Logger } from '../engine/log.js';
import { MAX_QUEUES } from '../engine/replication/limits.js';
import { serialFor } from '../engine/serial.js';
import { DEFAULT_POLL_US, VhostUserServer } from '../qemu-plugin/vhost-user/server.js';
import { countArg, finishHelp, newProgram, secondsArg, sizeArg } from './args.js';
import { CommandError, EXIT_CODES_HELP, EXIT_OK, EXIT_USAGE, UsageError, exitCodeFor } from './errors.js';
import { addResourceCommands } from './resource-commands.js';
import { runDemo } from './demo.js';
import { qemuAttachArgs } from './qemu-args.js';

interface ServeArgs {
  image: string;
  socket: string;
  queues: number;
  readOnly: boolean;
  blockSize: 512 | 4096;
  size?: number;
  pollUs: number;
  aio: 'sync' | 'io_uring';
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
    backend: { kind: 'file', path: path.resolve(a.image), readOnly: a.readOnly, blockSize: a.blockSize, aio: a.aio },
    numQueues: a.queues,
    serial: serialFor({ image: a.image }),
    pollUs: a.pollUs,
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

/** The whole command line: every command, its options and its help. */
function buildProgram(): Command {
  const program = newProgram('twindisk')
    .description('Replicated block storage for virtual machines: disks served to QEMU over vhost-user, replicated DRBD-style.')
    .addHelpText('before', 'twindisk: replicated block storage for virtual machines\n')
    .addHelpText('after', `
Environment: TWINDISK_LOG_LEVEL=debug|info|warn|error, TWINDISK_LOG_FORMAT=json.
${EXIT_CODES_HELP}`);

  program.command('serve')
    .summary('serve an image as a virtio-blk disk over vhost-user')
    .description('Serve FILE as a virtio-blk disk over vhost-user on PATH and print the QEMU options that attach it.\n'
      + 'With --size, FILE is created (sparse) when it does not exist.')
    .option('--image <file>', 'the raw image to serve (required)')
    .option('--socket <path>', 'where QEMU connects: the vhost-user socket (required)')
    .addOption(new Option('--queues <n>', `virtqueues, one worker thread each (1..${MAX_QUEUES})`).argParser(countArg(1, MAX_QUEUES)).default(1))
    .option('--read-only', 'offer a read-only disk; writes fail with an I/O error')
    .addOption(new Option('--block-size <bytes>', 'logical block size the guest sees').choices(['512', '4096']).default('512'))
    .addOption(new Option('--size <size>', 'create FILE with this size when missing, e.g. 1G').argParser(sizeArg))
    .addOption(new Option('--poll-us <us>', 'how long a queue worker polls its ring after work before it sleeps, in µs (0: never polls)')
      .argParser(countArg(0, Number.MAX_SAFE_INTEGER, 'a whole number of microseconds, 0 or more')).default(DEFAULT_POLL_US))
    .addOption(new Option('--aio <mode>', 'io_uring keeps many requests per queue in flight (disks slower than the page cache); sync reads and writes in the queue\'s thread')
      .choices(['sync', 'io_uring']).default('sync'))
    .action(async (o: { image?: string; socket?: string; queues: number; readOnly?: boolean; blockSize: string; size?: number; pollUs: number; aio: 'sync' | 'io_uring' }) => {
      // Checked here, not declared mandatory: an unknown option is reported first (see resource-commands.ts target()).
      if (!o.image) throw new UsageError('serve needs --image FILE (the raw image to serve)');
      if (!o.socket) throw new UsageError('serve needs --socket PATH (where QEMU connects)');
      const socket = o.socket;
      await serve({
        image: o.image, socket: o.socket, queues: o.queues, readOnly: !!o.readOnly, blockSize: Number(o.blockSize) as 512 | 4096,
        pollUs: o.pollUs, aio: o.aio, ...(o.size !== undefined ? { size: o.size } : {}),
      }, () => {
        process.stdout.write(`twindisk: serving ${o.image} on ${socket}; attach it with:\n  ${qemuAttachArgs(socket, o.queues).join(' ')}\n`);
      });
    });

  program.command('demo')
    .summary('run a replicated volume of three nodes on loopback')
    .description('Run a replicated resource of three nodes on loopback (alpha and beta with 1 GiB disks, gamma diskless),\n'
      + 'wait until the replicas are in sync, and print the QEMU command line that boots a guest on alpha\'s\n'
      + 'vhost-user socket. Stop with Ctrl-C.')
    .option('--dir <dir>', 'where the resource file, disks and sockets are kept', 'demo')
    .action(async (o: { dir: string }) => {
      await runDemo(path.resolve(o.dir));
    });

  const bench = program.command('bench').summary('run a benchmark').description('Run a benchmark (results in bench/RESULTS.md).');
  const benchOptions = (c: Command): Command => c.option('--json', 'print the results as JSON').option('--quick', 'a short run');
  benchOptions(bench.command('replication'))
    .description('Replicated write IOPS and throughput (protocol C, 2 and 3 replicas) against the same volume unreplicated,\n'
      + 'and resync throughput after a full and a 1% divergence.')
    .action(async (o: { json?: boolean; quick?: boolean }) => {
      const { runReplicationBench } = await import('../bench/replication.js');
      await runReplicationBench({ json: !!o.json, quick: !!o.quick });
    });
  benchOptions(bench.command('vhost'))
    .description('Compare twindisk with qemu-storage-daemon (aio=io_uring) through the same vhost-user driver.')
    .addOption(new Option('--seconds <s>', 'seconds per workload').argParser(secondsArg))
    .action(async (o: { json?: boolean; quick?: boolean; seconds?: number }) => {
      const { runVhostBench } = await import('../bench/vhost.js');
      await runVhostBench({ json: !!o.json, quick: !!o.quick, seconds: o.seconds });
    });
  benchOptions(bench.command('kernels'))
    .description('Measure the WebAssembly kernels against their JS and native peers.')
    .action(async (o: { json?: boolean; quick?: boolean }) => {
      const mod = await import('../bench/kernels.js' as string).catch(() => null);
      if (!mod) throw new CommandError('the kernel benchmark is not built: run `npm run build` first');
      await mod.runKernelBench({ json: !!o.json, quick: !!o.quick });
    });

  addResourceCommands(program);

  program.command('gen-secret')
    .summary('print a new random secret for a resource file')
    .description('Print a new random secret for a resource file (32 random bytes, base64url: 256 bits).')
    .action(() => {
      process.stdout.write(randomBytes(32).toString('base64url') + '\n');
    });

  program.command('ipxe')
    .summary('print the iPXE script that boots a diskless client from an iSCSI volume')
    .description('Print an iPXE script that boots from the iSCSI target TARGET: dhcp, the initiator name, sanboot.\n'
      + 'TARGET is iscsi://HOST[:PORT]/IQN or RFC 4173\'s iscsi:HOST::[PORT]:[LUN]:IQN (an IPv6 HOST in brackets).')
    .option('--target <target>', 'the iSCSI target (required), e.g. iscsi://10.0.0.1/iqn.2026-12.com.example:vm1')
    .option('--initiator <iqn>', 'the initiator name (default: one per client, from its MAC address)')
    .addOption(new Option('--lun <n>', `the LUN to boot (0..${MAX_LUN}; default 0)`).argParser(countArg(0, MAX_LUN)))
    .action((o: { target?: string; initiator?: string; lun?: number }) => {
      if (!o.target) throw new UsageError('ipxe needs --target iscsi://HOST[:PORT]/IQN (the volume to boot)');
      try {
        const target = parseIscsiTarget(o.target);
        if (o.lun !== undefined) {
          if (target.lun !== 0 && target.lun !== o.lun) throw new UsageError(`--lun ${o.lun} contradicts LUN ${target.lun} in --target; give the LUN once`);
          target.lun = o.lun;
        }
        process.stdout.write(ipxeScript({ target, ...(o.initiator !== undefined ? { initiator: o.initiator } : {}) }));
      } catch (e) {
        if (e instanceof IpxeTargetError) throw new UsageError(`ipxe: ${e.message}`);
        throw e;
      }
    });

  program.command('schema')
    .summary('print the resource file\'s JSON Schema')
    .description('Print the JSON Schema of resource files (for editors: "$schema" or your editor\'s JSON schema setting).\n'
      + 'twindisk checks more than a schema can say: unique addresses and paths, the secret\'s strength, quorum against the nodes.')
    .action(async () => {
      const { resourceJsonSchema } = await import('../engine/replication/config.js');
      process.stdout.write(JSON.stringify(resourceJsonSchema(), null, 2) + '\n');
    });
  finishHelp(program);
  return program;
}

/** Runs the command line; resolves to the exit code (cli/errors.ts). */
async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  if (argv.length === 0) {
    program.outputHelp();
    return EXIT_USAGE;
  }
  await program.parseAsync(argv, { from: 'user' });
  return EXIT_OK;
}

// Exit codes (cli/errors.ts): 0 success, 1 a run-time failure, 2 a wrong command line or resource file.
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    const { code, plain } = exitCodeFor(e);
    // commander has printed its own errors (and --help) already.
    if (!(e instanceof CommanderError)) process.stderr.write(`twindisk: ${(e as Error).message ?? e}\n`);
    if (!plain && process.env.TWINDISK_LOG_LEVEL === 'debug') process.stderr.write(`${(e as Error).stack}\n`);
    process.exit(code);
  },
);
