// portcullis.js: the browser client of the Portcullis gateway.
//
// One dependency-free ES module speaking the gateway's native protocol
// (portcullis.v1, docs/PROTOCOL.md). It keeps one WebSocket open, subscribes
// to topics with one-use tokens from the page's own getToken(topic)
// callback (called again for every subscribe, since a token redeemed on a
// lost connection is spent), reconnects with exponential back-off and full
// jitter, and resubscribes every topic after a reconnect. Usage, states and
// the reconnect rules: docs/CLIENT.md.

/** The subprotocol offered to the gateway. */
export const PROTOCOL = 'portcullis.v1';

/** Connection states, as passed to onState. */
export const State = Object.freeze({
  IDLE: 'idle', // not connected yet
  CONNECTING: 'connecting', // a WebSocket is opening; open once the welcome arrives
  OPEN: 'open', // welcomed: subscriptions are sent
  WAITING: 'waiting', // lost: the next attempt is due after a back-off delay
  CLOSED: 'closed', // ended by close(), or given up (onError was told why)
});

// Close codes after which reconnecting cannot help: the client or the
// server broke the protocol, or the client sent what the gateway will
// never take. Every other code (1001 going away, 1006 lost, 1011 internal,
// 1012 restart, 1013 try again later, …) is retried; 1008 (policy) only
// with a fresh token.
const FINAL_CLOSE = new Set([1002, 1003, 1007, 1009, 1010]);
const POLICY_CLOSE = 1008;

// Subscription refusals that a retry cannot turn into a subscription.
const FINAL_REFUSAL = new Set(['forbidden', 'bad_request', 'too_large', 'unsupported']);

const DEFAULTS = Object.freeze({
  backoff: Object.freeze({ base: 1000, cap: 30000, min: 250 }), // milliseconds
  timeout: 10000, // milliseconds from opening the socket to the welcome
  authRetries: 2, // auth_failed answers in a row, each retried with a fresh token, before a topic fails
});

/**
 * An error reported through onError: a refusal by the gateway (code is
 * the protocol's error code: auth_failed, forbidden, rate_limited, …), a
 * close (closeCode), or the client giving up (final).
 */
export class PortcullisError extends Error {
  constructor(code, message, { topic = null, closeCode = null, final = false, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'PortcullisError';
    /** The gateway's error code, or one of the client's: policy, closed, no_fresh_token, token_callback, timeout, bad_frame. */
    this.code = code;
    /** The topic the error is about, or null. */
    this.topic = topic;
    /** The WebSocket close code, for errors caused by a close. */
    this.closeCode = closeCode;
    /** True when the client stopped trying (the topic failed, or the connection is closed for good). */
    this.final = final;
  }
}

// Calls a page callback; an exception it throws is rethrown on its own
// task (so it reaches the console) instead of breaking the client.
function call(fn, ...args) {
  if (typeof fn !== 'function') return;
  try {
    fn(...args);
  } catch (e) {
    setTimeout(() => { throw e; }, 0);
  }
}

function positive(name, v) {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
    throw new TypeError(`portcullis: ${name} must be a number of milliseconds >= 0, got ${String(v)}`);
  }
  return v;
}

/**
 * A connection to one gateway endpoint and the topics subscribed on it.
 * Callbacks may be passed as options or assigned later (client.onMessage = …).
 */
