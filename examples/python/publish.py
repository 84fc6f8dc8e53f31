#!/usr/bin/env python3
"""Publish one event to a topic through the admin API.

Prints the reply ({"delivered": N}: the subscriptions on this gateway it was
queued for).

  python3 publish.py TOPIC JSON_DATA
  echo '{"headline":"hi"}' | python3 publish.py news -

Environment: PORTCULLIS_ADMIN_URL, PORTCULLIS_ADMIN_KEY_FILE,
PORTCULLIS_ADMIN_CA_FILE (see portcullis_admin.py).
"""
import json
import sys

from portcullis_admin import Admin, UsageError, run_main

USAGE = 'usage: python3 publish.py TOPIC JSON_DATA   (JSON_DATA "-" reads it from stdin)'


def main():
    args = sys.argv[1:]
    if len(args) != 2:
        raise UsageError("a topic and one JSON value are required")
    topic, raw = args
    text = sys.stdin.read() if raw == "-" else raw
    try:
        data = json.loads(text)
    except ValueError as e:
        raise UsageError(f"JSON_DATA is not JSON: {e}") from None
    print(json.dumps(Admin.from_env().publish(topic, data)))


if __name__ == "__main__":
    run_main(USAGE, main)
