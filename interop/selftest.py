"""Plays the service's part against one agent directly (no stateset-voice involved): opens the
WebSocket with the Authorization JWT the relay sends, sends Twilio's `connected` and `start`
(customParameters as the relay edits them), streams a sweep as 20 ms mu-law frames in real
time, echoes named marks back as Twilio does, then sends `stop` and waits for the close.
Prints one JSON line with what came back; exits 1 when the agent sent no audio.

    python selftest.py ws://127.0.0.1:PORT/PATH --secret whsec_... [--seconds 2] [--no-stop]
"""

import argparse
import asyncio
import base64
import json
import math
import os
import sys
import time
import uuid

import jwt
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "agents"))
import common  # noqa: E402


def sweep_frames(seconds: float) -> list[bytes]:
    total = int(seconds * common.SAMPLE_RATE)
    frames = []
    phase = 0.0
    for f in range(math.ceil(total / common.FRAME_SAMPLES)):
        frame = bytearray()
        for i in range(common.FRAME_SAMPLES):
            n = f * common.FRAME_SAMPLES + i
            freq = 300 + 2700 * n / max(total, 1)
            phase += 2 * math.pi * freq / common.SAMPLE_RATE
            frame.append(common._linear_to_ulaw(int(0.5 * 32767 * math.sin(phase))))
        frames.append(bytes(frame))
    return frames


def token(secret: str, call_sid: str, tenant: str, route: str, lifetime: int = 60) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    now = int(time.time())
    claims = {"sub": call_sid, "tid": tenant, "rid": route, "aud": "agent", "iat": now, "exp": now + lifetime}
    return jwt.encode(claims, key, algorithm="HS256")


async def run(args) -> dict:
    call_sid = "CA" + uuid.uuid4().hex
    stream_sid = "MZ" + uuid.uuid4().hex
    headers = {}
    if args.secret:
        headers["Authorization"] = "Bearer " + token(args.secret, call_sid, args.tenant, args.route)
    result = {"call_sid": call_sid, "media": 0, "marks": 0, "nameless_marks": 0, "clears": 0, "other": 0}
    try:
        ws = await connect(args.url, additional_headers=headers, max_size=1 << 20)
    except InvalidStatus as e:
        result["refused"] = e.response.status_code
        return result
    seq = 0

    def nxt():
        nonlocal seq
        seq += 1
        return str(seq)

    async with ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps({
            "event": "start",
            "sequenceNumber": nxt(),
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {
                    "tenant_id": args.tenant,
                    "route_id": args.route,
                    "from_number": "+15550001111",
                    "to_number": "+15550002222",
                },
            },
            "streamSid": stream_sid,
        }))

        async def reader():
            async for text in ws:
                msg = json.loads(text)
                event = msg.get("event")
                if event == "media":
                    result["media"] += 1
                elif event == "mark":
                    name = (msg.get("mark") or {}).get("name")
                    if name:
                        result["marks"] += 1
                        await ws.send(json.dumps({"event": "mark", "sequenceNumber": nxt(),
                                                  "streamSid": stream_sid, "mark": {"name": name}}))
                    else:
                        result["nameless_marks"] += 1
                elif event == "clear":
                    result["clears"] += 1
                else:
                    result["other"] += 1

        read = asyncio.create_task(reader())
        start = time.monotonic()
        try:
            for i, frame in enumerate(sweep_frames(args.seconds)):
                await ws.send(json.dumps({
                    "event": "media",
                    "sequenceNumber": nxt(),
                    "streamSid": stream_sid,
                    "media": {"track": "inbound", "chunk": str(i + 1), "timestamp": str(i * 20),
                              "payload": base64.b64encode(frame).decode()},
                }))
                await asyncio.sleep(max(0, start + (i + 1) * common.FRAME_SECONDS - time.monotonic()))
            if not args.no_stop:
                await ws.send(json.dumps({"event": "stop", "sequenceNumber": nxt(), "streamSid": stream_sid,
                                          "stop": {"accountSid": "AC" + "0" * 32, "callSid": call_sid}}))
                await asyncio.sleep(0.3)
                await ws.close(1000)
        except ConnectionClosed:
            pass
        try:
            await asyncio.wait_for(read, 5)
        except (ConnectionClosed, asyncio.TimeoutError):
            pass
    result["close_code"] = ws.close_code
    result["close_reason"] = ws.close_reason
    result["closed_by_agent"] = ws.protocol.close_rcvd_then_sent if ws.protocol.close_rcvd else False
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--secret")
    parser.add_argument("--tenant", default="tenant-1")
    parser.add_argument("--route", default="route-1")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--no-stop", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, sort_keys=True))
    sys.exit(0 if result["media"] > 0 else 1)


if __name__ == "__main__":
    main()
