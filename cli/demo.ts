// `twindisk demo`: a three-node replicated resource on loopback (two disks, one diskless), ready for a QEMU guest.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { buildGuestImage } from '../bootimg/guest.js';
import { Node, lockNodeDisks } from '../daemon/node.js';
import { metadataSize, Metadata } from '../engine/replication/metadata.js';
import { loadResource } from '../engine/replication/config.js';
import { ProgressBars } from './progress.js';
import { formatStatus, humanBytes } from './resource-commands.js';
import { qemuAttachArgs } from './qemu-args.js';
import { DemoOutput } from './demo-output.js';
import { setSink } from '../engine/log.js';
import type { Resource } from '../engine/replication/resource.js';

const DEMO_SIZE = 2 ** 30;
const NODES = ['alpha', 'beta', 'gamma'];

/** The secret of demo directories made before secrets had to be strong; replaced by a random one when found. */
const OLD_DEMO_SECRET = 'twindisk-demo-secret';

/** The demo's resource file: alpha and beta hold the data, gamma is a diskless tie-breaker. */
function demoResource(): object {
  return {
    // A fresh random secret, as `twindisk gen-secret` prints.
    resource: 'r0', protocol: 'C', secret: randomBytes(32).toString('base64url'), quorum: 'majority',
    nodes: {
      alpha: { address: '127.0.0.1:7789', disk: 'alpha.img', socket: 'alpha.sock', queues: 2 },
      beta: { address: '127.0.0.1:7790', disk: 'beta.img', socket: 'beta.sock', queues: 2 },
      gamma: { address: '127.0.0.1:7791', disk: null, socket: 'gamma.sock' },
    },
  };
}

/** Creates the resource file, backing files and metadata under `dir` (kept across runs). */
function prepare(dir: string, out: DemoOutput): string {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'r0.json');
  if (!fs.existsSync(file)) {
    fs.writeFileSync(file, JSON.stringify(demoResource(), null, 2) + '\n');
    out.note(`wrote ${file} with a random secret`);
  }
  const text = fs.readFileSync(file, 'utf8');
  if (text.includes(`"${OLD_DEMO_SECRET}"`)) {
    fs.writeFileSync(file, text.replace(`"${OLD_DEMO_SECRET}"`, `"${randomBytes(32).toString('base64url')}"`));
    out.note(`${file} had a weak secret; it now has a random one`);
  }
  const cfg = loadResource(file);
  for (const n of cfg.nodes) {
    if (!n.disk || fs.existsSync(n.disk)) continue;
    const peers = cfg.nodes.filter((x) => x.id !== n.id).map((x) => x.id);
    const locks = lockNodeDisks(cfg, n, `create the demo's disk for ${n.name}`, { disk: true });
    try {
      fs.truncateSync(n.disk, DEMO_SIZE + metadataSize(DEMO_SIZE, peers.length, cfg.bitmapGranularity));
      const md = Metadata.create({ backingFile: n.disk, metaFile: null, nodeId: n.id, peerIds: peers, granularity: cfg.bitmapGranularity });
      md.close();
    } finally {
      for (const l of locks) l.release();
    }
    out.note(`created ${n.name}'s 1 GiB disk with its metadata: ${n.disk}`);
  }
  return file;
}

/**
 * Runs the demo until Ctrl-C. Its steps go to stderr (`==> ...`), with the nodes' state changes, warnings
 * and errors under them; the nodes' full log goes to DIR/nodes.log; stdout gets the status and QEMU line.
 */
export async function runDemo(dir: string): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const logFile = path.join(dir, 'nodes.log');
  const out = new DemoOutput({ stream: process.stderr, nodes: NODES, logFile });
  const oldSink = setSink(out.sink);
  try {
    await run(dir, out, logFile);
  } finally {
    setSink(oldSink);
    out.close();
  }
}