export class Client {
  constructor(options = {}) {
    const o = options || {};
    /** async (topic) => token string, or null for a topic that needs none. */
    this.getToken = o.getToken || null;
    /** (topic, data) for every event. */
    this.onMessage = o.onMessage || null;
    /** (state, info) on every connection state change. */
    this.onState = o.onState || null;
    /** (PortcullisError) for every refusal, close and failure. */
    this.onError = o.onError || null;
    /** (topic) once the gateway confirmed a (re)subscription. */
    this.onSubscribed = o.onSubscribed || null;
    const b = { ...DEFAULTS.backoff, ...(o.backoff || {}) };
    this._backoff = { base: positive('backoff.base', b.base), cap: positive('backoff.cap', b.cap), min: positive('backoff.min', b.min) };
    if (this._backoff.min > this._backoff.cap) {
      throw new TypeError('portcullis: backoff.min must not exceed backoff.cap');
    }
    this._timeout = positive('timeout', o.timeout ?? DEFAULTS.timeout);
    this._authRetries = o.authRetries ?? DEFAULTS.authRetries;
    if (!Number.isSafeInteger(this._authRetries) || this._authRetries < 0) {
      throw new TypeError(`portcullis: authRetries must be an integer >= 0, got ${String(o.authRetries)}`);
    }

    this._url = null;
    this._ws = null;
    this._state = State.IDLE;
    this._session = null;
    this._attempt = 0; // consecutive failed attempts: the back-off exponent
    this._timer = null; // the next attempt, while waiting
    this._welcomeTimer = null;
    this._needFresh = false; // closed with 1008: reconnect only with new tokens
    this._subs = new Map(); // topic -> subscription
    this._requests = new Map(); // request id -> subscription or publish waiting for its answer
    this._nextId = 0;
  }

  /** The connection state (one of State). */
  get state() { return this._state; }

  /** The gateway's session id of the current connection, or null. */
  get session() { return this._session; }

  /** The topics wanted, with their status: pending, subscribing, subscribed, waiting or failed. */
  topics() {
    const out = {};
    for (const [t, s] of this._subs) out[t] = s.status;
    return out;
  }

  /**
   * Opens the connection to url (ws:// or wss:// and the gateway's path,
   * e.g. wss://gw.example.com/ws; http(s):// and a path relative to the
   * page are taken as ws(s)://), now and again after every loss until
   * close(). Returns this.
   */
  connect(url) {
    if (this._state !== State.IDLE && this._state !== State.CLOSED) {
      throw new Error(`portcullis: connect() while ${this._state}; call close() first`);
    }
    const u = new URL(String(url), globalThis.location ? globalThis.location.href : undefined);
    if (u.protocol === 'http:' || u.protocol === 'https:') u.protocol = u.protocol === 'http:' ? 'ws:' : 'wss:';
    if (u.protocol !== 'ws:' && u.protocol !== 'wss:') {
      throw new TypeError(`portcullis: the gateway URL must be ws:// or wss://, got ${u.protocol}//`);
    }
    this._url = u.href;
    this._attempt = 0;
    this._needFresh = false;
    for (const s of this._subs.values()) {
      if (s.status === 'failed') this._resetSub(s);
    }
    this._open();
    return this;
  }

  /**
   * Subscribes to topic, now if the connection is open, else once it is,
   * and again after every reconnect, each time with a token from
   * getToken(topic). opts.userId (string or integer) is sent when the
   * topic rule names {userId}. Subscribing to a failed topic again tries
   * it afresh.
   */
  subscribe(topic, opts = {}) {
    if (typeof topic !== 'string' || topic === '') {
      throw new TypeError('portcullis: subscribe needs a topic string');
    }
    const userId = opts && opts.userId;
    if (userId != null && typeof userId !== 'string' && !Number.isSafeInteger(userId)) {
      throw new TypeError('portcullis: userId must be a string or an integer');
    }
    let s = this._subs.get(topic);
    if (s) {
      s.userId = userId ?? null;
      if (s.status !== 'failed') return;
      this._resetSub(s);
    } else {
      s = { topic, userId: userId ?? null, status: 'pending', lastToken: undefined, fresh: undefined,
        needFresh: false, failures: 0, timer: null, gen: 0 };
      this._subs.set(topic, s);
    }
    if (this._state === State.OPEN) this._subscribe(s);
  }

  /** Stops receiving topic and forgets it. Returns false if it was not subscribed. */
  unsubscribe(topic) {
    const s = this._subs.get(topic);
    if (!s) return false;
    this._subs.delete(topic);
    s.gen++;
    clearTimeout(s.timer);
    if (s.status === 'subscribed') this._send({ op: 'unsubscribe', id: ++this._nextId, topic });
    return true;
  }

