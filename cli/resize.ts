// `twindisk resize`: grows a volume online, a standalone `serve` (--control) or a replicated resource (--config, --node).
import { Option, type Command } from 'commander';
import { controlCall } from '../daemon/control.js';
import { loadResource, nodeByName } from '../engine/replication/config.js';
import { sizeArg } from './args.js';
import { CommandError, UsageError } from './errors.js';

interface ResizeOptions { control?: string; config?: string; node?: string; size?: number; allowShrink?: boolean }

/** How long the CLI waits for a resize: growing metadata on every node writes and syncs their bitmaps. */
const RESIZE_TIMEOUT_MS = 120_000;

/** Declares `twindisk resize` on the program. */
export function addResizeCommand(program: Command): void {
  program.command('resize')
    .summary('grow a volume while it is served; the guest sees the new size without a reboot')
    .description('Grow a volume online to SIZE bytes (its usable size, as the guest sees it).\n'
      + 'A standalone image: `twindisk resize --control PATH --size SIZE`, PATH being `serve --control PATH`;\n'
      + 'the image file grows (sparse), QEMU is told (the guest\'s /sys/block/vdX/size changes) and iSCSI\n'
      + 'READ CAPACITY reports the new size. A replicated resource: `twindisk resize --config FILE --node NAME\n'
      + '--size SIZE` against a running node: every node grows its backing file and metadata, then the new size\n'
      + 'is agreed; it is refused, naming the node, unless every node is connected and every disk UpToDate.')
    .option('--control <path>', 'the control socket of a `twindisk serve --control PATH`')
    .option('--config <file>', 'the resource file (a replicated volume)')
    .option('--node <name>', 'a running node of the resource (with --config)')
    .addOption(new Option('--size <size>', 'the new usable size, e.g. 20G (required)').argParser(sizeArg))
    .option('--allow-shrink', 'serve only: allow a smaller size (only while no front-end is connected; the data past the end is lost)')
    .action((o: ResizeOptions, cmd: Command) => resize(o, cmd));
}

async function resize(o: ResizeOptions, cmd: Command): Promise<void> {
  if (o.size === undefined) throw new UsageError(`${cmd.name()} needs --size SIZE (the new usable size, e.g. 20G)`);
  if (!!o.control === !!o.config) throw new UsageError(`${cmd.name()} needs either --control PATH (a served image) or --config FILE --node NAME (a replicated resource)`);
  let socket: string;
  let who: string;
  if (o.control) {
    if (o.node) throw new UsageError('--node goes with --config, not --control');
    socket = o.control;
    who = o.control;
  } else {
    if (!o.node) throw new UsageError(`${cmd.name()} needs --node NAME with --config (a running node of the resource)`);
    if (o.allowShrink) throw new UsageError('--allow-shrink is for a served image: a replicated volume only grows');
    const cfg = loadResource(o.config!);
    const me = nodeByName(cfg, o.node);
    socket = me.control;
    who = me.name;
  }
  let r: { size?: number; oldSize?: number; changed?: boolean; guestNotified?: boolean; nodes?: string[] };
  try {
    r = (await controlCall(socket, { cmd: 'resize', size: o.size, ...(o.allowShrink ? { allowShrink: true } : {}) }, RESIZE_TIMEOUT_MS)) as typeof r;
  } catch (e) {
    throw new CommandError(`${who}: ${(e as Error).message}`);
  }
  if (!r.changed) process.stdout.write(`${who}: the volume already has ${r.size} bytes\n`);
  else process.stdout.write(`${who}: resized from ${r.oldSize} to ${r.size} bytes${r.nodes ? ` on ${r.nodes.join(', ')}` : ''}`
    + `${r.guestNotified === false ? ' (no guest was told: none is connected, or its front-end has no back-end channel)' : ''}\n`);
}
