"""The Portcullis admin API from Python 3 with nothing but the standard library.

mint.py and publish.py are its command-line front ends; a site's backend
imports mint_token and publish directly.

Where the gateway is, from the environment:
  PORTCULLIS_ADMIN_URL       the admin API (default http://127.0.0.1:8081; the
                             gateway writes it to <data_dir>/admin.url)
  PORTCULLIS_ADMIN_KEY_FILE  the bearer key (default ./portcullis-data/admin.key,
                             the gateway's admin.key_file)
  PORTCULLIS_ADMIN_CA_FILE   a PEM CA bundle for an admin API behind HTTPS with a
                             private CA (default: the system's trust store)
"""
import json
import os
import re
import ssl
import sys
import urllib.error
import urllib.request


class AdminError(Exception):
    """A refusal by the admin API, or a failure to reach it.

    status is the HTTP status (0: no answer), code the API's "error"
    ("bad_request", "unauthorized", ...).
    """

    def __init__(self, message, status=0, code=""):
        super().__init__(message)
        self.status = status
        self.code = code


class UsageError(Exception):
    """A command line that cannot be run."""


class Admin:
    """Where the admin API is and its bearer key."""

    def __init__(self, url, key, ca_file=None, timeout=5.0):
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout
        self.context = ssl.create_default_context(cafile=ca_file) if ca_file else None

    @classmethod
    def from_env(cls, env=None):
        env = os.environ if env is None else env
        key_file = env.get("PORTCULLIS_ADMIN_KEY_FILE", "portcullis-data/admin.key")
        try:
            with open(key_file, encoding="utf-8") as f:
                key = f.read().strip()
        except OSError as e:
            raise AdminError(f"cannot read the admin key file {key_file} (PORTCULLIS_ADMIN_KEY_FILE): {e.strerror}") from e
        if not key:
            raise AdminError(f"the admin key file {key_file} is empty")
        return cls(env.get("PORTCULLIS_ADMIN_URL", "http://127.0.0.1:8081"), key, env.get("PORTCULLIS_ADMIN_CA_FILE") or None)

    def call(self, method, path, body=None):
        """Send one JSON request and return the decoded reply; AdminError on any refusal."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": "Bearer " + self.key,
            "Content-Type": "application/json",
        })
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as resp:
                status, text = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        except (urllib.error.URLError, OSError) as e:
            raise AdminError(f"{method} {self.url}{path}: {getattr(e, 'reason', e)}") from e
        try:
            reply = json.loads(text)
        except ValueError:
            raise AdminError(f"{method} {path}: HTTP {status}, not JSON: {text[:200]!r}", status) from None
        if status >= 300:
            raise AdminError(f"{method} {path}: HTTP {status} {reply.get('error')}: {reply.get('message')}",
                             status, reply.get("error", ""))
        return reply

    def mint_token(self, user_id, topics, ttl_seconds=60):
        """Mint a one-use token for user_id bound to topics (topics or patterns).

        Returns {"token", "userId", "topic", "expires"}; topic is the first of
        topics, the one the page subscribes to.
        """
        r = self.call("POST", "/v1/tokens", {"userId": user_id, "topics": list(topics), "ttl": f"{ttl_seconds}s"})
        return {"token": r["token"], "userId": r["userId"], "topic": topics[0], "expires": r["expires_at"]}

    def publish(self, topic, data):
        """Publish data (any JSON value) to topic; returns {"delivered": N}."""
        return self.call("POST", "/v1/publish", {"topic": topic, "data": data})


def ttl_from_env(env=None):
    """PORTCULLIS_TOKEN_TTL: whole seconds, default 60."""
    env = os.environ if env is None else env
    raw = env.get("PORTCULLIS_TOKEN_TTL", "60")
    if not re.fullmatch(r"[1-9][0-9]{0,4}", raw):
        raise UsageError(f"PORTCULLIS_TOKEN_TTL={json.dumps(raw)} is not a number of seconds (1-99999)")
    return int(raw)


def run_main(usage, main):
    """Run a command-line entry point: exit 2 on usage errors, 1 on refusals."""
    try:
        main()
    except UsageError as e:
        print(f"{e}\n{usage}", file=sys.stderr)
        sys.exit(2)
    except (AdminError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