async function run(dir: string, out: DemoOutput, logFile: string): Promise<void> {
  out.step(`resource r0 in ${dir}: alpha and beta hold a replicated 1 GiB volume, gamma is diskless`);
  const file = prepare(dir, out);
  out.step('the guest for the QEMU line (the host\'s kernel and a small initramfs)');
  const guest = await buildGuestImage({ log: (l) => out.note(l) }).catch((e: Error) => {
    out.note(`cannot build the demo guest (${e.message}); printing the attach options only`);
    return null;
  });
  out.step(`starting ${NODES.join(', ')} in this process; their full log: ${logFile}`);
  const nodes = NODES.map((name) => new Node({ config: file, node: name }));
  const started: Node[] = [];
  try {
    for (const n of nodes) {
      started.push(n);
      await n.start();
    }
    const alpha = nodes[0]!;
    const res = alpha.resource;
    await waitFor(() => res.peers.every((p) => p.link !== null && p.replication !== 'Handshake'), 15000);
    // First run: nobody holds data yet; alpha's (empty) disk is declared authoritative and beta syncs from it.
    if (res.diskState !== 'UpToDate' && !res.peers.some((p) => p.upToDate)) {
      out.step('new resource: alpha\'s data is declared authoritative (primary --force, then back to Secondary); beta syncs from it');
      res.promote(true);
      res.demote();
    }
    await waitForSync(res, out);
    const qemu = [
      'qemu-system-x86_64', '-accel', 'tcg', '-smp', '2', '-nographic',
      ...qemuAttachArgs(alpha.me.socket!, 2),
      ...(guest ? ['-kernel', guest.kernel, '-initrd', guest.initrd, '-append', '"console=ttyS0 quiet twindisk.disks=1"'] : []),
    ];
    out.step('ready');
    process.stdout.write([
      '',
      `twindisk demo: resource r0 (${file}) runs three nodes on loopback: alpha and beta replicate a 1 GiB`,
      'volume with protocol C, gamma is diskless (a quorum tie-breaker that can also serve the volume).',
      '',
      formatStatus(res.status()).trimEnd(),
      '',
      'Boot a guest on alpha in another terminal (QEMU connecting makes alpha Primary; every write the',
      'guest makes reaches beta\'s disk before it completes; the disk is /dev/vda; leave with `poweroff -f`):',
      '',
      `  ${qemu.join(' ')}`,
      '',
      `Watch the replicas: node dist/cli/twindisk.js status --config ${file} --node alpha`,
      '(or --node beta, --node gamma; `verify --wait` compares them block by block).',
      `This terminal shows the nodes' role changes, connections, resyncs, warnings and errors as they happen;`,
      `their full log is ${logFile} (tail -f it).`,
      'Press Ctrl-C to stop the three nodes.',
      '',
    ].join('\n'));
    await new Promise<void>((resolve) => {
      const stop = () => resolve();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
    out.step('stopping the three nodes (their goodbyes to each other are in the log)');
    out.stopAll();
  } finally {
    await Promise.all(started.map((n) => n.stop()));
  }
  out.step(`stopped; the nodes' full log is ${logFile}`);
}

/** Waits until beta is UpToDate and in sync with alpha, drawing the resync's progress (stderr: stdout is the QEMU line). */
async function waitForSync(res: Resource, out: DemoOutput): Promise<void> {
  const done = (): boolean => {
    const s = res.status();
    const beta = s.peers.beta!;
    return beta.replication === 'Established' && beta.disk === 'UpToDate' && s.disk === 'UpToDate';
  };
  if (done()) return;
  out.step('waiting for beta to be in sync with alpha');
  // A bar on a terminal, lines in a log; the nodes' lines wait until it is gone (it is redrawn in place).
  const bars = new ProgressBars({ stream: process.stderr });
  out.hold();
  try {
    await waitFor(() => {
      const beta = res.status().peers.beta!;
      if (beta.resync) {
        bars.update([{ name: 'initial sync of beta', percent: beta.resync.percent, detail: `${humanBytes(beta.resync.rateBytesPerSec)}/s` }]);
      }
      return done();
    }, 600000);
  } finally {
    bars.stop();
    out.release();
  }
}

async function waitFor(cond: () => boolean, ms: number): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`the demo's nodes did not get ready within ${ms / 1000} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
