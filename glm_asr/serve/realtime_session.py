"""One live stream: frames in (realtime_events.py), through its turns (turns.py), OpenAI's events out; each
utterance a Job in the server's one scheduler, and, with partials on, re-decoded as it grows (agreement.py)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from glm_asr.model.front_end import SAMPLING_RATE
from glm_asr.serve import input_audio, realtime_events
from glm_asr.serve.agreement import LocalAgreement
from glm_asr.serve.limits import ApiError
from glm_asr.serve.realtime_events import MIN_COMMIT_SAMPLES, Fault, error
from glm_asr.serve.scheduler import Job
from glm_asr.serve.session_config import ConfigError, SessionConfig
from glm_asr.serve.turns import Event, Turns
from glm_asr.serve.utterances import Utterance

_ids = itertools.count(1)


class Session:
    """One WebSocket stream: frames in, VAD events and texts out."""

    def __init__(self, websocket: WebSocket, service, *, ga: bool, openai_default: bool) -> None:  # noqa: ANN001 (app.Service)
        self.ws, self.service = websocket, service
        self.realtime = service.realtime  # realtime.Realtime
        self.config = SessionConfig(f"sess_{next(_ids)}", ga, input_audio.OPENAI_PCM if openai_default else input_audio.MODEL_PCM,
                                    defaults=self.realtime.options.turn)
        self.turns = Turns(self.config.turn)
        self.resampler = self._resampler()
        self.sending = asyncio.Lock()
        self.jobs: set[Job] = set()
        self.tasks: set[asyncio.Task] = set()
        self.item: str | None = None  # the utterance in progress
        self.last_item: str | None = None  # the last one committed: the next commit's previous_item_id
        self.agreement = LocalAgreement()
        self.partial_job: Job | None = None
        self.partial_at = 0  # utterance samples when the last partial pass was sent

    def _resampler(self) -> input_audio.StreamResampler | None:
        rate = self.config.format.rate
        return None if rate == SAMPLING_RATE else input_audio.StreamResampler(rate)

    async def send(self, event: dict) -> None:
        async with self.sending:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # the client left: nothing to tell it
                await self.ws.send_text(json.dumps({"event_id": f"event_{next(_ids)}", **event}, ensure_ascii=False))

    def session(self) -> dict:
        options = self.realtime.options
        extras = {"mode": "partials" if self.realtime.partials else "final-only", "reason": self.realtime.reason,
                  "idle_timeout_s": options.idle_seconds, "max_utterance_s": 30.0}
        return self.config.payload(self.service.model_names[0], extras)

    async def run(self) -> None:
        await self.send({"type": self.config.created(), "session": self.session()})
        idle = self.realtime.options.idle_seconds
        while True:
            try:
                message = await asyncio.wait_for(self.ws.receive(), idle)
            except asyncio.TimeoutError:
                if any(not job.done.done() for job in self.jobs):
                    continue  # the client waits for a text still being decoded: it is not idle
                await self.send(error("idle_timeout", f"nothing received for {idle:g} s: the stream is closed; reconnect to go on"))
                await self.ws.close(1000)
                return
            if message["type"] == "websocket.disconnect":
                return
            try:
                await self._message(message)
            except Fault as f:
                await self.send(error(f.code, f.message, param=f.param))
                if f.close is not None:
                    await self.ws.close(f.close)
                    return

    async def _message(self, message: dict) -> None:
        if message.get("bytes") is not None:
            return await self._audio(message["bytes"])
        kind, event = realtime_events.client_event(message.get("text"))
        if kind == "input_audio_buffer.append":
            return await self._audio(realtime_events.appended(event))
        if kind == "input_audio_buffer.commit":  # the client is done (or wants the text now): end the utterance
            if self.turns.buffered < MIN_COMMIT_SAMPLES:  # OpenAI's answer, word for word
                raise Fault("input_audio_buffer_commit_empty", "Error committing input audio buffer: buffer too small. Expected at "
                            f"least 100ms of audio, but buffer only has {self.turns.buffered * 1000 / SAMPLING_RATE:.2f}ms of audio.")
            flushed = await self._off_loop(self.turns.commit)
            await self._turn_events(flushed)
            if not flushed:  # nobody was speaking: say the buffer is taken all the same, so a client knows
                await self.send({"type": "input_audio_buffer.committed", "item_id": None, "previous_item_id": None,
                                 "audio_end_ms": self.turns.ms(self.turns.segmenter.position)})
            return None
        if kind == "input_audio_buffer.clear":  # the utterance in progress is dropped, and the VAD starts afresh
            self._drop_partial()
            self.item = None
            await self._off_loop(self.turns.clear)
            return await self.send({"type": "input_audio_buffer.cleared"})
        return await self._update(kind, event.get("session"))

    async def _update(self, kind: str, session: object) -> None:
        before, turn = self.config.format, self.config.turn
        try:
            self.config.update(kind, session)
        except ConfigError as e:
            raise Fault(e.code, e.message, param=e.param) from None
        if self.config.format != before:
            self.resampler = self._resampler()
        await self.send({"type": self.config.updated(), "session": self.session()})
        if self.config.turn != turn:
            await self._turn_events(await self._off_loop(self.turns.retune, self.config.turn))

    async def _off_loop(self, fn, *args):  # noqa: ANN001, ANN002, ANN202
        return await asyncio.get_running_loop().run_in_executor(self.realtime.executor, fn, *args)

    def _ingest(self, data: bytes) -> list[Event]:
        """On a worker thread: a frame decoded, resampled to 16 kHz and handed to the stream's turns."""
        samples = realtime_events.samples(data, self.config.format)
        if self.resampler is not None:
            samples = self.resampler.feed(samples)
        return self.turns.feed(samples)

    async def _audio(self, data: bytes) -> None:
        await self._turn_events(await self._off_loop(self._ingest, data))
        if self.realtime.partials and self.item is not None:
            self._maybe_partial()

    def _drop_partial(self) -> None:
        if self.partial_job is not None:
            self.service.scheduler.cancel(self.partial_job)
            self.partial_job.resolve(ApiError(499, "the utterance ended", code="superseded"))
            self.partial_job = None

    async def _turn_events(self, events: list[Event]) -> None:
        for name, value in events:
            await self._turn_event(name, value)

    async def _turn_event(self, name: str, value: int | Utterance) -> None:
        ms = self.turns.ms
        if name == "started":
            assert isinstance(value, int)
            self.item = f"item_{next(_ids)}"
            self.agreement, self.partial_at = LocalAgreement(), 0
            await self.send({"type": "input_audio_buffer.speech_started", "item_id": self.item, "audio_start_ms": ms(value)})
            return
        assert isinstance(value, Utterance)
        if name == "committed":  # a manual turn: the client's commit, no speech events (as OpenAI)
            item = f"item_{next(_ids)}"
        else:
            assert self.item is not None
            item, self.item = self.item, None
            self._drop_partial()  # its text would come too late to show: the final pass goes first
            await self.send({"type": "input_audio_buffer.speech_stopped", "item_id": item, "audio_end_ms": ms(value.end)})
        await self.send({"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": self.last_item,
                         "audio_end_ms": ms(value.end)})
        self.last_item = item
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
            await self.send(error(e.code or "server_error", e.message, item))
            return
        finally:
            self.jobs = {j for j in self.jobs if not j.done.done()}
        await self.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": item, "content_index": 0,
                         "transcript": result.text, "audio_start_ms": self.turns.ms(utterance.start),
                         "audio_end_ms": self.turns.ms(utterance.end)})

    def _maybe_partial(self) -> None:
        segmenter = self.turns.segmenter
        heard = segmenter.position - (segmenter.start or 0)
        if self.partial_job is not None or heard - self.partial_at < self.realtime.options.partial_step_s * SAMPLING_RATE:
            return
        if self.service.scheduler.full():
            return  # partials are a luxury: never the reason a final is refused
        self.partial_at = heard
        item, agreement = self.item, self.agreement
        self.partial_job = self._submit(f"{item}-partial", segmenter.current())
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
