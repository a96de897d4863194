#!/usr/bin/env node
// twindisk's command line: serve a disk to QEMU over vhost-user, run and manage replicated resources,
// run the demo and the benchmarks. The commands and their options are declared with commander, which
// parses and checks them and writes every --help from these declarations.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { IpxeTargetError, MAX_LUN, ipxeScript, parseIscsiTarget } from '../bootimg/ipxe.js';
import { Logger } from '../engine/log.js';
import { countArg, finishHelp, newProgram, secondsArg } from './args.js';
import { CommandError, EXIT_CODES_HELP, EXIT_OK, EXIT_USAGE, UsageError, exitCodeFor } from './errors.js';
import { addResourceCommands } from './resource-commands.js';
import { addResizeCommand } from './resize.js';
import { addQemuCommands } from './qemu-commands.js';
import { addBootimgCommands } from './bootimg.js';
import { addRaidCommands } from './raid.js';
import { runDemo } from './demo.js';
import { addServeCommand, parseChap } from './serve.js';

/** The whole command line: every command, its options and its help. */
function buildProgram(): Command {
  const program = newProgram('twindisk')
    .description('Replicated block storage for virtual machines: disks served to QEMU over vhost-user, replicated DRBD-style.')
    .addHelpText('before', 'twindisk: replicated block storage for virtual machines\n')
    .addHelpText('after', `
Environment: TWINDISK_LOG_LEVEL=debug|info|warn|error, TWINDISK_LOG_FORMAT=json.
${EXIT_CODES_HELP}`);

  addServeCommand(program);

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
  /** `--targets LIST`: comma-separated names from `known`, each checked, none twice. */
  const targetsOption = (command: string, known: string[], help: string): Option =>
    new Option('--targets <list>', `comma-separated, from ${known.join(', ')}${help}`).argParser((v: string) => {
      const list = v.split(',');
      const bad = list.find((t) => !known.includes(t));
      if (bad !== undefined) throw new UsageError(`bench ${command}: unknown target '${bad}' in --targets (known: ${known.join(', ')})`);
      const twice = list.find((t, i) => list.indexOf(t) !== i);
      if (twice !== undefined) throw new UsageError(`bench ${command}: target '${twice}' is named twice in --targets`);
      return list;
    });
  const runsOption = (command: string, help: string): Option =>
    new Option('--runs <n>', help).argParser((v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new UsageError(`bench ${command}: --runs ${v}: give a whole number of at least 1`);
      return n;
    });
  benchOptions(bench.command('replication'))
    .description('Replicated write IOPS and throughput (protocol C, 2 and 3 replicas) against the same volume unreplicated,\n'
      + 'and resync throughput after a full and a 1% divergence.')
    .addOption(new Option('--only <part>', 'run one part: alone (serve against a resource node with no peer), writes (every write row), resync,\n'
      + 'metrics (2 replicas with Prometheus metrics off and on, alternating)')
      .choices(['alone', 'writes', 'resync', 'metrics']))
    .addOption(runsOption('replication', 'alternating runs of serve and the resource alone, median reported (default 3, 1 with --quick)'))
    .action(async (o: { json?: boolean; quick?: boolean; only?: 'alone' | 'writes' | 'resync' | 'metrics'; runs?: number }) => {
      const { runReplicationBench } = await import('../bench/replication.js');
      await runReplicationBench({ json: !!o.json, quick: !!o.quick, ...(o.only ? { only: o.only } : {}), ...(o.runs ? { runs: o.runs } : {}) });
    });
  const vhostBenchTargets = ['twindisk', 'twindisk-io_uring', 'twindisk-fixed-poll', 'twindisk-metrics', 'qemu-storage-daemon'];
  benchOptions(bench.command('vhost'))
    .description('Compare twindisk with qemu-storage-daemon (aio=io_uring) through the same vhost-user driver.\n'
      + 'twindisk-fixed-poll is twindisk with --poll-mode fixed, twindisk-metrics with --metrics (counters and latency histograms on);\n'
      + 'only twindisk and twindisk-io_uring also run in an 8 GiB layout.')
    .addOption(new Option('--seconds <s>', 'seconds per workload').argParser(secondsArg))
    .addOption(targetsOption('vhost', vhostBenchTargets, ' (default: twindisk,twindisk-io_uring,qemu-storage-daemon)'))
    .action(async (o: { json?: boolean; quick?: boolean; seconds?: number; targets?: string[] }) => {
      const { runVhostBench } = await import('../bench/vhost.js');
      await runVhostBench({ json: !!o.json, quick: !!o.quick, seconds: o.seconds, ...(o.targets ? { targets: o.targets } : {}) });
    });
  benchOptions(bench.command('migrate'))
    .summary('live-migration downtime of a writing guest: twindisk against qemu-storage-daemon')
    .description('Live-migrate a QEMU guest (1 GiB, TCG) that writes to its vhost-user-blk disk without pause, from one QEMU to\n'
      + 'another on the same host, served by twindisk and by qemu-storage-daemon in turn, with the same migration\n'
      + 'parameters; prints QEMU\'s downtime and total time per migration, the medians and their ratio.')
    .addOption(new Option('--runs <n>', 'migrations per target').argParser((v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new UsageError(`bench migrate: --runs ${v}: give a whole number of at least 1`);
      return n;
    }))
    .action(async (o: { json?: boolean; quick?: boolean; runs?: number }) => {
      const { runMigrateBench } = await import('../bench/migrate.js');
      await runMigrateBench({ json: !!o.json, quick: !!o.quick, ...(o.runs ? { runs: o.runs } : {}) });
    });
  const guestBenchTargets = ['twindisk', 'twindisk-fixed-poll', 'twindisk-no-poll', 'qemu-storage-daemon'];
  benchOptions(bench.command('guest'))
    .summary('throughput a QEMU guest sees on its vhost-user-blk disk: twindisk\'s polling modes against qemu-storage-daemon')
    .description('Boot a QEMU guest (TCG, 1 vCPU) on a vhost-user-blk disk served by each target in turn and time, inside the guest,\n'
      + 'dd with O_DIRECT: 1 MiB sequential reads, then 1 MiB sequential writes (--mib each, in passes over a 512 MiB disk).\n'
      + 'Targets: twindisk (adaptive polling, the default), twindisk-fixed-poll (--poll-mode fixed), twindisk-no-poll\n'
      + '(--poll-us 0) and qemu-storage-daemon (aio=io_uring). Prints MB/s and the back-end\'s CPU time per workload and run,\n'
      + 'the medians and each twindisk target\'s ratio to qemu-storage-daemon.')
    .addOption(runsOption('guest', 'guest boots per target, alternating between targets (default 5; 1 with --quick)'))
    .addOption(targetsOption('guest', guestBenchTargets, ' (default: all)'))
    .addOption(new Option('--mib <n>', 'MiB each workload moves (default 2048; 256 with --quick)')
      .argParser(countArg(1, 1 << 20, 'a whole number of MiB, 1 or more')))
    .action(async (o: { json?: boolean; quick?: boolean; runs?: number; targets?: string[]; mib?: number }) => {
      const { runGuestBench } = await import('../bench/guest.js');
      await runGuestBench({
        json: !!o.json, quick: !!o.quick, ...(o.runs ? { runs: o.runs } : {}), ...(o.targets ? { targets: o.targets } : {}), ...(o.mib ? { mib: o.mib } : {}),
      });
    });
  benchOptions(bench.command('kernels'))
    .description('Measure the WebAssembly kernels against their JS and native peers.')
    .action(async (o: { json?: boolean; quick?: boolean }) => {
      const mod = await import('../bench/kernels.js' as string).catch(() => null);
      if (!mod) throw new CommandError('the kernel benchmark is not built: run `npm run build` first');
      await mod.runKernelBench({ json: !!o.json, quick: !!o.quick });
    });
  benchOptions(bench.command('raid'))
    .summary('md-compatible arrays over member files against one file and the members\' aggregate')
    .description('raid1 (2), raid5 (4+1), raid6 (4+2) and raid10 (4) over member files through the engine\'s RAID layer with its\n'
      + 'write-intent bitmap: 1 MiB sequential and 4 KiB random writes and reads, against one plain file and the members\'\n'
      + 'aggregate raw write rate measured in the same run; a degraded raid5 read and a rebuild. Rows {level, workload, mbps, iops}.\n'
      + 'With --served: one raid5 (4+1) served by serve --raid, by a one-node resource whose disk is the array, and a plain file\n'
      + 'by serve --image, through the C vhost-user client, alternating (rows {target, workload, iops, mbps, p99Us, runs}).')
    .option('--served', 'measure the array served over vhost-user (serve --raid, a node on the array, serve --image) instead')
    .addOption(runsOption('served', 'alternating runs of the three targets with --served (default 3; 1 with --quick)'))
    .action(async (o: { json?: boolean; quick?: boolean; served?: boolean; runs?: number }) => {
      if (o.served) {
        const { runRaidServedBench } = await import('../bench/raid-served.js');
        await runRaidServedBench({ json: !!o.json, quick: !!o.quick, ...(o.runs ? { runs: o.runs } : {}) });
        return;
      }
      const { runRaidBench } = await import('../bench/raid.js');
      await runRaidBench({ json: !!o.json, quick: !!o.quick });
    });
  const iscsiBenchTargets = ['twindisk', 'tgt', 'tgt-rdwr', 'tgt-aio'];
  benchOptions(bench.command('iscsi'))
    .summary('compare twindisk\'s iSCSI target with tgt through the same libiscsi client')
    .description('Compare twindisk\'s iSCSI target with tgt (Linux SCSI target, user space) through the same libiscsi client:\n'
      + '4 KiB random reads and writes at queue depth 1 and 32, 1 MiB sequential reads and writes at depth 4.\n'
      + 'Without an iSCSI-capable `twindisk serve` only tgt is measured, and the output says so.')
    .addOption(new Option('--seconds <s>', 'seconds per workload').argParser(secondsArg))
    .addOption(new Option('--targets <list>', `comma-separated, from ${iscsiBenchTargets.join(', ')} (tgt is tgt-rdwr)`).argParser((v: string) => {
      const list = v.split(',');
      const bad = list.find((t) => !iscsiBenchTargets.includes(t));
      if (bad !== undefined) throw new UsageError(`bench iscsi: unknown target '${bad}' in --targets (known: ${iscsiBenchTargets.join(', ')})`);
      return list;
    }))
    .action(async (o: { json?: boolean; quick?: boolean; seconds?: number; targets?: string[] }) => {
      const { runIscsiBench } = await import('../bench/iscsi.js');
      await runIscsiBench({ json: !!o.json, quick: !!o.quick, seconds: o.seconds, targets: o.targets as never });
    });
  benchOptions(bench.command('iscsi-conformance'))
    .summary('run libiscsi\'s iscsi-test-cu against twindisk\'s iSCSI target and tgt')
    .description('Run libiscsi\'s conformance suite (iscsi-test-cu) against twindisk\'s iSCSI target and tgt, each on a scratch\n'
      + 'LUN, and report passed, failed and skipped tests per target with the failed tests\' names. --quick runs the CI subset.')
    .addOption(new Option('--target <target>', 'which target to test').choices(['twindisk', 'tgt', 'both']).default('both'))
    .option('--test <pattern>', 'iscsi-test-cu tests: FAMILY[.SUITE[.TEST]] globs, comma-separated, or `ci` for the CI subset', 'ALL')
    .action(async (o: { json?: boolean; quick?: boolean; target: 'twindisk' | 'tgt' | 'both'; test: string }) => {
      const { runConformance } = await import('../bench/iscsi-conformance.js');
      await runConformance({ json: !!o.json, targets: o.target === 'both' ? undefined : [o.target], test: o.quick && o.test === 'ALL' ? 'ci' : o.test });
    });

  addResourceCommands(program);
  addResizeCommand(program);
  addRaidCommands(program);
  addQemuCommands(program);
  addBootimgCommands(program);

  program.command('gen-secret')
    .summary('print a new random secret for a resource file')
    .description('Print a new random secret for a resource file (32 random bytes, base64url: 256 bits).')
    .action(() => {
      process.stdout.write(randomBytes(32).toString('base64url') + '\n');
    });

  program.command('ipxe')
    .summary('print (or serve over HTTP) the iPXE script that boots a diskless client from an iSCSI volume')
    .description('Print an iPXE script that boots from the iSCSI target TARGET: dhcp, the initiator name, sanboot.\n'
      + 'TARGET is iscsi://HOST[:PORT]/IQN or RFC 4173\'s iscsi:HOST::[PORT]:[LUN]:IQN (an IPv6 HOST in brackets).\n'
      + 'With --listen, serve it over HTTP instead for DHCP chain-loading: give iPXE clients http://HOST:PORT/ as\n'
      + 'their boot file; a client gets DIR/MAC.ipxe (e.g. 52-54-00-12-34-56.ipxe) from --scripts when it exists.')
    .option('--target <target>', 'the iSCSI target (required), e.g. iscsi://10.0.0.1/iqn.2026-12.com.example:vm1')
    .option('--initiator <iqn>', 'the initiator name (default: one per client, from its MAC address)')
    .addOption(new Option('--lun <n>', `the LUN to boot (0..${MAX_LUN}; default 0)`).argParser(countArg(0, MAX_LUN)))
    .option('--chap <user:secret>', 'CHAP credentials for the target (or @FILE holding user:secret)')
    .option('--mutual-chap <user:secret>', 'with --chap: what the target must prove itself with')
    .option('--listen <host:port>', 'serve the script over HTTP here instead of printing it')
    .option('--scripts <dir>', 'with --listen: per-machine scripts named by MAC (52-54-00-12-34-56.ipxe)')
    .action(async (o: { target?: string; initiator?: string; lun?: number; chap?: string; mutualChap?: string; listen?: string; scripts?: string }) => {
      if (!o.target) throw new UsageError('ipxe needs --target iscsi://HOST[:PORT]/IQN (the volume to boot)');
      if (o.mutualChap && !o.chap) throw new UsageError('--mutual-chap needs --chap too');
      if (o.scripts && !o.listen) throw new UsageError('--scripts goes with --listen HOST:PORT');
      let script: (dhcp: boolean) => string;
      try {
        const target = parseIscsiTarget(o.target);
        if (o.lun !== undefined) {
          if (target.lun !== 0 && target.lun !== o.lun) throw new UsageError(`--lun ${o.lun} contradicts LUN ${target.lun} in --target; give the LUN once`);
          target.lun = o.lun;
        }
        const chap = o.chap ? parseChap(o.chap, '--chap') : undefined;
        const mutualChap = o.mutualChap ? parseChap(o.mutualChap, '--mutual-chap') : undefined;
        script = (dhcp) => ipxeScript({
          target, dhcp, ...(o.initiator !== undefined ? { initiator: o.initiator } : {}),
          ...(chap ? { chap } : {}), ...(mutualChap ? { mutualChap } : {}),
        });
        script(true); // checks every value now, before anything is served
      } catch (e) {
        if (e instanceof IpxeTargetError) throw new UsageError(`ipxe: ${e.message}`);
        throw e;
      }
      if (!o.listen) {
        process.stdout.write(script(true));
        return;
      }
      const at = o.listen.match(/^(.*):([0-9]{1,5})$/);
      if (!at || Number(at[2]) < 1 || Number(at[2]) > 65535) throw new UsageError(`--listen ${o.listen}: write it as HOST:PORT, e.g. 0.0.0.0:8080`);
      if (o.scripts && !fs.statSync(o.scripts, { throwIfNoEntry: false })?.isDirectory()) throw new UsageError(`--scripts ${o.scripts} is not a directory`);
      const { BootScriptServer } = await import('../bootimg/http-boot.js');
      const server = new BootScriptServer({
        host: at[1]!.replace(/^\[|\]$/g, ''), port: Number(at[2]), script: () => script(false), log: new Logger('twindisk/boot-http'),
        ...(o.scripts ? { dir: o.scripts } : {}),
      });
      try {
        await server.start();
      } catch (e) {
        throw new CommandError((e as Error).message);
      }
      await new Promise<void>((resolve) => {
        const stop = () => void server.close().then(resolve);
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
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
