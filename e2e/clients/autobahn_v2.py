"""A WAMP v2 client driven by the e2e tests, using Debian's python3-autobahn
(asyncio flavour, ApplicationRunner + ApplicationSession). Run it with
/usr/bin/python3.

Usage: autobahn_v2.py URL REALM USER TICKET TOPIC FORBIDDEN_JSON BAD_TICKETS_JSON TIMEOUT_MS

1. Joins REALM with ticket auth (authid USER, onChallenge returns TICKET).
2. Subscribes to TOPIC, waits for one publication (the test publishes it).
3. Subscribes to each topic of FORBIDDEN_JSON and reports the error URI.
4. Unsubscribes from TOPIC, then waits for a line "leave" on stdin (so the
   test can publish while the session is still joined), then leaves with
   GOODBYE and disconnects.
5. For each ticket in BAD_TICKETS_JSON, tries to join and reports the ABORT
   reason that reaches onLeave.

Prints one JSON line per step: {"step": NAME, ...}. Only the serializers
autobahn finds are offered (json, msgpack, cbor, ubjson and their batched
forms): the gateway must choose wamp.2.json.
"""
import asyncio
import json
import sys

import txaio

txaio.use_asyncio()

from autobahn.asyncio.wamp import ApplicationRunner, ApplicationSession  # noqa: E402
from autobahn.wamp.exception import ApplicationError  # noqa: E402


def out(step, **kw):
    kw["step"] = step
    print(json.dumps(kw), flush=True)


URL, REALM, USER, TICKET, TOPIC, FORBIDDEN, BAD, TIMEOUT = sys.argv[1:9]
FORBIDDEN = json.loads(FORBIDDEN)
BAD = json.loads(BAD)
TIMEOUT = int(TIMEOUT) / 1000


async def read_stdin_line():
    loop = asyncio.get_running_loop()
    return (await loop.run_in_executor(None, sys.stdin.readline)).strip()


def make_session(ticket, scenario, done):
    class Session(ApplicationSession):
        def onConnect(self):
            t = self._transport
            out("connect", protocol=t.websocket_protocol_in_use,
                extensions=[str(e) for e in (t.websocket_extensions_in_use or [])])
            self.join(self.config.realm, authmethods=["ticket"], authid=USER)

        def onChallenge(self, challenge):
            out("challenge", method=challenge.method, extra=challenge.extra)
            return ticket

        async def onJoin(self, details):
            out("joined", session=details.session, authid=details.authid,
                authrole=details.authrole, authmethod=details.authmethod,
                realm=details.realm)
            if not scenario:
                return
            try:
                got = asyncio.get_running_loop().create_future()

                def on_event(*args, **kwargs):
                    if not got.done():
                        got.set_result((list(args), kwargs))

                sub = await self.subscribe(on_event, TOPIC)
                out("subscribed", topic=TOPIC, id=sub.id)
                args, kwargs = await asyncio.wait_for(got, TIMEOUT)
                out("event", args=args, kwargs=kwargs)
                for topic in FORBIDDEN:
                    try:
                        await self.subscribe(lambda *a, **k: None, topic)
                        out("subscribe_error", topic=topic, error=None)
                    except ApplicationError as e:
                        out("subscribe_error", topic=topic, error=e.error)
                await sub.unsubscribe()
                out("unsubscribed", active=sub.active)
                line = await asyncio.wait_for(read_stdin_line(), TIMEOUT)
                if line != "leave":
                    out("error", error="stdin said %r" % line)
                self.leave()
            except Exception as e:  # report, then leave
                out("error", error="%s: %s" % (type(e).__name__, e))
                self.leave()

        def onLeave(self, details):
            out("left", reason=details.reason, message=details.message)
            self.disconnect()

        def onDisconnect(self):
            out("disconnected")
            if not done.done():
                done.set_result(None)

    return Session


async def run(ticket, scenario):
    done = asyncio.get_running_loop().create_future()
    runner = ApplicationRunner(URL, REALM)
    await runner.run(make_session(ticket, scenario, done), start_loop=False)
    await asyncio.wait_for(done, TIMEOUT)


async def main():
    try:
        await run(TICKET, True)
        for bad in BAD:
            await run(bad, False)
    except Exception as e:
        out("error", error="%s: %s" % (type(e).__name__, e))
    out("end")


asyncio.run(main())
