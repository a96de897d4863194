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

const DEMO_SIZE = 2 ** 30;

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
function prepare(dir: string): string {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'r0.json');
  if (!fs.existsSync(file)) fs.writeFileSync(file, JSON.stringify(demoResource(), null, 2) + '\n');
  const text = fs.readFileSync(file, 'utf8');
  if (text.includes(`"${OLD_DEMO_SECRET}"`)) {
    fs.writeFileSync(file, text.replace(`"${OLD_DEMO_SECRET}"`, `"${randomBytes(32).toString('base64url')}"`));
    process.stderr.write(`demo: ${file} had a weak secret; it now has a random one\n`);
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
  }
  return file;
}

/** Runs the demo until Ctrl-C. */
export async function runDemo(dir: string): Promise<void> {
  const file = prepare(dir);
  const guest = await buildGuestImage({ log: (l) => process.stderr.write(`demo: ${l}\n`) }).catch((e: Error) => {
    process.stderr.write(`demo: cannot build the demo guest (${e.message}); printing the attach options only\n`);
    return null;
  });
  const nodes = ['alpha', 'beta', 'gamma'].map((name) => new Node({ config: file, node: name }));
  const stopAll = () => Promise.all(nodes.map((n) => n.stop()));
  try {
    for (const n of nodes) await n.start();
  } catch (e) {
    await stopAll();
    throw e;
  }
  const alpha = nodes[0]!;
  const res = alpha.resource;
  // First run: nobody holds data yet; alpha's (empty) disk is declared authoritative and beta syncs from it.
  await waitFor(() => res.peers.every((p) => p.link !== null && p.replication !== 'Handshake'), 15000);
  if (res.diskState !== 'UpToDate' && !res.peers.some((p) => p.upToDate)) {
    process.stderr.write('demo: new resource: declaring alpha\'s data authoritative (primary --force), beta syncs from it\n');
    res.promote(true);
    res.demote();
  }
  // The initial sync's progress on stderr (stdout is the QEMU line): a bar on a terminal, lines in a log.
  const bars = new ProgressBars({ stream: process.stderr });
  try {
    await waitFor(() => {
      const s = res.status();
      const beta = s.peers.beta!;
      if (beta.resync) {
        bars.update([{ name: 'demo: initial sync of beta', percent: beta.resync.percent, detail: `${humanBytes(beta.resync.rateBytesPerSec)}/s` }]);
      }
      return beta.replication === 'Established' && beta.disk === 'UpToDate' && s.disk === 'UpToDate';
    }, 600000);
  } finally {
    bars.stop();
  }
  const qemu = [
    'qemu-system-x86_64', '-accel', 'tcg', '-m', '1G', '-smp', '2', '-nographic',
    ...qemuAttachArgs(alpha.me.socket!, 2),
    ...(guest ? ['-kernel', guest.kernel, '-initrd', guest.initrd, '-append', '"console=ttyS0 quiet twindisk.disks=1"'] : []),
  ];
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
    'Press Ctrl-C to stop the three nodes.',
    '',
  ].join('\n'));
  await new Promise<void>((resolve) => {
    const stop = () => { void stopAll().then(() => resolve()); };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

async function waitFor(cond: () => boolean, ms: number): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`the demo's nodes did not get ready within ${ms / 1000} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
