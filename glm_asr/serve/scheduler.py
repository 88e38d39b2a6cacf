"""The request scheduler: every request's units in one queue, decoded in one running batch on one thread.

Requests arrive on the event loop; the model runs on a single worker thread (torch uses its own threads
inside). Units join the running batch between decode steps (continuous batching, glm_asr/engine/running.py),
one per step, the request with the fewest rows decoding first, while fewer than `batch_size` rows decode; and
a request with no row decoding joins even when none is free (up to twice `batch_size` rows), so a 3 s request
that arrives while a 10 minute one is decoding starts after at most one window's encoder pass instead of
waiting for the running rows to end (`_admit` has the rules); while it decodes, the long request adds no
window and its rows step only on every fourth step, one row (`_hold`). A request's text equals `glm-asr transcribe
--chunked` on the same audio (the same units, token budgets and result assembly as the corpus path).
A cancelled request (its client went away, or its handler was cancelled) has its queued units dropped and its
rows taken out of the running batch before the next step.
The onnxruntime backend has no explicit KV cache: there, units join only an empty batch, which then decodes
to its end (`WholeBatch`).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from pathlib import Path

import numpy as np

from glm_asr.engine.running import RunningBatch, WholeBatch
from glm_asr.engine.units import FileResult, Unit, finish
from glm_asr.corpus.inputs import Item
from glm_asr.longform.segmentation import Piece
from glm_asr.model.glm_asr import GlmAsrModel
from glm_asr.onnx.backend import OnnxModel
from glm_asr.serve import segments
from glm_asr.serve.limits import ApiError, Limits
from glm_asr.serve.metrics import Metrics
from glm_asr.transcription.processor import Processor
from glm_asr.transcription.transcribe import _join


SHARE_EVERY = 4  # while a newcomer's first window decodes, a long request steps on one step in this many (_hold)


class Job:
    """One request's work, and the future (on the request's event loop) that its result lands in."""

    def __init__(self, name: str, samples: np.ndarray, loop: asyncio.AbstractEventLoop, processor: Processor, *, stream: bool = False,
                 speech: list[Piece] | None = None) -> None:
        self.result = FileResult(Item(Path(name), name))
        self.units = segments.cut(self.result, samples, speech)
        self.loop, self.processor = loop, processor
        self.done: asyncio.Future[FileResult] = loop.create_future()
        self.deltas: asyncio.Queue[str] | None = asyncio.Queue() if stream else None
        self.next = 0  # the next unit to schedule
        self.running = 0  # its units in the running batch
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
        self.whole = isinstance(model, OnnxModel)  # see WholeBatch
        self.max_rows = batch_size if self.whole else 2 * batch_size
        self.batch = self._new_batch()
        self.jobs: list[Job] = []  # accepted and unanswered, in arrival order
        self.dropped: set[int] = set()  # ids of cancelled requests' units in the running batch
        self.owners: dict[int, Job] = {}  # id of each unit in the running batch (or joining it) -> its request
        self.cond = threading.Condition()
        self.stopping = False
        self.steps = 0  # decode steps run (see _hold)
        self.thread = threading.Thread(target=self._work, daemon=True, name="glm-asr-scheduler")

    def _new_batch(self) -> RunningBatch | WholeBatch:
        kind = WholeBatch if self.whole else RunningBatch
        return kind(self.model, self.processor, self.max_new_tokens)

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
            if not job.units:  # no speech found (chunking_strategy over silence): nothing to decode
                job.resolve(finish(job.result, job.units))
                return
            self.jobs.append(job)
            self.cond.notify()

    def cancel(self, job: Job) -> None:
        """Its queued units are never decoded; its rows leave the running batch before the next step."""
        with self.cond:
            job.cancelled = True
            if job in self.jobs:
                self.jobs.remove(job)
                self.dropped |= {id(u) for u in job.units[: job.next] if u.decoded is None}
                for unit in job.units[: job.next]:
                    self.owners.pop(id(unit), None)

    def _admit(self) -> list[Unit]:
        """The units that join the batch before the next step: at most one while rows decode, since its encoder
        pass stalls every row (so an arrival waits for one window's, never for a burst of them). It is the next
        unit of the request with the fewest rows decoding, then the fewest units begun (a newcomer first), then
        the earliest; it joins while fewer than `batch_size` rows decode, or, for a request with none decoding,
        while fewer than `max_rows` do (module doc). A request begun adds no window while another request's
        first window decodes, even when none of its own rows is left: a newcomer's answer is not held up by a
        long request's encoder passes (3.9x its time alone behind a 10 minute request without this rule, 2.0x
        with it; a further 0.4 s when the long request's first window ended just before the newcomer's and its
        second joined; docs/serving.md). onnxruntime's whole batches fill up to `batch_size` at once."""
        if self.whole and len(self.batch):
            return []
        taken, rows = [], len(self.batch)
        for _ in range(self.batch_size if self.whole else 1):
            waiting = [(j.running, j.next, i, j) for i, j in enumerate(self.jobs) if j.next < len(j.units)]
            if not waiting:
                break
            *_, job = min(waiting, key=lambda entry: entry[:3])
            # Another window of a request begun (rows decoding or not): not while another's first window decodes.
            first = job.next and any(j is not job and j.running and j.units[0].decoded is None for j in self.jobs)
            if first and not self.whole:
                break
            room = rows + len(taken) < (self.max_rows if job.running == 0 else self.batch_size)
            if not room:
                break
            unit = job.units[job.next]
            taken.append(unit)
            self.owners[id(unit)] = job
            job.next += 1
            job.running += 1
        return taken

    def _hold(self, units: list[Unit]) -> set[int]:
        """The rows that sit the next step out (ids of their units). While a request's first window decodes, a
        request of more than one window that arrived before it holds its rows (its own first window's too),
        except on every `SHARE_EVERY`-th step, where its earliest window's row steps. A decode step of one row
        runs on the single-row kernel, 11 to 19 ms on the small preset here against 23 to 48 ms for 2 to 9
        rows (docs/serving.md), so the newcomer decodes at about its speed alone; the shared steps keep a
        stream of short requests from stopping a long one. The newest request whose first window decodes is
        never held, so every step decodes some row. Requests of one window (every request at 16 clients of
        10 s clips) hold nothing."""
        rows: dict[int, list[Unit]] = {}
        for unit in units:
            if (job := self.owners.get(id(unit))) is not None and not job.cancelled:
                rows.setdefault(id(job), []).append(unit)
        arrival = {id(job): i for i, job in enumerate(self.jobs) if id(job) in rows}
        jobs = {id(job): job for job in self.jobs if id(job) in rows}
        firsts = [arrival[key] for key, job in jobs.items() if any(u is job.units[0] for u in rows[key])]
        hold: set[int] = set()
        for key, own in rows.items():
            if key in jobs and len(jobs[key].units) > 1 and firsts and arrival[key] < max(firsts):
                order = {id(u): i for i, u in enumerate(jobs[key].units)}
                kept = min(own, key=lambda u: order[id(u)]) if self.steps % SHARE_EVERY == 0 else None
                hold |= {id(u) for u in own if u is not kept}
        return hold

    def _work(self) -> None:
        while True:
            with self.cond:
                while not self.stopping and not len(self.batch) and not any(j.next < len(j.units) for j in self.jobs):
                    self.cond.wait()
                dropped, self.dropped = self.dropped, set()
                joining = self._admit()
                if not joining and not len(self.batch) and not dropped:  # stopping, and nothing left to decode
                    return
                hold = self._hold([*self.batch.units(), *joining])
                self.steps += 1
            try:
                self.batch.drop(dropped)
                ended = self.batch.join(joining)
                if joining:
                    self.metrics.batch(len(self.batch))
                ended += self.batch.step(hold)
            except Exception as e:  # noqa: BLE001 (a failing batch fails its requests, never the server)
                self._fail(e, [*self.batch.units(), *joining])
                continue
            with self.cond:
                self._settle(ended)

    def _settle(self, ended: list[Unit]) -> None:
        """Answers the requests whose last unit just ended."""
        for unit in ended:
            job = self.owners.pop(id(unit), None)
            if job is None:  # cancelled meanwhile
                continue
            job.running -= 1
            if job.cancelled or job not in self.jobs or any(u.decoded is None for u in job.units):
                continue
            self.jobs.remove(job)
            result = finish(job.result, job.units)
            self.metrics.transcribed(result.duration, result.model_seconds)
            job.resolve(result)

    def _fail(self, error: Exception, units: list[Unit]) -> None:
        """Every request with a row in the batch gets a 500; the batch starts afresh."""
        self.batch = self._new_batch()
        with self.cond:
            failed = {id(job): job for u in units if (job := self.owners.pop(id(u), None)) is not None}
            for job in failed.values():
                for unit in job.units[: job.next]:
                    self.owners.pop(id(unit), None)
                if job in self.jobs:
                    self.jobs.remove(job)
                job.resolve(ApiError(500, f"decoding failed: {type(error).__name__}: {error}", code="decode_failed"))
