// Runs the compiled test suite with node:test and ends with one plain line: `N passed, N failed`.
// Unit tests (test/**/*.test.js outside test/integration) run in parallel; integration tests, which boot
// QEMU guests under TCG on a 2-core machine, run one file at a time after them.
// Usage: node scripts/run-tests.mjs [--unit|--integration] [name-filter...]
import { run } from 'node:test';
import { spec } from 'node:test/reporters';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(fileURLToPath(new URL('.', import.meta.url)), '..');
const dist = join(root, 'dist', 'test');
const args = process.argv.slice(2);
const onlyUnit = args.includes('--unit');
const onlyIntegration = args.includes('--integration');
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
const isIntegration = (f) => relative(dist, f).startsWith('integration');
const groups = [];
if (!onlyIntegration) groups.push({ files: files.filter((f) => !isIntegration(f)), concurrency: 2 });
if (!onlyUnit) groups.push({ files: files.filter(isIntegration), concurrency: 1 });

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
