"""Shared bits of the interop agents: arguments, the ready line, G.711 mu-law, tones and the
one-line JSON call summaries that `cargo xtask interop` reads from each agent's stdout."""

import argparse
import json
import math
import os
import socket
import sys

SAMPLE_RATE = 8000
# Twilio's Media Streams frame: 20 ms of 8 kHz mu-law.
FRAME_SAMPLES = 160
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE


def arguments(description: str, extra=None) -> argparse.Namespace:
    """Parses `--port` (or `AGENT_PORT`) and any agent-specific options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("AGENT_PORT", "0")),
        help="TCP port on 127.0.0.1 (default $AGENT_PORT, else any free port)",
    )
    if extra:
        extra(parser)
    return parser.parse_args()


def listen(port: int) -> socket.socket:
    """A listening TCP socket on 127.0.0.1, for servers started from a socket."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def ready(name: str, port: int) -> None:
    """The ready line: printed once the port accepts connections."""
    print(f"READY {name} 127.0.0.1:{port}", flush=True)


def report(**fields) -> None:
    """One JSON line on stdout about a call (`"event"` says what happened)."""
    print(json.dumps(fields, sort_keys=True), flush=True)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _linear_to_ulaw(sample: int) -> int:
    """G.711 mu-law encoding of one 16-bit linear sample."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    if sample < 0:
        sample = -sample
    sample = min(sample, clip) + bias
    exponent = 7
    mask = 0x4000
    while exponent > 0 and not sample & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def ulaw_to_linear(byte: int) -> int:
    """G.711 mu-law decoding of one byte."""
    byte = ~byte & 0xFF
    sign = byte & 0x80
    exponent = (byte >> 4) & 0x07
    mantissa = byte & 0x0F
    sample = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -sample if sign else sample


def tone_frames(frequency: float, seconds: float, amplitude: float = 0.4) -> list[bytes]:
    """A sine tone as 20 ms mu-law frames (the last one padded with silence)."""
    total = int(seconds * SAMPLE_RATE)
    frames_count = math.ceil(total / FRAME_SAMPLES)
    out = []
    for f in range(frames_count):
        frame = bytearray()
        for i in range(FRAME_SAMPLES):
            n = f * FRAME_SAMPLES + i
            value = 0
            if n < total:
                value = int(amplitude * 32767 * math.sin(2 * math.pi * frequency * n / SAMPLE_RATE))
            frame.append(_linear_to_ulaw(value))
        out.append(bytes(frame))
    return out
