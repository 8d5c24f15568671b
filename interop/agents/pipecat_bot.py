"""A Pipecat 1.14 bot on Pipecat's stock Twilio path, with no AI services: it plays the caller's
audio back through a real Pipecat pipeline.

FastAPI/uvicorn WebSocket endpoint -> pipecat.runner.utils.parse_telephony_websocket (reads
Twilio's `connected` and `start`) -> TwilioFrameSerializer (auto hang-up off: it would call
Twilio's REST API) -> FastAPIWebsocketTransport -> Pipeline(transport.input(), Echo(),
transport.output()) -> PipelineWorker (the 1.14 name of PipelineTask) at 8 kHz in and out,
run by WorkerRunner. No VAD, no turn analyzer, nothing downloaded.

Run: python pipecat_bot.py --port PORT   (endpoint ws://127.0.0.1:PORT/ws)
"""

import os
import sys

import uvicorn
from fastapi import FastAPI, WebSocket
from loguru import logger

from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.workers.runner import WorkerRunner

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

NAME = "pipecat"

logger.remove()
logger.add(sys.stderr, level=os.environ.get("PIPECAT_LOG_LEVEL", "INFO"))

app = FastAPI()


class Echo(FrameProcessor):
    """Turns each caller audio frame into bot audio; passes every other frame on."""

    def __init__(self):
        super().__init__()
        self.frames = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self.frames += 1
            await self.push_frame(
                OutputAudioRawFrame(
                    audio=frame.audio,
                    sample_rate=frame.sample_rate,
                    num_channels=frame.num_channels,
                )
            )
        else:
            await self.push_frame(frame, direction)


@app.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket):
    await websocket.accept()
    try:
        transport_type, call_data = await parse_telephony_websocket(websocket)
    except ValueError:
        # Closed before Twilio's handshake: not a call.
        common.report(agent=NAME, event="connection_without_start")
        return
    if transport_type != "twilio":
        common.report(agent=NAME, event="refused", reason=f"not a Twilio stream: {transport_type}")
        await websocket.close(code=1008)
        return
    serializer = TwilioFrameSerializer(
        stream_sid=call_data["stream_id"],
        call_sid=call_data["call_id"],
        account_sid=os.getenv("TWILIO_ACCOUNT_SID"),
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
        ),
    )
    echo = Echo()
    pipeline = Pipeline([transport.input(), echo, transport.output()])
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000),
    )

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client):
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()
    body = call_data.body or {}
    common.report(
        agent=NAME,
        event="call_ended",
        call_sid=call_data.call_id,
        stream_sid=call_data.stream_id,
        from_number=call_data.from_number,
        to_number=call_data.to_number,
        tenant_id=body.get("tenant_id"),
        route_id=body.get("route_id"),
        media_in=echo.frames,
    )


def main():
    args = common.arguments(__doc__.splitlines()[0])
    sock = common.listen(args.port)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", ws_max_size=1 << 20)
    server = uvicorn.Server(config)
    common.ready(NAME, port)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
