// The console's queues page with a publication that keeps failing (issue 17), in headless Chromium.
//
//   node tests/console/publications.mjs --base http://127.0.0.1:PORT --admin-token JWT
//        --study UID --out DIR [--timeout-ms 60000]
//
// The gateway (tests/console_ui.rs, the fourth test) is in gateway mode with [xds]; its PACS
// is down, so each publication attempt of --study fails (the publisher asks the PACS what it
// holds of the study) and the publisher backs off (1, 2, 4, 8 s ...). The test starts the PACS
// once four attempts failed. The script checks:
//   1. on the queues page the study is listed as failed, with its failed attempts (at least
//      four) and the error;
//   2. once the PACS answers (the peers API), "Publish now" publishes it at once: the study
//      leaves the queue, and the transfers page has its publication complete, marked as asked
//      for by the operator; no console errors.
// Screenshots go to --out. The last stdout line is one JSON object: {"ok": bool, "failures": [...], ...}.
import { createRequire } from 'node:module';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const started = Date.now();

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const base = (arg('base', '') || '').replace(/\/+$/, '');
const adminToken = arg('admin-token', '');
const study = arg('study', '');
const out = arg('out', join(here, 'screenshots'));
const timeoutMs = Number(arg('timeout-ms', '60000'));
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';

function setupError(msg) {
  console.error(`console test setup: ${msg}`);
  console.log(JSON.stringify({ ok: false, setup_error: msg, failures: [msg] }));
  process.exit(2);
}
if (!base || !adminToken || !study) setupError('pass --base, --admin-token and --study');
let chromium;
try {
  const require = createRequire(join(here, '..', 'ohif', 'package.json'));
  ({ chromium } = require('playwright-core'));
} catch (e) {
  setupError(`playwright-core is not installed: run \`npm ci\` in tests/ohif (${e.message})`);
}
if (!existsSync(chromiumPath)) setupError(`${chromiumPath} is missing: apt-get install -y chromium (or set CHROMIUM)`);
mkdirSync(out, { recursive: true });

const result = { ok: false, failures: [], console_errors: [], screenshots: [] };
const fail = (msg) => result.failures.push(msg);
const check = (cond, msg) => {
  if (!cond) fail(msg);
  return cond;
};

const browser = await chromium.launch({
  executablePath: chromiumPath,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});

async function shot(page, name) {
  const path = join(out, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  result.screenshots.push(path);
}

const rowsOf = (page, selector) =>
  page.locator(selector).evaluateAll((trs) => trs.map((tr) => ({ ...tr.dataset, text: tr.textContent })));

try {
  const context = await browser.newContext({ viewport: { width: 1500, height: 900 } });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') result.console_errors.push(m.text());
  });
  page.on('pageerror', (e) => result.console_errors.push(`pageerror: ${e.message}`));
  page.on('response', (r) => {
    if (r.status() >= 400 && r.url().includes('/admin')) result.console_errors.push(`HTTP ${r.status()} ${r.url()}`);
  });
  await page.goto(`${base}/admin`);
  await page.locator('textarea[name=token]').fill(adminToken);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByTestId('nav-queues').click();
  await page.getByTestId('page-queues').waitFor({ timeout: timeoutMs });

  // ---- 1. the publication keeps failing ------------------------------------------------------
  const row = `tr[data-testid=publication][data-study="${study}"]`;
  await page.waitForFunction((sel) => {
    const tr = document.querySelector(sel);
    return tr && tr.dataset.state === 'failed' && Number(tr.dataset.attempts) >= 4;
  }, row, { timeout: timeoutMs });
  result.failing = (await rowsOf(page, row))[0];
  check(result.failing.error && /failed/.test(result.failing.text),
    `the failing publication shows no reason: ${JSON.stringify(result.failing)}`);
  await shot(page, 'queues-publication-failing');

  // ---- 2. the PACS is back: publish now --------------------------------------------------------
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await page.request.get(`${base}/admin/api/peers`);
    const peers = (await r.json()).peers || [];
    if (peers.some((p) => p.reachable === true)) break;
    if (Date.now() > deadline) throw new Error(`the PACS never answered: ${JSON.stringify(peers)}`);
    await page.waitForTimeout(250);
  }
  await page.locator(row).getByTestId('publish-now').click();
  await page.locator(row).waitFor({ state: 'detached', timeout: timeoutMs });
  await page.getByTestId('nav-transfers').click();
  await page.getByTestId('page-transfers').waitFor({ timeout: timeoutMs });
  const done = `tr[data-testid=transfer][data-kind=publication][data-study="${study}"][data-state=complete]`;
  await page.locator(done).first().waitFor({ timeout: timeoutMs });
  result.published = (await rowsOf(page, done))[0];
  check(/publish now/.test(result.published.text),
    `the publication was not the operator's: ${JSON.stringify(result.published)}`);
  await shot(page, 'transfers-publish-now');
  for (const e of result.console_errors) fail(`console error: ${e}`);
  await context.close();
} catch (e) {
  fail(`${e.name}: ${e.message}`);
} finally {
  await browser.close();
}
result.t_total_ms = Date.now() - started;
result.ok = result.failures.length === 0;
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
