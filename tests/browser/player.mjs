// Opens a stream's viewer page (its `player_uri`) in headless Chromium before the stream is live,
// then, once the test that runs it (tests/e2e/dashboard.rs) starts publishing, watches it start by
// itself, and plays it again inside an <iframe> of a page on another origin.
//
//   node player.mjs PLAYER_URI SCREENSHOT_DIR
//
// Prints {"step": "offline", ...} and waits for a line `go` on stdin (the publish has started);
// then {"step": "playing", "started_sec": s, ...} and {"step": "embedded", ...}, and waits for
// another `go` (the stream is idle) to see the page say {"step": "offline_again"}; ends with a
// report line {"failure": null | "...", ...}; exits 0 when every check passed, 1 otherwise (2 when the
// browser cannot start).

import { join } from 'node:path';
import { launch } from './chromium.mjs';
import { steps } from './steps.mjs';

const [playerUri, shots] = process.argv.slice(2);
if (!shots) {
  console.error('usage: node player.mjs PLAYER_URI SCREENSHOT_DIR');
  process.exit(2);
}
const BUDGET = 90;
/// Seconds of playback (`currentTime` advancing) each player must show.
const WANT_PLAYBACK = 2;
/// A site of its own embedding the page (see chromium.mjs on the origin and local network access).
const EMBEDDER = 'https://embed.test';

const result = { failure: null, failures: [], steps: [], errors: [] };
const { step, fail, goAhead, finish } = steps('player.mjs', BUDGET, result);

function watch(page, where) {
  page.on('pageerror', (e) => result.errors.push({ where, details: 'uncaught exception', error: String(e) }));
  page.on('console', (m) => {
    // 4xx are logged as "Failed to load resource": the playlist is a 404 until the first segment.
    if ((m.type() === 'error' || m.type() === 'warning') && !m.text().startsWith('Failed to load resource')) {
      result.errors.push({ where, details: `console ${m.type()}`, error: m.text() });
    }
  });
  page.on('response', (r) => {
    if (r.status() >= 400 && !(r.status() === 404 && r.url().endsWith('.m3u8'))) {
      result.errors.push({ where, details: `HTTP ${r.status()}`, url: r.url() });
    }
  });
}

/// The player's state in `frame` (a page or an iframe).
function probe(frame) {
  return frame.evaluate(() => {
    const v = document.getElementById('video');
    return {
      t: v.currentTime,
      playing: !v.paused && v.readyState >= 3,
      width: v.videoWidth,
      height: v.videoHeight,
      overlay: !document.getElementById('overlay').hidden,
      state: document.getElementById('state').textContent,
      message: document.getElementById('message').textContent,
    };
  });
}

/// Waits up to `seconds` for `frame` to play WANT_PLAYBACK seconds; returns when it started
/// playing (ms since the epoch) and how far it advanced.
async function playback(frame, seconds) {
  const deadline = Date.now() + seconds * 1000;
  let start = null;
  let startedAt = null;
  let advanced = 0;
  let last = null;
  while (Date.now() < deadline && advanced < WANT_PLAYBACK) {
    last = await probe(frame);
    if (start === null && last.playing && last.t > 0) {
      start = last.t;
      startedAt = Date.now();
    }
    if (start !== null) {
      advanced = last.t - start;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { startedAt, advanced: Math.round(advanced * 1000) / 1000, last };
}

const browser = await launch(result);
let stopped;
try {
  const context = await browser.newContext({ viewport: { width: 960, height: 540 }, permissions: ['local-network-access'] });

  // Before the publish: the page says so.
  const page = await context.newPage();
  watch(page, 'viewer page');
  let navigations = 0;
  page.on('framenavigated', (f) => {
    if (f === page.mainFrame()) {
      navigations += 1;
    }
  });
  await page.goto(playerUri);
  await page.locator('#state', { hasText: 'Offline' }).waitFor({ timeout: 10000 });
  const before = await probe(page);
  if (!before.overlay || before.t !== 0) {
    fail(`before the publish the page shows ${JSON.stringify(before)}`);
  }
  await page.screenshot({ path: join(shots, 'player-offline.png') });
  step('offline', { state: before.state, message: before.message });
  await goAhead('offline');

  // The publish started: the same page plays, without a reload.
  const published = Date.now();
  const live = await playback(page, 40);
  const startedSec = live.startedAt === null ? null : Math.round((live.startedAt - published) / 100) / 10;
  if (live.advanced < WANT_PLAYBACK) {
    fail(`the viewer page's currentTime advanced ${live.advanced} s, under ${WANT_PLAYBACK} s (${JSON.stringify(live.last)})`);
  }
  if (live.last && live.last.overlay) {
    fail(`the "${live.last.state}" notice still covers the video while it plays`);
  }
  await page.screenshot({ path: join(shots, 'player-live.png') });
  step('playing', { started_sec: startedSec, advanced: live.advanced, navigations, video: live.last });

  // The page inside an iframe of another site.
  const host = await context.newPage();
  watch(host, 'embedding page');
  await host.route(`${EMBEDDER}/**`, (route) => route.fulfill({
    status: 200,
    contentType: 'text/html; charset=utf-8',
    body: `<!doctype html><html><head><meta charset="utf-8"><title>A site embedding a stream</title></head>
<body><h1>Our show</h1>
<iframe id="player" src="${playerUri}" width="640" height="360" allow="autoplay; fullscreen; local-network-access"></iframe>
</body></html>`,
  }));
  await host.goto(`${EMBEDDER}/`);
  const frameElement = await host.waitForSelector('#player');
  const frame = await frameElement.contentFrame();
  await frame.waitForSelector('#video', { timeout: 10000 });
  const embedded = await playback(frame, 30);
  if (embedded.advanced < WANT_PLAYBACK) {
    fail(`inside the iframe, currentTime advanced ${embedded.advanced} s, under ${WANT_PLAYBACK} s (${JSON.stringify(embedded.last)})`);
  }
  await host.screenshot({ path: join(shots, 'player-embedded.png') });
  step('embedded', { advanced: embedded.advanced, frame_url: frame.url(), video: embedded.last });
  await goAhead('embedded');

  // The stream went idle: the page says so again, by itself.
  await page.locator('#state', { hasText: 'Offline' }).waitFor({ state: 'visible', timeout: 40000 });
  step('offline_again', { video: await probe(page) });

  if (result.errors.length > 0) {
    fail(`errors in the pages: ${JSON.stringify(result.errors)}`);
  }
  result.browser = browser.version();
} catch (e) {
  stopped = e;
}
await finish(browser, stopped);
