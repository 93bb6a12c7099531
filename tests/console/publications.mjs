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
import { arg, finish, open, signIn } from './harness.mjs';

const started = Date.now();
const study = arg('study', '');
const { base, adminToken, timeoutMs, browser, result, fail, check, shot, rowsOf } = await open(
  study,
  'pass --base, --admin-token and --study',
);

try {
  const { context, page } = await signIn(browser, result, base, adminToken);
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
}
await finish(browser, result, started);
