// Drive the prebuilt OHIF viewer in headless Chromium against a beeldbrug gateway.
//
//   node run.mjs --dicomweb http://127.0.0.1:8080/dicomweb [--screenshot out.png|out.jpg]
//                [--timeout-ms 60000] [--serve-only] [--mrn PATIENT_ID]
//                [--bearer-tokens tokens.txt | --bearer-token JWT]
//
// --mrn: the study list is opened filtered by that Patient ID (OHIF's `/?mrn=` work list
// parameter) and compared with QIDO-RS `/studies?PatientID=`: a gateway that asks other
// hospitals asks them by patient.
// --bearer-tokens: a file of bearer tokens (JWTs), one per line; every request to the gateway
// (this script's QIDO-RS and the browser's) carries the next one as `Authorization: Bearer`.
// One per request: beeldbrug spends a JWT's `jti` on its first use (replay check).
// --bearer-token: one token on every request, as a viewer with a login session sends it
// (an issuer marked `reusable = true` at the gateway).
//
// It serves ./ohif-dist (fetched by `npm ci`, see fetch-ohif.mjs) on a free loopback port, with
// ./app-config.js pointed at the gateway, and checks that
//   1. the study list shows as many rows as QIDO-RS /studies returns, and the patient name;
//   2. /viewer?StudyInstanceUIDs=<a CT study> opens, and
//   3. the viewport shows a rendered image (a screenshot of it is not blank).
// The last stdout line is one JSON object: {"ok": bool, "failures": [...], ...} with the
// browser console errors and every failed or >= 400 request to the gateway (request headers,
// response status, headers and body), so a failure says which request OHIF disliked.
// Exit code 0 when all checks pass, 1 when a check fails, 2 when the setup is missing.
import { createServer } from 'node:http';
import { createReadStream, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const distDir = join(here, 'ohif-dist');
const started = Date.now();

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const dicomweb = (arg('dicomweb', process.env.DICOMWEB_ROOT) || '').replace(/\/+$/, '');
const screenshotPath = arg('screenshot', '');
const timeoutMs = Number(arg('timeout-ms', '60000'));
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const serveOnly = process.argv.includes('--serve-only');
const mrn = arg('mrn', '');
const tokensFile = arg('bearer-tokens', '');
const sessionToken = arg('bearer-token', '');

const lowercase = (headers) => Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
function setupError(msg) {
  console.error(`ohif test setup: ${msg}`);
  console.log(JSON.stringify({ ok: false, setup_error: msg, failures: [msg] }));
  process.exit(2);
}
if (!dicomweb) setupError('pass --dicomweb http://HOST:PORT/dicomweb');
if (!existsSync(join(distDir, 'index.html'))) {
  setupError(`${distDir}/index.html is missing: run \`npm ci\` in tests/ohif (it fetches the OHIF dist)`);
}
let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  setupError(`playwright-core is not installed: run \`npm ci\` in tests/ohif (${e.message})`);
}
if (!serveOnly && !existsSync(chromiumPath)) {
  setupError(`${chromiumPath} is missing: run \`apt-get install -y chromium\` (or set CHROMIUM)`);
}

// Requests to the gateway that may fail without failing the run (reported in
// `tolerated_requests`): none today. Add an entry, with why, only for a known gap that OHIF
// works around, and delete it once the gateway answers, so that a regression fails again.
const KNOWN_GAPS = [];

// ---- bearer tokens, one per request to the gateway ---------------------------------------
const tokens = tokensFile ? readFileSync(tokensFile, 'utf8').split('\n').map((t) => t.trim()).filter(Boolean) : [];
let tokensUsed = 0;
// The next token's Authorization header, or none (no tokens given, or all used: the gateway
// then answers 401, and the request is reported as failed).
function authorization() {
  if (sessionToken) {
    tokensUsed++;
    return { Authorization: `Bearer ${sessionToken}` };
  }
  if (!tokensFile || tokensUsed >= tokens.length) return {};
  return { Authorization: `Bearer ${tokens[tokensUsed++]}` };
}
if (tokensFile && !tokens.length) setupError(`${tokensFile} holds no bearer tokens`);

