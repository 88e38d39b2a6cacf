"""Untrusted uploads: which containers and codecs are opened, and how long decoding may take.

An upload reaches ffmpeg's demuxers and decoders, a large attack surface written in C. So the file is first
probed (ffmpeg reads its header to name the container) and refused unless the container and its first audio
stream's codec are on the allow-lists below: the formats speech clients send (OpenAI accepts flac, mp3, mp4,
mpeg, mpga, m4a, ogg, wav, webm). Only then is it decoded, bounded three ways: the upload's size (checked
while the body arrives, app.py), the audio kept (the duration cap plus one second is decoded, never more,
so memory holds at most that), and wall time (a deadline checked between frames).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from glm_asr.io.audio_file import AudioError, load_audio, to_mono_16k
from glm_asr.io.pyav import DecodeError, import_av, read_audio
from glm_asr.model.front_end import SAMPLING_RATE
from glm_asr.serve.limits import ApiError, Limits

# ffmpeg's demuxer names (av.open(...).format.name)
CONTAINERS = frozenset(["wav", "mp3", "flac", "ogg", "matroska,webm", "mov,mp4,m4a,3gp,3g2,mj2", "aac", "aiff", "amr", "w64"])
# ffmpeg's decoder names for the first audio stream; every "pcm_*" (plain samples) is allowed as well
CODECS = frozenset(["mp3", "mp3float", "flac", "vorbis", "opus", "aac", "alac", "amrnb", "amrwb", "adpcm_ms", "adpcm_ima_wav"])


def _allowed_codec(name: str) -> bool:
    return name in CODECS or name.startswith("pcm_")


def probe(path: Path, name: str, limits: Limits) -> tuple[str, str]:
    """The container and codec names of an upload, or an ApiError (400 not allowed or not audio, 413 too long
    by its header)."""
    av = import_av()
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as e:
        raise ApiError(400, f"{name}: not audio in a format this server reads ({e.strerror}); send wav, mp3, flac, ogg/opus, "
                       "webm, m4a or mp4", param="file", code="invalid_audio") from e
    with container:
        fmt = container.format.name
        if fmt not in CONTAINERS:
            raise ApiError(400, f"{name}: a {fmt} container, which this server does not open; allowed: {', '.join(sorted(CONTAINERS))}",
                           param="file", code="unsupported_format")
        if not container.streams.audio:
            raise ApiError(400, f"{name}: no audio stream; expected a file with sound", param="file", code="invalid_audio")
        codec = container.streams.audio[0].codec_context.name
        if not _allowed_codec(codec):
            raise ApiError(400, f"{name}: audio coded as {codec}, which this server does not decode; allowed: pcm_*, "
                           f"{', '.join(sorted(CODECS))}", param="file", code="unsupported_format")
        seconds = None if container.duration is None else container.duration / 1_000_000  # in AV_TIME_BASE units
    if seconds is not None and seconds > limits.max_audio_seconds + 1:
        raise too_long(name, seconds, limits)
    return fmt, codec


def too_long(name: str, seconds: float, limits: Limits) -> ApiError:
    return ApiError(413, f"{name}: {seconds:.1f} s of audio; this server takes at most {limits.max_audio_seconds:g} s per "
                    "request: split the file", param="file", code="audio_too_long")


def read_upload(path: Path, name: str, limits: Limits) -> np.ndarray:
    """An upload on disk as 16 kHz mono float32, after the allow-list check; every refusal is an ApiError."""
    if path.stat().st_size == 0:
        raise ApiError(400, f"{name}: an empty file (0 bytes); expected audio", param="file", code="empty_file")
    fmt, _ = probe(path, name, limits)
    keep = limits.max_audio_seconds + 1.0  # one second more than allowed: enough to tell that it is too long
    try:
        with path.open("rb") as f:
            riff = f.read(4) in (b"RIFF", b"RIFX")
        deadline = time.monotonic() + limits.decode_seconds
        if fmt == "wav" and riff:  # the corpus path's own WAV reader, so results match the CLI's; PyAV for mu-law or ADPCM
            samples = load_audio(path, 0.0, keep, deadline=deadline)
        else:
            samples = to_mono_16k(read_audio(path, 0.0, keep, deadline=deadline), SAMPLING_RATE, name)
    except (AudioError, DecodeError) as e:
        raise ApiError(400, str(e).replace(str(path), name), param="file", code="invalid_audio") from e
    if samples.size == 0:
        raise ApiError(400, f"{name}: no samples (zero-length audio); expected speech", param="file", code="empty_audio")
    if samples.shape[0] > limits.max_audio_seconds * SAMPLING_RATE:
        raise too_long(name, samples.shape[0] / SAMPLING_RATE, limits)
    return samples