  /**
   * Publishes data to topic where the topic rule lets clients publish
   * (publish: token, with a token redeemed on this connection). Resolves
   * when the gateway took it; rejects with a PortcullisError when it
   * refused it or the connection is not open.
   */
  publish(topic, data) {
    if (this._state !== State.OPEN) {
      return Promise.reject(new PortcullisError('not_open', `portcullis: publish while ${this._state}`, { topic }));
    }
    const id = ++this._nextId;
    return new Promise((resolve, reject) => {
      this._requests.set(id, { publish: true, topic, resolve, reject });
      this._send({ op: 'publish', id, topic, data });
    });
  }

  /** Closes the connection and stops reconnecting; connect() starts again with the same topics. */
  close() {
    const ws = this._ws;
    this._stop();
    this._setState(State.CLOSED, { byClient: true });
    if (ws) ws.close(1000);
  }

  // --- connection ---

  _open() {
    this._timer = null;
    this._setState(State.CONNECTING, { attempt: this._attempt });
    let ws;
    try {
      ws = new WebSocket(this._url, PROTOCOL);
    } catch (e) {
      this._giveUp(new PortcullisError('closed', `portcullis: cannot open ${this._url}: ${e && e.message}`, { final: true, cause: e }));
      return;
    }
    this._ws = ws;
    ws.onmessage = (ev) => { if (this._ws === ws) this._frame(ev.data); };
    ws.onclose = (ev) => { if (this._ws === ws) this._lost(ev.code, ev.reason); };
    ws.onerror = () => {}; // the close event follows, with the code
    this._welcomeTimer = setTimeout(() => {
      if (this._ws !== ws) return;
      this._drop();
      ws.close();
      this._error(new PortcullisError('timeout', `portcullis: no welcome within ${this._timeout} ms`));
      this._lost(1006, 'no welcome in time');
    }, this._timeout);
  }

  // _drop detaches the current socket: its late events are ignored.
  _drop() {
    const ws = this._ws;
    this._ws = null;
    this._session = null;
    clearTimeout(this._welcomeTimer);
    this._welcomeTimer = null;
    if (ws) ws.onmessage = ws.onclose = ws.onerror = null;
    for (const r of this._requests.values()) {
      if (r.publish) r.reject(new PortcullisError('closed', 'portcullis: the connection closed before the gateway answered', { topic: r.topic }));
    }
    this._requests.clear();
    for (const s of this._subs.values()) {
      s.gen++;
      s.fresh = undefined;
      clearTimeout(s.timer);
      s.timer = null;
      if (s.status !== 'failed') s.status = 'pending';
    }
  }

  _stop() {
    if (this._ws) this._drop();
    clearTimeout(this._timer);
    this._timer = null;
  }

  _lost(code, why) {
    this._drop();
    if (this._state === State.CLOSED) return;
    const info = { code, reason: why || '' };
    if (FINAL_CLOSE.has(code)) {
      this._giveUp(new PortcullisError('closed', `portcullis: closed by the gateway with ${code}${why ? ': ' + why : ''}; not reconnecting`,
        { closeCode: code, final: true }));
      return;
    }
    if (code === POLICY_CLOSE) {
      // A policy refusal (ban, rate, slow consumer, …): the tokens of this
      // connection are spent or suspect; come back only with new ones.
      this._needFresh = true;
      this._error(new PortcullisError('policy', `portcullis: closed by policy (1008)${why ? ': ' + why : ''}`, { closeCode: code }));
    }
    this._wait(info);
  }

  _wait(info) {
    const delay = this._delay(this._attempt++);
    this._setState(State.WAITING, { ...info, attempt: this._attempt, delay });
    this._timer = setTimeout(() => this._reconnect(), delay);
  }

