// Plays a recorded MP4 in a plain <video> element in headless Chromium, seeks to its middle, and
// reports what the player saw.
//
//   node play_mp4.mjs MP4_URL [BUDGET_SECONDS=40]
//
// No player library: the browser's own demuxer reads the file, fetching it with byte ranges, so
// the file's boxes and the server's range responses are what is under test. As in play_hls.mjs the
// page is served by page.route() at https://player.test/, another origin than the file's, and the
// element is `crossOrigin = 'anonymous'`, so the server's CORS headers are needed for it to play.
// The file is on loopback, so the context grants `local-network-access` (see chromium.mjs).
//
// The run: play until currentTime has advanced WANT (1 s), seek to duration / 2, wait for `seeked`,
// then play on until currentTime is WANT past where the seek landed.
// Prints one JSON line:
//   {"duration": s, "before": {"advanced": s}, "seek": {"target": s, "landed": s},
//    "after": {"advanced": s}, "video": {...}, "error": null | {...}, "errors": [...], ...}
// and exits 0 when all of that happened with no media error within the budget, 1 otherwise
// (2 on bad usage or when the browser cannot be started).

import { launch, origin, playerPage, watchdog as startWatchdog } from './chromium.mjs';

const [url, budgetArg = '40'] = process.argv.slice(2);
const budget = Number(budgetArg);
if (!url || !(budget > 0)) {
  console.error('usage: node play_mp4.mjs MP4_URL [BUDGET_SECONDS=40]');
  process.exit(2);
}
// Seconds currentTime must advance, before the seek and again after it.
const want = 1;

// The codecs the recordings carry (H.264 High up to level 3.1, AAC-LC), to tell "this browser
// cannot decode these at all" apart from "it cannot read this file".
const codecs = 'video/mp4; codecs="avc1.64001f, mp4a.40.2"';

const pageHtml = `<!doctype html>
<html><head><meta charset="utf-8"><title>oxcast mp4 check</title></head>
<body>
<video id="video" muted playsinline preload="auto"></video>
<script>
  const report = { events: [], error: null, seeked: null };
  window.report = report;
  const video = document.getElementById('video');
  video.muted = true;
  video.crossOrigin = 'anonymous';
  report.canPlayType = video.canPlayType(${JSON.stringify(codecs)});
  const note = (event) => report.events.push({ event, t: video.currentTime, readyState: video.readyState });
  for (const event of ['loadedmetadata', 'canplay', 'playing', 'waiting', 'stalled', 'seeking', 'ended']) {
    video.addEventListener(event, () => note(event));
  }
  video.addEventListener('seeked', () => {
    note('seeked');
    report.seeked = video.currentTime;
  });
  video.addEventListener('error', () => {
    note('error');
    report.error = {
      code: video.error ? video.error.code : null,
      message: video.error ? video.error.message : null,
      networkState: video.networkState,
    };
  });
  video.src = ${JSON.stringify(url)};
  video.play().catch((e) => report.events.push({ event: 'play() rejected', error: String(e) }));
</script>
</body></html>
`;

const round = (x) => (typeof x === 'number' && Number.isFinite(x) ? Math.round(x * 1000) / 1000 : x);

const result = {
  duration: null,
  before: { start: null, advanced: 0 },
  seek: { target: null, landed: null },
  after: { advanced: 0 },
  video: null,
  error: null,
  errors: [],
  // Why the run failed (null when it passed): a media error, playback or seek that did not
  // happen within the budget, or the harness.
  failure: null,
};

const watchdog = startWatchdog('play_mp4.mjs', budget, result);

const browser = await launch(result);

let code = 1;
try {
  const { page, pageErrors } = await playerPage(browser, { '/': { contentType: 'text/html; charset=utf-8', body: pageHtml } });
  // The media requests, with their ranges and statuses: what the demuxer asked for and got.
  const requests = [];
  page.on('requestfinished', async (r) => {
    if (!r.url().startsWith(origin)) {
      const response = await r.response().catch(() => null);
      requests.push({
        range: (await r.allHeaders().catch(() => ({}))).range || null,
        status: response ? response.status() : null,
        contentRange: response ? (await response.allHeaders().catch(() => ({})))['content-range'] || null : null,
      });
    }
  });
  await page.goto(`${origin}/`);

  const deadline = Date.now() + budget * 1000;
  // before → seeking → after → done
  let phase = 'before';
  let state = null;
  for (;;) {
    state = await page.evaluate(() => {
      const v = document.getElementById('video');
      return {
        t: v.currentTime,
        duration: v.duration,
        paused: v.paused,
        ended: v.ended,
        readyState: v.readyState,
        width: v.videoWidth,
        height: v.videoHeight,
        error: window.report.error,
        seeked: window.report.seeked,
      };
    });
    if (state.error) {
      break;
    }
    if (phase === 'before') {
      // Measured from the first moment the video is really playing.
      if (result.before.start === null && !state.paused && state.readyState >= 3) {
        result.before.start = state.t;
      }
      if (result.before.start !== null) {
        result.before.advanced = Math.max(result.before.advanced, state.t - result.before.start);
      }
      if (result.before.advanced >= want && Number.isFinite(state.duration)) {
        result.seek.target = state.duration / 2;
        result.seek.from = state.t;
        await page.evaluate((target) => {
          window.report.seeked = null;
          document.getElementById('video').currentTime = target;
        }, result.seek.target);
        phase = 'seeking';
      }
    } else if (phase === 'seeking') {
      if (state.seeked !== null) {
        result.seek.landed = state.seeked;
        // A seek does not pause a playing element; this only guards against one that did.
        if (state.paused && !state.ended) {
          await page.evaluate(() => document.getElementById('video').play().catch(() => {}));
        }
        phase = 'after';
      }
    } else if (phase === 'after') {
      result.after.advanced = Math.max(result.after.advanced, state.t - result.seek.landed);
      if (result.after.advanced >= want) {
        phase = 'done';
      }
    }
    if (phase === 'done' || Date.now() > deadline) {
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const report = await page.evaluate(() => window.report);
  result.duration = round(state.duration);
  result.before.start = round(result.before.start);
  result.before.advanced = round(result.before.advanced);
  result.seek.target = round(result.seek.target);
  result.seek.from = round(result.seek.from);
  result.seek.landed = round(result.seek.landed);
  result.after.advanced = round(result.after.advanced);
  result.currentTime = round(state.t);
  result.video = {
    width: state.width,
    height: state.height,
    readyState: state.readyState,
    paused: state.paused,
    ended: state.ended,
  };
  result.error = report.error;
  result.errors = pageErrors;
  result.canPlayType = report.canPlayType;
  result.events = report.events;
  result.requests = requests;
  result.browser = browser.version();
  if (result.error !== null) {
    result.failure = `the video element raised MediaError ${result.error.code}: ${result.error.message}`;
  } else if (phase === 'before') {
    result.failure = `currentTime advanced ${result.before.advanced} s, under ${want} s, within ${budget} s`;
  } else if (phase === 'seeking') {
    result.failure = `no 'seeked' within ${budget} s of the seek to ${result.seek.target} s`;
  } else if (phase === 'after') {
    result.failure = `after the seek currentTime advanced ${result.after.advanced} s, under ${want} s, within ${budget} s`;
  }
  code = result.failure === null ? 0 : 1;
} catch (e) {
  result.failure = `play_mp4.mjs failed: ${e && e.stack ? e.stack : e}`;
  code = 1;
} finally {
  await browser.close().catch(() => {});
  clearTimeout(watchdog);
}
console.log(JSON.stringify(result));
process.exit(code);
