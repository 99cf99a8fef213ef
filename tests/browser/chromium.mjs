// Headless Chromium as the player checks use it (play_hls.mjs, play_mp4.mjs): Debian's chromium
// driven by playwright-core, and a test page served by page.route() at https://player.test/, an
// origin other than the media's, so every media request is cross-origin and the server's CORS
// headers are exercised. The page counts as a public site and the media is on loopback, so
// Chromium's Local Network Access rules apply: the context grants `local-network-access`, as a
// viewer would when a public player page plays from a server on their own network.

import { chromium } from 'playwright-core';

export const executablePath = '/usr/bin/chromium';
export const origin = 'https://player.test';

// A hard stop in case Chromium hangs: `result` is printed with the reason and the exit code fails.
export function watchdog(name, budget, result) {
  return setTimeout(() => {
    result.failure = `${name} did not finish within ${budget + 60} s`;
    console.log(JSON.stringify(result));
    process.exit(1);
  }, (budget + 60) * 1000);
}

// The browser; exits 2 (with `result` printed) when it cannot be started.
export async function launch(result) {
  try {
    return await chromium.launch({
      executablePath,
      headless: true,
      args: [
        '--headless',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--autoplay-policy=no-user-gesture-required',
      ],
    });
  } catch (e) {
    result.failure = `cannot launch ${executablePath}: ${e}`;
    console.log(JSON.stringify(result));
    process.exit(2);
  }
}

// A page whose own origin serves `files` ({path: {contentType, body}}, '/' being the page) and
// nothing else; the media's requests go to the server. `pageErrors` collects uncaught exceptions,
// console errors and warnings (Chromium explains refused requests, CORS or local network access,
// only there) and failed requests other than the aborts players make of requests they no longer
// need. Call `page.goto(origin + '/')` once the caller's own listeners are on.
export async function playerPage(browser, files) {
  const context = await browser.newContext({ permissions: ['local-network-access'] });
  const page = await context.newPage();
  await page.route(`${origin}/**`, (route) => {
    const path = new URL(route.request().url()).pathname;
    const file = files[path === '/index.html' ? '/' : path];
    if (file) {
      return route.fulfill({ status: 200, contentType: file.contentType, body: file.body });
    }
    return route.fulfill({ status: 404, body: 'not found' });
  });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push({ details: 'uncaught exception in the page', error: String(e) }));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') {
      pageErrors.push({ details: `console ${m.type()}`, error: m.text() });
    }
  });
  page.on('requestfailed', (r) => {
    const failure = r.failure() ? r.failure().errorText : '';
    if (failure !== 'net::ERR_ABORTED') {
      pageErrors.push({ details: 'request failed', url: r.url(), error: failure });
    }
  });
  return { page, pageErrors };
}
