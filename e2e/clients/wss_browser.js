// Drives Debian's headless Chromium (/usr/bin/chromium) through playwright-core
// against a wss:// gateway whose certificate no system root signs: Chromium
// trusts it by the SHA-256 of its public key (--ignore-certificate-errors-spki-list),
// nothing else is relaxed. The page is served over https:// by the test with
// the same certificate, and opens the browser's own WebSocket.
// Usage: node wss_browser.js PAGE_URL WS_URL SPKI_SHA256_BASE64 TOPIC USER TOKEN TIMEOUT_MS
// Steps printed (one JSON line each, {"step": NAME, ...}):
//   open        the negotiated subprotocol and the welcome message
//   subscribed  the gateway's answer to the subscribe
//   event       the next message (the test publishes once it sees "subscribed")
//   closed      the close event after the page closed with 1000
//   end
// The browser is launched by chromium.js.
const { out, run } = require('./chromium');

const [pageURL, wsURL, spki, topic, user, token, timeoutStr] = process.argv.slice(2);
const timeout = parseInt(timeoutStr, 10);

run(timeout, [`--ignore-certificate-errors-spki-list=${spki}`], async (openPage) => {
  const page = await openPage('wss', pageURL);
  const open = await page.evaluate(([u, ms]) => new Promise((resolve, reject) => {
    const ws = new WebSocket(u, 'portcullis.v1');
    window.sock = ws;
    window.queue = [];
    window.waiters = [];
    ws.onmessage = (e) => {
      const w = window.waiters.shift();
      if (w) w(JSON.parse(e.data)); else window.queue.push(JSON.parse(e.data));
    };
    window.nextMsg = (t) => new Promise((res, rej) => {
      if (window.queue.length) return res(window.queue.shift());
      window.waiters.push(res);
      setTimeout(() => rej(new Error('no message within ' + t + ' ms')), t);
    });
    ws.onerror = () => reject(new Error('WebSocket error'));
    ws.onclose = (e) => { window.wsClosed = { code: e.code, reason: e.reason, clean: e.wasClean }; };
    ws.onopen = () => window.nextMsg(ms).then((m) => resolve({ protocol: ws.protocol, welcome: m }), reject);
  }), [wsURL, timeout]);
  out('open', open);
  const sub = await page.evaluate(([t, u, k, ms]) => {
    window.sock.send(JSON.stringify({ op: 'subscribe', id: 1, topic: t, userId: u, token: k }));
    return window.nextMsg(ms);
  }, [topic, user, token, timeout]);
  out('subscribed', { msg: sub });
  out('event', { msg: await page.evaluate((ms) => window.nextMsg(ms), timeout) });
  const closed = await page.evaluate((ms) => new Promise((resolve) => {
    window.sock.close(1000);
    const t0 = Date.now();
    const poll = () => (window.wsClosed || Date.now() - t0 > ms) ? resolve(window.wsClosed || null) : setTimeout(poll, 20);
    poll();
  }), timeout);
  out('closed', closed || { code: null });
});
