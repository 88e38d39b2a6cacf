"""Reading audio: WAV files through scipy, any channel count and rate, to float32 16 kHz mono."""

from __future__ import annotations

import math
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import scipy.io.wavfile
import scipy.signal

from .audio import SAMPLING_RATE

SUPPORTED = "WAV files (PCM uint8/int16/24-bit/int32 or float32/float64, any channels and sample rate)"


class AudioError(ValueError):
    """Audio that cannot be transcribed; the message names the file and what was expected."""


def load_audio(path: str | os.PathLike) -> np.ndarray:
    """A WAV file as float32 mono samples at 16 kHz: integer PCM scaled to [-1, 1), channels averaged,
    other rates resampled with a polyphase filter (scipy.signal.resample_poly)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", scipy.io.wavfile.WavFileWarning)  # a truncated file must not pass quietly
            rate, data = scipy.io.wavfile.read(path)
    except (ValueError, EOFError, struct.error, scipy.io.wavfile.WavFileWarning, IndexError, OSError) as e:
        with open(path, "rb") as f:
            head = f.read(4)
        what = "not a WAV file" if head != b"RIFF" and head != b"RIFX" else "an unreadable or truncated WAV file"
        raise AudioError(f"{path}: {what} ({e}); supported: {SUPPORTED}") from e
    if rate <= 0:
        raise AudioError(f"{path}: the header gives sample rate {rate}; expected a positive rate such as 16000")
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
    raise AudioError(f"{path}: samples of type {data.dtype}; supported: {SUPPORTED}")


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
