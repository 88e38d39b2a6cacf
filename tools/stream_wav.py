"""Streams an audio file to `glm-asr serve`'s live endpoint at real-time pace and prints the events.

    python tools/stream_wav.py ../shared/audio/example_en.wav --url ws://127.0.0.1:8000/v1/realtime
    python tools/stream_wav.py clip.wav --speed 0 --json      # as fast as the socket takes it, raw events

The file is read by the library (any WAV; other formats with glm-asr[audio]), sent as 16 kHz mono PCM16 in
frames of --frame-ms, each at the moment it would have been heard (--speed 1), then `input_audio_buffer.commit`;
the client leaves once every utterance has its text. Needs `websockets` (in glm-asr[serve]).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SR = 16000


@dataclass
class Run:
    """The events of one streamed file, each with the seconds since the first frame was sent."""

    events: list[tuple[float, dict]] = field(default_factory=list)
    sent_until: float = 0.0  # when the last frame left


def stream(url: str, samples: np.ndarray, *, speed: float = 1.0, frame_ms: int = 100, on_event=None,  # noqa: ANN001
           timeout: float = 600.0) -> Run:
    """Sends `samples` (float32 16 kHz) as PCM16 frames; returns once every utterance is answered (or on an error close)."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    frame = SR * frame_ms // 1000
    run = Run()
    with connect(url, max_size=None) as ws:
        first = json.loads(ws.recv(timeout=30))
        started = time.perf_counter()
        run.events.append((0.0, first))
        if on_event:
            on_event(0.0, first)
        if first["type"] != "transcription_session.created":
            return run

        def send() -> None:
            try:
                for i in range(0, pcm.size, frame):
                    if speed > 0:  # frame i is sent when its audio would have been heard
                        time.sleep(max(0.0, started + i / SR / speed - time.perf_counter()))
                    ws.send(pcm[i : i + frame].tobytes())
                ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
                run.sent_until = time.perf_counter() - started
            except ConnectionClosed:
                pass

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        open_items: set[str] = set()
        committed = False
        try:
            while True:
                event = json.loads(ws.recv(timeout=timeout))
                at = time.perf_counter() - started
                run.events.append((at, event))
                if on_event:
                    on_event(at, event)
                kind, item = event["type"], event.get("item_id")
                if kind == "input_audio_buffer.speech_started":
                    open_items.add(item)
                elif kind in ("conversation.item.input_audio_transcription.completed", "error"):
                    open_items.discard(item)
                if kind == "input_audio_buffer.committed" and not sender.is_alive():
                    committed = True
                if committed and not sender.is_alive() and not open_items:
                    break
        except ConnectionClosed:
            pass
        sender.join(5)
    return run


def _print(at: float, event: dict, raw: bool) -> None:
    if raw:
        print(json.dumps({"t": round(at, 3), **event}, ensure_ascii=False), flush=True)
        return
    kind = event["type"]
    if kind == "transcription_session.created":
        print(f"[{at:6.2f}] session: {event['session']['mode']} ({event['session']['reason']})")
    elif kind == "input_audio_buffer.speech_started":
        print(f"[{at:6.2f}] speech started at {event['audio_start_ms'] / 1000:.2f} s")
    elif kind == "input_audio_buffer.speech_stopped":
        print(f"[{at:6.2f}] speech stopped at {event['audio_end_ms'] / 1000:.2f} s")
    elif kind.endswith("transcription.delta"):
        print(f"[{at:6.2f}]   ... {event['delta']}")
    elif kind.endswith("transcription.completed"):
        print(f"[{at:6.2f}] {event['audio_start_ms'] / 1000:.2f}-{event['audio_end_ms'] / 1000:.2f} s: {event['transcript']}")
    elif kind == "error":
        print(f"[{at:6.2f}] error {event['error']['code']}: {event['error']['message']}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("--url", default="ws://127.0.0.1:8000/v1/realtime")
    ap.add_argument("--speed", type=float, default=1.0, help="1: real time; 2: twice as fast; 0: as fast as possible")
    ap.add_argument("--frame-ms", type=int, default=100)
    ap.add_argument("--json", action="store_true", help="print each event as a JSON line")
    args = ap.parse_args(argv)
    try:
        from websockets.sync.client import connect  # noqa: F401
    except ImportError:
        print("stream_wav: needs websockets: pip install 'glm-asr[serve]'", file=sys.stderr)
        return 2
    from glm_asr.io.audio_file import AudioError, load_audio

    try:
        samples = load_audio(args.file)
    except (AudioError, OSError) as e:
        print(f"stream_wav: {e}", file=sys.stderr)
        return 2
    try:
        stream(args.url, samples, speed=args.speed, frame_ms=args.frame_ms, on_event=lambda at, e: _print(at, e, args.json))
    except OSError as e:
        print(f"stream_wav: {args.url}: cannot connect ({e}); is `glm-asr serve` running there?", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
