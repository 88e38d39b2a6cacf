"""Reading every format ffmpeg decodes (mp3, flac, ogg/vorbis/opus, m4a/aac, webm, the sound of mp4/mkv)
through PyAV, which ships its own ffmpeg libraries. An optional extra: `pip install glm-asr[audio]`.

libswresample resamples each channel to 16 kHz (a windowed-sinc filter that removes what lies above the new
Nyquist frequency, so nothing aliases), and the channels are then averaged, as the WAV path averages them.
Decoding streams frame by frame and keeps only the samples inside [offset, offset + duration), so memory
holds the 16 kHz mono result and never the source's own rate and channels.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np

from glm_asr.model.front_end import SAMPLING_RATE

EXTRA = "pip install 'glm-asr[audio]'"


class DecodeError(ValueError):
    """A file PyAV cannot turn into audio; the message names the file."""


class NotMedia(DecodeError):
    """A file that ffmpeg does not recognise at all."""


def import_av() -> ModuleType:
    try:
        import av
    except ImportError as e:
        raise ImportError(f"formats other than WAV are read with PyAV, which is not installed: {EXTRA}") from e
    return av


def read_audio(path: str | os.PathLike, offset: float = 0.0, duration: float | None = None, *, deadline: float | None = None) -> np.ndarray:
    """The first audio stream of `path` as float32 mono 16 kHz samples, from `offset` seconds for `duration`
    seconds (to the end when None). `deadline` (a time.monotonic() value): a DecodeError once it has passed,
    so that an upload built to decode slowly cannot hold a server's worker (glm_asr/serve/uploads.py)."""
    pieces = list(stream(path, offset, duration, deadline=deadline))
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


def stream(path: str | os.PathLike, offset: float = 0.0, duration: float | None = None, *,
           deadline: float | None = None) -> Iterator[np.ndarray]:
    """`read_audio`'s samples as a stream of blocks (one per decoded frame), so that a long file is never held
    whole: voice activity detection (glm_asr/longform) reads a two-hour file this way."""
    av = import_av()
    path = Path(path)
    first = round(offset * SAMPLING_RATE)
    last = None if duration is None else first + round(duration * SAMPLING_RATE)
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as e:
        raise NotMedia(f"{path}: not a WAV file nor a format ffmpeg decodes ({e.strerror})") from e
    with container:
        if not container.streams.audio:
            kinds = ", ".join(f"{s.type}" for s in container.streams) or "no streams"
            raise DecodeError(f"{path}: no audio stream (it holds {kinds}); expected a file with sound")
        audio = container.streams.audio[0]
        # layout=None keeps the source's channels, so that they are averaged as WAV's are, after resampling.
        resampler = av.AudioResampler(format="fltp", layout=None, rate=SAMPLING_RATE)
        seen = 0
        try:
            for frame in container.decode(audio):
                if deadline is not None and time.monotonic() > deadline:
                    raise DecodeError(f"{path}: decoding took longer than its time limit after {seen / SAMPLING_RATE:.2f} s of audio")
                for out in resampler.resample(frame):
                    piece, seen = _keep(out.to_ndarray(), seen, first, last)
                    if piece is not None:
                        yield piece
                if last is not None and seen >= last:
                    break
            else:
                for out in resampler.resample(None):  # what the filter still holds at the end
                    piece, seen = _keep(out.to_ndarray(), seen, first, last)
                    if piece is not None:
                        yield piece
        except av.FFmpegError as e:
            raise DecodeError(f"{path}: corrupt audio after {seen / SAMPLING_RATE:.2f} s ({e.strerror})") from e


def _keep(planes: np.ndarray, seen: int, first: int, last: int | None) -> tuple[np.ndarray | None, int]:
    """The part of a resampled frame (channels, n) that lies in [first, last) as mono, and the samples seen."""
    n = planes.shape[1]
    lo, hi = max(first - seen, 0), n if last is None else min(last - seen, n)
    return (planes[:, lo:hi].mean(axis=0, dtype=np.float32) if hi > lo else None), seen + n
