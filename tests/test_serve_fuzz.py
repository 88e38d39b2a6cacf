"""A bounded fuzz pass over the upload path (tox -e fuzz): hypothesis mutates real audio files of every
allowed format and makes up multipart bodies. Whatever comes in, the answer is samples or a 400/413 in
OpenAI's error shape: never another exception, never a 500, and the server keeps answering."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("hypothesis")
pytest.importorskip("uvicorn")
pytest.importorskip("av")
import httpx  # noqa: E402
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from glm_asr.serve import uploads  # noqa: E402
from glm_asr.serve.app import MODEL_NAME  # noqa: E402
from glm_asr.serve.limits import ApiError, Limits  # noqa: E402
from glm_asr.transcription.presets import demo_clip  # noqa: E402
from tests.av_encode import FORMATS, encode  # noqa: E402
from tests.test_serve import clips, server, small  # noqa: E402, F401 (fixtures)

pytestmark = pytest.mark.fuzz
LIMITS = Limits(max_audio_seconds=20.0, decode_seconds=5.0)
EXAMPLES = int(os.environ.get("GLM_ASR_FUZZ_EXAMPLES", "1000"))
SEEDS: dict[str, bytes] = {}


def seeds(folder: Path) -> dict[str, bytes]:
    """A 1.5 s clip in each format the corpus path decodes, and WAV: the starting points for mutation."""
    if not SEEDS:
        import scipy.io.wavfile

        scipy.io.wavfile.write(folder / "seed.wav", 16000, (demo_clip(1.5) * 32767).astype(np.int16))
        SEEDS["seed.wav"] = (folder / "seed.wav").read_bytes()
        for name in FORMATS:
            SEEDS[name] = encode(folder / f"seed.{name}", demo_clip(1.5), name).read_bytes()
    return SEEDS


@st.composite
def mutated(draw) -> tuple[str, bytes]:  # noqa: ANN001
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "splice_header"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 256))]
        elif kind == "truncate":
            del data[at:]
        else:  # a header field made huge: sizes, rates, channel counts
            data[at : at + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\xff\xff\xff\x7f"]))
    return name, bytes(data)


def test_mutated_files_give_samples_or_a_4xx(tmp_path_factory):
    seeds(tmp_path_factory.mktemp("seeds"))
    folder = tmp_path_factory.mktemp("fuzz")
    found: dict[str, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(mutated() | st.tuples(st.just("random"), st.binary(max_size=4096)))
    def check(case: tuple[str, bytes]) -> None:
        name, data = case
        path = folder / "upload"
        path.write_bytes(data)
        try:
            samples = uploads.read_upload(path, name, LIMITS)
        except ApiError as e:
            assert e.status in (400, 413), e.message
            found[f"{e.status} {e.code}"] = found.get(f"{e.status} {e.code}", 0) + 1
            return
        assert samples.dtype == np.float32 and samples.ndim == 1 and 0 < samples.shape[0] <= LIMITS.max_audio_seconds * 16000
        assert np.isfinite(samples).all()
        found["decoded"] = found.get("decoded", 0) + 1

    check()
    print(f"\nupload path: {sum(found.values())} inputs: {dict(sorted(found.items()))}")


def test_made_up_requests_never_500(server, tmp_path_factory):  # noqa: F811
    url, _ = server
    seeds(tmp_path_factory.mktemp("seeds"))
    statuses: dict[int, int] = {}
    # mostly fields a client would send, so that the fuzz reaches decoding and the model, not only the field checks
    valid = st.sampled_from([("response_format", f) for f in ("json", "text", "srt", "vtt", "verbose_json")]
                            + [("temperature", "0"), ("stream", "true"), ("stream", "false")])
    odd = st.tuples(st.sampled_from(["model", "response_format", "temperature", "timestamp_granularities[]", "stream", "language", "x"]),
                    st.text(max_size=20))

    intact = st.sampled_from(sorted(SEEDS)).map(lambda name: (name, SEEDS[name]))

    @settings(max_examples=max(EXAMPLES // 5, 10), deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.one_of(valid, valid, odd), max_size=4), st.one_of(st.none(), mutated(), intact, intact), st.sampled_from([False, False, True]))
    def check(fields: list[tuple[str, str]], upload: tuple[str, bytes] | None, garble: bool) -> None:
        request = httpx.Request("POST", f"{url}/v1/audio/transcriptions", data={"model": MODEL_NAME, **dict(fields)},
                                files={"file": upload} if upload else {"other": (None, "x")})
        body = b"".join(request.stream)
        if garble:  # a body cut short, or its boundary broken
            body = body[: len(body) // 2] + body[len(body) // 2 :].replace(b"--", b"-")
        response = httpx.post(str(request.url), content=body, headers={"Content-Type": request.headers["content-type"]}, timeout=60)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code in (200, 400, 404, 413), response.text
        if response.status_code != 200:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}

    check()
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    print(f"\nrequests: {sum(statuses.values())}: by status {dict(sorted(statuses.items()))}")
