"""An agent that says goodbye and hangs up: after `start` it plays one second of a 660 Hz tone
in real time, sends a named mark and waits (at most 3 s) for Twilio to echo it, which means
the caller has heard everything, then closes its WebSocket with 1000. Built on the
`websockets` library's asyncio server.

Run: python hangup_agent.py --port PORT   (any path)
"""

import asyncio
import base64
import json
import os
import sys
import time

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

NAME = "hangup"
TONE_HZ = 660
GOODBYE = common.tone_frames(TONE_HZ, 1.0)


async def handler(ws):
    start = None
    async for text in ws:
        data = json.loads(text)
        if data.get("event") == "start":
            start = data["start"]
            break
    if start is None:
        common.report(agent=NAME, event="connection_without_start")
        return
    stream_sid = start["streamSid"]
    echoed = asyncio.Event()

    async def read():
        async for text in ws:
            data = json.loads(text)
            if data.get("event") == "mark" and (data.get("mark") or {}).get("name") == "goodbye":
                echoed.set()

    reader = asyncio.create_task(read())
    hung_up = False
    began = time.monotonic()
    try:
        for i, frame in enumerate(GOODBYE):
            payload = base64.b64encode(frame).decode()
            await ws.send(json.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}}))
            await asyncio.sleep(max(0.0, began + (i + 1) * common.FRAME_SECONDS - time.monotonic()))
        await ws.send(json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": "goodbye"}}))
        try:
            await asyncio.wait_for(echoed.wait(), 3)
        except asyncio.TimeoutError:
            pass
        await ws.close(1000, "goodbye")
        hung_up = True
    except ConnectionClosed:
        pass
    reader.cancel()
    common.report(
        agent=NAME,
        event="call_ended",
        call_sid=start.get("callSid"),
        stream_sid=stream_sid,
        media_out=len(GOODBYE),
        goodbye_mark_echoed=echoed.is_set(),
        hung_up=hung_up,
    )


async def main():
    args = common.arguments(__doc__.splitlines()[0])
    sock = common.listen(args.port)
    async with serve(handler, sock=sock, max_size=1 << 20) as server:
        common.ready(NAME, sock.getsockname()[1])
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
