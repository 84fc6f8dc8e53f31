#!/usr/bin/env node
// Mint a one-use token through the admin API (tokens.source: store) and
// print {"token","userId","topic","expires"} for the page that subscribes.
//
//   node mint.mjs USER_ID TOPIC [MORE_TOPICS...]
//
// Environment: PORTCULLIS_ADMIN_URL, PORTCULLIS_ADMIN_KEY_FILE (see admin.mjs),
// PORTCULLIS_TOKEN_TTL (seconds, default 60).
import { adminFromEnv, mintToken, runMain, ttlFromEnv, UsageError } from './admin.mjs';

const usage = 'usage: node mint.mjs USER_ID TOPIC [MORE_TOPICS...]';

await runMain(usage, async () => {
  const [userId, ...topics] = process.argv.slice(2);
  if (!userId || topics.length === 0) throw new UsageError('a user id and at least one topic are required');
  const ttl = ttlFromEnv();
  const minted = await mintToken(adminFromEnv(), userId, topics, ttl);
  process.stdout.write(JSON.stringify(minted) + '\n');
});
