// Runs the compiled test suite with node:test and ends with one plain line: `N passed, N failed`.
// Three tiers, each saying what it needs:
//   unit         test/** outside test/integration: bytes in memory, in-process scenarios (two files at a time)
//   process      test/integration/process (and test/contrib/ocf-agent): twindisk processes on loopback or in
//                network namespaces (two at a time); status-page-browser also drives Debian's chromium
//                (playwright-core, no browser download) and fails when it is missing
//   guest        test/integration/guest (and test/contrib/pacemaker-cluster): real QEMU guests under TCG (one at
//                a time: a guest takes a core); pacemaker-cluster runs a real three-node corosync/Pacemaker
//                cluster in namespaces with a guest on each side of the failover (about two minutes; Debian's
//                corosync and pacemaker, root) and fails when they are missing
// Usage: node scripts/run-tests.mjs [--unit|--process|--guest|--integration] [name-filter...]
//   (--integration: process and guest)
import { run } from 'node:test';
import { spec } from 'node:test/reporters';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(fileURLToPath(new URL('.', import.meta.url)), '..');
const dist = join(root, 'dist', 'test');
const args = process.argv.slice(2);
const tiers = ['unit', 'process', 'guest'].filter((t) => args.includes(`--${t}`) || (args.includes('--integration') && t !== 'unit'));
const wanted = (t) => tiers.length === 0 || tiers.includes(t);
const filters = args.filter((a) => !a.startsWith('--'));

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out.sort();
}

let files;
try {
  files = walk(dist);
} catch {
  console.error('no compiled tests under dist/test: run `npm test` (it builds first) or `npx tsc -p .`');
  process.exit(2);
}
if (filters.length) files = files.filter((f) => filters.some((x) => relative(root, f).includes(x)));
const tierOf = (f) => {
  const r = relative(dist, f);
  if (r.startsWith(join('integration', 'guest'))) return 'guest';
  if (r.startsWith('integration')) return 'process';
  if (r === join('contrib', 'ocf-agent.test.js')) return 'process'; // the OCF agent drives real nodes on loopback
  if (r === join('contrib', 'pacemaker-cluster.test.js')) return 'guest'; // a real Pacemaker cluster in namespaces, and QEMU guests
  return 'unit';
};
const groups = [];
if (wanted('unit')) groups.push({ files: files.filter((f) => tierOf(f) === 'unit'), concurrency: 2 });
if (wanted('process')) groups.push({ files: files.filter((f) => tierOf(f) === 'process'), concurrency: 2 });
if (wanted('guest')) groups.push({ files: files.filter((f) => tierOf(f) === 'guest'), concurrency: 1 });

let passed = 0;
let failed = 0;
for (const g of groups) {
  if (g.files.length === 0) continue;
  const stream = run({ files: g.files, concurrency: g.concurrency, timeout: 15 * 60_000 });
  stream.on('test:pass', (d) => { if (d.details?.type !== 'suite' && !d.skip && !d.todo) passed++; });
  stream.on('test:fail', (d) => { if (d.details?.type !== 'suite') failed++; });
  const report = stream.compose(spec);
  report.pipe(process.stdout, { end: false });
  await new Promise((resolve, reject) => {
    report.on('end', resolve);
    report.on('error', reject);
  });
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed > 0 || passed === 0 ? 1 : 0;
