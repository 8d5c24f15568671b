"""An agent that only talks to the service it trusts: the WebSocket handshake must carry
`Authorization: Bearer <JWT>` signed HS256 with the tenant's webhook secret (the HMAC key is
the base64-decoded part after `whsec_`), audience "agent", with sub, tid, rid, iat and exp.
Anything else is refused with HTTP 403 before the upgrade. After `start` it checks that the
token's `sub` is the start's callSid and `tid`/`rid` are customParameters tenant_id/route_id
(closing with 1008 when not), then plays the caller's audio back. Built on the `websockets`
library's asyncio server and PyJWT.

Run: python jwt_agent.py --port PORT --secret whsec_...   (or AGENT_WEBHOOK_SECRET; any path)
"""

import asyncio
import base64
import json
import os
import sys
from http import HTTPStatus

import jwt
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

NAME = "jwt"


def options(parser):
    parser.add_argument(
        "--secret",
        default=os.environ.get("AGENT_WEBHOOK_SECRET"),
        help="the tenant's webhook secret, whsec_... (default $AGENT_WEBHOOK_SECRET)",
    )


def verifier(secret: str):
    key = base64.b64decode(secret.removeprefix("whsec_"))

    def process_request(connection, request):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            common.report(agent=NAME, event="refused", reason="no bearer token")
            return connection.respond(HTTPStatus.FORBIDDEN, "bearer token required\n")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["HS256"],
                audience="agent",
                options={"require": ["sub", "tid", "rid", "iat", "exp"]},
            )
        except jwt.InvalidTokenError as e:
            common.report(agent=NAME, event="refused", reason=f"invalid token: {e}")
            return connection.respond(HTTPStatus.FORBIDDEN, "invalid token\n")
        connection.claims = claims
        return None

    return process_request


async def handler(ws):
    claims = ws.claims
    start = None
    media_in = media_out = 0
    try:
        async for text in ws:
            data = json.loads(text)
            event = data.get("event")
            if event == "start":
                start = data["start"]
                custom = start.get("customParameters") or {}
                expected = (start.get("callSid"), custom.get("tenant_id"), custom.get("route_id"))
                if (claims["sub"], claims["tid"], claims["rid"]) != expected:
                    common.report(agent=NAME, event="refused", reason="token is for another call",
                                  call_sid=start.get("callSid"))
                    await ws.close(1008, "token is for another call")
                    return
            elif event == "media" and start is not None:
                media_in += 1
                await ws.send(json.dumps({"event": "media", "streamSid": start["streamSid"],
                                          "media": {"payload": data["media"]["payload"]}}))
                media_out += 1
    except ConnectionClosed:
        pass
    if start is None:
        common.report(agent=NAME, event="connection_without_start", call_sid=claims["sub"])
        return
    common.report(
        agent=NAME,
        event="call_ended",
        call_sid=claims["sub"],
        tenant_id=claims["tid"],
        route_id=claims["rid"],
        verified=start is not None,
        media_in=media_in,
        media_out=media_out,
    )


async def main():
    args = common.arguments(__doc__.splitlines()[0], options)
    if not args.secret or not args.secret.startswith("whsec_"):
        sys.exit("jwt_agent: --secret whsec_... (or AGENT_WEBHOOK_SECRET) is required")
    sock = common.listen(args.port)
    async with serve(handler, sock=sock, process_request=verifier(args.secret), max_size=1 << 20) as server:
        common.ready(NAME, sock.getsockname()[1])
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
