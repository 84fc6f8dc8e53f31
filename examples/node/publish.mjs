#!/usr/bin/env node
// Publish one event to a topic through the admin API and print the reply
// ({"delivered": N}: the subscriptions on this gateway it was queued for).
//
//   node publish.mjs TOPIC JSON_DATA
//   echo '{"headline":"hi"}' | node publish.mjs news -
//
// Environment: PORTCULLIS_ADMIN_URL, PORTCULLIS_ADMIN_KEY_FILE (see admin.mjs).
import { readFileSync } from 'node:fs';
import { adminFromEnv, publish, runMain, UsageError } from './admin.mjs';

const usage = 'usage: node publish.mjs TOPIC JSON_DATA   (JSON_DATA "-" reads it from stdin)';

await runMain(usage, async () => {
  const [topic, raw, ...rest] = process.argv.slice(2);
  if (!topic || raw === undefined || rest.length > 0) throw new UsageError('a topic and one JSON value are required');
  const text = raw === '-' ? readFileSync(0, 'utf8') : raw;
  let data;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`JSON_DATA is not JSON: ${e.message}`);
  }
  const reply = await publish(adminFromEnv(), topic, data);
  process.stdout.write(JSON.stringify(reply) + '\n');
});
