// The console's transfers page with forwards and publications (issue 17), in headless Chromium.
//
//   node tests/console/forwards.mjs --base http://127.0.0.1:PORT --admin-token JWT
//        --studies UID,UID --out DIR [--timeout-ms 60000]
//
// The gateway (tests/console_ui.rs, the second test) received two studies by STOW-RS while
// its PACS (a DCMTK storescp that sleeps during each C-STORE) was down: their forward jobs
// failed, and the XDS-I publisher published both. The script checks, on the transfers page fed
// by the server-sent events:
//   1. both studies' publication attempts are listed, one row each, ended (this PACS answers
//      no C-FIND, so in gateway mode they end incomplete with why), and the failed forward
//      attempts incomplete with the PACS's error;
//   2. after "re-queue all" on the queues page, a forward is running with partial progress
//      (instances and bytes of the expected, a rate);
//   3. that forward is cancelled from the page (it ends `cancelled`, part sent), and the
//      other study's forward runs to `complete` with every instance and byte;
//   4. the kind filter shows forwards only; no console errors.
// Screenshots go to --out. The last stdout line is one JSON object: {"ok": bool, "failures": [...], ...}.
import { arg, finish, open, signIn } from './harness.mjs';

const started = Date.now();
const studies = (arg('studies', '') || '').split(',').filter(Boolean);
const { base, adminToken, timeoutMs, browser, result, fail, check, shot, rowsOf } = await open(
  studies.length === 2,
  'pass --base, --admin-token and --studies A,B',
);

try {
  const { context, page } = await signIn(browser, result, base, adminToken);
  await page.getByTestId('nav-transfers').click();
  await page.getByTestId('page-transfers').waitFor({ timeout: timeoutMs });
  await page.getByTestId('feed').filter({ hasText: 'live' }).waitFor({ timeout: timeoutMs });

  // ---- 1. the publication attempts and the failed forward attempts ------------------------
  // In gateway mode a manifest names what the PACS holds too, so the publisher asks the PACS
  // (C-FIND); this PACS (storescp) answers none: each attempt ends incomplete with why, one
  // row per study however often it is tried.
  for (const study of studies) {
    await page
      .locator(`tr[data-testid=transfer][data-kind=publication][data-study="${study}"]:not([data-state=running])`)
      .first()
      .waitFor({ timeout: timeoutMs });
  }
  result.publications = await rowsOf(page, 'tr[data-testid=transfer][data-kind=publication]');
  for (const study of studies) {
    const rows = result.publications.filter((p) => p.study === study && p.state !== 'running');
    check(rows.length === 1, `publication rows of ${study}: ${JSON.stringify(rows)}`);
    check(rows.every((p) => p.state === 'complete' || (p.state === 'incomplete' && p.detail)),
      `a publication ended without saying why: ${JSON.stringify(rows)}`);
  }
  result.failed_forwards = await rowsOf(page, 'tr[data-testid=transfer][data-kind=forward][data-state=incomplete]');
  check(result.failed_forwards.length >= 2, `failed forward attempts listed: ${result.failed_forwards.length}`);

  // ---- 2. re-queue: a forward runs ---------------------------------------------------------
  await page.getByTestId('nav-queues').click();
  await page.getByTestId('page-queues').waitFor({ timeout: timeoutMs });
  await page.locator('tr[data-testid=forward-job][data-state=failed]').first().waitFor({ timeout: timeoutMs });
  await page.getByTestId('requeue-all').click();
  await page.getByTestId('requeue-note').waitFor({ timeout: timeoutMs });
  await page.getByTestId('nav-transfers').click();
  await page.getByTestId('feed').filter({ hasText: 'live' }).waitFor({ timeout: timeoutMs });
  const running = 'tr[data-testid=transfer][data-kind=forward][data-state=running]';
  await page.waitForFunction((sel) => {
    const tr = document.querySelector(sel);
    return tr && Number(tr.dataset.received) > 0 && Number(tr.dataset.received) < Number(tr.dataset.expected);
  }, running, { timeout: timeoutMs });
  const [first] = await rowsOf(page, running);
  result.forward_running = first;
  check(studies.includes(first.study), `a forward of an unknown study: ${first.study}`);
  check(Number(first.bytes) > 0 && /of /.test(first.text) && /\/s/.test(first.text),
    `the running forward shows no bytes of the expected or rate: ${first.text}`);
  await shot(page, 'transfers-forward-running');

  // ---- 3. cancel it; the other one completes ----------------------------------------------
  await page.locator(`${running}[data-id="${first.id}"]`).getByTestId('cancel').click();
  const cancelled = page.locator(`tr[data-testid=transfer][data-id="${first.id}"][data-state=cancelled]`);
  await cancelled.waitFor({ timeout: timeoutMs });
  result.forward_cancelled = (await rowsOf(page, `tr[data-testid=transfer][data-id="${first.id}"]`))[0];
  check(Number(result.forward_cancelled.received) < Number(result.forward_cancelled.expected),
    `the cancelled forward ran to its end: ${JSON.stringify(result.forward_cancelled)}`);
  const other = studies.find((s) => s !== first.study);
  const done = `tr[data-testid=transfer][data-kind=forward][data-study="${other}"][data-state=complete]`;
  await page.locator(done).first().waitFor({ timeout: timeoutMs });
  result.forward_complete = (await rowsOf(page, done))[0];
  check(result.forward_complete.received === result.forward_complete.expected
    && Number(result.forward_complete.expected) > 0 && Number(result.forward_complete.bytes) > 0,
  `the other forward did not complete: ${JSON.stringify(result.forward_complete)}`);
  result.cancelled_study = first.study;
  result.completed_study = other;
  await shot(page, 'transfers-forwards');

  // ---- 4. the kind filter ------------------------------------------------------------------
  await page.getByTestId('kind-forward').click();
  const kinds = await rowsOf(page, 'tr[data-testid=transfer]');
  check(kinds.length > 0 && kinds.every((t) => t.kind === 'forward'), `filter forwards: ${kinds.map((t) => t.kind)}`);
  await page.getByTestId('kind-all').click();
  for (const e of result.console_errors) fail(`console error: ${e}`);
  await context.close();
} catch (e) {
  fail(`${e.name}: ${e.message}`);
}
await finish(browser, result, started);
