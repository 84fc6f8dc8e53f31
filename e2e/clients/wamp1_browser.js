// Drives Debian's headless Chromium (/usr/bin/chromium) through playwright-core:
// a page served by the test on 127.0.0.1 speaks WAMP v1 with the browser's own
// WebSocket (so the browser sets Origin and handles the close handshake).
// Usage: node wamp1_browser.js PAGE_URL FOREIGN_PAGE_URL WS_URL TOPIC USER TOKEN TIMEOUT_MS
// Steps printed (one JSON line each, {"step": NAME, ...}):
//   welcome         first page: negotiated subprotocol and the WELCOME message
//   subscribe_sent  the exact seed string sent with SUBSCRIBE [5, seed]
//   event           the next frame (the test publishes once it sees the audit line)
//   replay_close    a second page replays the same token: its close event
//   event2          the first page's next frame (the test publishes again)
//   foreign         the same page from an origin the gateway does not allow: how it ended
//   end
// The browser is launched by chromium.js.
const { out, run } = require('./chromium');

const [pageURL, foreignURL, wsURL, topic, user, token, timeoutStr] = process.argv.slice(2);
const timeout = parseInt(timeoutStr, 10);

run(timeout, [], async (openPage) => {
  const open = (name, url = pageURL) => openPage(name, url);

  const first = await open('first');
  const w = await first.evaluate((u) => window.wamp1.open(u), wsURL);
  out('welcome', w);
  const sent = await first.evaluate(([t, u, k]) => window.wamp1.subscribeSeed(t, u, k), [topic, user, token]);
  out('subscribe_sent', { topic: sent });
  out('event', await first.evaluate((ms) => window.wamp1.next(ms), timeout) || { msg: null });

  const second = await open('second');
  const w2 = await second.evaluate((u) => window.wamp1.open(u), wsURL);
  await second.evaluate(([t, u, k]) => window.wamp1.subscribeSeed(t, u, k), [topic, user, token]);
  const c = await second.evaluate((ms) => window.wamp1.closeEvent(ms), timeout);
  const extra = await second.evaluate(() => window.wamp1.queue.map((i) => i.raw));
  out('replay_close', { ...(c || { code: null }), welcomed: w2.msg[0] === 0, frames: extra });

  out('event2', await first.evaluate((ms) => window.wamp1.next(ms), timeout) || { msg: null });
  await first.evaluate(() => window.wamp1.ws.close(1000));

  const foreign = await open('foreign', foreignURL);
  const f = await foreign.evaluate((u) => window.wamp1.open(u).then((w) => ({ welcomed: true, msg: w.msg }),
    (e) => ({ welcomed: false, close: window.wamp1.closed })), wsURL);
  out('foreign', { origin: await foreign.evaluate(() => location.origin), ...f });
});
