// What the browser checks that a Rust test drives step by step share (dashboard.mjs, player.mjs):
// one JSON line per step on stdout, a line `go` on stdin from the test before going on, failures
// gathered rather than thrown, and a last report line {"failure": null | "...", ...} with the exit
// code (0 when every check passed, 1 otherwise).

import { createInterface } from 'node:readline';
import { watchdog } from './chromium.mjs';

export function steps(name, budget, result) {
  const timer = watchdog(name, budget, result);
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  return {
    step(step, details = {}) {
      const entry = { step, ...details };
      result.steps.push(entry);
      console.log(JSON.stringify(entry));
    },
    fail(message) {
      result.failures.push(message);
    },
    // Waits for the test's go-ahead after the step `after`.
    async goAhead(after) {
      const line = await lines.next();
      if (line.done || line.value.trim() !== 'go') {
        throw new Error(`the test did not say go after ${after}`);
      }
    },
    // Closes the browser, prints the report and exits; `error` is what stopped the run, if anything.
    async finish(browser, error) {
      if (error !== undefined) {
        result.failures.push(`${name} failed: ${error && error.stack ? error.stack : error}`);
      }
      await browser.close().catch(() => {});
      clearTimeout(timer);
      result.failure = result.failures.length ? result.failures.join('; ') : null;
      console.log(JSON.stringify(result));
      process.exit(result.failure === null ? 0 : 1);
    },
  };
}
