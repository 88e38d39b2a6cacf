"""Writing test audio in any format with PyAV's own encoders, so that no binary fixture is stored."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import scipy.signal

# name -> (container format, codec, sample rate, bit rate): each format the corpus tests decode.
FORMATS = {
    "mp3": ("mp3", "libmp3lame", 44100, 128_000),
    "flac": ("flac", "flac", 48000, None),
    "ogg": ("ogg", "libopus", 48000, 96_000),
    "m4a": ("ipod", "aac", 44100, 128_000),
    "webm": ("webm", "libopus", 48000, 96_000),
    "mp4": ("mp4", "aac", 22050, 96_000),
    "mulaw.wav": ("wav", "pcm_mulaw", 8000, None),  # telephony: a WAV that scipy does not read
}


def encode(path: Path, samples: np.ndarray, name: str, *, video: bool = False) -> Path:
    """Writes 16 kHz float samples (n,) or (n, channels) as `name` (a FORMATS key), first resampled with
    scipy to the codec's rate; `video=True` adds a few black frames of mpeg4 video before the sound."""
    import av

    fmt, codec, rate, bit_rate = FORMATS[name]
    samples = samples[:, None] if samples.ndim == 1 else samples
    g = np.gcd(rate, 16000)
    source = scipy.signal.resample_poly(samples.astype(np.float64), rate // g, 16000 // g, axis=0).astype(np.float32)
    with av.open(str(path), "w", format=fmt) as out:
        picture = _add_video(out) if video else None  # every stream is added before the first packet
        stream = out.add_stream(codec, rate=rate, layout="mono" if source.shape[1] == 1 else "stereo")
        if bit_rate:
            stream.bit_rate = bit_rate
        if picture is not None:
            _write_video(out, picture)
        _write_audio(out, stream, source, rate)
    return path


def _add_video(out):  # noqa: ANN001, ANN202
    picture = out.add_stream("mpeg4", rate=10)
    picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
    return picture


def _write_video(out, picture) -> None:  # noqa: ANN001
    import av

    for i in range(5):
        frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
        frame.pts = i
        out.mux(picture.encode(frame))
    out.mux(picture.encode(None))


def _write_audio(out, stream, source: np.ndarray, rate: int) -> None:  # noqa: ANN001
    import av

    layout = "mono" if source.shape[1] == 1 else "stereo"
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(source.T), format="fltp", layout=layout)
    # With a time base the frames keep timestamps, and the encoder's priming samples are marked as such.
    frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
    convert = av.AudioResampler(format=stream.codec_context.format.name, layout=layout, rate=rate)
    fifo = av.AudioFifo()
    for converted in convert.resample(frame) + convert.resample(None):
        fifo.write(converted)
    size = stream.codec_context.frame_size or 1024
    while fifo.samples:
        chunk = fifo.read(min(size, fifo.samples))
        out.mux(stream.encode(chunk))
    out.mux(stream.encode(None))


def video_only(path: Path) -> Path:
    """An mp4 holding a few frames of video and no sound."""
    import av

    with av.open(str(path), "w") as out:
        _write_video(out, _add_video(out))
    return path
