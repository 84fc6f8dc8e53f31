#!/usr/bin/env node
// Sign a one-use HS256 JWT for a gateway run with tokens.source: jwt, and
// print {"token","userId","topic","expires"}. No round trip to the gateway:
// the site signs with the secret the gateway reads from tokens.jwt.secret_file.
//
//   node jwt.mjs USER_ID TOPIC [MORE_TOPICS...]
//
// Environment:
//   PORTCULLIS_JWT_SECRET_FILE  the shared secret (at least 32 bytes; one
//                               trailing newline is dropped, as the gateway does)
//   PORTCULLIS_JWT_AUDIENCE     "aud", when the gateway sets tokens.jwt.audience
//   PORTCULLIS_JWT_ISSUER       "iss", when the gateway sets tokens.jwt.issuer
//   PORTCULLIS_TOKEN_TTL        seconds until "exp" (default 60; at most tokens.max_ttl)
import { createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { runMain, ttlFromEnv, UsageError } from './admin.mjs';

const usage = 'usage: node jwt.mjs USER_ID TOPIC [MORE_TOPICS...]';

/** readSecret returns the bytes of the secret file as the gateway reads them. */
export function readSecret(file) {
  let b;
  try {
    b = readFileSync(file);
  } catch (e) {
    throw new Error(`cannot read the JWT secret file ${file} (PORTCULLIS_JWT_SECRET_FILE): ${e.message}`);
  }
  let end = b.length;
  if (end > 0 && b[end - 1] === 0x0a) end--;
  if (end > 0 && b[end - 1] === 0x0d) end--;
  if (end < 32) throw new Error(`the JWT secret in ${file} has ${end} bytes; the gateway needs at least 32`);
  return b.subarray(0, end);
}

// The gateway's rules for a user id and a topic pattern: a token that
// breaks them is refused at the subscribe, so say so here, at the mint.
const userIdRule = /^[A-Za-z0-9_:@-]{1,128}$/;
const segment = '(?:[A-Za-z0-9_:@-]+|\\*|\\*\\*|\\{userId\\})';
const patternRule = new RegExp(`^${segment}(?:\\.${segment})*$`);

/** checkClaims throws a UsageError for a user id or topic the gateway would refuse. */
export function checkClaims(userId, topics) {
  if (!userIdRule.test(userId)) {
    throw new UsageError(`user id ${JSON.stringify(userId)}: 1-128 characters of [A-Za-z0-9_:@-] (one topic segment, no ".")`);
  }
  for (const t of topics) {
    if (t.length > 200 || !patternRule.test(t)) {
      throw new UsageError(`topic ${JSON.stringify(t)}: dot-separated segments of [A-Za-z0-9_:@-], "*", "**" or "{userId}", at most 200 characters`);
    }
  }
}

/**
 * signToken returns a compact HS256 JWT with the claims the gateway reads:
 * sub (the user id), topics, exp, iat, a random jti (its one-use key), and
 * aud/iss when given. typ "portcullis+jwt" keeps it from being mistaken
 * for any other JWT the site signs.
 */
export function signToken(secret, { userId, topics, ttlSeconds = 60, audience, issuer, now = Date.now() }) {
  const iat = Math.floor(now / 1000);
  const claims = { sub: userId, topics, iat, exp: iat + ttlSeconds, jti: randomBytes(16).toString('base64url') };
  if (audience) claims.aud = audience;
  if (issuer) claims.iss = issuer;
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${enc({ alg: 'HS256', typ: 'portcullis+jwt' })}.${enc(claims)}`;
  const sig = createHmac('sha256', secret).update(input).digest('base64url');
  return { token: `${input}.${sig}`, exp: claims.exp };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await runMain(usage, async () => {
    const [userId, ...topics] = process.argv.slice(2);
    if (!userId || topics.length === 0) throw new UsageError('a user id and at least one topic are required');
    checkClaims(userId, topics);
    const file = process.env.PORTCULLIS_JWT_SECRET_FILE;
    if (!file) throw new UsageError('PORTCULLIS_JWT_SECRET_FILE is not set');
    const { token, exp } = signToken(readSecret(file), {
      userId, topics, ttlSeconds: ttlFromEnv(),
      audience: process.env.PORTCULLIS_JWT_AUDIENCE, issuer: process.env.PORTCULLIS_JWT_ISSUER,
    });
    const expires = new Date(exp * 1000).toISOString().replace('.000Z', 'Z');
    process.stdout.write(JSON.stringify({ token, userId, topic: topics[0], expires }) + '\n');
  });
}
