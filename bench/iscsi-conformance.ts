// `twindisk bench iscsi-conformance`: libiscsi's conformance suite (iscsi-test-cu) against twindisk's iSCSI target and tgt in one run, with the results parsed per test.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnTracked } from './c-tools.js';
import { startTgt, startTwindiskIscsi, tgtMissing, twindiskIscsiMissing, withScratch, type IscsiTarget } from './iscsi.js';

/**
 * The CI subset: the SCSI commands every disk must get right and the iSCSI layer's sequence-number and
 * task-management checks: 49 tests, about 4 s against tgt. (libiscsi 1.19 has no NOP or login
 * suites: login is exercised by every suite's set-up, which logs in anew.)
 */
export const CI_SUBSET = [
  'SCSI.TestUnitReady',
  'SCSI.Inquiry',
  'SCSI.ReadCapacity10',
  'SCSI.ReadCapacity16',
  'SCSI.Read10',
  'SCSI.Read16',
  'SCSI.Write10',
  'SCSI.Write16',
  'SCSI.ReportSupportedOpcodes',
  'SCSI.Mandatory',
  'SCSI.ModeSense6',
  'iSCSI.iSCSIcmdsn',
  'iSCSI.iSCSITMF',
];

/**
 * The two initiator names the suite logs in with: most tests use the first; the reservation and
 * I_T nexus tests log a second session in under the second (iscsi-test-cu -i / -I).
 */
export const CONFORMANCE_INITIATORS = ['iqn.2026-12.io.twindisk:conformance-1', 'iqn.2026-12.io.twindisk:conformance-2'] as const;

/**
 * The LUN the suite runs on: a scratch file of 100 MiB with 512-byte blocks, written by the tests
 * (--dataloss), as libiscsi's own test scripts (tests/functions.sh) set up tgt for it.
 */
export const CONFORMANCE_LUN_BYTES = 100 << 20;

export type TestOutcome = 'passed' | 'failed' | 'skipped';

export interface TestResult {
  /** SUITE.TEST, as iscsi-test-cu --list names it after its family. */
  name: string;
  outcome: TestOutcome;
  /** What the test printed: [SKIPPED] and [FAILED] lines, CUnit's failed assertions. */
  messages: string[];
}

export interface CUnitSummary {
  total: number;
  ran: number;
  passed: number;
  failed: number;
  inactive: number;
}

export interface ParsedRun {
  tests: TestResult[];
  /** CUnit's own "Run Summary" counts (its passed include the skipped), when the run got that far. */
  summary?: CUnitSummary;
}

/**
 * Parses iscsi-test-cu's verbose console output (CUnit's basic interface):
 *
 *   Suite: Read10
 *     Test: Simple ...passed
 *     Test: BeyondEol ...    [FAILED] READ10 successful but should have failed ...
 *   FAILED
 *       1. test_read10_beyond_eol.c:38  - CU_ASSERT_EQUAL(_r,0)
 *
 * CUnit has no skipped state: a test that finds a command unsupported prints [SKIPPED] and returns, and
 * CUnit counts it as passed. A passed test that printed [SKIPPED] is counted here as skipped.
 */
export function parseTestCuOutput(text: string): ParsedRun {
  const tests: TestResult[] = [];
  let suite = '';
  let cur: TestResult | undefined;
  let verdict: 'passed' | 'FAILED' | undefined;
  // Messages after the verdict come from the suite's clean-up, not from the test.
  let verdictAt = 0;
  const finish = () => {
    if (!cur) return;
    const skipped = cur.messages.slice(0, verdictAt).some((m) => m.includes('[SKIPPED]'));
    cur.outcome = verdict === 'FAILED' ? 'failed' : skipped ? 'skipped' : 'passed';
    // A test that never printed its verdict (the run was cut short) did not pass.
    if (verdict === undefined) cur.outcome = 'failed';
    tests.push(cur);
    cur = undefined;
    verdict = undefined;
  };
  let summary: CUnitSummary | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    const s = /^Suite: (.+)$/.exec(line);
    if (s) {
      finish();
      suite = s[1]!.trim();
      continue;
    }
    const t = /^ {2}Test: (.+?) \.\.\.(.*)$/.exec(line);
    if (t) {
      finish();
      cur = { name: `${suite}.${t[1]}`, outcome: 'passed', messages: [] };
      // "...passed" is the verdict of a test that printed nothing; what follows it on the line was
      // printed by the suite's clean-up ("...passed    [FAILED] PRIN command: ..." after LUNReset) and
      // does not change the verdict. Anything else is the test's first message.
      const v = /^(passed|FAILED)(.*)$/.exec(t[2]!);
      if (v) {
        verdict = v[1] as 'passed' | 'FAILED';
        verdictAt = 0;
      }
      const rest = (v ? v[2]! : t[2]!).trim();
      if (rest) cur.messages.push(rest);
      continue;
    }
    const sum = /^\s+tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$/.exec(line);
    if (/^Run Summary:/.test(line)) {
      finish();
      continue;
    }
    if (sum) {
      summary = { total: +sum[1]!, ran: +sum[2]!, passed: +sum[3]!, failed: +sum[4]!, inactive: +sum[5]! };
      continue;
    }
    if (!cur) continue;
    if (line === 'passed' || line === 'FAILED') {
      verdict = line;
      verdictAt = cur.messages.length;
      continue;
    }
    // A message without a newline before the verdict: "    [SKIPPED] ... Skipping testpassed" does not
    // happen with libiscsi's logging (every line ends in \n), so only whole lines are verdicts.
    if (line.trim()) cur.messages.push(line.trim());
  }
  finish();
  return summary ? { tests, summary } : { tests };
}

