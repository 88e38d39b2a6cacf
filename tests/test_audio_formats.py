"""Every format through PyAV: files written by PyAV's own encoders decode back to their source (SNR, length);
bad files are one-line errors naming the file."""

import sys

import numpy as np
import pytest

from glm_asr.io.audio_file import AudioError, load_audio
from tests.av_encode import FORMATS, encode, video_only
from tests.conftest import SHARED_AUDIO

pytest.importorskip("av", reason="PyAV is the optional `audio` extra")

T = np.arange(3 * 16000) / 16000
SIGNAL = (0.3 * np.sin(2 * np.pi * 440 * T) + 0.2 * np.sin(2 * np.pi * 1250 * T) + 0.1 * np.sin(2 * np.pi * 3100 * T)).astype(np.float32)
# Lossy codecs keep 24-41 dB of these signals and of the shared speech clips (seen); a wrong rate, a shift of
# a few samples or a dropped channel leaves under 10 dB. FLAC loses only the two resamplings (39-60 dB seen).
# 8 kHz mu-law WAV (read by PyAV, as scipy does not) keeps 37 dB of the tones and 17-21 dB of the speech
# clips, whose energy above 4 kHz it cannot hold.
MIN_SNR_DB = {"flac": 35.0}
LOSSY_MIN_SNR_DB = 15.0


def snr_db(decoded: np.ndarray, source: np.ndarray) -> float:
    n = len(source)
    return float(10 * np.log10((source**2).sum() / ((decoded[:n] - source) ** 2).sum()))


def check_round_trip(decoded: np.ndarray, source: np.ndarray, name: str) -> None:
    _, _, rate, _ = FORMATS[name]
    # AAC in mp4 pads its last 1024-sample frame, and nothing in the file says how much of it is sound.
    extra = 0 if name not in ("m4a", "mp4") else int(np.ceil(1024 * 16000 / rate))
    assert decoded.dtype == np.float32 and len(source) <= len(decoded) <= len(source) + extra, (len(decoded), len(source))
    assert snr_db(decoded, source) >= MIN_SNR_DB.get(name, LOSSY_MIN_SNR_DB), snr_db(decoded, source)


@pytest.mark.parametrize("name", list(FORMATS))
def test_formats_decode_to_their_source(tmp_path, name):
    path = encode(tmp_path / f"tones.{name}", SIGNAL, name)
    check_round_trip(load_audio(path), SIGNAL, name)


@pytest.mark.parametrize("name", ["mp3", "ogg", "m4a"])
def test_stereo_is_averaged_like_wav(tmp_path, name):
    path = encode(tmp_path / f"stereo.{name}", np.stack([SIGNAL, 0.5 * SIGNAL], axis=1), name)
    check_round_trip(load_audio(path), 0.75 * SIGNAL, name)


def test_sound_of_a_video_file(tmp_path):
    path = encode(tmp_path / "clip.mp4", SIGNAL, "mp4", video=True)
    check_round_trip(load_audio(path), SIGNAL, "mp4")


def test_offset_and_duration_cut_the_decoded_audio(tmp_path):
    path = encode(tmp_path / "tones.flac", SIGNAL, "flac")
    whole = load_audio(path)
    np.testing.assert_array_equal(load_audio(path, offset=0.5, duration=1.25), whole[8000:28000])
    np.testing.assert_array_equal(load_audio(path, offset=2.0), whole[32000:])


@pytest.mark.parametrize("clip", ["example_en.wav", "example_zh.wav"])
@pytest.mark.parametrize("name", list(FORMATS))
def test_shared_speech_clips_round_trip(tmp_path, clip, name):
    if not (SHARED_AUDIO / clip).exists():
        pytest.skip(f"{SHARED_AUDIO / clip} absent")
    source = load_audio(SHARED_AUDIO / clip)
    check_round_trip(load_audio(encode(tmp_path / f"speech.{name}", source, name)), source, name)


def test_bad_files_are_one_line_naming_the_file(tmp_path):
    cases = {
        "video.mp4": (lambda p: video_only(p), "video.mp4: no audio stream (it holds video)"),
        "empty.mp3": (lambda p: p.write_bytes(b""), "empty.mp3: an empty file (0 bytes)"),
        "noise.mp3": (lambda p: p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes()),
                      "noise.mp3: not a WAV file nor a format ffmpeg decodes"),
        "header.m4a": (lambda p: p.write_bytes(encode(tmp_path / "x.m4a", SIGNAL, "m4a").read_bytes()[:200]),
                       "header.m4a: not a WAV file nor a format ffmpeg decodes"),
    }
    for file, (make, message) in cases.items():
        make(tmp_path / file)
        with pytest.raises(AudioError) as raised:
            load_audio(tmp_path / file)
        assert message in str(raised.value) and "\n" not in str(raised.value)


def test_without_pyav_the_error_names_the_extra(tmp_path, monkeypatch):
    path = encode(tmp_path / "a.mp3", SIGNAL, "mp3")
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    with pytest.raises(AudioError, match=r"a.mp3: not a WAV file; .*pip install 'glm-asr\[audio\]'"):
        load_audio(path)