  async _reconnect() {
    this._timer = null;
    if (this._state !== State.WAITING) return;
    if (this._needFresh) {
      const r = await this._freshTokens();
      if (this._state !== State.WAITING || this._timer !== null) return;
      if (r === 'retry') {
        this._wait({ code: POLICY_CLOSE, reason: 'getToken failed' });
        return;
      }
      if (r === 'none') {
        this._giveUp(new PortcullisError('no_fresh_token',
          'portcullis: closed by policy (1008) and getToken gave no new token: not reconnecting', { closeCode: POLICY_CLOSE, final: true }));
        return;
      }
      this._needFresh = false;
    }
    this._open();
  }

  // _freshTokens asks getToken for every wanted topic after a 1008: 'ok'
  // when at least one gave a token other than the one refused ('fresh' is
  // kept for the next subscribe), 'retry' when none did but a call threw,
  // 'none' otherwise. A topic whose token did not change fails.
  async _freshTokens() {
    let ok = false;
    let threw = false;
    for (const s of [...this._subs.values()]) {
      if (s.status === 'failed') continue;
      const gen = s.gen;
      let tok;
      try {
        tok = await this._token(s);
      } catch (e) {
        threw = true;
        this._error(new PortcullisError('token_callback', `portcullis: getToken(${JSON.stringify(s.topic)}) failed: ${e && e.message}`, { topic: s.topic, cause: e }));
        continue;
      }
      if (s.gen !== gen || this._subs.get(s.topic) !== s) continue;
      if (tok === null || tok === s.lastToken) {
        this._failSub(s, new PortcullisError('no_fresh_token', 'portcullis: closed by policy (1008) and getToken gave the same token again',
          { topic: s.topic, closeCode: POLICY_CLOSE, final: true }));
        continue;
      }
      s.fresh = tok;
      ok = true;
    }
    return ok ? 'ok' : threw ? 'retry' : 'none';
  }

  _giveUp(err) {
    this._stop();
    err.final = true;
    this._setState(State.CLOSED, { code: err.closeCode, reason: err.message });
    this._error(err);
  }

  // _delay is the wait before attempt n (0-based): full jitter, a uniform
  // draw below min(cap, base·2ⁿ), but never below min.
  _delay(n) {
    const { base, cap, min } = this._backoff;
    const ceiling = Math.min(cap, base * 2 ** Math.min(n, 32));
    return Math.max(min, Math.floor(Math.random() * ceiling));
  }

  _send(msg) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  _setState(state, info) {
    if (this._state === state && state !== State.CONNECTING && state !== State.WAITING) return;
    this._state = state;
    call(this.onState, state, info || {});
  }

  _error(err) { call(this.onError, err); }

  // --- frames ---

  _frame(text) {
    let m;
    try {
      m = JSON.parse(text);
    } catch {
      m = null;
    }
    if (!m || typeof m !== 'object' || typeof m.op !== 'string') {
      this._error(new PortcullisError('bad_frame', 'portcullis: the gateway sent a frame that is not a protocol message'));
      return;
    }
    switch (m.op) {
      case 'welcome': this._welcome(m); break;
      case 'subscribed': this._subscribed(m); break;
      case 'published': this._answered(m.id, null); break;
      case 'event': call(this.onMessage, m.topic, m.data); break;
      case 'error': this._refused(m); break;
      default: break; // unsubscribed, pong, and ops of later versions
    }
  }

  _welcome(m) {
    clearTimeout(this._welcomeTimer);
    this._welcomeTimer = null;
    this._session = typeof m.session === 'string' ? m.session : null;
    let wanted = 0;
    for (const s of this._subs.values()) if (s.status !== 'failed') wanted++;
    if (wanted === 0) this._attempt = 0; // else once a subscription is confirmed
    this._setState(State.OPEN, { session: this._session, server: m.server });
    for (const s of [...this._subs.values()]) {
      if (s.status !== 'failed') this._subscribe(s);
    }
  }