// ---- QIDO-RS directly: what the study list must show ------------------------------------
async function qido(path) {
  const res = await fetch(`${dicomweb}${path}`, { headers: { Accept: 'application/dicom+json', ...authorization() } });
  if (res.status === 204) return [];
  if (!res.ok) throw new Error(`GET ${dicomweb}${path}: ${res.status} ${await res.text()}`);
  return res.json();
}
const val = (ds, tag) => ds?.[tag]?.Value?.[0];
const byPatient = mrn ? `PatientID=${encodeURIComponent(mrn)}&` : '';
const studies = await qido(`/studies?${byPatient}includefield=00080061&limit=1000`);
const ctStudy = studies.find((s) => (s['00080061']?.Value || []).includes('CT')) || studies[0];
if (!ctStudy) setupError(`QIDO-RS ${dicomweb}/studies returned no studies: load data first`);
const ctStudyUid = val(ctStudy, '0020000D');
const patientName = val(ctStudy, '00100010')?.Alphabetic || '';

// ---- static server for the OHIF dist, with our app-config.js -----------------------------
const types = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.css': 'text/css', '.json': 'application/json', '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml', '.png': 'image/png', '.ico': 'image/x-icon', '.woff2': 'font/woff2',
  '.woff': 'font/woff', '.ttf': 'font/ttf', '.map': 'application/json', '.txt': 'text/plain',
};
const appConfig = readFileSync(join(here, 'app-config.js'), 'utf8').replaceAll('__DICOMWEB_ROOT__', dicomweb);
const server = createServer((req, res) => {
  const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  if (path === '/app-config.js') {
    res.writeHead(200, { 'Content-Type': 'text/javascript', 'Cache-Control': 'no-store' });
    return res.end(appConfig);
  }
  let file = normalize(join(distDir, path));
  if (!file.startsWith(distDir)) {
    res.writeHead(403);
    return res.end();
  }
  if (!existsSync(file) || statSync(file).isDirectory()) {
    if (extname(path)) {
      res.writeHead(404);
      return res.end();
    }
    file = join(distDir, 'index.html'); // single-page app routes: /viewer, /
  }
  res.writeHead(200, { 'Content-Type': types[extname(file)] || 'application/octet-stream' });
  createReadStream(file).pipe(res);
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const appUrl = `http://127.0.0.1:${server.address().port}`;
if (serveOnly) {
  console.log(`OHIF on ${appUrl}${mrn ? `/?mrn=${mrn}` : ''} against ${dicomweb}; CT study ${ctStudyUid}`);
  await new Promise(() => {});
}

// ---- the browser --------------------------------------------------------------------------
const userDataDir = mkdtempSync(join(tmpdir(), 'ohif-chromium-'));
const result = {
  ok: false,
  app_url: appUrl,
  dicomweb,
  qido_studies: studies.length,
  ct_study: ctStudyUid,
  patient_name: patientName,
  failures: [],
  console: [],
  page_errors: [],
  failed_requests: [],
  gateway_requests: 0,
  mrn,
};
const fail = (msg) => result.failures.push(msg);
const pending = [];

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: chromiumPath,
  headless: true,
  viewport: { width: 1400, height: 900 },
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    // WebGL through SwiftShader (software), so cornerstone renders without a GPU.
    '--use-angle=swiftshader', '--enable-unsafe-swiftshader',
  ],
});
try {
  const page = context.pages()[0] || (await context.newPage());
  // the first-visit onboarding tour would cover the viewport
  await context.addInitScript(() => localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour'])));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') {
      const loc = m.location();
      result.console.push(`${m.type()}: ${m.text().slice(0, 600)}${loc?.url ? ` (${loc.url.split('/').pop()}:${loc.lineNumber})` : ''}`);
    }
  });
  page.on('pageerror', (e) => result.page_errors.push(String(e.stack || e).slice(0, 1000)));
  const toGateway = (url) => url.startsWith(dicomweb);
  if (tokensFile || sessionToken) {
    // OHIF sends no token of its own here: each request to the gateway gets the next one.
    await context.route(
      (url) => toGateway(url.href),
      (route) => route.continue({ headers: { ...route.request().headers(), ...lowercase(authorization()) } }),
    );
  }
  const kinds = new Map();
  page.on('requestfinished', async (r) => {
    if (!toGateway(r.url())) return;
    result.gateway_requests++;
    // one example per kind of request (resource + Accept), to show what OHIF asks for
    const path = new URL(r.url()).pathname.slice(new URL(dicomweb).pathname.length);
    const resource = path.replace(/\/[0-9.]+(?=\/|$)/g, '/{uid}').replace(/frames\/\{uid\}/, 'frames/{n}');
    const accept = r.headers()['accept'] || '';
    const key = `${r.method()} ${resource} ${accept}`;
    if (kinds.has(key)) return kinds.get(key).count++;
    const entry = { method: r.method(), resource, accept, count: 1, example: r.url() };
    kinds.set(key, entry);
    const res = await r.response();
    entry.status = res?.status();
    entry.content_type = res?.headers()['content-type'];
  });
  page.on('requestfailed', (r) => {
    if (!toGateway(r.url()) && !r.url().startsWith(appUrl)) return;
    pending.push(
      r.allHeaders().then((h) => {
        result.failed_requests.push({ method: r.method(), url: r.url(), request_headers: h, error: r.failure()?.errorText });
      }),
    );
  });
  page.on('response', (res) => {
    if (res.status() < 400 || (!toGateway(res.url()) && !res.url().startsWith(appUrl))) return;
    pending.push(
      (async () => {
        let body = '';
        try {
          body = (await res.text()).slice(0, 800);
        } catch {}
        result.failed_requests.push({
          method: res.request().method(),
          url: res.url(),
          request_headers: await res.request().allHeaders(),
          status: res.status(),
          response_headers: await res.allHeaders(),
          body,
        });
      })(),
    );
  });

  // 1. the study list: one row per study, recognised by its accession number
  await page.goto(`${appUrl}/${mrn ? `?mrn=${encodeURIComponent(mrn)}` : ''}`, { waitUntil: 'domcontentloaded' });
  const accessions = studies.map((s) => val(s, '00080050')).filter(Boolean);
  const listedRows = () =>
    page.evaluate(
      (acc) => [...document.querySelectorAll('table tbody tr')].map((r) => r.innerText).filter((t) => acc.some((a) => t.includes(a))),
      accessions,
    );
  try {
    await page.waitForFunction(
      (acc) => [...document.querySelectorAll('table tbody tr')].filter((r) => acc.some((a) => r.innerText.includes(a))).length >= acc.length,
      accessions,
      { timeout: timeoutMs },
    );
  } catch {
    // fall through: count what is there
  }
  const rows = await listedRows();
  const listText = await page.evaluate(() => document.body.innerText);
  result.study_list_rows = rows.length;
  result.study_list_text = listText.slice(0, 1500);
  if (accessions.length !== studies.length) fail(`QIDO-RS gave ${studies.length} studies but ${accessions.length} accession numbers`);
  if (rows.length !== studies.length) {
    fail(`study list shows ${rows.length} study rows, QIDO-RS /studies returns ${studies.length}`);
  }
  const missing = accessions.filter((a) => !rows.some((r) => r.includes(a)));
  if (missing.length) fail(`study list lacks the studies with accession numbers ${missing.join(', ')}`);
  // OHIF shows a person name as "Family, Given"
  const [family, given] = patientName.split('^');
  result.patient_name_shown = listText.includes(family) && (!given || listText.includes(given));
  if (!result.patient_name_shown) fail(`study list does not show patient name ${patientName}`);
  result.study_description_shown = listText.includes(val(ctStudy, '00081030') || '\u0000');

  // 1b. selecting the CT study in the list previews its series, with a thumbnail. The
  // series are asked of QIDO-RS only after OHIF asked: OHIF's own series search is the first
  // (a gateway may fetch a study held elsewhere for it).
  let seriesDescriptions = [];
  try {
    await page.getByText(val(ctStudy, '00080050'), { exact: true }).first().click({ timeout: 5000 });
    await page.waitForFunction(
      () => [...document.images].some((i) => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0),
      null,
      { timeout: timeoutMs },
    );
    const ctSeries = await qido(`/studies/${ctStudyUid}/series`);
    seriesDescriptions = ctSeries.map((se) => val(se, '0008103E')).filter(Boolean);
    result.qido_series = ctSeries.length;
    if (!ctSeries.length) fail(`QIDO-RS ${dicomweb}/studies/${ctStudyUid}/series returned no series`);
    await page.waitForFunction(
      (descs) => descs.every((d) => document.body.innerText.includes(d)),
      seriesDescriptions,
      { timeout: timeoutMs },
    );
    result.preview_thumbnails = await page.evaluate(
      () => [...document.images].filter((i) => i.src.startsWith('blob:') && i.naturalWidth > 0).length,
    );
  } catch (e) {
    fail(`study list preview of ${ctStudyUid} does not show series ${seriesDescriptions.join(', ')} with a thumbnail: ${String(e).split('\n')[0]}`);
  }
  result.t_study_list_ms = Date.now() - started;

  // 2. the viewer with the CT study
  await page.goto(`${appUrl}/viewer?StudyInstanceUIDs=${ctStudyUid}`, { waitUntil: 'domcontentloaded' });
  const viewportSel = '[data-cy="viewport-pane"]';
  let hasCanvas = true;
  try {
    await page.waitForSelector(`${viewportSel} canvas`, { timeout: timeoutMs });
  } catch {
    hasCanvas = false;
    fail(`viewer: no viewport canvas within ${timeoutMs} ms`);
  }

  // 3. the viewport renders an image: poll screenshots until one is not blank
  const stats = await context.newPage();
  await stats.setContent('<html><body></body></html>');
  const measure = (b64) =>
    stats.evaluate(async (data) => {
      const img = new Image();
      img.src = `data:image/png;base64,${data}`;
      await img.decode();
      const c = document.createElement('canvas');
      c.width = img.width;
      c.height = img.height;
      const g = c.getContext('2d');
      g.drawImage(img, 0, 0);
      const px = g.getImageData(0, 0, c.width, c.height).data;
      let n = 0, sum = 0, sq = 0;
      const levels = new Set();
      for (let i = 0; i < px.length; i += 4) {
        const y = 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
        n++;
        sum += y;
        sq += y * y;
        levels.add(Math.round(y));
      }
      const mean = sum / n;
      return { width: c.width, height: c.height, mean, variance: sq / n - mean * mean, levels: levels.size };
    }, b64);
  let shot = null;
  let image = null;
  const deadline = Date.now() + timeoutMs;
  while (hasCanvas) {
    const vp = page.locator(viewportSel).first();
    try {
      // the image canvas only: overlays (text, orientation markers) would add variance of their own
      shot = await vp.locator('canvas').first().screenshot({ timeout: 5000 });
      image = await measure(shot.toString('base64'));
    } catch (e) {
      image = { error: String(e).slice(0, 300) };
    }
    if (image.variance > 100 && image.levels > 32) break;
    if (Date.now() > deadline) break;
    await page.waitForTimeout(500);
  }
  result.viewport_image = image;
  result.t_viewer_ms = Date.now() - started;
  result.viewport_overlay_text = await page
    .locator(viewportSel)
    .first()
    .innerText({ timeout: 1000 })
    .catch(() => '');
  if (!image || !(image.variance > 100 && image.levels > 32)) {
    fail(`viewport image looks blank: ${JSON.stringify(image)}`);
  }
  result.webgl = await page.evaluate(() => !!document.createElement('canvas').getContext('webgl2'));
  if (screenshotPath) {
    const jpeg = /\.jpe?g$/i.test(screenshotPath);
    await page.screenshot({ path: screenshotPath, type: jpeg ? 'jpeg' : 'png', quality: jpeg ? 70 : undefined });
  }
  await Promise.allSettled(pending);
  result.gateway_request_kinds = [...kinds.values()];
  const known = (r) => KNOWN_GAPS.find((k) => k.method === r.method && k.path.test(new URL(r.url).pathname.slice(new URL(dicomweb).pathname.length)));
  result.tolerated_requests = result.failed_requests
    .filter((r) => toGateway(r.url) && known(r))
    .map((r) => ({ url: r.url, status: r.status, error: r.error, why: known(r).why }));
  const gatewayFailures = result.failed_requests.filter((r) => toGateway(r.url) && !known(r));
  if (gatewayFailures.length) {
    fail(`${gatewayFailures.length} request(s) to the gateway failed: ${gatewayFailures.map((r) => `${r.method} ${r.url} -> ${r.status || r.error}`).join('; ')}`);
  }
} catch (e) {
  fail(`unexpected: ${String(e.stack || e)}`);
} finally {
  await Promise.allSettled(pending);
  await context.close().catch(() => {});
  server.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
result.bearer_tokens_used = tokensUsed;
result.ok = result.failures.length === 0;
result.t_total_ms = Date.now() - started;
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
