// A real Pacemaker cluster for tests: one corosync + pacemakerd per node, each node in a network namespace of a
// TestNetwork and in mount, PID and UTS namespaces of its own (private /var/lib/pacemaker, /var/lib/corosync,
// /etc/corosync, /run, /dev/shm, /var/log/{pacemaker,corosync,twindisk}, and the repository's
// contrib/ocf/resource as ocf:twindisk:resource). Nothing is mounted or installed on the host: every mount
// lives in a node's mount namespace and goes with its last process. Killing a node's PID namespace init
// (SIGKILL) kills everything of that node at once: corosync, every Pacemaker daemon, the agents' children
// (the twindisk node), as a power cut would. Needs root, corosync and pacemaker (Debian 12: corosync 3.1,
// pacemaker 2.1; scripts/setup.sh installs them), util-linux's unshare and nsenter.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { TestNetwork } from './netns.js';
import { sleep } from './cluster.js';
import { repoRoot, tmpDir } from './serve.js';

/** The programs the cluster needs, and the Debian package of each. */
const TOOLS: Record<string, string> = {
  corosync: 'corosync', 'corosync-cfgtool': 'corosync', pacemakerd: 'pacemaker', cibadmin: 'pacemaker-cli-utils',
  crm_mon: 'pacemaker-cli-utils', crm_attribute: 'pacemaker-cli-utils', unshare: 'util-linux', nsenter: 'util-linux',
};

/** The environment of every process in the cluster: Pacemaker's daemons and the agent inherit it, not the test runner's. */
const ENV = { PATH: `/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${path.dirname(process.execPath)}`, LANG: 'C.UTF-8', HOME: '/root' };