  _subscribed(m) {
    const s = this._answered(m.id, null);
    if (!s) return;
    if (this._subs.get(s.topic) !== s) {
      // Unsubscribed while the request was on its way (unless the topic
      // was subscribed again since, which this subscription now serves).
      if (!this._subs.has(s.topic)) this._send({ op: 'unsubscribe', id: ++this._nextId, topic: s.topic });
      return;
    }
    s.status = 'subscribed';
    s.failures = 0;
    this._attempt = 0;
    call(this.onSubscribed, s.topic);
  }

  // _answered takes request id's entry; a publish is settled with err
  // (resolved when err is null). It returns a subscription's entry.
  _answered(id, err) {
    const r = this._requests.get(id);
    if (r === undefined) return null;
    this._requests.delete(id);
    if (!r.publish) return r;
    if (err) r.reject(err); else r.resolve();
    return null;
  }

  _refused(m) {
    const code = typeof m.code === 'string' ? m.code : 'internal';
    const r = this._requests.get(m.id);
    const err = new PortcullisError(code, typeof m.message === 'string' ? m.message : code, { topic: r ? r.topic : null });
    const s = this._answered(m.id, err);
    if (r && r.publish) return; // the publish's promise is rejected with err
    if (!s || this._subs.get(s.topic) !== s) {
      this._error(err);
      return;
    }
    if (FINAL_REFUSAL.has(code)) {
      err.final = true;
      this._failSub(s, err);
      return;
    }
    s.failures++;
    if (code === 'auth_failed') {
      if (s.failures > this._authRetries) {
        err.final = true;
        this._failSub(s, err);
        return;
      }
      s.needFresh = true; // the next token must differ from the refused one
    }
    this._error(err);
    this._retrySub(s);
  }

  // --- subscriptions ---

  _resetSub(s) {
    s.status = 'pending';
    s.failures = 0;
    s.needFresh = false;
    s.lastToken = undefined;
  }

  _failSub(s, err) {
    s.status = 'failed';
    s.gen++;
    clearTimeout(s.timer);
    s.timer = null;
    this._error(err);
  }

  _retrySub(s) {
    s.status = 'waiting';
    const gen = ++s.gen;
    s.timer = setTimeout(() => {
      s.timer = null;
      if (s.gen === gen && this._state === State.OPEN && this._subs.get(s.topic) === s) this._subscribe(s);
    }, this._delay(s.failures - 1));
  }

  async _token(s) {
    if (typeof this.getToken !== 'function') return null;
    const t = await this.getToken(s.topic);
    if (t == null || t === '') return null;
    if (typeof t !== 'string') throw new TypeError('getToken must resolve to a string, null or undefined');
    return t;
  }

  async _subscribe(s) {
    const ws = this._ws;
    clearTimeout(s.timer);
    s.timer = null;
    s.status = 'subscribing';
    const gen = ++s.gen;
    let tok = s.fresh;
    s.fresh = undefined;
    if (tok === undefined) {
      try {
        tok = await this._token(s);
      } catch (e) {
        if (s.gen !== gen || this._ws !== ws) return;
        s.failures++;
        this._error(new PortcullisError('token_callback', `portcullis: getToken(${JSON.stringify(s.topic)}) failed: ${e && e.message}`, { topic: s.topic, cause: e }));
        this._retrySub(s);
        return;
      }
    }
    // The connection or the wish changed while getToken ran: that token
    // was never sent, and the next subscribe asks for another.
    if (s.gen !== gen || this._ws !== ws || this._state !== State.OPEN || this._subs.get(s.topic) !== s) return;
    if (s.needFresh && tok === s.lastToken) {
      this._failSub(s, new PortcullisError('no_fresh_token', 'portcullis: the token was refused and getToken gave the same one again',
        { topic: s.topic, final: true }));
      return;
    }
    s.needFresh = false;
    s.lastToken = tok;
    const id = ++this._nextId;
    const msg = { op: 'subscribe', id, topic: s.topic };
    if (s.userId != null) msg.userId = s.userId;
    if (tok !== null) msg.token = tok;
    this._requests.set(id, s);
    this._send(msg);
  }
}

/** Creates a Client with options and connects it to url. */
export function connect(url, options) {
  return new Client(options).connect(url);
}
