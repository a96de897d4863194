// Network namespaces for tests: each node gets its own namespace and address on a private bridge, so a test can cut one off.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * `n` namespaces joined by a bridge that lives in a namespace of its own (nothing is added to the
 * host's namespace but the transient veth ends being moved). Node i has address 10.213.7.(i+1). Only
 * traffic between these namespaces is ever sent. Needs root (CI runs as root; `npm test` as another
 * user fails here with a message saying so).
 */
export class TestNetwork {
  readonly tag = randomBytes(3).toString('hex');
  readonly hub = `tdhub-${this.tag}`;
  readonly names: string[] = [];
  private destroyed = false;

  constructor(readonly n: number) {
    try {
      ip('netns', 'add', this.hub);
    } catch (e) {
      throw new Error(`cannot create network namespaces (${(e as { stderr?: Buffer }).stderr?.toString().trim() ?? e}): the partition tests need root and iproute2; run \`npm test\` as root (CI does)`);
    }
    process.on('exit', () => this.destroy());
    ip('-n', this.hub, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', this.hub, 'link', 'set', 'br0', 'up');
    for (let i = 0; i < n; i++) {
      const ns = `td${i}-${this.tag}`;
      this.names.push(ns);
      ip('netns', 'add', ns);
      ip('link', 'add', `tdv${i}${this.tag}`, 'type', 'veth', 'peer', 'name', `tdh${i}${this.tag}`);
      ip('link', 'set', `tdv${i}${this.tag}`, 'netns', ns, 'name', 'eth0');
      ip('link', 'set', `tdh${i}${this.tag}`, 'netns', this.hub, 'name', `port${i}`);
      ip('-n', ns, 'addr', 'add', `${this.address(i)}/24`, 'dev', 'eth0');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', ns, 'link', 'set', 'eth0', 'up');
      ip('-n', this.hub, 'link', 'set', `port${i}`, 'master', 'br0', 'up');
    }
  }

  address(i: number): string {
    return `10.213.7.${i + 1}`;
  }

  /** The command prefix that runs a program in node i's namespace. */
  exec(i: number): string[] {
    return ['ip', 'netns', 'exec', this.names[i]!];
  }

  /** Cuts node i off the network (its link to the bridge goes down); the node keeps running. */
  cut(i: number): void {
    ip('-n', this.hub, 'link', 'set', `port${i}`, 'down');
  }

  heal(i: number): void {
    ip('-n', this.hub, 'link', 'set', `port${i}`, 'up');
  }

  /** Deletes the namespaces (their veths go with them). */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const ns of [...this.names, this.hub]) {
      try { ip('netns', 'del', ns); } catch { /* already gone */ }
    }
  }
}
