// Runs the nodes of a replicated resource as `twindisk up` child processes on loopback, for integration tests.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { controlCall, type ControlRequest } from '../../daemon/control.js';
import type { ResourceStatus } from '../../engine/replication/resource.js';
import { attach, type BlkClient } from './blk-client.js';
import type { TestNetwork } from './netns.js';
import { cli, tmpDir } from './serve.js';

/** The resource files' secret: strong enough for the config's rule (engine/replication/config.ts secretProblem). */
export const TEST_SECRET = 'test-secret-4Vq9Zk2Lx7Rm3Tb8Wn5Yp';

/** Ports this process handed out already: the kernel may offer a released port again at once. */
const givenPorts = new Set<number>();

/** A free TCP port on 127.0.0.1 (bound and released), never one this process handed out before. */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = net.createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    if (givenPorts.has(port)) continue;
    givenPorts.add(port);
    return port;
  }
}

export interface NodeSpec {
  disk: boolean;
  /** The disk is an md array of this level on `members` files NAME-0.img.. (external metadata in NAME.md). */
  raid?: { level: 'raid1' | 'raid4' | 'raid5' | 'raid6' | 'raid10'; members: number; chunk?: string };
  socket?: boolean;
  queues?: number;
  /** Serve the volume over iSCSI on a free loopback port (TestNode.iscsiPort). */
  iscsi?: boolean;
  /** Serve Prometheus metrics on a free loopback port (TestNode.metricsPort). */
  metrics?: boolean;
  /** Serve the status page on a free loopback port (TestNode.httpPort): the node's "http" key, or with 'flag' `up --http`. */
  http?: boolean | 'flag';
  /** The status page's actions: "http-admin" in the file, or `up --http-admin` when `http` is 'flag'. */
  httpAdmin?: boolean;
}

export interface ClusterOptions {
  nodes: Record<string, NodeSpec>;
  /** Extra top-level keys of the resource file (protocol, quorum, after-sb-0pri, csums-alg, ...). */
  resource?: Record<string, unknown>;
  /** Usable size of each disk. */
  size?: number;
  /** create-md --assume-clean (fresh zeroed disks start in sync). Default true. */
  assumeClean?: boolean;
  /** Run each node in its own network namespace of this network (node i = i-th node listed). */
  network?: TestNetwork;
}

export class TestNode {
  child: ChildProcess | null = null;
  /** The node's iSCSI portal port on 127.0.0.1 (0: none). */
  iscsiPort = 0;
  /** The node's metrics port on 127.0.0.1 (0: none). */
  metricsPort = 0;
  /** The node's status page port on 127.0.0.1 (0: none). */
  httpPort = 0;
  private out = '';
  constructor(readonly cluster: Cluster, readonly name: string, readonly spec: NodeSpec, readonly index: number) {}

  get image(): string { return path.join(this.cluster.dir, `${this.name}.img`); }
  /** The files of an md array disk (NodeSpec.raid), in slot order. */
  member(k: number): string { return path.join(this.cluster.dir, `${this.name}-${k}.img`); }
  get socket(): string { return path.join(this.cluster.dir, `${this.name}.sock`); }
  log(): string { return this.out; }

  /** Starts `twindisk up` and waits for its control socket. */
  async start(): Promise<void> {
    // TWINDISK_NODE_FLAGS passes flags to the nodes' node processes (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof").
    const flags = (process.env.TWINDISK_NODE_FLAGS ?? '').split(' ').filter(Boolean);
    const argv = [process.execPath, ...flags, cli, 'up', '--config', this.cluster.file, '--node', this.name];
    if (this.spec.http === 'flag') argv.push('--http', `127.0.0.1:${this.httpPort}`, ...(this.spec.httpAdmin ? ['--http-admin'] : []));
    const net = this.cluster.opts.network;
    if (net) argv.unshift(...net.exec(this.index)); // `ip netns exec` execs node in place: same pid
    const c = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = c;
    c.stdout!.on('data', (d) => (this.out += d));
    c.stderr!.on('data', (d) => (this.out += d));
    await this.waitLog(/is up \(control socket/, 15000);
  }

  async waitLog(re: RegExp, ms = 15000): Promise<void> {
    const t0 = Date.now();
    while (!re.test(this.out)) {
      if (this.child && this.child.exitCode !== null) throw new Error(`${this.name} exited (${this.child.exitCode}) before logging ${re}:\n${this.out}`);
      if (Date.now() - t0 > ms) throw new Error(`${this.name} did not log ${re} within ${ms} ms:\n${this.out}`);
      await sleep(20);
    }
  }

  /** Stops the node (SIGTERM: clean; SIGKILL: a crash). */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill(signal);
    await exited;
  }

  call(req: ControlRequest): Promise<unknown> {
    return controlCall(path.join(this.cluster.dir, `.${this.cluster.resourceName}.${this.name}.ctl`), req);
  }

  status(): Promise<ResourceStatus> {
    return this.call({ cmd: 'status' }) as Promise<ResourceStatus>;
  }

