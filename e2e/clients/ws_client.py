"""A WebSocket client driven by the e2e tests, using python3-websockets.

Usage: ws_client.py URL PROTOCOL ORIGIN MESSAGES_JSON EXPECT TIMEOUT_MS
Same behaviour and output as ws_client.js.
"""
import asyncio
import json
import sys

import websockets


def out(o):
    print(json.dumps(o), flush=True)


async def main():
    url, proto, origin, msgs_json, expect, timeout = sys.argv[1:7]
    msgs = json.loads(msgs_json) or []
    expect = int(expect)
    kw = {}
    if proto:
        kw["subprotocols"] = [proto]
    if origin:
        kw["origin"] = origin
    try:
        async with websockets.connect(url, **kw) as ws:
            out({"open": ws.subprotocol})
            got = 0
            try:
                async with asyncio.timeout(int(timeout) / 1000):
                    async for data in ws:
                        got += 1
                        out({"recv": json.loads(data)})
                        if msgs:
                            m = msgs.pop(0)
                            await ws.send(m if isinstance(m, str) else json.dumps(m))
                        if got >= expect and not msgs:
                            await ws.close(1000)
            except TimeoutError:
                out({"timeout": True})
            out({"close": ws.close_code, "reason": ws.close_reason or ""})
    except websockets.exceptions.InvalidStatus as e:
        out({"http": e.response.status_code})


asyncio.run(main())
