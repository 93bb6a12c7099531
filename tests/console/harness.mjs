// What the console's browser tests (forwards.mjs, publications.mjs, sends.mjs) share: their
// command-line options, Chromium through playwright-core (from tests/ohif's npm install), the
// result object they print as their last stdout line, screenshots, table rows, and a page
// signed in with an admin token that records console errors.
import { createRequire } from 'node:module';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

export function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

function setupError(msg) {
  console.error(`console test setup: ${msg}`);
  console.log(JSON.stringify({ ok: false, setup_error: msg, failures: [msg] }));
  process.exit(2);
}

// The common options (--base, --admin-token, --out, --timeout-ms) and a launched Chromium;
// `given` says whether the script's own options are there, `usage` what to pass if not.
export async function open(given, usage) {
  const base = (arg('base', '') || '').replace(/\/+$/, '');
  const adminToken = arg('admin-token', '');
  const out = arg('out', join(here, 'screenshots'));
  const timeoutMs = Number(arg('timeout-ms', '60000'));
  const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
  if (!base || !adminToken || !given) setupError(usage);
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
  return { base, adminToken, out, timeoutMs, browser, result, fail, check, shot, rowsOf };
}

// A page of a new browser context signed in to the console with the admin token; console
// errors, page errors and failed /admin responses go to result.console_errors.
export async function signIn(browser, result, base, adminToken) {
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
  return { context, page };
}

// Close the browser and print the result as the last stdout line; exit 0 when nothing failed.
export async function finish(browser, result, started) {
  await browser.close();
  result.t_total_ms = Date.now() - started;
  result.ok = result.failures.length === 0;
  console.log(JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
}
