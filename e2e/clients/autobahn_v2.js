// A WAMP v2 client driven by the e2e tests, using AutobahnJS (npm `autobahn`
// 22.11.1, which runs on Node 20 over its own `ws`).
// Usage: node autobahn_v2.js URL REALM USER TICKET TOPIC FORBIDDEN_JSON BAD_TICKETS_JSON TIMEOUT_MS
// Same scenario and output as autobahn_v2.py: one JSON line per step.
const readline = require('readline');
const autobahn = require('autobahn');

const [url, realm, user, ticket, topic, forbiddenJSON, badJSON, timeoutStr] = process.argv.slice(2);
const forbidden = JSON.parse(forbiddenJSON);
const bad = JSON.parse(badJSON);
const timeout = parseInt(timeoutStr, 10);
const out = (step, o = {}) => process.stdout.write(JSON.stringify({ ...o, step }) + '\n');

const stdinLines = [];
let stdinWaiter = null;
readline.createInterface({ input: process.stdin }).on('line', (l) => {
  if (stdinWaiter) { const w = stdinWaiter; stdinWaiter = null; w(l.trim()); } else stdinLines.push(l.trim());
});
const nextStdinLine = () => stdinLines.length ? Promise.resolve(stdinLines.shift()) : new Promise((r) => { stdinWaiter = r; });

const withTimeout = (p, what) => Promise.race([p,
  new Promise((_, rej) => setTimeout(() => rej(new Error('timeout waiting for ' + what)), timeout).unref())]);

// One connection: resolves when it is closed for good.
function run(tkt, scenario) {
  return new Promise((resolve) => {
    const conn = new autobahn.Connection({
      url, realm,
      authmethods: ['ticket'],
      authid: user,
      max_retries: 0,
      retry_if_unreachable: false,
      onchallenge: (session, method, extra) => {
        out('connect', { protocol: conn.transport && conn.transport.info.protocol });
        out('challenge', { method, extra });
        return tkt;
      },
    });
    conn.onopen = async (session, details) => {
      out('joined', {
        session: session.id, authid: details.authid, authrole: details.authrole,
        authmethod: details.authmethod, realm: details.realm || session.realm,
      });
      if (!scenario) return;
      try {
        let gotEvent;
        const got = new Promise((r) => { gotEvent = r; });
        const sub = await session.subscribe(topic, (args, kwargs) => gotEvent([args, kwargs]));
        out('subscribed', { topic, id: sub.id });
        const [args, kwargs] = await withTimeout(got, 'EVENT');
        out('event', { args, kwargs: kwargs || {} });
        for (const t of forbidden) {
          try {
            await session.subscribe(t, () => {});
            out('subscribe_error', { topic: t, error: null });
          } catch (e) {
            out('subscribe_error', { topic: t, error: e.error });
          }
        }
        await session.unsubscribe(sub);
        out('unsubscribed', { active: sub.active });
        const line = await withTimeout(nextStdinLine(), 'stdin');
        if (line !== 'leave') out('error', { error: 'stdin said ' + line });
        conn.close(); // GOODBYE wamp.close.normal; onclose gets the echo's reason
      } catch (e) {
        out('error', { error: String(e && (e.error || e.message || e)) });
        conn.close();
      }
    };
    conn.onclose = (reason, details) => {
      out('left', { reason: details.reason, message: details.message || null, why: reason });
      out('disconnected', { will_retry: details.will_retry });
      resolve();
      return true; // never reconnect
    };
    conn.open();
  });
}

(async () => {
  try {
    await run(ticket, true);
    for (const b of bad) await run(b, false);
  } catch (e) {
    out('error', { error: String(e) });
  }
  out('end');
  process.exit(0);
})();
