"""An agent in the style of Twilio's speech-assistant samples (FastAPI + WebSocket): it ignores
everything until `start`, takes the stream SID from `data['start']['streamSid']`, plays the
caller's audio back as `{"event": "media", "streamSid": ..., "media": {"payload": ...}}`
(where the samples forward the model's audio), sends a named mark after every chunk of
audio, and pops its mark queue as Twilio echoes the marks back.

Run: python twilio_sample_agent.py --port PORT   (endpoint ws://127.0.0.1:PORT/media-stream)
"""

import json
import os
import sys

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

NAME = "twilio-sample"
# A mark after this many echoed frames (half a second).
MARK_EVERY = 25

app = FastAPI()


@app.websocket("/media-stream")
async def handle_media_stream(websocket: WebSocket):
    await websocket.accept()
    stream_sid = None
    call_sid = None
    custom = {}
    mark_queue = []
    media_in = media_out = marks_sent = marks_echoed = marks_unexpected = 0
    before_start = 0
    try:
        async for message in websocket.iter_text():
            data = json.loads(message)
            event = data.get("event")
            if event == "start":
                stream_sid = data["start"]["streamSid"]
                call_sid = data["start"].get("callSid")
                custom = data["start"].get("customParameters") or {}
                common.log(f"{NAME}: incoming stream has started {stream_sid}")
            elif stream_sid is None:
                before_start += 1
            elif event == "media":
                media_in += 1
                await websocket.send_json(
                    {"event": "media", "streamSid": stream_sid, "media": {"payload": data["media"]["payload"]}}
                )
                media_out += 1
                if media_out % MARK_EVERY == 0:
                    name = f"responsePart-{media_out // MARK_EVERY}"
                    await websocket.send_json({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})
                    mark_queue.append(name)
                    marks_sent += 1
            elif event == "mark":
                name = (data.get("mark") or {}).get("name")
                if mark_queue and mark_queue[0] == name:
                    mark_queue.pop(0)
                    marks_echoed += 1
                else:
                    marks_unexpected += 1
            elif event == "stop":
                common.log(f"{NAME}: stream {stream_sid} stopped")
    except WebSocketDisconnect:
        pass
    if stream_sid is None:
        common.report(agent=NAME, event="connection_without_start", frames=before_start)
        return
    common.report(
        agent=NAME,
        event="call_ended",
        call_sid=call_sid,
        stream_sid=stream_sid,
        tenant_id=custom.get("tenant_id"),
        route_id=custom.get("route_id"),
        frames_before_start=before_start,
        media_in=media_in,
        media_out=media_out,
        marks_sent=marks_sent,
        marks_echoed=marks_echoed,
        marks_unexpected=marks_unexpected,
    )


def main():
    args = common.arguments(__doc__.splitlines()[0])
    sock = common.listen(args.port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    common.ready(NAME, sock.getsockname()[1])
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
