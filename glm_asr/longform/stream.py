"""An audio file as a stream of float32 16 kHz mono blocks, for voice activity detection over long files.

A 16 kHz WAV in a format scipy can memory-map (PCM uint8/int16/int32, float32/float64) is read block by
block with plain reads at the data's offset (scipy's map gives the layout; reading through the map would
leave the whole file's pages resident and counted in the process's memory); every other file ffmpeg decodes streams through PyAV (glm_asr/io/pyav.py), frame by
frame. A WAV at another rate, or one scipy cannot map (24-bit PCM), is read whole by `load_audio`
(resampling block by block would change the samples at the block edges) and then handed out in views:
it sits in memory once.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.io.wavfile

from glm_asr.io.audio_file import AudioError, _to_float, load_audio, to_mono_16k
from glm_asr.io.pyav import DecodeError, NotMedia, stream
from glm_asr.longform.vad import blocks_of
from glm_asr.model.front_end import SAMPLING_RATE

BLOCK_SAMPLES = 30 * SAMPLING_RATE


def stream_file(path: str | os.PathLike, offset: float = 0.0, duration: float | None = None) -> Iterator[np.ndarray]:
    """The samples `load_audio(path, offset, duration)` returns, as blocks; the same errors, raised lazily."""
    path = Path(path)
    mapped = _map_wav(path)
    if mapped is None:
        with open(path, "rb") as f:
            riff = f.read(4) in (b"RIFF", b"RIFX")
        if riff:
            yield from blocks_of(load_audio(path, offset, duration))
            return
        try:
            for block in stream(path, offset, duration):
                yield to_mono_16k(block, SAMPLING_RATE, str(path)) if block.size else block
        except ImportError as e:
            raise AudioError(f"{path}: not a WAV file; {e}") from e
        except (NotMedia, DecodeError) as e:
            raise AudioError(str(e)) from e
        return
    dtype, shape, data_offset = mapped.dtype, mapped.shape, mapped.offset
    del mapped
    channels = shape[1] if len(shape) == 2 else 1
    first = round(offset * SAMPLING_RATE)
    last = shape[0] if duration is None else min(shape[0], first + round(duration * SAMPLING_RATE))
    if first >= last:
        raise AudioError(f"{path}: nothing from {offset} s on; the file lasts {shape[0] / SAMPLING_RATE:.2f} s")
    with open(path, "rb") as f:
        for start in range(first, last, BLOCK_SAMPLES):
            count = min(BLOCK_SAMPLES, last - start)
            f.seek(data_offset + start * channels * dtype.itemsize)
            block = np.fromfile(f, dtype, count * channels).reshape((count, channels) if len(shape) == 2 else (count,))
            yield to_mono_16k(_to_float(block, path), SAMPLING_RATE, str(path))


def _map_wav(path: Path) -> np.memmap | None:
    """The memory-mapped (samples[, channels]) data of a 16 kHz WAV, or None when it is not one scipy maps."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", scipy.io.wavfile.WavFileWarning)
            rate, data = scipy.io.wavfile.read(path, mmap=True)
    except Exception:  # noqa: BLE001 (not a mappable WAV: load_audio or PyAV reads it and reports what is wrong)
        return None
    return data if rate == SAMPLING_RATE and isinstance(data, np.memmap) else None

