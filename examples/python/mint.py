#!/usr/bin/env python3
"""Mint a one-use token through the admin API (tokens.source: store).

Prints {"token","userId","topic","expires"} for the page that subscribes.

  python3 mint.py USER_ID TOPIC [MORE_TOPICS...]

Environment: PORTCULLIS_ADMIN_URL, PORTCULLIS_ADMIN_KEY_FILE,
PORTCULLIS_ADMIN_CA_FILE (see portcullis_admin.py), PORTCULLIS_TOKEN_TTL
(seconds, default 60).
"""
import json
import sys

from portcullis_admin import Admin, UsageError, run_main, ttl_from_env

USAGE = "usage: python3 mint.py USER_ID TOPIC [MORE_TOPICS...]"


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        raise UsageError("a user id and at least one topic are required")
    ttl = ttl_from_env()
    print(json.dumps(Admin.from_env().mint_token(args[0], args[1:], ttl)))


if __name__ == "__main__":
    run_main(USAGE, main)