export interface ConformanceResult {
  target: string;
  total: number;
  passed: number;
  failed: number;
  skipped: number;
  /** CUnit's count of passed tests (passed + skipped here). */
  cunitPassed: number;
  seconds: number;
  failedTests: string[];
  /** Set when the run did not finish normally (the target died, a timeout, a set-up failure). */
  error?: string;
}

/** Runs iscsi-test-cu against `url`; `tests` is its --test value (a comma-separated list of FAMILY[.SUITE[.TEST]] globs). */
export async function runTestCu(target: string, url: string, tests: string, timeoutSeconds: number): Promise<ConformanceResult> {
  const args = ['-i', CONFORMANCE_INITIATORS[0], '-I', CONFORMANCE_INITIATORS[1], '--dataloss', '--verbose', `--test=${tests}`, url];
  const t0 = performance.now();
  const child = spawnTracked('iscsi-test-cu', args);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d));
  child.stderr!.on('data', (d: Buffer) => (out += d));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutSeconds * 1000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  clearTimeout(timer);
  const seconds = Math.round((performance.now() - t0) / 100) / 10;
  const parsed = parseTestCuOutput(out);
  const count = (o: TestOutcome) => parsed.tests.filter((t) => t.outcome === o).length;
  const r: ConformanceResult = {
    target,
    total: parsed.summary?.total ?? parsed.tests.length,
    passed: count('passed'),
    failed: count('failed'),
    skipped: count('skipped'),
    cunitPassed: parsed.summary?.passed ?? count('passed') + count('skipped'),
    seconds,
    failedTests: parsed.tests.filter((t) => t.outcome === 'failed').map((t) => t.name),
  };
  const last = parsed.tests[parsed.tests.length - 1]?.name;
  if (timedOut) r.error = `timed out after ${timeoutSeconds} s${last ? ` (the last test started: ${last})` : ''}`;
  else if (!parsed.summary) r.error = `iscsi-test-cu exited (${code}) without a summary: ${out.trim().split('\n').slice(-5).join(' | ')}`;
  else if (parsed.summary.failed !== r.failed || parsed.summary.ran !== parsed.tests.length) {
    r.error = `parsed ${parsed.tests.length} tests with ${r.failed} failed, CUnit says ${parsed.summary.ran} ran and ${parsed.summary.failed} failed`;
  }
  return r;
}

export type ConformanceTarget = 'twindisk' | 'tgt';

export interface ConformanceOptions {
  json: boolean;
  /** Default: both. */
  targets?: ConformanceTarget[];
  /** iscsi-test-cu's --test: FAMILY[.SUITE[.TEST]] globs, comma-separated; `ci` is CI_SUBSET. Default ALL. */
  test?: string | undefined;
  /** Per target (default 600 s). */
  timeoutSeconds?: number;
  out?: (line: string) => void;
  /** Where notes go (that twindisk's target is missing): stderr with json, else `out`. */
  note?: (line: string) => void;
}

/** Says what is missing for iscsi-test-cu, or null. */
export function testCuMissing(): string | null {
  return spawnSync('iscsi-test-cu', ['--list'], { stdio: 'ignore' }).error
    ? 'iscsi-test-cu is not installed: run scripts/setup.sh (as root; Debian package libiscsi-bin)'
    : null;
}

/** Runs the suite against each target in turn, each on a fresh scratch LUN; prints one result per target. */
export async function runConformance(o: ConformanceOptions): Promise<ConformanceResult[]> {
  const out = o.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const note = o.note ?? (o.json ? (l: string) => process.stderr.write(l + '\n') : out);
  const tests = !o.test || o.test === 'all' ? 'ALL' : o.test === 'ci' ? CI_SUBSET.join(',') : o.test;
  const missingCu = testCuMissing();
  if (missingCu) throw new Error(missingCu);
  let targets = [...(o.targets ?? ['tgt', 'twindisk'])];
  if (targets.includes('twindisk')) {
    const why = twindiskIscsiMissing();
    if (why) {
      note(`twindisk: NOT RUN: twindisk's iSCSI target is not available (${why})`);
      targets = targets.filter((t) => t !== 'twindisk');
    }
  }
  if (targets.includes('tgt')) {
    const missing = tgtMissing();
    if (missing) throw new Error(missing);
  }
  const results: ConformanceResult[] = [];
  await withScratch('twindisk-iscsi-conformance-', async (dir) => {
    for (const t of targets) {
      const image = path.join(dir, `${t}.img`);
      fs.writeFileSync(image, '');
      fs.truncateSync(image, CONFORMANCE_LUN_BYTES);
      const target: IscsiTarget = t === 'tgt' ? await startTgt({ dir, image }) : await startTwindiskIscsi({ image });
      let r: ConformanceResult;
      try {
        r = await runTestCu(t, target.url, tests, o.timeoutSeconds ?? 600);
        if (r.error && target.log()) r.error += `; ${t} log: ${target.log().split('\n').slice(-3).join(' | ')}`;
      } finally {
        await target.stop();
      }
      results.push(r);
      if (o.json) out(JSON.stringify(r));
      else {
        out(`${t.padEnd(9)} ${r.total} tests: ${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped (CUnit counts ${r.cunitPassed} passed) in ${r.seconds} s`);
        if (r.failedTests.length) out(`  failed: ${r.failedTests.join(', ')}`);
        if (r.error) out(`  error: ${r.error}`);
      }
    }
  });
  return results;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const arg = (name: string) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1] : undefined;
  };
  const target = arg('--target') ?? 'both';
  runConformance({
    json: process.argv.includes('--json'),
    targets: target === 'both' ? undefined : [target as ConformanceTarget],
    test: arg('--test'),
  }).catch((e) => {
    process.stderr.write(`bench iscsi-conformance: ${e.message}\n`);
    process.exit(1);
  });
}
