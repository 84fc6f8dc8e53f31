// Drives Debian's headless Chromium (/usr/bin/chromium) through playwright-core:
// pages served by the test's "site backend" load /portcullis.js from the
// gateway through an import map with its integrity hash, take tokens from
// the backend's /token endpoint and report what the client did through
// window.log (see the page in e2e/jsclient_test.go).
// Usage: node jsclient_browser.js restart PAGE_URL BAD_SRI_PAGE_URL TIMEOUT_MS
//        node jsclient_browser.js refusal SAME_PAGE_URL FRESH_PAGE_URL TIMEOUT_MS WINDOW_MS
// Steps printed (one JSON line each, {"step": NAME, ...}): launched, then
//   restart: sri (the bad-hash page's import failed?), subscribed, event,
//            resubscribed (after the test restarted the gateway), event2, closed, end
//   refusal: loaded, same, fresh (each the page's log after WINDOW_MS from its first
//            connection attempt, or after it closed for good plus WINDOW_MS/2), end
// The browser is launched by chromium.js.
const { out, run } = require('./chromium');

const [mode, urlA, urlB, timeoutStr, windowStr] = process.argv.slice(2);
const timeout = parseInt(timeoutStr, 10);

run(timeout, [], async (open) => {
  out('launched'); // Chromium is up (slow on a loaded machine): each step below has its own wait
  // until waits for the page's window.log to satisfy cond (a function
  // source taking log) and returns the log.
  const until = async (page, cond, ms = timeout) => {
    await page.waitForFunction(`window.log && (${cond})(window.log)`, null, { timeout: ms, polling: 50 });
    return page.evaluate(() => window.log);
  };
  const loaded = (page) => page.waitForFunction('window.loaded !== undefined', null, { timeout, polling: 50 })
    .then(() => page.evaluate(() => ({ loaded: window.loaded, error: window.loadError || null })));

  if (mode === 'restart') {
    const bad = await open('bad-sri', urlB);
    out('sri', await loaded(bad));
    await bad.close();

    const page = await open('page', urlA);
    const l = await loaded(page);
    if (!l.loaded) throw new Error(`the page could not load /portcullis.js: ${l.error}`);
    out('subscribed', { log: await until(page, '(l) => l.subscribed.length >= 1') });
    out('event', { log: await until(page, '(l) => l.messages.length >= 1') });
    // The test restarts the gateway now: the client reconnects and
    // resubscribes with a fresh token by itself.
    out('resubscribed', { log: await until(page, '(l) => l.subscribed.length >= 2', 2 * timeout) });
    out('event2', { log: await until(page, '(l) => l.messages.length >= 2') });
    await page.evaluate(() => window.pc.close());
    out('closed', { log: await until(page, "(l) => l.states.length > 0 && l.states[l.states.length - 1].s === 'closed'") });
  } else if (mode === 'refusal') {
    const windowMS = parseInt(windowStr, 10);
    const load = async (name, url) => {
      const page = await open(name, url);
      const l = await loaded(page);
      if (!l.loaded) throw new Error(`the page could not load /portcullis.js: ${l.error}`);
      return page;
    };
    const watch = async (page) => {
      // WINDOW_MS from the first attempt, or half of it after the client
      // closed for good (to see that nothing follows the close).
      await until(page, `(l) => l.attempts > 0 && (performance.now() - l.states[0].t >= ${windowMS} ||
        (l.closedAt && performance.now() - l.closedAt >= ${windowMS / 2}))`, timeout + windowMS);
      return page.evaluate(() => ({ ...window.log, state: window.pc.state, topics: window.pc.topics() }));
    };
    const pages = await Promise.all([load('same', urlA), load('fresh', urlB)]);
    out('loaded');
    const [same, fresh] = await Promise.all(pages.map(watch));
    out('same', { log: same });
    out('fresh', { log: fresh });
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
});
