import numpy as np
import pytest
import scipy.io.wavfile

from glm_asr.io.audio_file import AudioError, load_audio, to_mono_16k
from tests.conftest import SHARED_AUDIO

TONE = (0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)


@pytest.mark.parametrize(
    "dtype, scale, offset",
    [(np.int16, 32767, 0), (np.int32, 2**31 - 1, 0), (np.uint8, 127, 128), (np.float32, 1, 0), (np.float64, 1, 0)],
)
def test_sample_formats_scale_to_unit_range(tmp_path, dtype, scale, offset):
    path = tmp_path / "a.wav"
    scipy.io.wavfile.write(path, 16000, (TONE.astype(np.float64) * scale + offset).astype(dtype))
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.shape == TONE.shape
    assert np.abs(audio - TONE).max() < 2 / scale + 1e-6


def test_channels_are_averaged_and_rates_resampled(tmp_path):
    path = tmp_path / "stereo44k.wav"
    t = np.arange(44100) / 44100
    left, right = np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)
    scipy.io.wavfile.write(path, 44100, np.stack([left, right], axis=1).astype(np.float32))
    audio = load_audio(path)
    assert audio.shape == (16000,)
    expected = 0.75 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert np.abs(audio[100:-100] - expected[100:-100]).max() < 1e-2  # away from the filter's edges


@pytest.mark.parametrize("name", ["example_en.wav", "example_zh.wav"])
def test_real_speech_samples_read(name):
    path = SHARED_AUDIO / name
    if not path.exists():
        pytest.skip(f"{path} absent")
    audio = load_audio(path)
    assert audio.dtype == np.float32 and 5 * 16000 < audio.shape[0] < 11 * 16000 and np.abs(audio).max() <= 1.0


def test_bad_files_are_named(tmp_path):
    with pytest.raises(AudioError, match=r"missing.wav: no such file"):
        load_audio(tmp_path / "missing.wav")
    text = tmp_path / "notes.txt"
    text.write_text("hello, not audio")
    with pytest.raises(AudioError, match=r"notes.txt: not a WAV file .*supported: WAV files"):
        load_audio(text)
    good = tmp_path / "good.wav"
    scipy.io.wavfile.write(good, 16000, (TONE * 32767).astype(np.int16))
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:30])
    with pytest.raises(AudioError, match=r"truncated.wav: an unreadable or truncated WAV file"):
        load_audio(truncated)
    zero_rate = tmp_path / "rate0.wav"
    data = bytearray(good.read_bytes())
    data[24:32] = bytes(8)  # the fmt chunk's sample rate and byte rate
    zero_rate.write_bytes(bytes(data))
    with pytest.raises(AudioError, match=r"rate0.wav: the header gives sample rate 0"):
        load_audio(zero_rate)


def test_bad_samples_are_named():
    with pytest.raises(AudioError, match="no samples"):
        to_mono_16k(np.zeros(0, np.float32), 16000, "x.wav")
    with pytest.raises(AudioError, match="x.wav: contains NaN or infinite"):
        to_mono_16k(np.array([0.0, np.nan], np.float32), 16000, "x.wav")
    with pytest.raises(AudioError, match=r"shape \(2, 2, 2\)"):
        to_mono_16k(np.zeros((2, 2, 2), np.float32), 16000, "x.wav")
