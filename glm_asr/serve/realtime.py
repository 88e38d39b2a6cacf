"""Live audio over a WebSocket (`/v1/realtime`): a stream's utterances transcribed as the speaker pauses.

The contract is OpenAI's realtime transcription API, in both its forms. A client that connects as OpenAI's
GA clients do (`/v1/realtime?intent=transcription`) gets `session.created` and answers to `session.update`
with `session.type: "transcription"`; any other client gets the beta `transcription_session.created` and
answers to `transcription_session.update`. Audio comes as `input_audio_buffer.append` (base64 in JSON) or
as binary frames, in the session's format (input_audio.py): PCM16 at 24 kHz, G.711 mu-law or A-law at 8 kHz,
or PCM16 at 16 kHz, resampled to the model's 16 kHz. A client that names no format is read as OpenAI's
default, PCM16 at 24 kHz, when it connected with `intent=transcription`, and as 16 kHz PCM16 otherwise (the
page and this project's tools, which connect without it and send 16 kHz).

The stream's own VAD (utterances.py) ends an utterance on a pause and cuts one at 30 s, as the session's
`turn_detection` says (turn_detection.py: server_vad's fields applied; null: manual turns, one utterance per
commit; semantic_vad run as server_vad); each utterance becomes a Job in the server's one scheduler, so live
streams and HTTP uploads share batches. The VAD and the resampling run on a worker thread, never on the event
loop. Events: `input_audio_buffer.speech_started` / `speech_stopped` / `committed` / `cleared`,
`conversation.item.input_audio_transcription.delta` (partials) / `.completed`, and `error`.

The rooms: realtime_events.py (the wire: frames, client events, the error event), turns.py (audio to
utterances), realtime_session.py (one stream), and this file (what the streams share, and the endpoint).

Partials re-decode the utterance heard so far and show what two passes agree on (agreement.py). They pay
only where a pass costs less than the audio it covers: the server times one pass over PROBE_SECONDS of audio
at start-up and runs final-only when it costs more (`--partials on|off` overrides). A stream never has more
than one partial pass in flight, so a slow CPU spends its time on final texts.

Faults end in an `error` event and the stream goes on: a frame that cannot be the session's format (odd
length, float32 samples, unknown JSON), a format, language or turn_detection field not taken, a commit with
less than 100 ms buffered (as OpenAI). A stream silent past `idle_seconds` is closed (1000); past
`max_streams` a new one is refused and closed (1013). A client that goes away has its queued utterances dropped from the scheduler.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from starlette.websockets import WebSocket, WebSocketDisconnect

from glm_asr.longform.vad import VadUnavailable
from glm_asr.serve.realtime_events import error
from glm_asr.serve.realtime_session import Session
from glm_asr.serve.scheduler import Job
from glm_asr.serve.utterances import TurnOptions
from glm_asr.transcription.presets import demo_clip

PROBE_SECONDS = 5.0


@dataclass(frozen=True)
class RealtimeOptions:
    max_streams: int = 8
    idle_seconds: float = 60.0  # a stream that sends nothing this long is closed
    partials: str = "auto"  # auto: on when a pass costs less than the audio it covers; on; off
    partial_step_s: float = 1.0  # new audio between two partial passes, at least
    turn: TurnOptions = field(default_factory=TurnOptions)

    def __post_init__(self) -> None:
        if self.partials not in ("auto", "on", "off"):
            raise ValueError(f"partials {self.partials!r}: expected auto, on or off")
        if self.max_streams < 1 or not self.idle_seconds > 0 or not self.partial_step_s > 0:
            raise ValueError(f"max_streams {self.max_streams}, idle_seconds {self.idle_seconds}, partial_step_s "
                             f"{self.partial_step_s}: expected each positive")


class Realtime:
    """What the streams share: the options, the mode chosen at start-up and the count of open streams."""

    def __init__(self, options: RealtimeOptions = RealtimeOptions()) -> None:
        self.options = options
        self.open = 0
        self.partials = False
        self.reason = "not measured yet"
        # Decoding, resampling and the VAD of every stream run here, off the event loop; a stream awaits each of
        # its frames in turn, so its own frames stay in order.
        self.executor = ThreadPoolExecutor(max_workers=min(2, options.max_streams), thread_name_prefix="glm-asr-stream")

    async def choose_mode(self, scheduler, processor) -> None:  # noqa: ANN001
        """Times one pass over PROBE_SECONDS of audio through the scheduler and decides on partials."""
        if self.options.partials != "auto":
            self.partials = self.options.partials == "on"
            self.reason = f"--partials {self.options.partials}"
            return
        job = Job("probe", demo_clip(PROBE_SECONDS), asyncio.get_running_loop(), processor)
        started = time.perf_counter()
        scheduler.submit(job)
        await job.done
        cost = time.perf_counter() - started
        self.partials = cost < PROBE_SECONDS
        verdict = "less" if self.partials else "more"
        self.reason = (f"a pass over {PROBE_SECONDS:g} s of audio took {cost:.2f} s, {verdict} than the audio it covers: "
                       + ("partials from local agreement" if self.partials else "final text only, once each utterance ends"))


async def endpoint(websocket: WebSocket) -> None:
    service = websocket.app.state.service
    realtime: Realtime = service.realtime
    await websocket.accept()
    limit = realtime.options.max_streams
    if service.draining or not service.ready or realtime.open >= limit:
        why = ("the server is shutting down or not ready" if service.draining or not service.ready
               else f"the server is at its limit of {limit} open streams")
        await websocket.send_text(json.dumps(error("too_many_streams" if service.ready else "unavailable",
                                                    f"{why}; close another stream or retry in a few seconds")))
        await websocket.close(1013)  # try again later
        return
    # OpenAI's clients connect with ?intent=transcription: theirs is the default format (24 kHz), and the GA events
    # unless the client asks for the beta ones (the OpenAI-Beta: realtime=v1 header of the beta clients).
    openai_client = websocket.query_params.get("intent") == "transcription"
    beta = "realtime=v1" in websocket.headers.get("openai-beta", "")
    try:
        session = Session(websocket, service, ga=openai_client and not beta, openai_default=openai_client)
    except VadUnavailable as e:  # the page and the HTTP API work without it; live streams need it
        await websocket.send_text(json.dumps(error("vad_unavailable", str(e))))
        await websocket.close(1011)
        return
    realtime.open += 1
    try:
        await session.run()
    except WebSocketDisconnect:
        pass
    finally:
        realtime.open -= 1
        session.close()