/** Throws, naming what is missing and that scripts/setup.sh installs it, unless every tool is there. */
export function requirePacemaker(): void {
  const missing = Object.keys(TOOLS).filter((t) => spawnSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore', env: ENV }).status !== 0);
  if (missing.length) {
    const pkgs = [...new Set(missing.map((t) => TOOLS[t]))].join(' ');
    throw new Error(`${missing.join(', ')} not found: this test runs a real corosync/Pacemaker cluster; scripts/setup.sh installs them (Debian packages: ${pkgs}), run it as root`);
  }
  if (spawnSync('id', ['-u'], { encoding: 'utf8' }).stdout.trim() !== '0') throw new Error('the Pacemaker cluster test needs root (namespaces, mounts): run it as root');
}

// A node's init (PID 1 of its PID namespace, run by bash): private directories bound over the system's,
// the agent installed as ocf:twindisk:resource, corosync, then pacemakerd; then it reaps children forever
// (bash reaps any child, also the orphans reparented to it, such as the twindisk node the agent starts).
const INIT = `#!/bin/bash
# $1: the node's directory (with etc-corosync/corosync.conf); $2: its name; $3: the OCF agent to install.
D=$1 NAME=$2 AGENT=$3
set -e
hostname "$NAME"
mkdir -p "$D"/lib-pacemaker/{cib,pengine,blackbox,cores} "$D"/log-pacemaker/bundles "$D"/lib-corosync "$D"/run \\
  "$D"/log-corosync "$D"/log-twindisk "$D"/ocf-orig /var/log/corosync /var/log/twindisk
chown -R hacluster:haclient "$D"/lib-pacemaker "$D"/log-pacemaker
chmod 750 "$D"/lib-pacemaker/*; chmod 770 "$D"/log-pacemaker
mount --bind "$D"/lib-pacemaker /var/lib/pacemaker
mount --bind "$D"/log-pacemaker /var/log/pacemaker
mount --bind "$D"/lib-corosync /var/lib/corosync
mount --bind "$D"/log-corosync /var/log/corosync
mount --bind "$D"/etc-corosync /etc/corosync
mount --bind "$D"/log-twindisk /var/log/twindisk
mount --bind "$D"/run /run
mount -t tmpfs -o size=64m,mode=1777 tmpfs /dev/shm
# The providers installed here stay visible; twindisk's is the repository's agent.
mount --bind /usr/lib/ocf/resource.d "$D"/ocf-orig
mount -t tmpfs -o size=1m tmpfs /usr/lib/ocf/resource.d
for p in "$D"/ocf-orig/*; do
  b=\${p##*/}
  [ "$b" = twindisk ] && continue
  mkdir "/usr/lib/ocf/resource.d/$b" && mount --bind "$p" "/usr/lib/ocf/resource.d/$b"
done
mkdir /usr/lib/ocf/resource.d/twindisk
install -m 0755 "$AGENT" /usr/lib/ocf/resource.d/twindisk/resource
set +e
corosync -f >"$D"/corosync.out 2>&1 &
for i in $(seq 300); do corosync-cfgtool -s >/dev/null 2>&1 && break; sleep 0.1; done
PCMK_logfile=/var/log/pacemaker/pacemaker.log pacemakerd >"$D"/pacemakerd.out 2>&1 &
echo "$$" >"$D"/ready
while :; do wait; sleep 1; done
`;

/** What crm_mon says about the cluster and one clone's instances. */
export interface ClusterView {
  dc: string | null;
  quorate: boolean;
  online: string[];
  /** Node name to the clone instance's role there (Started, Unpromoted, Promoted, Stopped, ...). */
  roles: Record<string, string>;
  /** Failed actions crm_mon lists (empty when none). */
  failures: string[];
}

class PacemakerNode {
  child: ChildProcess | null = null;
  /** The host pid of the node's PID namespace init (0: not running). */
  init = 0;
  constructor(readonly name: string, readonly index: number, readonly dir: string) {}
}

export class PacemakerCluster {
  readonly dir = tmpDir('twindisk-pacemaker-');
  readonly nodes: PacemakerNode[];
  private readonly initScript = path.join(this.dir, 'init.sh');

  /** Node i of `names` runs in namespace i of `net`; `agent` is installed as ocf:twindisk:resource. */
  constructor(readonly net: TestNetwork, readonly names: string[], readonly agent = path.join(repoRoot, 'contrib', 'ocf', 'resource')) {
    this.nodes = names.map((n, i) => new PacemakerNode(n, i, path.join(this.dir, n)));
    fs.writeFileSync(this.initScript, INIT, { mode: 0o755 });
    // Killed with this process whatever happens (the namespaces' mounts go with their processes).
    process.on('exit', () => this.destroy());
  }

  private corosyncConf(): string {
    const nodes = this.names.map((n, i) => `  node {\n    name: ${n}\n    nodeid: ${i + 1}\n    ring0_addr: ${this.net.address(i)}\n  }`).join('\n');
    return `totem {\n  version: 2\n  cluster_name: twindisk-test\n  transport: knet\n  crypto_cipher: none\n  crypto_hash: none\n}\n`
      + 'logging {\n  to_stderr: yes\n  to_logfile: no\n  to_syslog: no\n  timestamp: on\n}\n'
      + `quorum {\n  provider: corosync_votequorum\n}\nnodelist {\n${nodes}\n}\n`;
  }

  /** Starts corosync and pacemakerd on every node, and waits until each runs its init. */
  async start(): Promise<void> {
    for (const n of this.nodes) {
      fs.mkdirSync(path.join(n.dir, 'etc-corosync'), { recursive: true });
      fs.writeFileSync(path.join(n.dir, 'etc-corosync', 'corosync.conf'), this.corosyncConf());
      const out = fs.openSync(path.join(n.dir, 'init.out'), 'a');
      n.child = spawn('ip', ['netns', 'exec', this.net.names[n.index]!, 'unshare', '--mount', '--pid', '--uts', '--fork', '--mount-proc',
        '--propagation', 'private', 'bash', this.initScript, n.dir, n.name, this.agent], { stdio: ['ignore', out, out], detached: true, env: ENV });
      fs.closeSync(out);
    }
    for (const n of this.nodes) {
      const t0 = Date.now();
      for (;;) {
        const init = this.initPid(n);
        if (init && fs.existsSync(path.join(n.dir, 'ready'))) { n.init = init; break; }
        if (n.child!.exitCode !== null || Date.now() - t0 > 30_000) {
          throw new Error(`${n.name}'s namespace did not start corosync and pacemakerd:\n${this.read(n, 'init.out')}\n${this.read(n, 'corosync.out')}`);
        }
        await sleep(100);
      }
    }
  }

  /** The host pid of the bash that `unshare --fork` started (PID 1 inside), or 0. */
  private initPid(n: PacemakerNode): number {
    const pid = n.child?.pid;
    if (!pid) return 0;
    try {
      const kids = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
      return kids.length ? Number(kids[0]) : 0;
    } catch {
      return 0;
    }
  }

  node(name: string): PacemakerNode {
    const n = this.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no cluster node ${name}`);
    return n;
  }

  /** Runs a command inside node `name`'s namespaces (network, mount, PID, UTS); returns its status and output. */
  exec(name: string, cmd: string, args: string[], timeout = 60_000): { status: number | null; out: string } {
    const n = this.node(name);
    if (!n.init) throw new Error(`${name} is not running`);
    const r = spawnSync('nsenter', ['-t', String(n.init), '-m', '-n', '-p', '-u', cmd, ...args], { encoding: 'utf8', timeout, env: ENV });
    return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? `\n${r.error.message}` : ''}` };
  }

  /** Like exec, but throws with the output unless the command exits 0. */
  execOk(name: string, cmd: string, args: string[], timeout = 60_000): string {
    const r = this.exec(name, cmd, args, timeout);
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} on ${name}: exit ${r.status}\n${r.out}`);
    return r.out;
  }

  /** The cluster and the instances of clone primitive `rsc` as node `from` sees them (crm_mon's XML). */
  view(from: string, rsc: string): ClusterView | null {
    const r = this.exec(from, 'crm_mon', ['-1', '--output-as', 'xml'], 30_000);
    if (r.status !== 0) return null;
    const x = r.out;
    const dc = /<current_dc present="true"[^>]*name="([^"]+)"[^>]*with_quorum="(true|false)"/.exec(x);
    const online = [...x.matchAll(/<node name="([^"]+)"[^>]*online="true"/g)].map((m) => m[1]!);
    const roles: Record<string, string> = {};
    for (const m of x.matchAll(new RegExp(`<resource id="${rsc}(?::\\d+)?"[^>]*role="([^"]+)"[^>]*?(/>|>([\\s\\S]*?)</resource>)`, 'g'))) {
      const on = /<node name="([^"]+)"/.exec(m[3] ?? '');
      if (on) roles[on[1]!] = m[1]!;
    }
    const failures = [...x.matchAll(/<failure [^>]*\/>/g)].map((m) => m[0]);
    return { dc: dc ? dc[1]! : null, quorate: dc ? dc[2] === 'true' : false, online, roles, failures };
  }

  /** Polls `view` from node `from` until `cond` holds; throws with crm_mon's and the logs' story when it does not. */
  async waitView(from: string, rsc: string, cond: (v: ClusterView) => boolean, what: string, ms: number): Promise<ClusterView> {
    const t0 = Date.now();
    let last: ClusterView | null = null;
    while (Date.now() - t0 < ms) {
      last = this.view(from, rsc);
      if (last && cond(last)) return last;
      await sleep(1000);
    }
    throw new Error(`${what}: not reached within ${ms / 1000} s (seen from ${from}); last view ${JSON.stringify(last)}\n${this.diagnostics(from)}`);
  }

  /** crm_mon's text and the tails of the logs, for failure messages. */
  diagnostics(from: string): string {
    const mon = this.node(from).init ? this.exec(from, 'crm_mon', ['-1', '-r', '-A', '--include=failures'], 30_000).out : '(not running)';
    const tails = this.nodes.map((n) => {
      const tw = path.join(n.dir, 'log-twindisk');
      const twLogs = fs.existsSync(tw) ? fs.readdirSync(tw).map((f) => `--- ${n.name} ${f}:\n${tail(path.join(tw, f), 1500)}`).join('\n') : '';
      const pcmk = tail(path.join(n.dir, 'log-pacemaker', 'pacemaker.log'), 20_000).split('\n')
        .filter((l) => /error|warning|ocf:twindisk|twindisk-ocf|resource\[/.test(l)).slice(-25).join('\n');
      return `--- ${n.name} corosync:\n${tail(path.join(n.dir, 'corosync.out'), 800)}\n--- ${n.name} pacemaker.log (errors, warnings, agent):\n${pcmk}\n${twLogs}`;
    }).join('\n');
    return `crm_mon on ${from}:\n${mon}\n${tails}`;
  }

  private read(n: PacemakerNode, f: string): string {
    return tail(path.join(n.dir, f), 3000);
  }

  /**
   * Kills node `name` at once: SIGKILL to its PID namespace's init takes every process in the namespace
   * with it (corosync, pacemakerd and its daemons, the twindisk node). Waits until they are gone.
   */
  async kill(name: string): Promise<void> {
    const n = this.node(name);
    const c = n.child;
    if (n.init) {
      try { process.kill(n.init, 'SIGKILL'); } catch { /* gone already */ }
    }
    n.init = 0;
    if (c && c.exitCode === null && c.signalCode === null) {
      await Promise.race([new Promise((r) => c.once('exit', r)), sleep(10_000)]);
    }
  }

  /** Kills every node (idempotent; safe from an exit handler: synchronous). */
  destroy(): void {
    for (const n of this.nodes) {
      if (n.init) {
        try { process.kill(n.init, 'SIGKILL'); } catch { /* gone already */ }
        n.init = 0;
      }
      const pid = n.child?.pid;
      if (pid && n.child!.exitCode === null) {
        try { process.kill(pid, 'SIGKILL'); } catch { /* gone already */ }
      }
    }
  }
}

function tail(file: string, bytes: number): string {
  try {
    const b = fs.readFileSync(file);
    return b.subarray(Math.max(0, b.length - bytes)).toString('utf8');
  } catch {
    return `(no ${file})`;
  }
}
