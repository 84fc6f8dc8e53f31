// The Portcullis admin API from Node 20 or later, with nothing but the
// standard library (fetch). mint.mjs and publish.mjs are its command-line
// front ends; a site's backend imports mintToken and publish directly.
//
// Where the gateway is, from the environment:
//   PORTCULLIS_ADMIN_URL       the admin API (default http://127.0.0.1:8081,
//                              the gateway writes it to <data_dir>/admin.url)
//   PORTCULLIS_ADMIN_KEY_FILE  the bearer key (default ./portcullis-data/admin.key,
//                              the gateway's admin.key_file)
// An admin API behind HTTPS with a private CA: NODE_EXTRA_CA_CERTS=ca.pem.
import { readFileSync } from 'node:fs';

/** AdminError is a refusal by the admin API, or a failure to reach it. */
export class AdminError extends Error {
  constructor(message, { status = 0, code = '' } = {}) {
    super(message);
    this.name = 'AdminError';
    this.status = status; // HTTP status; 0: no answer
    this.code = code; // the API's "error", e.g. "bad_request", "unauthorized"
  }
}

/** adminFromEnv reads the admin URL and key as the gateway's README describes. */
export function adminFromEnv(env = process.env) {
  const url = (env.PORTCULLIS_ADMIN_URL || 'http://127.0.0.1:8081').replace(/\/+$/, '');
  const keyFile = env.PORTCULLIS_ADMIN_KEY_FILE || 'portcullis-data/admin.key';
  let key;
  try {
    key = readFileSync(keyFile, 'utf8').trim();
  } catch (e) {
    throw new AdminError(`cannot read the admin key file ${keyFile} (PORTCULLIS_ADMIN_KEY_FILE): ${e.message}`);
  }
  if (key === '') throw new AdminError(`the admin key file ${keyFile} is empty`);
  return { url, key };
}

/** call sends one JSON request to the admin API and returns the decoded reply. */
export async function call(admin, method, path, body, { timeoutMs = 5000 } = {}) {
  let res;
  try {
    res = await fetch(admin.url + path, {
      method,
      headers: { Authorization: `Bearer ${admin.key}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (e) {
    throw new AdminError(`${method} ${admin.url}${path}: ${e.cause?.message || e.message}`);
  }
  const text = await res.text();
  let reply;
  try {
    reply = JSON.parse(text);
  } catch {
    throw new AdminError(`${method} ${path}: HTTP ${res.status}, not JSON: ${text.slice(0, 200)}`, { status: res.status });
  }
  if (!res.ok) {
    throw new AdminError(`${method} ${path}: HTTP ${res.status} ${reply.error}: ${reply.message}`,
      { status: res.status, code: reply.error });
  }
  return reply;
}

/**
 * mintToken asks the gateway for a one-use token for userId, bound to
 * topics (topics or patterns such as "user.42.**"), valid ttlSeconds.
 * It resolves to { token, userId, topic, expires } where topic is the
 * first of topics: what the page subscribes to.
 */
export async function mintToken(admin, userId, topics, ttlSeconds = 60) {
  const r = await call(admin, 'POST', '/v1/tokens', { userId, topics, ttl: `${ttlSeconds}s` });
  return { token: r.token, userId: r.userId, topic: topics[0], expires: r.expires_at };
}

/** publish sends data (any JSON value) to topic; it resolves to { delivered }. */
export async function publish(admin, topic, data) {
  return call(admin, 'POST', '/v1/publish', { topic, data });
}

/** runMain runs a command-line entry point: exit 2 on usage errors, 1 on refusals. */
export async function runMain(usage, main) {
  try {
    await main();
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`${e.message}\n${usage}\n`);
      process.exit(2);
    }
    process.stderr.write(`error: ${e.message}\n`);
    process.exit(1);
  }
}

/** UsageError is a command line that cannot be run. */
export class UsageError extends Error {}

/** ttlFromEnv reads PORTCULLIS_TOKEN_TTL: whole seconds, default 60. */
export function ttlFromEnv(env = process.env) {
  const raw = env.PORTCULLIS_TOKEN_TTL ?? '60';
  if (!/^[1-9][0-9]{0,4}$/.test(raw)) {
    throw new UsageError(`PORTCULLIS_TOKEN_TTL=${JSON.stringify(raw)} is not a number of seconds (1-99999)`);
  }
  return Number(raw);
}
