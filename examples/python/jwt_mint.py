#!/usr/bin/env python3
"""Sign a one-use HS256 JWT for a gateway run with tokens.source: jwt.

Prints {"token","userId","topic","expires"}. No round trip to the gateway:
the site signs with the secret the gateway reads from tokens.jwt.secret_file.

  python3 jwt_mint.py USER_ID TOPIC [MORE_TOPICS...]

Environment:
  PORTCULLIS_JWT_SECRET_FILE  the shared secret (at least 32 bytes; one trailing
                              newline is dropped, as the gateway does)
  PORTCULLIS_JWT_AUDIENCE     "aud", when the gateway sets tokens.jwt.audience
  PORTCULLIS_JWT_ISSUER       "iss", when the gateway sets tokens.jwt.issuer
  PORTCULLIS_TOKEN_TTL        seconds until "exp" (default 60; at most tokens.max_ttl)
"""
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import time

from portcullis_admin import UsageError, run_main, ttl_from_env

USAGE = "usage: python3 jwt_mint.py USER_ID TOPIC [MORE_TOPICS...]"

# The gateway's rules for a user id and a topic pattern: a token that breaks
# them is refused at the subscribe, so say so here, at the mint.
USER_ID_RULE = re.compile(r"[A-Za-z0-9_:@-]{1,128}")
_SEGMENT = r"(?:[A-Za-z0-9_:@-]+|\*|\*\*|\{userId\})"
PATTERN_RULE = re.compile(_SEGMENT + r"(?:\." + _SEGMENT + r")*")


def check_claims(user_id, topics):
    """Raise UsageError for a user id or topic the gateway would refuse."""
    if not USER_ID_RULE.fullmatch(user_id):
        raise UsageError(f'user id {json.dumps(user_id)}: 1-128 characters of [A-Za-z0-9_:@-] (one topic segment, no ".")')
    for t in topics:
        if len(t) > 200 or not PATTERN_RULE.fullmatch(t):
            raise UsageError(f'topic {json.dumps(t)}: dot-separated segments of [A-Za-z0-9_:@-], "*", "**" or "{{userId}}", '
                             "at most 200 characters")


def read_secret(path):
    """The bytes of the secret file as the gateway reads them."""
    try:
        with open(path, "rb") as f:
            b = f.read()
    except OSError as e:
        raise OSError(f"cannot read the JWT secret file {path} (PORTCULLIS_JWT_SECRET_FILE): {e.strerror}") from e
    b = b.removesuffix(b"\n").removesuffix(b"\r")
    if len(b) < 32:
        raise ValueError(f"the JWT secret in {path} has {len(b)} bytes; the gateway needs at least 32")
    return b


def _b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _enc(obj):
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


def sign_token(secret, user_id, topics, ttl_seconds=60, audience=None, issuer=None, now=None):
    """A compact HS256 JWT with the claims the gateway reads, and its exp.

    sub is the user id, jti a random one-use key, aud/iss only when given;
    typ "portcullis+jwt" keeps it from being mistaken for any other JWT the
    site signs.
    """
    iat = int(time.time() if now is None else now)
    claims = {"sub": user_id, "topics": list(topics), "iat": iat, "exp": iat + ttl_seconds,
              "jti": _b64(secrets.token_bytes(16))}
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    signing_input = _enc({"alg": "HS256", "typ": "portcullis+jwt"}) + "." + _enc(claims)
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(sig), claims["exp"]


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        raise UsageError("a user id and at least one topic are required")
    user_id, topics = args[0], args[1:]
    check_claims(user_id, topics)
    path = os.environ.get("PORTCULLIS_JWT_SECRET_FILE")
    if not path:
        raise UsageError("PORTCULLIS_JWT_SECRET_FILE is not set")
    token, exp = sign_token(read_secret(path), user_id, topics, ttl_from_env(),
                            os.environ.get("PORTCULLIS_JWT_AUDIENCE"), os.environ.get("PORTCULLIS_JWT_ISSUER"))
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))
    print(json.dumps({"token": token, "userId": user_id, "topic": topics[0], "expires": expires}))


if __name__ == "__main__":
    run_main(USAGE, main)
