"""The ASGI app: OpenAI's POST /v1/audio/transcriptions, GET /v1/models, /health and /metrics (Starlette).

A request's path: refused at once when the server is draining or full (503); the body read with its size
counted as it arrives (413 past the cap, before it is all in memory); the form checked (fields.py); the
upload written to a private temporary file, probed against the allow-lists and decoded in a worker thread
(uploads.py); its units queued with everyone else's (scheduler.py); the answer formatted (formats.py).
While it waits, the connection is watched: a client that goes away has its queued work dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import Message, Receive

from glm_asr.engine.units import FileResult
from glm_asr.model.glm_asr import GlmAsrModel
from glm_asr.onnx.backend import OnnxModel
from glm_asr.serve import fields, formats, segments, uploads
from glm_asr.serve.access import AccessLog
from glm_asr.serve.limits import ApiError, Limits
from glm_asr.serve.metrics import Metrics
from glm_asr.serve.realtime import Realtime, RealtimeOptions
from glm_asr.serve.realtime import endpoint as realtime_endpoint
from glm_asr.serve.scheduler import Job, Scheduler
from glm_asr.transcription.presets import demo_clip
from glm_asr.transcription.processor import Processor

MODEL_NAME = "glm-asr-nano-2512"
PROMPT_HEADER = "x-glm-asr-prompt"
STATIC = Path(__file__).parent / "static"
PAGE_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small fields, on top of the file itself
OUTCOME = {400: "bad_request", 404: "not_found", 405: "not_found", 413: "too_large", 503: "overloaded"}


class _TooLarge(Exception):
    pass


class Service:
    """What the routes share: the model's scheduler, the limits, the metrics, and whether the server drains."""

    def __init__(self, model: GlmAsrModel | OnnxModel, processor: Processor, *, limits: Limits = Limits(), batch_size: int = 8,
                 max_new_tokens: int | None = None, model_names: tuple[str, ...] = (MODEL_NAME,), decode_workers: int = 2,
                 realtime: RealtimeOptions = RealtimeOptions()) -> None:
        self.processor, self.limits, self.model_names = processor, limits, model_names
        self.realtime = Realtime(realtime)
        self.metrics = Metrics()
        self.scheduler = Scheduler(model, processor, self.metrics, limits, batch_size=batch_size, max_new_tokens=max_new_tokens)
        self.decoding = asyncio.Semaphore(decode_workers)  # uploads decoded at once: bounds ffmpeg's CPU and memory
        self.draining = False
        self.ready = False

    async def start(self) -> None:
        """Starts the worker and answers one request end to end: ready means able to answer."""
        self.scheduler.start()
        job = Job("warm-up", demo_clip(1.0), asyncio.get_running_loop(), self.processor)
        self.scheduler.submit(job)
        await job.done
        await self.realtime.choose_mode(self.scheduler, self.processor)  # partials or final-only, for every stream
        self.ready = True

    async def stop(self) -> None:
        """Drains the scheduler; its worker thread is joined off the event loop, which answers /health meanwhile."""
        self.draining, self.ready = True, False
        await asyncio.to_thread(self.scheduler.stop)
        self.realtime.executor.shutdown(wait=False)


