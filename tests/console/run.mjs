// Drive the operator's console (/admin) in headless Chromium against a running gateway.
//
//   node tests/console/run.mjs --base http://127.0.0.1:PORT --admin-token JWT --other-token JWT
//        --out DIR [--timeout-ms 60000]
//
// playwright-core is the one tests/ohif installs (`npm ci` in tests/ohif); Chromium is Debian's
// /usr/bin/chromium (or $CHROMIUM). The gateway (tests/console_ui.rs) is in gateway mode with a
// real PACS holding two patients named Müller^Zoë (a CT and an MR study each), and a failed
// forward job waiting. The script checks:
//   1. a browser without credentials gets the login form and a 401 from every API route; a
//      token without an admin role is refused at login and still gets nothing;
//   2. with the admin token, each page loads without console errors;
//   3. studies: `muller` finds Müller^Zoë; a study shows non-blank series thumbnails;
//   4. transfers: a WADO-RS retrieve it starts (and reads slowly) shows up running with
//      partial progress, then complete; another one is cancelled from the page;
//      the same request is a WADO-RS send, complete; the study again to a client that does
//      not read: its send cancelled from the page, the body ends broken;
//   5. queues: the failed forward job is re-queued from the UI and ends done; transfers: a
//      publication (XDS-I) of an arrived study listed complete with its progress;
//   6. audit: the patient's trail with a verified chain, and its CSV export;
//   7. peers (the PACS probed) and the configuration.
// Screenshots go to --out. The last stdout line is one JSON object: {"ok": bool, "failures": [...], ...}.
import { createRequire } from 'node:module';
import { existsSync, mkdirSync } from 'node:fs';
import http from 'node:http';
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
const otherToken = arg('other-token', '');
const out = arg('out', join(here, 'screenshots'));
const openStudy = arg('open-study', '');
const transferStudy = arg('transfer-study', '');
const cancelStudy = arg('cancel-study', '');
const timeoutMs = Number(arg('timeout-ms', '60000'));
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';

function setupError(msg) {
  console.error(`console test setup: ${msg}`);
  console.log(JSON.stringify({ ok: false, setup_error: msg, failures: [msg] }));
  process.exit(2);
}
if (!base || !adminToken || !otherToken || !openStudy || !transferStudy || !cancelStudy) {
  setupError('pass --base, --admin-token, --other-token, --open-study, --transfer-study and --cancel-study');
}
let chromium;
try {
  const require = createRequire(join(here, '..', 'ohif', 'package.json'));
  ({ chromium } = require('playwright-core'));
} catch (e) {
  setupError(`playwright-core is not installed: run \`npm ci\` in tests/ohif (${e.message})`);
}
if (!existsSync(chromiumPath)) setupError(`${chromiumPath} is missing: apt-get install -y chromium (or set CHROMIUM)`);
mkdirSync(out, { recursive: true });

const result = { ok: false, failures: [], console_errors: [], pages: {}, screenshots: [] };
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

async function shot(page, name, locator) {
  const path = join(out, `${name}.png`);
  await (locator || page).screenshot({ path, fullPage: !locator });
  result.screenshots.push(path);
}

// The API routes a refused browser must get nothing from.
const STUDY = '1.2.3';
const API_ROUTES = ['/studies?name=m', `/studies/${STUDY}`, `/studies/${STUDY}/series/1.2.3.4/thumbnail`, '/transfers',
  '/transfers/events', '/queues', '/audit?bsn=999999990', '/audit.csv?bsn=999999990', '/peers', '/config'];

async function apiStatuses(page) {
  return page.evaluate(async (routes) => {
    const got = {};
    for (const r of routes) {
      const res = await fetch(`/admin/api${r}`);
      const body = await res.text();
      got[r] = { status: res.status, length: body.length, body: body.slice(0, 200) };
    }
    return got;
  }, API_ROUTES);
}

