// The console's transfers page with studies sent to a client (issue 17), in headless Chromium.
//
//   node tests/console/sends.mjs --base http://127.0.0.1:PORT --admin-token JWT
//        --cancel-study UID --complete-study UID --out DIR [--timeout-ms 60000]
//
// The test (tests/console_ui.rs, the third) runs DCMTK movescu against the gateway: first a
// C-MOVE of --cancel-study to a DCMTK storescp that sleeps a second after each C-STORE, then,
// once that movescu ends, one of --complete-study. The script checks, on the transfers page
// fed by the server-sent events:
//   1. the first C-MOVE is listed as a running send (kind `send`, from the cache to the
//      destination AE) with partial progress: instances of the expected, bytes and a rate;
//   2. it is cancelled from the page and ends `cancelled` part-way;
//   3. the second C-MOVE runs to `complete` with every instance;
//   4. the kind filter shows sends only; no console errors.
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
const cancelStudy = arg('cancel-study', '');
const completeStudy = arg('complete-study', '');
const out = arg('out', join(here, 'screenshots'));
const timeoutMs = Number(arg('timeout-ms', '60000'));
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';

function setupError(msg) {
  console.error(`console test setup: ${msg}`);
  console.log(JSON.stringify({ ok: false, setup_error: msg, failures: [msg] }));
  process.exit(2);
}
if (!base || !adminToken || !cancelStudy || !completeStudy) setupError('pass --base, --admin-token, --cancel-study and --complete-study');
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
  await page.getByTestId('nav-transfers').click();
  await page.getByTestId('page-transfers').waitFor({ timeout: timeoutMs });
  await page.getByTestId('feed').filter({ hasText: 'live' }).waitFor({ timeout: timeoutMs });

  // ---- 1. the first C-MOVE runs, with progress ------------------------------------------
  const running = `tr[data-testid=transfer][data-kind=send][data-study="${cancelStudy}"][data-state=running]`;
  await page.waitForFunction((sel) => {
    const tr = document.querySelector(sel);
    return tr && Number(tr.dataset.received) > 0 && Number(tr.dataset.received) < Number(tr.dataset.expected);
  }, running, { timeout: timeoutMs });
  const [first] = await rowsOf(page, running);
  result.send_running = first;
  check(Number(first.bytes) > 0 && /\/s/.test(first.text), `the running send shows no bytes or rate: ${first.text}`);
  check(/DEST/.test(first.text) && /C-MOVE/.test(first.text), `the send does not name its destination: ${first.text}`);
  await shot(page, 'transfers-send-running');

  // ---- 2. cancel it -----------------------------------------------------------------------
  await page.locator(`${running}[data-id="${first.id}"]`).getByTestId('cancel').click();
  const cancelled = `tr[data-testid=transfer][data-id="${first.id}"][data-state=cancelled]`;
  await page.locator(cancelled).waitFor({ timeout: timeoutMs });
  result.send_cancelled = (await rowsOf(page, cancelled))[0];
  check(Number(result.send_cancelled.received) < Number(result.send_cancelled.expected),
    `the cancelled send ran to its end: ${JSON.stringify(result.send_cancelled)}`);

  // ---- 3. the second C-MOVE completes ------------------------------------------------------
  const done = `tr[data-testid=transfer][data-kind=send][data-study="${completeStudy}"][data-state=complete]`;
  await page.locator(done).first().waitFor({ timeout: timeoutMs });
  result.send_complete = (await rowsOf(page, done))[0];
  check(result.send_complete.received === result.send_complete.expected
    && Number(result.send_complete.expected) > 0 && Number(result.send_complete.bytes) > 0,
  `the second send did not complete: ${JSON.stringify(result.send_complete)}`);
  await shot(page, 'transfers-sends');

  // ---- 4. the kind filter ------------------------------------------------------------------
  await page.getByTestId('kind-send').click();
  const kinds = await rowsOf(page, 'tr[data-testid=transfer]');
  check(kinds.length >= 2 && kinds.every((t) => t.kind === 'send'), `filter sends: ${kinds.map((t) => t.kind)}`);
  await page.getByTestId('kind-all').click();
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