def error(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def _counted(receive: Receive, cap: int) -> Receive:
    total = 0

    async def wrapped() -> Message:
        nonlocal total
        message = await receive()
        if message["type"] == "http.request":
            total += len(message.get("body", b""))
            if total > cap:
                raise _TooLarge
        return message
    return wrapped


async def _discard(receive: Receive, budget: int = 256 * 1024 * 1024, seconds: float = 10.0) -> None:
    """Reads what is left of a refused body (up to a bound), so that the client gets to read the 413."""
    async def drain() -> None:
        left = budget
        while left > 0:
            message = await receive()
            left -= len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                return
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(drain(), seconds)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _too_large(limits: Limits) -> ApiError:
    # MB as OpenAI counts its 25 MB cap (2**20 bytes), which is what --max-upload-mb takes
    return ApiError(413, f"the upload is larger than this server's limit of {limits.max_upload_bytes / 2**20:g} MB; send a "
                    "shorter or more compressed file", param="file", code="file_too_large")


async def transcriptions(request: Request) -> Response:
    service: Service = request.app.state.service
    started = time.perf_counter()
    try:
        response = await _transcribe(request, service)
    except ApiError as e:
        service.metrics.outcome(OUTCOME.get(e.status, "error"))
        return error(e)
    except ClientDisconnect:
        service.metrics.outcome("disconnected")
        return Response(status_code=499)  # nobody reads it
    if not isinstance(response, StreamingResponse):  # a stream records its own outcome when it ends
        service.metrics.outcome("ok", time.perf_counter() - started)
    return response


async def _transcribe(request: Request, service: Service) -> Response:
    limits = service.limits
    cap = limits.max_upload_bytes + FORM_OVERHEAD
    length = request.headers.get("content-length", "")
    refusal = None
    if service.draining or not service.ready:
        refusal = ApiError(503, "the server is shutting down or not ready; retry on another replica", code="unavailable",
                           headers={"Retry-After": str(limits.retry_after_seconds)})
    elif service.scheduler.full():
        refusal = service.scheduler.overloaded()
    elif not request.headers.get("content-type", "").startswith("multipart/form-data"):
        refusal = ApiError(400, f"Content-Type {request.headers.get('content-type')!r}: expected multipart/form-data with a 'file' field")
    elif length.isdigit() and int(length) > cap:
        refusal = _too_large(limits)
    if refusal is not None:
        await _discard(request.receive)  # unread, the body would reset the connection before the client reads why
        raise refusal
    counted = Request(request.scope, _counted(request.receive, cap))
    try:
        form = await counted.form(max_files=1, max_fields=16)
    except _TooLarge:
        await _discard(request.receive)
        raise _too_large(limits) from None
    except (MultiPartException, HTTPException) as e:
        raise ApiError(400, f"a malformed multipart body ({getattr(e, 'message', None) or getattr(e, 'detail', e)}); send "
                       "multipart/form-data as OpenAI's clients do") from e
    try:
        options = fields.parse(form, service.model_names)
        samples = await _decode(options.upload, service)
    finally:
        await form.close()
    speech = None if options.chunking is None else await asyncio.to_thread(segments.pieces, samples, options.chunking)
    job = Job(options.upload.filename or "upload", samples, asyncio.get_running_loop(), service.processor, stream=options.stream,
              speech=speech)
    service.scheduler.submit(job)
    if options.stream:
        return StreamingResponse(_events(job, service), media_type="text/event-stream", headers=_prompt_header(options))
    watcher = asyncio.ensure_future(_until_disconnect(request.receive))
    try:
        await asyncio.wait({job.done, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this handler is cancelled (the drain's timeout): its work leaves the scheduler
        watcher.cancel()
        if not job.done.done():
            service.scheduler.cancel(job)
    if not job.done.done():
        raise ClientDisconnect
    response = formats.respond(job.done.result(), options.response_format, options.language)
    response.headers.update(_prompt_header(options))
    return response


def _prompt_header(options: fields.Options) -> dict[str, str]:
    return {PROMPT_HEADER: "ignored: the model's instruction is fixed (docs/serving.md)"} if options.prompt else {}


async def _decode(upload: UploadFile, service: Service) -> np.ndarray:
    name = Path(upload.filename or "upload").name
    if upload.size is not None and upload.size > service.limits.max_upload_bytes:
        raise _too_large(service.limits)
    async with service.decoding:
        with tempfile.TemporaryDirectory(prefix="glm-asr-upload-") as folder:
            path = Path(folder) / "audio"  # never the client's name: it is untrusted
            await upload.seek(0)
            await asyncio.to_thread(_save, upload.file, path)  # up to 25 MB: never written on the event loop
            return await asyncio.to_thread(uploads.read_upload, path, name, service.limits)


def _save(source: BinaryIO, path: Path) -> None:
    with path.open("wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)


async def _events(job: Job, service: Service) -> AsyncIterator[str]:
    """text deltas as the tokens are decoded, then transcript.text.done with the whole text."""
    started, outcome = time.perf_counter(), "disconnected"
    assert job.deltas is not None
    try:
        while True:
            getter = asyncio.ensure_future(job.deltas.get())
            await asyncio.wait({getter, job.done}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield formats.event({"type": "transcript.text.delta", "delta": getter.result(), "logprobs": None})
                continue
            getter.cancel()
            break
        while not job.deltas.empty():
            yield formats.event({"type": "transcript.text.delta", "delta": job.deltas.get_nowait(), "logprobs": None})
        try:
            result: FileResult = job.done.result()
        except ApiError as e:
            outcome = "error"
            yield formats.event({"type": "error", **e.body()})
            return
        if result.text.startswith(job.sent) and len(result.text) > len(job.sent):  # what the token stream held back
            yield formats.event({"type": "transcript.text.delta", "delta": result.text[len(job.sent):], "logprobs": None})
        yield formats.event({"type": "transcript.text.done", "text": result.text, "logprobs": None, "usage": formats.usage(result),
                             "truncated": result.truncated})
        outcome = "ok"
    finally:
        if outcome == "disconnected":
            service.scheduler.cancel(job)
        service.metrics.outcome(outcome, None if outcome == "disconnected" else time.perf_counter() - started)


async def models(request: Request) -> Response:
    service: Service = request.app.state.service
    return JSONResponse({"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "glm-asr"}
                                                     for n in service.model_names]})


async def health(request: Request) -> Response:
    service: Service = request.app.state.service
    state = "ok" if service.ready and not service.draining else ("draining" if service.draining else "starting")
    return JSONResponse({"status": state}, status_code=200 if state == "ok" else 503)


async def metrics(request: Request) -> Response:
    service: Service = request.app.state.service
    scheduler = service.scheduler
    text = service.metrics.render({
        "glm_asr_queue_depth": ("Units of work (30 s windows) waiting for a batch.", scheduler.queued_units),
        "glm_asr_requests_in_flight": ("Requests accepted and not yet answered.", scheduler.in_flight),
        "glm_asr_realtime_streams": ("Live WebSocket streams open.", lambda: service.realtime.open),
    })
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


async def page(request: Request) -> Response:
    """The page that streams the microphone to /v1/realtime and posts dropped files (static/, no build step)."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


async def page_file(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in PAGE_FILES:  # a fixed list: no path from the client reaches the file system
        raise HTTPException(404, "no such file")
    return FileResponse(STATIC / name, media_type=PAGE_FILES[name])


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    request.app.state.service.metrics.outcome(OUTCOME.get(exc.status_code, "error"))
    return error(ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}"))


async def _unexpected(request: Request, exc: Exception) -> Response:
    request.app.state.service.metrics.outcome("error")
    return error(ApiError(500, f"internal error: {type(exc).__name__}", code="internal_error"))


def create_app(service: Service) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        yield
        await service.stop()

    app = Starlette(routes=[
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        WebSocketRoute("/v1/realtime", realtime_endpoint),
        Route("/", page, methods=["GET"]),
        Route("/static/{name}", page_file, methods=["GET"]),
    ], exception_handlers={HTTPException: _http_error, Exception: _unexpected}, lifespan=lifespan,
       middleware=[Middleware(AccessLog)])
    app.state.service = service
    return app
