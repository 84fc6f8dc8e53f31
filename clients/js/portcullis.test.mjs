// Unit tests of portcullis.js with a fake WebSocket and fake timers:
// node --test clients/js/portcullis.test.mjs (clients/js TestNodeUnit runs it).
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';

class FakeSocket {
  static all = [];
  constructor(url, protocol) {
    this.url = url;
    this.protocol = protocol;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  send(s) { this.sent.push(JSON.parse(s)); }
  close(code) { this.closedWith = code ?? 1005; }
  // server side
  welcome() { this.readyState = 1; this.onmessage({ data: JSON.stringify({ op: 'welcome', session: 's' + FakeSocket.all.length, server: 'portcullis/test' }) }); }
  reply(m) { this.onmessage({ data: JSON.stringify(m) }); }
  drop(code, reason = '') { this.readyState = 3; this.onclose({ code, reason }); }
  last() { return this.sent[this.sent.length - 1]; }
}
globalThis.WebSocket = FakeSocket;

const { connect, Client, State } = await import('./portcullis.js');

// settle lets awaited getToken promises run.
const settle = async () => { for (let i = 0; i < 10; i++) await Promise.resolve(); };

function setup(t, tokens, opts = {}) {
  FakeSocket.all = [];
  t.mock.timers.enable({ apis: ['setTimeout'] });
  t.mock.method(Math, 'random', () => 0.5);
  const log = { states: [], errors: [], events: [], subscribed: [], tokenCalls: 0 };
  const pc = connect('ws://gw.test/ws', {
    getToken: async (topic) => { log.tokenCalls++; return typeof tokens === 'function' ? tokens(topic, log.tokenCalls) : tokens; },
    onState: (s, info) => log.states.push([s, info]),
    onError: (e) => log.errors.push(e),
    onMessage: (topic, data) => log.events.push([topic, data]),
    onSubscribed: (topic) => log.subscribed.push(topic),
    ...opts,
  });
  return { pc, log, ws: () => FakeSocket.all[FakeSocket.all.length - 1] };
}

test('subscribes with a token, resubscribes with a new one after a lost connection', async (t) => {
  const { pc, log, ws } = setup(t, (topic, n) => `tok${n}`);
  pc.subscribe('news', { userId: 42 });
  assert.equal(ws().protocol, 'portcullis.v1');
  ws().welcome();
  await settle();
  assert.deepEqual(ws().last(), { op: 'subscribe', id: 1, topic: 'news', userId: 42, token: 'tok1' });
  ws().reply({ op: 'subscribed', id: 1, topic: 'news' });
  ws().reply({ op: 'event', topic: 'news', data: { a: 1 } });
  assert.deepEqual(log.events, [['news', { a: 1 }]]);
  assert.equal(pc.topics().news, 'subscribed');

  ws().drop(1001, 'server shutting down');
  assert.equal(pc.state, State.WAITING);
  assert.equal(log.states.at(-1)[1].delay, 500); // 0.5 · min(30000, 1000 · 2⁰)
  t.mock.timers.tick(499);
  assert.equal(FakeSocket.all.length, 1);
  t.mock.timers.tick(1);
  assert.equal(FakeSocket.all.length, 2);
  ws().drop(1006); // refused while the gateway restarts
  assert.equal(log.states.at(-1)[1].delay, 500 * 2);
  t.mock.timers.tick(1000);
  ws().welcome();
  await settle();
  assert.equal(log.tokenCalls, 2);
  assert.deepEqual(ws().last(), { op: 'subscribe', id: 2, topic: 'news', userId: 42, token: 'tok2' });
  ws().reply({ op: 'subscribed', id: 2, topic: 'news' });
  assert.deepEqual(log.subscribed, ['news', 'news']);
  assert.equal(log.errors.length, 0);
  // A confirmed subscription resets the back-off.
  ws().drop(1012);
  assert.equal(log.states.at(-1)[1].delay, 500);
  pc.close();
  t.mock.timers.tick(60000);
  assert.equal(FakeSocket.all.length, 3);
  assert.equal(pc.state, State.CLOSED);
});

test('the back-off is capped and never below min', async (t) => {
  const { pc, log, ws } = setup(t, 'x', { backoff: { base: 1000, cap: 4000, min: 300 } });
  const delays = [];
  for (let i = 0; i < 6; i++) {
    ws().drop(1006);
    delays.push(log.states.at(-1)[1].delay);
    t.mock.timers.tick(delays.at(-1));
  }
  assert.deepEqual(delays, [500, 1000, 2000, 2000, 2000, 2000]);
  Math.random.mock.mockImplementation(() => 0);
  ws().drop(1006);
  assert.equal(log.states.at(-1)[1].delay, 300);
  pc.close();
});

test('1008 with the same token: no reconnect', async (t) => {
  const { pc, log, ws } = setup(t, 'spent');
  pc.subscribe('news');
  ws().welcome();
  await settle();
  ws().reply({ op: 'error', id: 1, code: 'auth_failed', message: 'authentication failed' });
  ws().drop(1008, 'banned');
  t.mock.timers.tick(500);
  await settle();
  assert.equal(FakeSocket.all.length, 1);
  assert.equal(pc.state, State.CLOSED);
  assert.deepEqual(log.errors.map((e) => [e.code, e.closeCode, e.final]),
    [['auth_failed', null, false], ['policy', 1008, false], ['no_fresh_token', 1008, true], ['no_fresh_token', 1008, true]]);
  t.mock.timers.tick(120000);
  await settle();
  assert.equal(FakeSocket.all.length, 1);
  assert.equal(log.tokenCalls, 2);
});

test('1008 with a new token: reconnects and uses that token without asking again', async (t) => {
  const { pc, log, ws } = setup(t, (topic, n) => `tok${n}`);
  pc.subscribe('news');
  ws().welcome();
  await settle();
  ws().drop(1008, 'slow consumer');
  t.mock.timers.tick(500);
  await settle();
  assert.equal(FakeSocket.all.length, 2);
  ws().welcome();
  await settle();
  assert.equal(log.tokenCalls, 2);
  assert.equal(ws().last().token, 'tok2');
});

test('1008 and a page with no topic: no reconnect', async (t) => {
  const { pc, ws } = setup(t, 'x');
  ws().welcome();
  ws().drop(1008);
  t.mock.timers.tick(500);
  await settle();
  assert.equal(FakeSocket.all.length, 1);
  assert.equal(pc.state, State.CLOSED);
});

for (const code of [1002, 1003, 1007, 1009, 1010]) {
  test(`close ${code} is final`, async (t) => {
    const { pc, log, ws } = setup(t, 'x');
    ws().welcome();
    ws().drop(code);
    t.mock.timers.tick(60000);
    assert.equal(FakeSocket.all.length, 1);
    assert.equal(pc.state, State.CLOSED);
    assert.equal(log.errors.at(-1).code, 'closed');
    assert.equal(log.errors.at(-1).final, true);
  });
}

test('auth_failed: retried with a new token, then failed after authRetries', async (t) => {
  const { pc, log, ws } = setup(t, (topic, n) => `tok${n}`, { authRetries: 1 });
  pc.subscribe('news');
  ws().welcome();
  await settle();
  ws().reply({ op: 'error', id: 1, code: 'auth_failed', message: 'authentication failed' });
  assert.equal(pc.topics().news, 'waiting');
  t.mock.timers.tick(500);
  await settle();
  assert.equal(ws().last().token, 'tok2');
  ws().reply({ op: 'error', id: 2, code: 'auth_failed', message: 'authentication failed' });
  t.mock.timers.tick(60000);
  await settle();
  assert.equal(pc.topics().news, 'failed');
  assert.equal(ws().sent.length, 2);
  assert.equal(log.errors.at(-1).final, true);
  // The connection itself stays open; subscribing again tries afresh.
  assert.equal(pc.state, State.OPEN);
  pc.subscribe('news');
  await settle();
  assert.equal(ws().last().token, 'tok3');
});

test('auth_failed and the same token again: the topic fails at once', async (t) => {
  const { pc, log, ws } = setup(t, 'same');
  pc.subscribe('news');
  ws().welcome();
  await settle();
  ws().reply({ op: 'error', id: 1, code: 'auth_failed', message: 'authentication failed' });
  t.mock.timers.tick(500);
  await settle();
  assert.equal(ws().sent.length, 1);
  assert.equal(pc.topics().news, 'failed');
  assert.equal(log.errors.at(-1).code, 'no_fresh_token');
});

test('forbidden: no retry', async (t) => {
  const { pc, log, ws } = setup(t, 'x');
  pc.subscribe('admin');
  ws().welcome();
  await settle();
  ws().reply({ op: 'error', id: 1, code: 'forbidden', message: 'subscription to this topic is not allowed' });
  t.mock.timers.tick(60000);
  await settle();
  assert.equal(ws().sent.length, 1);
  assert.deepEqual([log.errors[0].code, log.errors[0].topic, log.errors[0].final], ['forbidden', 'admin', true]);
  // Failed topics are not resubscribed after a reconnect either.
  ws().drop(1006);
  t.mock.timers.tick(500);
  ws().welcome();
  await settle();
  assert.equal(ws().sent.length, 0);
});

test('getToken throwing: reported and retried', async (t) => {
  let fail = true;
  const { pc, log, ws } = setup(t, () => { if (fail) throw new Error('backend down'); return 'ok'; });
  pc.subscribe('news');
  ws().welcome();
  await settle();
  assert.equal(log.errors[0].code, 'token_callback');
  assert.equal(ws().sent.length, 0);
  fail = false;
  t.mock.timers.tick(500);
  await settle();
  assert.equal(ws().last().token, 'ok');
});

test('unsubscribe while the subscribe is on its way', async (t) => {
  const { pc, ws } = setup(t, 'x');
  pc.subscribe('news');
  ws().welcome();
  await settle();
  assert.equal(pc.unsubscribe('news'), true);
  ws().reply({ op: 'subscribed', id: 1, topic: 'news' });
  assert.deepEqual(ws().last(), { op: 'unsubscribe', id: 2, topic: 'news' });
  assert.equal(pc.unsubscribe('news'), false);
});

test('publish resolves on published and rejects on error', async (t) => {
  const { pc, log, ws } = setup(t, 'x');
  await assert.rejects(pc.publish('chat', {}), (e) => e.code === 'not_open');
  ws().welcome();
  const ok = pc.publish('chat', { text: 'hi' });
  assert.deepEqual(ws().last(), { op: 'publish', id: 1, topic: 'chat', data: { text: 'hi' } });
  ws().reply({ op: 'published', id: 1, topic: 'chat' });
  await ok;
  const refused = pc.publish('chat', {});
  ws().reply({ op: 'error', id: 2, code: 'forbidden', message: 'publishing to this topic is not allowed' });
  await assert.rejects(refused, (e) => e.code === 'forbidden' && e.topic === 'chat');
  assert.equal(log.errors.length, 0);
});

test('no welcome within timeout: a lost attempt', async (t) => {
  const { pc, log } = setup(t, 'x', { timeout: 2000 });
  t.mock.timers.tick(2000);
  assert.equal(FakeSocket.all[0].closedWith, 1005);
  assert.equal(log.errors[0].code, 'timeout');
  assert.equal(pc.state, State.WAITING);
});

test('bad arguments are refused at once', () => {
  assert.throws(() => new Client({ backoff: { min: 5000, cap: 1000 } }), TypeError);
  assert.throws(() => new Client({ authRetries: -1 }), TypeError);
  assert.throws(() => new Client().connect('ftp://x/'), TypeError);
  assert.throws(() => new Client().subscribe(''), TypeError);
  assert.throws(() => new Client().subscribe('a', { userId: {} }), TypeError);
  const c = new Client();
  c.connect('https://gw.test/ws');
  assert.equal(FakeSocket.all.at(-1).url, 'wss://gw.test/ws');
  assert.throws(() => c.connect('wss://gw.test/ws'), /close\(\) first/);
  c.close();
});
