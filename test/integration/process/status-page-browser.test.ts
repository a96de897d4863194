// The live status page in a real browser: headless Chromium (Debian's `chromium`, driven by playwright-core) opens a running three-node resource's page, sees its states, a CLI promotion within a second, and signs an action; a screenshot is kept.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { clusterFactory, TEST_SECRET } from '../../harness/cluster.js';
import { runCliOk } from '../../harness/serve.js';

/** Debian's chromium package (scripts/setup.sh installs it); playwright never downloads a browser here. */
const CHROMIUM = '/usr/bin/chromium';

const cluster = clusterFactory(after);
let browser: Browser | null = null;
after(async () => { await browser?.close(); });

/** The text of node `node`'s fact `key` (data-k) on the page. */
function fact(page: Page, node: string, key: string): Promise<string | null> {
  return page.locator(`[data-node="${node}"] [data-k="${key}"]`).textContent({ timeout: 5000 });
}

test('status page in Chromium: states shown, a CLI promotion within a second, an action signed in the page, a screenshot', async (t) => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: this test needs Debian's chromium package (scripts/setup.sh installs it: apt-get install chromium)`);
  // Kept after the test (not removed with the cluster's directory): the screenshot is an artefact.
  const artefacts = fs.mkdtempSync(path.join(os.tmpdir(), 'twindisk-status-page-browser-'));
  const c = await cluster({ nodes: { alpha: { disk: true, http: true, httpAdmin: true }, beta: { disk: true }, gamma: { disk: false } } });
  await c.startAll();
  const alpha = c.node('alpha');
  await alpha.waitStatus((s) => Object.values(s.peers).every((p) => p.replication === 'Established'), 'alpha connected to both');

  // Root in a container: Chromium's sandbox needs user namespaces it may not have.
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  await page.goto(`http://127.0.0.1:${alpha.httpPort}/`);

  // The states, as the node's status has them.
  await page.locator('#link', { hasText: 'live' }).waitFor({ timeout: 5000 });
  await page.locator('#title', { hasText: 'twindisk · r0 · alpha' }).waitFor({ timeout: 5000 });
  assert.equal(await page.locator('#mode').textContent(), 'admin');
  assert.equal(await fact(page, 'alpha', 'role'), 'Secondary');
  assert.equal(await fact(page, 'alpha', 'disk'), 'UpToDate');
  assert.match((await fact(page, 'alpha', 'quorum'))!, /^yes/);
  for (const peer of ['beta', 'gamma']) {
    assert.equal(await fact(page, peer, 'connection'), 'Connected', peer);
    assert.equal(await fact(page, peer, 'replication'), 'Established', peer);
    assert.equal(await fact(page, peer, 'role'), 'Secondary', peer);
  }
  assert.equal(await fact(page, 'beta', 'disk'), 'UpToDate');
  assert.equal(await fact(page, 'gamma', 'disk'), 'Diskless');
  assert.equal(await fact(page, 'beta', 'oos'), '0 B');

  // A promotion made with the CLI appears without a reload, within a second of the command returning.
  const seen = page.waitForFunction(() => document.querySelector('[data-node="alpha"] [data-k="role"]')?.textContent === 'Primary', null, { timeout: 10000, polling: 20 })
    .then(() => Date.now());
  await runCliOk('primary', '--config', c.file, '--node', 'alpha');
  const cliDone = Date.now();
  const at = await seen;
  assert.ok(at - cliDone <= 1000, `the page showed Primary ${at - cliDone} ms after the CLI returned`);
  await page.locator('#events li', { hasText: 'alpha promoted to Primary' }).waitFor({ timeout: 2000 });

  const shot = path.join(artefacts, 'status-page.png');
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(fs.statSync(shot).size > 10000, 'a screenshot with something in it');
  t.diagnostic(`screenshot: ${shot}`);
  process.stdout.write(`status page screenshot: ${shot}\n`);

  // An action from the page: the page signs it (hmac.js); a wrong secret is refused, the right one demotes alpha.
  await page.fill('#secret', 'a-wrong-secret-of-sufficient-length');
  await page.click('#admin button[data-cmd="secondary"]');
  await page.locator('#result.bad', { hasText: 'wrong secret' }).waitFor({ timeout: 5000 });
  assert.equal((await alpha.status()).role, 'Primary');
  await page.fill('#secret', TEST_SECRET);
  await page.click('#admin button[data-cmd="secondary"]');
  await page.locator('#result.ok', { hasText: 'done' }).waitFor({ timeout: 5000 });
  await page.waitForFunction(() => document.querySelector('[data-node="alpha"] [data-k="role"]')?.textContent === 'Secondary', null, { timeout: 2000 });
  assert.equal((await alpha.status()).role, 'Secondary');
  await page.locator('#events li', { hasText: 'alpha demoted to Secondary' }).waitFor({ timeout: 2000 });

  assert.deepEqual(problems, [], 'no script errors in the page');
});
