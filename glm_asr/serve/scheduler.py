"""The request scheduler: every request's units in one queue, decoded in shared batches on one thread.

Requests arrive on the event loop; the model runs on a single worker thread (torch uses its own threads
inside). Each batch takes units round robin over the requests in arrival order, one unit per request per
turn, so a 3 s request that arrives while a 10 minute one is being decoded rides in the very next batch, and
that batch stops after the turn that completes it, rather than filling up with the long request's windows.
Batches are decoded by the corpus path's `run_batch` and results assembled by its `finish`, so a request's
text equals `glm-asr transcribe --chunked` on the same audio. A cancelled request (its client went away) has
its queued units dropped; a batch already running finishes, and its rows for that request are discarded.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from pathlib import Path

import numpy as np

from glm_asr.engine.batch import run_batch
from glm_asr.engine.units import FileResult, Unit, finish
from glm_asr.corpus.inputs import Item
from glm_asr.model.glm_asr import GlmAsrModel
from glm_asr.onnx.backend import OnnxModel
from glm_asr.serve import segments
from glm_asr.serve.limits import ApiError, Limits
from glm_asr.serve.metrics import Metrics
from glm_asr.transcription.processor import Processor
from glm_asr.transcription.transcribe import _join


class Job:
    """One request's work, and the future (on the request's event loop) that its result lands in."""

    def __init__(self, name: str, samples: np.ndarray, loop: asyncio.AbstractEventLoop, processor: Processor, *, stream: bool = False) -> None:
        self.result = FileResult(Item(Path(name), name))
        self.units = segments.cut(self.result, samples)
        self.loop, self.processor = loop, processor
        self.done: asyncio.Future[FileResult] = loop.create_future()
        self.deltas: asyncio.Queue[str] | None = asyncio.Queue() if stream else None
        self.next = 0  # the next unit to schedule
        self.cancelled = False
        self.sent = ""  # the text streamed so far
        self._ids: dict[int, list[int]] = {id(u): [] for u in self.units}
        if stream:
            for unit in self.units:
                unit.on_token = functools.partial(self._token, unit)

    def _token(self, unit: Unit, token: int) -> None:
        """On the worker thread: stream what the text has grown by, in window order."""
        self._ids[id(unit)].append(token)
        self.push(self._text_so_far())

    def _text_so_far(self) -> str:
        pieces = []
        for unit in self.units:  # the finished windows, then the first unfinished one's tokens so far
            pieces.append(unit.decoded.text if unit.decoded is not None else self.processor.decode(self._ids[id(unit)]))
            if unit.decoded is None:
                break
        return _join(pieces)

    def push(self, text: str) -> None:
        """Sends text[len(sent):] when text extends what was sent (a half-decoded character waits)."""
        if self.deltas is None or not text.startswith(self.sent) or len(text) == len(self.sent) or text.endswith("\ufffd"):
            return
        delta, self.sent = text[len(self.sent):], text
        self.loop.call_soon_threadsafe(self.deltas.put_nowait, delta)

    def resolve(self, value: FileResult | BaseException) -> None:
        def settle() -> None:
            if self.done.done():
                return
            if isinstance(value, BaseException):
                self.done.set_exception(value)
            else:
                self.done.set_result(value)
        self.loop.call_soon_threadsafe(settle)


class Scheduler:
    def __init__(self, model: GlmAsrModel | OnnxModel, processor: Processor, metrics: Metrics, limits: Limits, *,
                 batch_size: int = 8, max_new_tokens: int | None = None) -> None:
        if batch_size < 1 or (max_new_tokens is not None and max_new_tokens < 1):
            raise ValueError(f"batch_size {batch_size}, max_new_tokens {max_new_tokens}: expected each >= 1")
        self.model, self.processor, self.metrics, self.limits = model, processor, metrics, limits
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.jobs: list[Job] = []  # accepted and unanswered, in arrival order
        self.cond = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._work, daemon=True, name="glm-asr-scheduler")

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Ends the worker once the accepted requests are answered (the server stops taking new ones first)."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.thread.join()

    def in_flight(self) -> int:
        with self.cond:
            return len(self.jobs)

    def queued_units(self) -> int:
        with self.cond:
            return sum(len(j.units) - j.next for j in self.jobs)

    def full(self) -> bool:
        return self.in_flight() >= self.limits.max_queue

    def overloaded(self) -> ApiError:
        return ApiError(503, f"the server is at its limit of {self.limits.max_queue} requests in progress; retry after "
                        f"{self.limits.retry_after_seconds} s", code="server_overloaded",
                        headers={"Retry-After": str(self.limits.retry_after_seconds)})

    def submit(self, job: Job) -> None:
        with self.cond:
            if self.stopping:
                raise ApiError(503, "the server is shutting down; send the request to another replica", code="shutting_down")
            if len(self.jobs) >= self.limits.max_queue:
                raise self.overloaded()
            self.jobs.append(job)
            self.cond.notify()

    def cancel(self, job: Job) -> None:
        with self.cond:
            job.cancelled = True
            if job in self.jobs:
                self.jobs.remove(job)

    def _pick(self) -> list[Unit]:
        """Turns of one unit per waiting request, in arrival order, until the batch is full; but a turn that
        holds some request's last unit ends the batch there. A batch's time grows with its rows, so the request
        about to be answered is not made to wait for a long request's extra windows (measured: docs/serving.md)."""
        batch: list[Unit] = []
        while len(batch) < self.batch_size:
            turn = [j for j in self.jobs if j.next < len(j.units)][: self.batch_size - len(batch)]
            if not turn:
                break
            for job in turn:
                batch.append(job.units[job.next])
                job.next += 1
            if len(turn) > 1 and any(j.next == len(j.units) for j in turn):
                break
        return batch

    def _work(self) -> None:
        while True:
            with self.cond:
                while not self.stopping and not any(j.next < len(j.units) for j in self.jobs):
                    self.cond.wait()
                batch = self._pick()
                if not batch:  # stopping, and nothing left to decode
                    return
                owners = {id(u): j for j in self.jobs for u in j.units}
            batch_jobs = list({id(owners[id(u)]): owners[id(u)] for u in batch}.values())
            try:
                run_batch(self.model, self.processor, batch, self.max_new_tokens)
            except Exception as e:  # noqa: BLE001 (a failing batch fails its requests, never the server)
                with self.cond:
                    for job in batch_jobs:
                        if job in self.jobs:
                            self.jobs.remove(job)
                        job.resolve(ApiError(500, f"decoding failed: {type(e).__name__}: {e}", code="decode_failed"))
                continue
            self.metrics.batch(len(batch))
            with self.cond:
                for job in batch_jobs:
                    if job.cancelled or any(u.decoded is None for u in job.units):
                        continue
                    self.jobs.remove(job)
                    result = finish(job.result, job.units)
                    self.metrics.transcribed(result.duration, result.model_seconds)
                    job.resolve(result)
