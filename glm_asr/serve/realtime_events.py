"""The wire of a live stream (`/v1/realtime`): a frame read as audio samples or as one of OpenAI's client
events, and the `error` event that answers a frame refused. A frame refused is a Fault: the stream sends its
error event and goes on, unless the Fault says to close."""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np

from glm_asr.model.front_end import SAMPLING_RATE
from glm_asr.serve import input_audio

MAX_FRAME_BYTES = 1 << 20  # 32 s of 16 kHz PCM16: more than any client sends at once
MIN_COMMIT_SAMPLES = SAMPLING_RATE // 10  # OpenAI refuses to commit less than 100 ms of audio
CLIENT_EVENTS = ("input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear", "session.update",
                 "transcription_session.update")


class Fault(Exception):
    """A frame refused: the error event's code and message; `close` ends the stream after it."""

    def __init__(self, code: str, message: str, close: int | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.close, self.param = code, message, close, param


def error(code: str, message: str, item_id: str | None = None, param: str | None = None) -> dict:
    return {"type": "error", "error": {"type": "invalid_request_error", "code": code, "message": message, "param": param,
                                        "event_id": None}, **({"item_id": item_id} if item_id else {})}


def client_event(text: str | None) -> tuple[str, dict]:
    """A text frame as (type, event); Fault when it is not JSON or not an event this server takes."""
    try:
        event = json.loads(text or "")
    except ValueError:
        raise Fault("invalid_json", "a text frame that is not JSON: send binary audio frames or JSON events") from None
    kind = event.get("type") if isinstance(event, dict) else None
    if kind not in CLIENT_EVENTS:
        raise Fault("unknown_event", f"event type {kind!r}: expected {', '.join(CLIENT_EVENTS[:-1])} or {CLIENT_EVENTS[-1]}")
    return kind, event


def appended(event: dict) -> bytes:
    """The audio of an input_audio_buffer.append."""
    try:
        return base64.b64decode(event.get("audio", ""), validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise Fault("invalid_audio", "input_audio_buffer.append: 'audio' must be base64 of the session's audio format") from None


def samples(data: bytes, fmt: input_audio.InputFormat) -> np.ndarray:
    """A frame in the session's format as float32 samples at the format's rate."""
    if fmt.coding == "pcm16":
        return pcm16(data)
    if len(data) > MAX_FRAME_BYTES:
        raise Fault("invalid_audio", f"a frame of {len(data)} bytes: send at most {MAX_FRAME_BYTES} bytes a frame")
    return input_audio.g711(data, fmt.coding)


def pcm16(data: bytes) -> np.ndarray:
    """PCM16 little-endian bytes as float32 samples in [-1, 1); Fault when they cannot be PCM16."""
    if len(data) % 2:
        raise Fault("invalid_audio", f"a binary frame of {len(data)} bytes: PCM16 frames hold 2 bytes a sample, so an even count")
    if len(data) > MAX_FRAME_BYTES:
        raise Fault("invalid_audio", f"a frame of {len(data)} bytes: send at most {MAX_FRAME_BYTES} bytes a frame (20-100 ms is usual)")
    samples = np.frombuffer(data, "<i2")
    if _looks_like_float32(samples):
        raise Fault("invalid_audio_format", "these frames look like float32 samples: send mono PCM16 (int16 little-endian) at "
                    "the session's rate; in a browser, multiply by 32767 and send an Int16Array")
    return samples.astype(np.float32) / 32768.0


def _looks_like_float32(samples: np.ndarray) -> bool:
    """float32 audio read as int16: every other word is a float's upper half, whose exponent byte for |x| < 1
    lies in 0x30..0x3f (or 0xb0..0xbf); real PCM16 does not sit in one 4096-wide band on every odd sample."""
    if samples.size < 128 or samples.size % 2:
        return False
    high = samples[1::2].view(np.uint16)
    nonzero = high[high != 0]
    if nonzero.size < 32:
        return False
    exponent = (nonzero >> 8) & 0x7F
    return float(np.mean((exponent >= 0x30) & (exponent <= 0x3F))) > 0.95