  /** Polls status until `cond` holds. */
  async waitStatus(cond: (s: ResourceStatus) => boolean, what: string, ms = 30000): Promise<ResourceStatus> {
    const t0 = Date.now();
    let last: ResourceStatus | null = null;
    for (;;) {
      last = await this.status().catch(() => null);
      if (last && cond(last)) return last;
      if (Date.now() - t0 > ms) throw new Error(`${this.name}: ${what} not reached within ${ms} ms; last status ${JSON.stringify(last)}\nlog:\n${this.out}`);
      await sleep(50);
    }
  }
}

/** A resource of several nodes in a temporary directory. */
export class Cluster {
  readonly dir = tmpDir('twindisk-cluster-');
  readonly file = path.join(this.dir, 'r0.json');
  readonly resourceName = 'r0';
  readonly nodes = new Map<string, TestNode>();
  readonly size: number;

  private constructor(readonly opts: ClusterOptions) {
    this.size = opts.size ?? 16 << 20;
  }

  /** Writes the resource file (free ports) and creates each disk node's backing file and metadata. */
  static async create(opts: ClusterOptions): Promise<Cluster> {
    const c = new Cluster(opts);
    const nodes: Record<string, unknown> = {};
    let i = 0;
    for (const [name, spec] of Object.entries(opts.nodes)) {
      const address = opts.network ? `${opts.network.address(i)}:7789` : `127.0.0.1:${await freePort()}`;
      const iscsiPort = spec.iscsi ? await freePort() : 0;
      const metricsPort = spec.metrics ? await freePort() : 0;
      const httpPort = spec.http ? await freePort() : 0;
      const raid = spec.raid
        ? {
          disk: { raid: spec.raid.level, members: Array.from({ length: spec.raid.members }, (_, k) => `${name}-${k}.img`), ...(spec.raid.chunk ? { chunk: spec.raid.chunk } : {}) },
          'meta-disk': `${name}.md`,
        }
        : {};
      nodes[name] = {
        address, disk: spec.disk ? `${name}.img` : null, ...raid,
        ...(spec.socket ? { socket: `${name}.sock` } : {}), ...(spec.queues ? { queues: spec.queues } : {}),
        ...(spec.iscsi ? { iscsi: `127.0.0.1:${iscsiPort}` } : {}),
        ...(spec.metrics ? { metrics: `127.0.0.1:${metricsPort}` } : {}),
        ...(spec.http === true ? { http: `127.0.0.1:${httpPort}`, ...(spec.httpAdmin ? { 'http-admin': true } : {}) } : {}),
      };
      const node = new TestNode(c, name, spec, i++);
      node.iscsiPort = iscsiPort;
      node.metricsPort = metricsPort;
      node.httpPort = httpPort;
      c.nodes.set(name, node);
    }
    fs.writeFileSync(c.file, JSON.stringify({ resource: c.resourceName, protocol: 'C', secret: TEST_SECRET, quorum: 'off', ...opts.resource, nodes }, null, 2));
    for (const [name, spec] of Object.entries(opts.nodes)) {
      if (!spec.disk) continue;
      c.cli(['create-md', '--config', c.file, '--node', name, '--size', String(c.size), ...(opts.assumeClean === false ? [] : ['--assume-clean'])]);
    }
    return c;
  }

  node(name: string): TestNode {
    return this.nodes.get(name)!;
  }

  /** Runs a twindisk CLI command synchronously; throws with its output when it fails. */
  cli(args: string[]): string {
    const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`twindisk ${args.join(' ')} failed (${r.status}):\n${r.stdout}${r.stderr}`);
    return r.stdout;
  }

  async startAll(): Promise<void> {
    for (const n of this.nodes.values()) await n.start();
  }

  async stopAll(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    for (const n of this.nodes.values()) await n.stop(signal);
  }

  /** The data area (usable bytes) of a node's backing file. */
  data(name: string): Buffer {
    const fd = fs.openSync(this.node(name).image, 'r');
    try {
      const b = Buffer.alloc(this.size);
      fs.readSync(fd, b, 0, this.size, 0);
      return b;
    } finally {
      fs.closeSync(fd);
    }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * A `Cluster.create` whose clusters are all killed when the test file ends (registers node:test's
 * `after` hook once per file).
 */
export function clusterFactory(after: (fn: () => Promise<void>) => void): (opts: ClusterOptions) => Promise<Cluster> {
  const made: Cluster[] = [];
  after(async () => {
    for (const c of made) await c.stopAll('SIGKILL');
  });
  return async (opts) => {
    const c = await Cluster.create(opts);
    made.push(c);
    return c;
  };
}

/**
 * alpha (with a vhost-user socket) and beta, both with disks, started and connected, and a client
 * attached to alpha's socket (which makes alpha Primary).
 */
export async function pairWithClient(make: (opts: ClusterOptions) => Promise<Cluster>): Promise<{ c: Cluster; alpha: TestNode; g: BlkClient }> {
  const c = await make({ nodes: { alpha: { disk: true, socket: true }, beta: { disk: true } } });
  await c.startAll();
  const alpha = c.node('alpha');
  await alpha.waitStatus((s) => s.peers.beta?.replication === 'Established', 'connected');
  await alpha.waitLog(/vhost-user: listening/);
  return { c, alpha, g: attach(alpha.socket) };
}
