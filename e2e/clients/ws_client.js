// A WebSocket client driven by the e2e tests, using the `ws` package from npm.
// Usage: node ws_client.js URL PROTOCOL ORIGIN MESSAGES_JSON EXPECT TIMEOUT_MS
// Sends each message of MESSAGES_JSON (an array) after the welcome frame,
// one after each reply, then waits until EXPECT frames arrived in total or the
// connection closes. Prints one JSON line per event: {"recv":…} or {"close":code}.
const WebSocket = require('ws');
const [url, proto, origin, msgsJSON, expectStr, timeoutStr] = process.argv.slice(2);
const msgs = JSON.parse(msgsJSON) || [];
const expect = parseInt(expectStr, 10);
const opts = {};
if (origin) opts.origin = origin;
const ws = new WebSocket(url, proto ? [proto] : [], opts);
let got = 0;
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const timer = setTimeout(() => { out({timeout: true}); ws.terminate(); process.exit(0); }, parseInt(timeoutStr, 10));
ws.on('unexpected-response', (req, res) => { out({http: res.statusCode}); clearTimeout(timer); process.exit(0); });
ws.on('open', () => out({open: ws.protocol}));
ws.on('message', (data) => {
  got++;
  out({recv: JSON.parse(data.toString())});
  if (msgs.length > 0) ws.send(typeof msgs[0] === 'string' ? msgs.shift() : JSON.stringify(msgs.shift()));
  if (got >= expect && msgs.length === 0) { clearTimeout(timer); ws.close(1000); }
});
ws.on('close', (code, reason) => { out({close: code, reason: reason.toString()}); clearTimeout(timer); process.exit(0); });
ws.on('error', (e) => out({error: String(e.message)}));
