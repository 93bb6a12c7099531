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
import { arg, finish, open, signIn } from './harness.mjs';

const started = Date.now();
const cancelStudy = arg('cancel-study', '');
const completeStudy = arg('complete-study', '');
const { base, adminToken, timeoutMs, browser, result, fail, check, shot, rowsOf } = await open(
  cancelStudy && completeStudy,
  'pass --base, --admin-token, --cancel-study and --complete-study',
);

try {
  const { context, page } = await signIn(browser, result, base, adminToken);
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
}
await finish(browser, result, started);
