// Drives the dashboard (served by Oxcast at `/`) in headless Chromium as an operator would, step by
// step with the test that runs it (tests/e2e/dashboard.rs), which publishes and checks the server.
//
//   node dashboard.mjs BASE_URL API_KEY API_SECRET DESTINATION_URL DESTINATION_KEY SCREENSHOT_DIR
//
// Prints one JSON line per step, {"step": name, ...}; after the steps `created` (with the OBS
// settings the page shows), `relaying`, `output_removed` and `kicked` it waits for a line `go` on
// stdin, the test's go-ahead. Ends with a report line {"failure": null | "...", "failures": [...], ...} and
// exits 0 when every check passed, 1 otherwise (2 on bad usage or when the browser cannot start).
// Screenshots: SCREENSHOT_DIR/dashboard-1280x800.png (light) and dashboard-390x844.png (dark).

import { join } from 'node:path';
import { launch } from './chromium.mjs';
import { steps } from './steps.mjs';

const [base, key, secret, destination, destinationKey, shots] = process.argv.slice(2);
if (!shots) {
  console.error('usage: node dashboard.mjs BASE_URL API_KEY API_SECRET DESTINATION_URL DESTINATION_KEY SCREENSHOT_DIR');
  process.exit(2);
}
/// Seconds the whole run may take, the test's waits included.
const BUDGET = 80;
/// Seconds of preview playback (`currentTime` advancing) the page must show.
const WANT_PLAYBACK = 3;
const NAME = 'Studio A';
const RENAMED = 'Studio A — main stage';

const result = { failure: null, failures: [], steps: [], errors: [], challenges: [], screenshots: [] };
const { step, fail, goAhead, finish } = steps('dashboard.mjs', BUDGET, result);