try {
  // ---- 1. no credentials, then a token without an admin role -----------------------------
  {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${base}/admin`);
    await page.getByTestId('login-form').waitFor({ timeout: timeoutMs });
    const anonymous = await apiStatuses(page);
    result.anonymous = anonymous;
    for (const [route, r] of Object.entries(anonymous)) {
      check(r.status === 401, `anonymous ${route}: ${r.status} (want 401)`);
      check(!/Müller|M\\u00fcller|9999/.test(r.body), `anonymous ${route} leaked data: ${r.body}`);
    }
    await page.locator('textarea[name=token]').fill(otherToken);
    await page.getByRole('button', { name: 'Sign in' }).click();
    const refused = await page.getByTestId('login-error').textContent({ timeout: timeoutMs });
    result.non_admin_login = refused;
    check(/admin role/.test(refused || ''), `a non-admin token was not refused for its role: ${refused}`);
    check(await page.getByTestId('login-form').isVisible(), 'the login form went away for a non-admin');
    const after = await apiStatuses(page);
    for (const [route, r] of Object.entries(after)) {
      check(r.status === 401, `non-admin ${route}: ${r.status} (want 401)`);
    }
    await shot(page, 'login-refused');
    await context.close();
  }

  // ---- 2. the admin ----------------------------------------------------------------------
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const page = await context.newPage();
  let pageName = 'login';
  page.on('console', (m) => {
    if (m.type() === 'error') result.console_errors.push({ page: pageName, text: m.text() });
  });
  page.on('pageerror', (e) => result.console_errors.push({ page: pageName, text: `pageerror: ${e.message}` }));
  page.on('response', (r) => {
    if (r.status() >= 400 && r.url().includes('/admin')) {
      result.console_errors.push({ page: pageName, text: `HTTP ${r.status()} ${r.url()}` });
    }
  });
  await page.goto(`${base}/admin`);
  await page.locator('textarea[name=token]').fill(adminToken);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByTestId('nav-studies').waitFor({ timeout: timeoutMs });
  result.who = await page.getByTestId('who').textContent();

  const visit = async (name) => {
    pageName = name;
    const t0 = Date.now();
    await page.getByTestId(`nav-${name}`).click();
    await page.getByTestId(`page-${name}`).waitFor({ timeout: timeoutMs });
    result.pages[name] = { loaded_ms: Date.now() - t0 };
  };

  // ---- 3. studies ------------------------------------------------------------------------
  await visit('studies');
  await page.locator('input[name=name]').fill('muller');
  await page.getByRole('button', { name: 'Search' }).click();
  await page.getByTestId('study-row').first().waitFor({ timeout: timeoutMs });
  const rows = await page.getByTestId('study-row').evaluateAll((trs) =>
    trs.map((tr) => ({
      study: tr.dataset.study,
      modalities: tr.dataset.modalities,
      name: tr.cells[0].textContent,
      patient_id: tr.cells[1].textContent,
    })),
  );
  result.studies = rows;
  check(rows.length >= 4, `muller found ${rows.length} studies (want the 4 of the PACS at least)`);
  check(rows.every((r) => r.name === 'Müller^Zoë'), `names shown: ${rows.map((r) => r.name).join(', ')}`);
  const open = rows.find((r) => r.study === openStudy);
  const transfer = rows.find((r) => r.study === transferStudy);
  if (!check(open && transfer, `the search did not list ${openStudy} and ${transferStudy}`)) {
    throw new Error('studies missing from the search');
  }
  await page.locator(`tr[data-study="${open.study}"]`).click();
  await page.getByTestId('where').waitFor({ timeout: timeoutMs });
  await page.getByTestId('thumbnail').first().waitFor({ timeout: timeoutMs });
  await page.waitForFunction(
    () => [...document.querySelectorAll('[data-testid=thumbnail]')].every((i) => i.complete && i.naturalWidth > 0),
    null,
    { timeout: timeoutMs },
  );
  const thumbs = await page.getByTestId('thumbnail').evaluateAll((imgs) =>
    imgs.map((img) => {
      const c = document.createElement('canvas');
      c.width = img.naturalWidth;
      c.height = img.naturalHeight;
      const g = c.getContext('2d');
      g.drawImage(img, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height).data;
      let sum = 0;
      let sq = 0;
      const levels = new Set();
      const n = d.length / 4;
      for (let i = 0; i < d.length; i += 4) {
        const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
        sum += y;
        sq += y * y;
        levels.add(Math.round(y));
      }
      const mean = sum / n;
      return { width: c.width, height: c.height, variance: sq / n - mean * mean, levels: levels.size };
    }),
  );
  result.thumbnails = thumbs;
  check(thumbs.length > 0, 'no thumbnails');
  for (const t of thumbs) check(t.variance > 100 && t.levels > 32, `a blank thumbnail: ${JSON.stringify(t)}`);
  result.where = await page.getByTestId('where').textContent();
  check(/local PACS: \d+ instances/.test(result.where), `where: ${result.where}`);
  await shot(page, 'studies');

  // ---- 4. transfers ----------------------------------------------------------------------
  await visit('transfers');
  await page.getByTestId('feed').filter({ hasText: 'live' }).waitFor({ timeout: timeoutMs });
  const slow = await new Promise((resolve, reject) => {
    const req = http.get(`${base}/dicomweb/studies/${transfer.study}`, {
      headers: { Accept: 'multipart/related; type="application/dicom"; transfer-syntax=*' },
    }, (res) => {
      res.pause();
      resolve({ res, status: res.statusCode });
    });
    req.on('error', reject);
  });
  check(slow.status === 200, `WADO-RS of the transfer study: ${slow.status}`);
  const row = page.locator(`tr[data-testid=transfer][data-kind=retrieve][data-study="${transfer.study}"][data-state=running]`);
  await row.first().waitFor({ timeout: timeoutMs });
  // Partial progress while the client does not read: the retrieve waits for it.
  await page.waitForFunction((study) => {
    const tr = document.querySelector(`tr[data-testid=transfer][data-kind=retrieve][data-study="${study}"][data-state=running]`);
    return tr && Number(tr.dataset.received) > 0 && Number(tr.dataset.received) < Number(tr.dataset.expected);
  }, transfer.study, { timeout: timeoutMs });
  result.transfer_running = await row.first().evaluate((tr) => ({ ...tr.dataset, text: tr.textContent }));
  await shot(page, 'transfers-running');
  const read = await new Promise((resolve) => {
    let n = 0;
    slow.res.on('data', (c) => { n += c.length; });
    slow.res.on('end', () => resolve(n));
    slow.res.resume();
  });
  result.transfer_bytes_read = read;
  const done = page.locator(`tr[data-testid=transfer][data-kind=retrieve][data-study="${transfer.study}"][data-state=complete]`);
  await done.first().waitFor({ timeout: timeoutMs });
  result.transfer_done = await done.first().evaluate((tr) => ({ ...tr.dataset, text: tr.textContent }));
  check(result.transfer_done.received === result.transfer_done.expected && Number(result.transfer_done.expected) > 0,
    `the transfer did not complete: ${JSON.stringify(result.transfer_done)}`);
  // The same request is a send to the client (WADO-RS), complete with every instance.
  const sent = page.locator(`tr[data-testid=transfer][data-kind=send][data-study="${transfer.study}"][data-state=complete]`);
  await sent.first().waitFor({ timeout: timeoutMs });
  result.send_done = await sent.first().evaluate((tr) => ({ ...tr.dataset, text: tr.textContent }));
  check(result.send_done.received === result.transfer_done.expected && /WADO-RS/.test(result.send_done.text)
    && Number(result.send_done.bytes) > 0, `the WADO-RS send did not complete: ${JSON.stringify(result.send_done)}`);
  await shot(page, 'transfers-complete');

  // The study again, to a client that does not read: its send is cancelled from the page,
  // and the client's body ends broken.
  const slow3 = await new Promise((resolve, reject) => {
    const req = http.get(`${base}/dicomweb/studies/${transfer.study}`, {
      headers: { Accept: 'multipart/related; type="application/dicom"; transfer-syntax=*' },
    }, (res) => {
      res.pause();
      resolve({ res, status: res.statusCode });
    });
    req.on('error', reject);
  });
  check(slow3.status === 200, `WADO-RS from the cache: ${slow3.status}`);
  const sending = page.locator(`tr[data-testid=transfer][data-kind=send][data-study="${transfer.study}"][data-state=running]`);
  await sending.first().waitFor({ timeout: timeoutMs });
  await sending.first().getByTestId('cancel').click();
  const sendCancelled = page.locator(`tr[data-testid=transfer][data-kind=send][data-study="${transfer.study}"][data-state=cancelled]`);
  await sendCancelled.first().waitFor({ timeout: timeoutMs });
  const broken = await new Promise((resolve) => {
    let n = 0;
    let ended = false;
    slow3.res.on('data', (c) => { n += c.length; });
    slow3.res.on('end', () => { ended = true; resolve({ complete: !slow3.res.aborted && slow3.res.complete, bytes: n }); });
    slow3.res.on('error', () => resolve({ complete: false, bytes: n }));
    slow3.res.on('close', () => { if (!ended) resolve({ complete: false, bytes: n }); });
    slow3.res.resume();
  });
  result.send_cancelled = await sendCancelled.first().evaluate((tr) => ({ ...tr.dataset, text: tr.textContent }));
  result.send_cancelled_client = broken;
  check(!broken.complete && broken.bytes < read, `the cancelled send's body ended whole: ${JSON.stringify(broken)} of ${read}`);
  check(Number(result.send_cancelled.received) < Number(result.send_cancelled.expected),
    `the cancelled send ran to its end: ${JSON.stringify(result.send_cancelled)}`);

  // Another slow retrieve, cancelled from the page: the fetch ends, the client's stream with it.
  const slow2 = await new Promise((resolve, reject) => {
    const req = http.get(`${base}/dicomweb/studies/${cancelStudy}`, {
      headers: { Accept: 'multipart/related; type="application/dicom"; transfer-syntax=*' },
    }, (res) => {
      res.pause();
      resolve({ res, status: res.statusCode });
    });
    req.on('error', reject);
  });
  check(slow2.status === 200, `WADO-RS of the study to cancel: ${slow2.status}`);
  const toCancel = page.locator(`tr[data-testid=transfer][data-kind=retrieve][data-study="${cancelStudy}"][data-state=running]`);
  await toCancel.first().waitFor({ timeout: timeoutMs });
  await toCancel.first().getByTestId('cancel').click();
  const cancelled = page.locator(`tr[data-testid=transfer][data-kind=retrieve][data-study="${cancelStudy}"][data-state=cancelled]`);
  await cancelled.first().waitFor({ timeout: timeoutMs });
  result.transfer_cancelled = await cancelled.first().evaluate((tr) => ({ ...tr.dataset, text: tr.textContent }));
  check(Number(result.transfer_cancelled.received) < Number(result.transfer_cancelled.expected),
    `the cancelled transfer ran to its end: ${JSON.stringify(result.transfer_cancelled)}`);
  await shot(page, 'transfers-cancelled');
  slow2.res.on('error', () => {});
  slow2.res.destroy();

  // ---- 5. queues -------------------------------------------------------------------------
  await visit('queues');
  await page.locator('tr[data-testid=forward-job][data-state=failed]').first().waitFor({ timeout: timeoutMs });
  result.failed_jobs = await page.locator('tr[data-testid=forward-job][data-state=failed]').count();
  await shot(page, 'queues-failed');
  await page.getByTestId('requeue-all').click();
  await page.getByTestId('requeue-note').waitFor({ timeout: timeoutMs });
  result.requeue_note = await page.getByTestId('requeue-note').textContent();
  await page.waitForFunction(() => {
    const jobs = [...document.querySelectorAll('tr[data-testid=forward-job]')];
    return jobs.length > 0 && jobs.every((j) => j.dataset.state === 'done');
  }, null, { timeout: timeoutMs });
  result.done_jobs = await page.locator('tr[data-testid=forward-job][data-state=done]').count();
  await shot(page, 'queues-done');

  // Publications (XDS-I): the studies that arrived are published once quiet; at least one is
  // listed complete with the instances its manifest names and the manifest's bytes.
  await visit('transfers');
  await page.getByTestId('kind-publication').click();
  await page.waitForFunction(() => [...document.querySelectorAll('tr[data-testid=transfer][data-kind=publication][data-state=complete]')]
    .some((tr) => Number(tr.dataset.expected) > 0 && tr.dataset.received === tr.dataset.expected && Number(tr.dataset.bytes) > 0),
  null, { timeout: timeoutMs });
  result.publications = await page.locator('tr[data-testid=transfer][data-kind=publication]').evaluateAll((trs) =>
    trs.map((tr) => ({ ...tr.dataset, text: tr.textContent })));
  check(result.publications.every((p) => p.kind === 'publication'), 'the kind filter let other kinds through');
  await shot(page, 'transfers-publications');
  await page.getByTestId('kind-all').click();

  // ---- 6. audit --------------------------------------------------------------------------
  await visit('audit');
  await page.locator('input[name=bsn]').fill(open.patient_id);
  await page.getByRole('button', { name: 'Show' }).click();
  await page.getByTestId('chain').waitFor({ timeout: timeoutMs });
  result.chain = await page.getByTestId('chain').textContent();
  check(/^chain: ok/.test(result.chain), `chain: ${result.chain}`);
  result.audit_records = await page.getByTestId('audit-record').count();
  check(result.audit_records > 0, 'no audit records for the patient the console searched');
  check(await page.getByTestId('audit-trace').count() === result.audit_records, 'the trace id column is missing');
  const csvHref = await page.getByTestId('csv').getAttribute('href');
  const csv = await page.evaluate(async (href) => {
    const r = await fetch(href);
    return { status: r.status, type: r.headers.get('content-type'), chain: r.headers.get('x-audit-chain'), text: await r.text() };
  }, csvHref);
  result.csv = { status: csv.status, type: csv.type, chain: csv.chain, lines: csv.text.split('\r\n').length - 1 };
  check(csv.status === 200 && csv.text.startsWith('seq,time,operation,outcome'), `CSV: ${csv.status} ${csv.text.slice(0, 80)}`);
  check(csv.text.includes('ADMIN'), 'the CSV does not list the console search of the patient');
  await shot(page, 'audit');

  // ---- 7. peers, configuration -----------------------------------------------------------
  await visit('peers');
  await page.getByTestId('peer').first().waitFor({ timeout: timeoutMs });
  result.peers = await page.getByTestId('peer').evaluateAll((trs) => trs.map((t) => ({ ok: t.dataset.ok, text: t.textContent })));
  check(result.peers.some((p) => p.ok === 'true' && /local PACS/.test(p.text)), `peers: ${JSON.stringify(result.peers)}`);
  await shot(page, 'peers');
  await visit('config');
  const config = await page.getByTestId('config').textContent({ timeout: timeoutMs });
  check(config.includes('"ae_title"') && config.includes('"admin_roles"'), 'configuration not shown');
  result.config_chars = config.length;
  await shot(page, 'config');

  // Sign out: the session is gone.
  pageName = 'logout';
  await page.getByTestId('logout').click();
  await page.getByTestId('login-form').waitFor({ timeout: timeoutMs });
  const gone = await page.evaluate(async () => (await fetch('/admin/api/config')).status);
  check(gone === 401, `after sign-out /admin/api/config: ${gone}`);
  result.console_errors = result.console_errors.filter((e) => e.page !== 'logout');
  for (const e of result.console_errors) fail(`console error on ${e.page}: ${e.text}`);
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
