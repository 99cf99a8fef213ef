// Plays a live HLS stream with hls.js in headless Chromium and reports what the player saw.
//
//   node play_hls.mjs PLAYLIST_URL [BUDGET_SECONDS=40] [WANT_SECONDS=5]
//
// The test page and hls.js are served at https://player.test/ (see chromium.mjs), an origin other than
// the stream's, so every playlist and segment request is a cross-origin one and the server's CORS
// headers are exercised too. The page counts as a public site and the stream is on loopback, so
// Chromium's Local Network Access rules apply: an http:// page may not reach loopback at all, and an
// https:// one only with the `local-network-access` permission, which the context grants (as a
// viewer would when a public player page plays from a server on their own network).
// Prints one JSON line:
//   {"advanced": s, "fatal": [...], "errors": [...], "latency": s, ...}
// and exits 0 when video.currentTime advanced by WANT_SECONDS with no fatal error within the budget,
// 1 otherwise (2 on bad usage or when the browser cannot be started).

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch, origin, playerPage, watchdog as startWatchdog } from './chromium.mjs';

const [url, budgetArg = '40', wantArg = '5'] = process.argv.slice(2);
const budget = Number(budgetArg);
const want = Number(wantArg);
if (!url || !(budget > 0) || !(want > 0)) {
  console.error('usage: node play_hls.mjs PLAYLIST_URL [BUDGET_SECONDS=40] [WANT_SECONDS=5]');
  process.exit(2);
}

const here = dirname(fileURLToPath(import.meta.url));
const hlsJs = readFileSync(join(here, 'node_modules', 'hls.js', 'dist', 'hls.min.js'));

const pageHtml = `<!doctype html>
<html><head><meta charset="utf-8"><title>oxcast hls.js check</title></head>
<body>
<video id="video" muted playsinline></video>
<script src="/hls.min.js"></script>
<script>
  const report = { errors: [], fatal: [], events: [] };
  window.report = report;
  const video = document.getElementById('video');
  video.muted = true;
  const describe = (data) => ({
    type: data.type,
    details: data.details,
    fatal: data.fatal,
    reason: data.reason,
    url: data.url || (data.frag && data.frag.url) || (data.context && data.context.url),
    sn: data.frag ? data.frag.sn : undefined,
    response: data.response ? { code: data.response.code, text: data.response.text } : undefined,
    error: data.error ? String(data.error) : undefined,
    buffer: data.buffer,
    mimeType: data.mimeType,
  });
  if (!Hls.isSupported()) {
    report.fatal.push({ details: 'Hls.isSupported() is false (no MediaSource)' });
  } else {
    const hls = new Hls({ lowLatencyMode: false });
    window.hls = hls;
    hls.on(Hls.Events.ERROR, (_event, data) => {
      const entry = describe(data);
      (data.fatal ? report.fatal : report.errors).push(entry);
    });
    hls.on(Hls.Events.MANIFEST_PARSED, (_event, data) => {
      report.events.push({ event: 'manifest', levels: data.levels.map((l) => ({
        codecs: [l.videoCodec, l.audioCodec].filter(Boolean).join(','),
        width: l.width, height: l.height })) });
      video.play().catch((e) => report.errors.push({ details: 'video.play() rejected', error: String(e) }));
    });
    hls.loadSource(${JSON.stringify(url)});
    hls.attachMedia(video);
  }
  video.addEventListener('waiting', () => report.events.push({ event: 'waiting', t: video.currentTime }));
  video.addEventListener('error', () => report.fatal.push({
    details: 'video element error', code: video.error && video.error.code,
    error: video.error && video.error.message }));
</script>
</body></html>
`;

const result = {
  advanced: 0,
  fatal: [],
  errors: [],
  latency: null,
  // Why the run failed (null when it passed): a fatal error, too little playback, or the harness.
  failure: null,
};

const watchdog = startWatchdog('play_hls.mjs', budget, result);

const browser = await launch(result);

let code = 1;
try {
  const { page, pageErrors } = await playerPage(browser, { '/': { contentType: 'text/html; charset=utf-8', body: pageHtml }, '/hls.min.js': { contentType: 'text/javascript', body: hlsJs } });
  await page.goto(`${origin}/`);

  const deadline = Date.now() + budget * 1000;
  let start = null;
  let state = null;
  for (;;) {
    state = await page.evaluate(() => ({
      t: document.getElementById('video').currentTime,
      paused: document.getElementById('video').paused,
      readyState: document.getElementById('video').readyState,
      width: document.getElementById('video').videoWidth,
      height: document.getElementById('video').videoHeight,
      latency: window.hls ? window.hls.latency : null,
      fatal: window.report.fatal.length,
    }));
    // Measure from the first moment the video is really playing: a live stream starts near its
    // edge, not at 0.
    if (start === null && !state.paused && state.readyState >= 3 && state.t > 0) {
      start = state.t;
    }
    if (start !== null) {
      result.advanced = Math.max(result.advanced, state.t - start);
    }
    if (state.fatal > 0 || result.advanced >= want || Date.now() > deadline) {
      break;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  const report = await page.evaluate(() => window.report);
  result.advanced = Math.round(result.advanced * 1000) / 1000;
  result.fatal = report.fatal;
  result.errors = [...report.errors, ...pageErrors];
  result.latency = state.latency === null || state.latency === undefined
    ? null
    : Math.round(state.latency * 1000) / 1000;
  result.start = start;
  result.currentTime = state.t;
  result.video = { width: state.width, height: state.height, readyState: state.readyState, paused: state.paused };
  result.events = report.events;
  result.browser = browser.version();
  result.hls_js = await page.evaluate(() => Hls.version);
  if (result.fatal.length > 0) {
    result.failure = 'hls.js raised a fatal error';
  } else if (result.advanced < want) {
    result.failure = `currentTime advanced ${result.advanced} s, under ${want} s, within ${budget} s`;
  }
  code = result.failure === null ? 0 : 1;
} catch (e) {
  result.failure = `play_hls.mjs failed: ${e && e.stack ? e.stack : e}`;
  code = 1;
} finally {
  await browser.close().catch(() => {});
  clearTimeout(watchdog);
}
console.log(JSON.stringify(result));
process.exit(code);