/// Polls `probe` (in Node) until it returns a truthy value or `seconds` pass; returns the last value.
async function until(seconds, probe) {
  const deadline = Date.now() + seconds * 1000;
  let value;
  for (;;) {
    value = await probe();
    if (value || Date.now() > deadline) {
      return value;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

const browser = await launch(result);
let signedIn = false;
let stopped;
try {
  const context = await browser.newContext({
    viewport: { width: 1280, height: 800 },
    colorScheme: 'light',
    permissions: ['clipboard-read', 'clipboard-write'],
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => result.errors.push({ details: 'uncaught exception in the page', error: String(e) }));
  // Chromium logs every 4xx as "Failed to load resource": those are judged by their responses below.
  page.on('console', (m) => {
    if ((m.type() === 'error' || m.type() === 'warning') && !m.text().startsWith('Failed to load resource')) {
      result.errors.push({ details: `console ${m.type()}`, error: m.text() });
    }
  });
  page.on('requestfailed', (r) => {
    const failure = r.failure() ? r.failure().errorText : '';
    if (failure !== 'net::ERR_ABORTED') {
      result.errors.push({ details: 'request failed', url: r.url(), error: failure });
    }
  });
  // A 401 with a Basic challenge would make a browser ask for credentials in a dialog of its own.
  page.on('response', (r) => {
    if (r.url().includes('/v2/') && r.headers()['www-authenticate']) {
      result.challenges.push({ url: r.url(), status: r.status(), header: r.headers()['www-authenticate'] });
    }
    // Expected: the refused sign-in (401), and the preview asking for the playlist before the
    // first segment is out (404).
    const expected = (r.status() === 401 && !signedIn) || (r.status() === 404 && r.url().endsWith('.m3u8'));
    if (r.status() >= 400 && !expected) {
      result.errors.push({ details: `HTTP ${r.status()}`, url: r.url() });
    }
  });
  page.on('dialog', (d) => {
    fail(`the page opened a browser dialog: ${d.message()}`);
    d.dismiss().catch(() => {});
  });

  // Signing in: nothing but the form before, a clear refusal of a wrong secret.
  await page.goto(`${base}/`);
  await page.locator('#login-form').waitFor({ state: 'visible', timeout: 10000 });
  if (await page.locator('#app-view').isVisible()) {
    fail('the streams show before signing in');
  }
  await page.fill('#login-key', key);
  await page.fill('#login-secret', `${secret}-wrong`);
  await page.click('#login-submit');
  await page.locator('#login-error').waitFor({ state: 'visible', timeout: 10000 });
  const refusal = await page.locator('#login-error').textContent();
  if (!/not accepted/.test(refusal)) {
    fail(`a wrong secret is refused with "${refusal}"`);
  }
  await page.fill('#login-secret', secret);
  await page.click('#login-submit');
  await page.locator('#app-view').waitFor({ state: 'visible', timeout: 10000 });
  await page.locator('#list-empty').waitFor({ state: 'visible', timeout: 10000 });
  signedIn = true;
  step('signed_in', { refusal });

  // A new stream, renamed, and its OBS settings.
  await page.click('#new-stream');
  await page.fill('#dialog-input', NAME);
  await page.click('#dialog-ok');
  await page.locator('#stream-name', { hasText: NAME }).waitFor({ timeout: 10000 });
  await page.click('#rename');
  await page.fill('#dialog-input', RENAMED);
  await page.click('#dialog-ok');
  await page.locator('#stream-name', { hasText: RENAMED }).waitFor({ timeout: 10000 });
  await page.locator('#stream-list .item-name', { hasText: RENAMED }).waitFor({ timeout: 10000 });
  const masked = await page.getAttribute('#obs-key', 'type');
  await page.click('#reveal-key');
  const shown = await page.getAttribute('#obs-key', 'type');
  if (masked !== 'password' || shown !== 'text') {
    fail(`the stream key is masked (${masked}) until shown (${shown})`);
  }
  const server = await page.inputValue('#obs-server');
  const streamKey = await page.inputValue('#obs-key');
  await page.click('#reveal-key');
  await page.click('#copy-key');
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  if (copied !== streamKey) {
    fail(`the stream key's copy button copied "${copied}"`);
  }
  const id = await page.getAttribute('#detail .detail-inner', 'data-id');
  const playerUri = await page.getAttribute('#player-link', 'href');
  step('created', { id, name: await page.textContent('#stream-name'), server, stream_key: streamKey, player_uri: playerUri });
  await goAhead('created');

  // Live: the preview plays and the figures show the encoder's picture.
  let start = null;
  let advanced = 0;
  let resolution = null;
  await until(45, async () => {
    const s = await page.evaluate(() => {
      const v = document.getElementById('preview');
      return {
        t: v ? v.currentTime : 0,
        playing: v ? !v.paused && v.readyState >= 3 : false,
        resolution: document.querySelector('[data-stat="resolution"] .stat-value').textContent,
      };
    });
    if (start === null && s.playing && s.t > 0) {
      start = s.t;
    }
    if (start !== null) {
      advanced = Math.max(advanced, s.t - start);
    }
    resolution = s.resolution;
    return advanced >= WANT_PLAYBACK && /1280\s*[×x]\s*720/.test(resolution);
  });
  const badge = await page.textContent('#stream-status');
  const video = await page.evaluate(() => {
    const v = document.getElementById('preview');
    return { width: v.videoWidth, height: v.videoHeight };
  });
  if (advanced < WANT_PLAYBACK) {
    fail(`the preview's currentTime advanced ${advanced.toFixed(2)} s, under ${WANT_PLAYBACK} s`);
  }
  if (!/1280\s*[×x]\s*720/.test(resolution)) {
    fail(`the stats show the resolution "${resolution}", not 1280×720`);
  }
  if (!/live/i.test(badge)) {
    fail(`the stream's badge says "${badge}" while it is live`);
  }
  step('live', { advanced: Math.round(advanced * 1000) / 1000, resolution, badge, video });

  // A simulcast output added in the page, then its status as the page shows it.
  await page.fill('#simulcast-uri', destination);
  await page.fill('#simulcast-key', destinationKey);
  await page.fill('#simulcast-name', 'Test destination');
  await page.click('#add-simulcast button[type="submit"]');
  const simulcast = page.locator('#outputs li[data-type="simulcast"]');
  await simulcast.waitFor({ timeout: 10000 }).catch(async (e) => {
    const said = await page.locator('#add-simulcast .form-error').textContent();
    throw new Error(`no simulcast output in the page (the form says "${said}"): ${e.message}`);
  });
  const relayLive = await until(30, async () => /live/i.test(await simulcast.locator('.badge').textContent()));
  const relayStatus = await simulcast.locator('.badge').textContent();
  if (!relayLive) {
    fail(`the simulcast output's badge says "${relayStatus}", not live`);
  }
  step('relaying', { status: relayStatus, facts: await simulcast.locator('.output-facts').textContent() });
  await goAhead('relaying');

  // The sparkline has a few samples by now; then the two screenshots.
  await until(10, async () => (await page.getAttribute('.spark-line', 'd') || '').split('L').length >= 3);
  const sparkline = await page.getAttribute('.spark-line', 'd');
  if (!sparkline) {
    fail('the bitrate sparkline is empty while live');
  }
  await page.evaluate(() => window.scrollTo(0, 0));
  await until(10, async () => (await page.locator('.toast').count()) === 0);
  const desktop = join(shots, 'dashboard-1280x800.png');
  await page.screenshot({ path: desktop });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.waitForTimeout(500);
  const phone = join(shots, 'dashboard-390x844.png');
  await page.screenshot({ path: phone });
  const phoneFull = join(shots, 'dashboard-390x844-full.png');
  await page.screenshot({ path: phoneFull, fullPage: true });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 0) {
    fail(`at 390 px the page is ${overflow} px wider than the screen`);
  }
  result.screenshots.push(desktop, phone, phoneFull);
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.emulateMedia({ colorScheme: 'light' });

  // Removing the output, kicking the publisher, then deleting the stream.
  await simulcast.locator('button', { hasText: 'Remove' }).click();
  await page.click('#dialog-ok');
  await simulcast.waitFor({ state: 'detached', timeout: 10000 });
  step('output_removed');
  await goAhead('output_removed');
  await page.click('#kick');
  await page.locator('#publisher', { hasText: 'waiting for the encoder' }).waitFor({ timeout: 15000 });
  step('kicked', { publisher: await page.textContent('#publisher') });
  await goAhead('kicked');
  await page.click('#delete');
  await page.click('#dialog-ok');
  await page.locator('#list-empty').waitFor({ state: 'visible', timeout: 10000 });
  await page.locator('#detail-empty').waitFor({ state: 'visible', timeout: 10000 });
  step('deleted', { streams: await page.locator('#stream-list li').count() });

  if (result.challenges.length > 0) {
    fail('an API answer to the page carried WWW-Authenticate (a browser would pop up its own sign-in dialog)');
  }
  if (result.errors.length > 0) {
    fail(`errors in the page: ${JSON.stringify(result.errors)}`);
  }
  result.browser = browser.version();
} catch (e) {
  stopped = e;
}
await finish(browser, stopped);
