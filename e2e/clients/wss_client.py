"""A wss:// client driven by e2e/tls_test.go, using python3-websockets with
an ssl context that trusts the test's CA only.

Usage: wss_client.py URL CA_FILE TOPIC USER TOKEN TIMEOUT_MS
Steps printed (one JSON line each, {"step": NAME, ...}):
  open        negotiated subprotocol and the serial of the server's certificate (hex)
  subscribed  the gateway's answer to the subscribe
  event       the next message (the test publishes once it sees "subscribed")
  event2      after the test writes a line on stdin: the next message
  end         after a clean close (or "error" before it)
"""
import asyncio
import json
import ssl
import sys

import websockets


def out(step, **kw):
    kw["step"] = step
    print(json.dumps(kw), flush=True)


async def main():
    url, ca, topic, user, token, timeout = sys.argv[1:7]
    timeout = int(timeout) / 1000
    ctx = ssl.create_default_context(cafile=ca)
    try:
        async with websockets.connect(url, ssl=ctx, subprotocols=["portcullis.v1"], open_timeout=timeout) as ws:
            cert = ws.transport.get_extra_info("ssl_object").getpeercert()
            out("open", protocol=ws.subprotocol, serial=cert["serialNumber"].lower().lstrip("0"))
            welcome = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if welcome.get("op") != "welcome":
                out("error", error="first message is not the welcome: " + json.dumps(welcome))
                return
            await ws.send(json.dumps({"op": "subscribe", "id": 1, "topic": topic, "userId": user, "token": token}))
            out("subscribed", msg=json.loads(await asyncio.wait_for(ws.recv(), timeout)))
            out("event", msg=json.loads(await asyncio.wait_for(ws.recv(), timeout)))
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            out("event2", msg=json.loads(await asyncio.wait_for(ws.recv(), timeout)))
            await ws.close(1000)
            out("closed", code=ws.close_code)
    except Exception as e:  # reported to the test, which fails on it
        out("error", error=repr(e))
    out("end")


asyncio.run(main())
