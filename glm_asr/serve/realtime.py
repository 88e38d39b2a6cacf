"""Live audio over a WebSocket (`/v1/realtime`): a stream's utterances transcribed as the speaker pauses.

The contract is OpenAI's realtime transcription API, in both its forms. A client that connects as OpenAI's
GA clients do (`/v1/realtime?intent=transcription`) gets `session.created` and answers to `session.update`
with `session.type: "transcription"`; any other client gets the beta `transcription_session.created` and
answers to `transcription_session.update`. Audio comes as `input_audio_buffer.append` (base64 in JSON) or
as binary frames, in the session's format (input_audio.py): PCM16 at 24 kHz, G.711 mu-law or A-law at 8 kHz,
or PCM16 at 16 kHz, resampled to the model's 16 kHz. A client that names no format is read as OpenAI's
default, PCM16 at 24 kHz, when it connected with `intent=transcription`, and as 16 kHz PCM16 otherwise (the
page and this project's tools, which connect without it and send 16 kHz).

The stream's own VAD (utterances.py) ends an utterance on a pause and cuts one at 30 s; each utterance becomes
a Job in the server's one scheduler, so live streams and HTTP uploads share batches. The VAD and the
resampling run on a worker thread, never on the event loop. Events: `input_audio_buffer.speech_started` /
`speech_stopped` / `committed` / `cleared`, `conversation.item.input_audio_transcription.delta` (partials) /
`.completed`, and `error`.

Partials re-decode the utterance heard so far and show what two passes agree on (agreement.py). They pay
only where a pass costs less than the audio it covers: the server times one pass over PROBE_SECONDS of audio
at start-up and runs final-only when it costs more (`--partials on|off` overrides). A stream never has more
than one partial pass in flight, so a slow CPU spends its time on final texts.

Faults end in an `error` event and the stream goes on: a frame that cannot be the session's format (odd
length, float32 samples, unknown JSON), a format or language not taken, a commit with less than 100 ms
buffered (as OpenAI). A stream silent past `idle_seconds` is closed (1000); past `max_streams` a new one is
refused and closed (1013). A client that goes away has its queued utterances dropped from the scheduler.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from glm_asr.longform.vad import VadUnavailable
from glm_asr.model.front_end import SAMPLING_RATE
from glm_asr.serve import input_audio
from glm_asr.serve.agreement import LocalAgreement
from glm_asr.serve.limits import ApiError
from glm_asr.serve.scheduler import Job
from glm_asr.serve.session_config import ConfigError, SessionConfig
from glm_asr.serve.utterances import Segmenter, TurnOptions, Utterance
from glm_asr.transcription.presets import demo_clip

PROBE_SECONDS = 5.0
MAX_FRAME_BYTES = 1 << 20  # 32 s of 16 kHz PCM16: more than any client sends at once
MIN_COMMIT_SAMPLES = SAMPLING_RATE // 10  # OpenAI refuses to commit less than 100 ms of audio
_ids = itertools.count(1)


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


class Fault(Exception):
    """A frame refused: the error event's code and message; `close` ends the stream after it."""

    def __init__(self, code: str, message: str, close: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.close = code, message, close


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


def _error(code: str, message: str, item_id: str | None = None) -> dict:
    return {"type": "error", "error": {"type": "invalid_request_error", "code": code, "message": message, "param": None,
                                        "event_id": None}, **({"item_id": item_id} if item_id else {})}


class Session:
    """One WebSocket stream: frames in, VAD events and texts out."""

    def __init__(self, websocket: WebSocket, service, *, ga: bool, openai_default: bool) -> None:  # noqa: ANN001 (app.Service)
        self.ws, self.service = websocket, service
        self.realtime: Realtime = service.realtime
        self.segmenter = Segmenter(self.realtime.options.turn)
        self.config = SessionConfig(f"sess_{next(_ids)}", ga, input_audio.OPENAI_PCM if openai_default else input_audio.MODEL_PCM)
        self.resampler = self._resampler()
        self.origin = 0  # stream samples (16 kHz) before this segmenter: input_audio_buffer.clear starts a new one
        self.received = 0  # stream samples (16 kHz) so far
        self.buffered = 0  # samples since the last commit, clear or utterance end: a commit of less is refused
        self.sending = asyncio.Lock()
        self.jobs: set[Job] = set()
        self.tasks: set[asyncio.Task] = set()
        self.item: str | None = None  # the utterance in progress
        self.agreement = LocalAgreement()
        self.partial_job: Job | None = None
        self.partial_at = 0  # utterance samples when the last partial pass was sent

    def _resampler(self) -> input_audio.StreamResampler | None:
        rate = self.config.format.rate
        return None if rate == SAMPLING_RATE else input_audio.StreamResampler(rate)

    def _ms(self, samples: int) -> int:
        """A segmenter position as milliseconds of the stream."""
        return round((self.origin + samples) * 1000 / SAMPLING_RATE)

    async def send(self, event: dict) -> None:
        async with self.sending:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # the client left: nothing to tell it
                await self.ws.send_text(json.dumps({"event_id": f"event_{next(_ids)}", **event}, ensure_ascii=False))

    def session(self) -> dict:
        turn, options = self.realtime.options.turn, self.realtime.options
        detection = {"type": "server_vad", "threshold": turn.threshold, "prefix_padding_ms": turn.prefix_padding_ms,
                     "silence_duration_ms": turn.silence_duration_ms}
        extras = {"mode": "partials" if self.realtime.partials else "final-only", "reason": self.realtime.reason,
                  "idle_timeout_s": options.idle_seconds, "max_utterance_s": 30.0}
        return self.config.payload(self.service.model_names[0], detection, extras)

    async def run(self) -> None:
        await self.send({"type": self.config.created(), "session": self.session()})
        idle = self.realtime.options.idle_seconds
        while True:
            try:
                message = await asyncio.wait_for(self.ws.receive(), idle)
            except asyncio.TimeoutError:
                if any(not job.done.done() for job in self.jobs):
                    continue  # the client waits for a text still being decoded: it is not idle
                await self.send(_error("idle_timeout", f"nothing received for {idle:g} s: the stream is closed; reconnect to go on"))
                await self.ws.close(1000)
                return
            if message["type"] == "websocket.disconnect":
                return
            try:
                await self._message(message)
            except Fault as f:
                await self.send(_error(f.code, f.message))
                if f.close is not None:
                    await self.ws.close(f.close)
                    return

    async def _message(self, message: dict) -> None:
        if message.get("bytes") is not None:
            return await self._audio(message["bytes"])
        try:
            event = json.loads(message.get("text") or "")
        except ValueError:
            raise Fault("invalid_json", "a text frame that is not JSON: send binary audio frames or JSON events") from None
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "input_audio_buffer.append":
            try:
                data = base64.b64decode(event.get("audio", ""), validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise Fault("invalid_audio", "input_audio_buffer.append: 'audio' must be base64 of the session's audio format") from None
            return await self._audio(data)
        if kind == "input_audio_buffer.commit":  # the client is done (or wants the text now): end the utterance
            if self.buffered < MIN_COMMIT_SAMPLES:  # OpenAI's answer, word for word
                raise Fault("input_audio_buffer_commit_empty", "Error committing input audio buffer: buffer too small. Expected at "
                            f"least 100ms of audio, but buffer only has {self.buffered * 1000 / SAMPLING_RATE:.2f}ms of audio.")
            flushed = await self._off_loop(self.segmenter.flush)
            self.buffered = 0
            for name, value in flushed:
                await self._vad_event(name, value)
            if not flushed:  # nobody was speaking: say the buffer is taken all the same, so a client knows
                await self.send({"type": "input_audio_buffer.committed", "item_id": None, "previous_item_id": None,
                                 "audio_end_ms": self._ms(self.segmenter.position)})
            return
        if kind == "input_audio_buffer.clear":  # the utterance in progress is dropped, and the VAD starts afresh
            self._drop_partial()
            self.item, self.buffered = None, 0
            self.origin, self.segmenter = self.received, Segmenter(self.realtime.options.turn)
            return await self.send({"type": "input_audio_buffer.cleared"})
        if kind in ("session.update", "transcription_session.update"):
            return await self._update(kind, event.get("session"))
        raise Fault("unknown_event", f"event type {kind!r}: expected input_audio_buffer.append, input_audio_buffer.commit, "
                    "input_audio_buffer.clear, session.update or transcription_session.update")

    async def _update(self, kind: str, session: object) -> None:
        before = self.config.format
        try:
            self.config.update(kind, session)
        except ConfigError as e:
            raise Fault(e.code, e.message) from None
        if self.config.format != before:
            self.resampler = self._resampler()
        await self.send({"type": self.config.updated(), "session": self.session()})

    async def _off_loop(self, fn, *args):  # noqa: ANN001, ANN002, ANN202
        return await asyncio.get_running_loop().run_in_executor(self.realtime.executor, fn, *args)

    def _ingest(self, data: bytes) -> list[tuple[str, int | Utterance]]:
        """On a worker thread: a frame decoded, resampled to 16 kHz and run through the VAD."""
        fmt = self.config.format
        if fmt.coding == "pcm16":
            samples = pcm16(data)
        elif len(data) > MAX_FRAME_BYTES:
            raise Fault("invalid_audio", f"a frame of {len(data)} bytes: send at most {MAX_FRAME_BYTES} bytes a frame")
        else:
            samples = input_audio.g711(data, fmt.coding)
        if self.resampler is not None:
            samples = self.resampler.feed(samples)
        self.received += samples.shape[0]
        self.buffered += samples.shape[0]
        events = self.segmenter.feed(samples)
        for name, value in events:
            if name == "stopped":  # the VAD committed the buffer up to the utterance's end
                assert isinstance(value, Utterance)
                self.buffered = self.received - self.origin - value.end
        return events

    async def _audio(self, data: bytes) -> None:
        for name, value in await self._off_loop(self._ingest, data):
            await self._vad_event(name, value)
        if self.realtime.partials and self.item is not None:
            self._maybe_partial()

    def _drop_partial(self) -> None:
        if self.partial_job is not None:
            self.service.scheduler.cancel(self.partial_job)
            self.partial_job.resolve(ApiError(499, "the utterance ended", code="superseded"))
            self.partial_job = None

    async def _vad_event(self, name: str, value: int | Utterance) -> None:
        if name == "started":
            assert isinstance(value, int)
            self.item = f"item_{next(_ids)}"
            self.agreement, self.partial_at = LocalAgreement(), 0
            await self.send({"type": "input_audio_buffer.speech_started", "item_id": self.item, "audio_start_ms": self._ms(value)})
            return
        assert isinstance(value, Utterance) and self.item is not None
        item, self.item = self.item, None
        self._drop_partial()  # its text would come too late to show: the final pass goes first
        await self.send({"type": "input_audio_buffer.speech_stopped", "item_id": item, "audio_end_ms": self._ms(value.end)})
        await self.send({"type": "input_audio_buffer.committed", "item_id": item, "audio_end_ms": self._ms(value.end)})
        self._spawn(self._final(item, value))

    def _submit(self, name: str, samples: np.ndarray) -> Job:
        job = Job(name, samples, asyncio.get_running_loop(), self.service.processor)
        self.service.scheduler.submit(job)  # ApiError when full or stopping
        self.jobs.add(job)
        return job

    def _spawn(self, coroutine) -> None:  # noqa: ANN001
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _final(self, item: str, utterance: Utterance) -> None:
        try:
            job = self._submit(item, utterance.samples)
            result = await job.done
        except ApiError as e:
            await self.send(_error(e.code or "server_error", e.message, item))
            return
        finally:
            self.jobs = {j for j in self.jobs if not j.done.done()}
        await self.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": item, "content_index": 0,
                         "transcript": result.text, "audio_start_ms": self._ms(utterance.start), "audio_end_ms": self._ms(utterance.end)})

    def _maybe_partial(self) -> None:
        heard = self.segmenter.position - (self.segmenter.start or 0)
        if self.partial_job is not None or heard - self.partial_at < self.realtime.options.partial_step_s * SAMPLING_RATE:
            return
        if self.service.scheduler.full():
            return  # partials are a luxury: never the reason a final is refused
        self.partial_at = heard
        item, agreement = self.item, self.agreement
        self.partial_job = self._submit(f"{item}-partial", self.segmenter.current())
        self._spawn(self._partial(item, agreement, self.partial_job))

    async def _partial(self, item: str, agreement: LocalAgreement, job: Job) -> None:
        try:
            result = await job.done
        except ApiError:
            return
        finally:
            if self.partial_job is job:
                self.partial_job = None
            self.jobs.discard(job)
        delta = agreement.insert(result.text)
        if delta and item == self.item:
            await self.send({"type": "conversation.item.input_audio_transcription.delta", "item_id": item, "content_index": 0,
                             "delta": delta})

    def close(self) -> None:
        """The client is gone: its queued utterances leave the scheduler; a running batch finishes without them."""
        for job in list(self.jobs):
            self.service.scheduler.cancel(job)
        for task in list(self.tasks):
            task.cancel()


async def endpoint(websocket: WebSocket) -> None:
    service = websocket.app.state.service
    realtime: Realtime = service.realtime
    await websocket.accept()
    limit = realtime.options.max_streams
    if service.draining or not service.ready or realtime.open >= limit:
        why = ("the server is shutting down or not ready" if service.draining or not service.ready
               else f"the server is at its limit of {limit} open streams")
        await websocket.send_text(json.dumps(_error("too_many_streams" if service.ready else "unavailable",
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
        await websocket.send_text(json.dumps(_error("vad_unavailable", str(e))))
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
