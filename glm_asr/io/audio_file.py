"""Reading audio to float32 16 kHz mono: WAV files through scipy, any channel count and rate; every other
format ffmpeg decodes through PyAV (pyav.py, the optional `audio` extra)."""

from __future__ import annotations

import importlib.util
import math
import os
import struct
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.io.wavfile
import scipy.signal

from glm_asr.model.front_end import SAMPLING_RATE
from glm_asr.io.pyav import EXTRA, DecodeError, NotMedia, read_audio

_WAV = "WAV files (PCM uint8/int16/24-bit/int32 or float32/float64, any channels and sample rate)"
_FFMPEG = "whatever ffmpeg decodes: mp3, flac, ogg/opus, m4a, webm, the sound of mp4/mkv"


def supported() -> str:
    """What can be read here: the install hint for PyAV only where PyAV is absent."""
    if importlib.util.find_spec("av") is not None:
        return f"{_WAV}, and through PyAV {_FFMPEG}"
    return f"{_WAV}, and with PyAV ({EXTRA}) {_FFMPEG}"


class AudioError(ValueError):
    """Audio that cannot be transcribed; the message names the file and what was expected."""


def load_audio(path: str | os.PathLike, offset: float = 0.0, duration: float | None = None, *,
               deadline: float | None = None) -> np.ndarray:
    """An audio file as float32 mono samples at 16 kHz, from `offset` seconds for `duration` seconds (to the
    end when None). WAV (a RIFF header) is read by scipy: integer PCM scaled to [-1, 1), channels averaged,
    other rates resampled with a polyphase filter (scipy.signal.resample_poly). Any other file, and WAV in an
    encoding scipy does not read (mu-law, A-law, ADPCM), is decoded by PyAV when it is installed (pyav.py),
    within `deadline` (a time.monotonic() value) when one is given: a DecodeError's AudioError past it."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if offset < 0 or (duration is not None and duration <= 0):
        raise AudioError(f"{path}: offset {offset} s, duration {duration} s; expected offset >= 0 and duration > 0")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise AudioError(f"{path}: an empty file (0 bytes); expected audio")
    if head not in (b"RIFF", b"RIFX"):
        try:
            samples = read_audio(path, offset, duration, deadline=deadline)
        except ImportError as e:
            raise AudioError(f"{path}: not a WAV file; {e}") from e
        except NotMedia as e:
            raise AudioError(f"{e}; supported: {supported()}") from e
        except DecodeError as e:
            raise AudioError(str(e)) from e
        if offset and not samples.size:
            raise AudioError(f"{path}: offset {offset:g} s is at or past the end of the audio; expected an offset inside the file")
        return to_mono_16k(samples, SAMPLING_RATE, str(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", scipy.io.wavfile.WavFileWarning)  # a truncated file must not pass quietly
            rate, data = scipy.io.wavfile.read(path)
    except (ValueError, EOFError, struct.error, scipy.io.wavfile.WavFileWarning, IndexError, OSError) as e:
        if "Unknown wave file format" in str(e):  # mu-law, A-law, ADPCM (telephony archives): ffmpeg decodes them
            try:
                return to_mono_16k(read_audio(path, offset, duration, deadline=deadline), SAMPLING_RATE, str(path))
            except DecodeError as d:
                if deadline is not None and time.monotonic() > deadline:
                    raise AudioError(str(d)) from d
            except ImportError:
                pass  # the WAV error below says more
        raise AudioError(f"{path}: an unreadable or truncated WAV file ({e}); supported: {supported()}") from e
    if rate <= 0:
        raise AudioError(f"{path}: the header gives sample rate {rate}; expected a positive rate such as 16000")
    first = round(offset * rate)
    if offset and first >= data.shape[0]:
        raise AudioError(f"{path}: offset {offset:g} s is at or past the end of the audio ({data.shape[0] / rate:.2f} s); "
                         "expected an offset inside the file")
    data = data[first : None if duration is None else first + round(duration * rate)]
    return to_mono_16k(_to_float(data, path), rate, str(path))


def _to_float(data: np.ndarray, path: Path) -> np.ndarray:
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    if data.dtype == np.int16:
        return data.astype(np.float32) / 32768.0
    if data.dtype == np.int32:  # also 24-bit PCM, which scipy left-aligns into int32
        return (data.astype(np.float64) / 2147483648.0).astype(np.float32)
    if data.dtype in (np.float32, np.float64):
        return data
    raise AudioError(f"{path}: samples of type {data.dtype}; supported: {supported()}")


def to_mono_16k(samples: np.ndarray, rate: int, name: str = "audio") -> np.ndarray:
    """Downmixes (samples, channels) to mono, resamples to 16 kHz, checks the values are finite."""
    samples = np.asarray(samples)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if samples.ndim != 1:
        raise AudioError(f"{name}: samples of shape {samples.shape}; expected (samples,) or (samples, channels)")
    if samples.size == 0:
        raise AudioError(f"{name}: no samples; expected at least one")
    if not np.isfinite(samples).all():
        raise AudioError(f"{name}: contains NaN or infinite samples; expected finite values in [-1, 1]")
    if rate != SAMPLING_RATE:
        g = math.gcd(int(rate), SAMPLING_RATE)
        samples = scipy.signal.resample_poly(samples.astype(np.float64), SAMPLING_RATE // g, int(rate) // g)
    return np.ascontiguousarray(samples, dtype=np.float32)
