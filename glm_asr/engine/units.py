"""What the batching engine decodes: units of work (a whole input, one 30 s window, or a speech piece), and
each input's result assembled from its units' decodings.

The corpus path (glm_asr/corpus/batching.py) and the server (glm_asr/serve/scheduler.py) both cut inputs into
units, decode them in batches (batch.py, running.py) and assemble results with `finish`, so a text is the
same whichever path made it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from glm_asr.model.front_end import CHUNK_SECONDS, SAMPLING_RATE, WINDOW_SAMPLES, split_windows
from glm_asr.transcription.processor import MAX_WINDOWS
from glm_asr.transcription.transcribe import Decoded, Segment, _join


@dataclass
class FileResult:
    """One input's transcript, or its error."""

    item: Any  # what names the input: a corpus Item (glm_asr/corpus/inputs.py), the server's too
    text: str = ""
    duration: float = 0.0  # seconds transcribed
    segments: list[Segment] = field(default_factory=list)
    read_seconds: float = 0.0  # decoding the audio (in the reader thread)
    model_seconds: float = 0.0  # its share of its batches' time, by audio length
    error: str | None = None
    stopped_on_repeat: bool = False
    truncated: bool = False  # some decoding reached its token budget (see the segments)


@dataclass
class Unit:
    """What one batch row decodes: a whole input, or one of its windows. The corpus path and the server
    (glm_asr/serve/scheduler.py) both cut inputs into units and decode them in the engine's batches."""

    result: FileResult
    index: int | None  # the window's number when the input is transcribed window by window
    samples: np.ndarray
    decoded: Decoded | None = None  # None until its batch has run
    span: tuple[float, float] | None = None  # with VAD: the piece's speech bounds on the input's timeline (s)
    on_token: Callable[[int], None] | None = None  # called with each new token id of this row (streaming)


def cut_units(result: FileResult, samples: np.ndarray, chunked: bool | None) -> list[Unit]:
    """One unit for the whole input, or one per 30 s window when `chunked` (None: only past the reference's
    21-window limit, as `transcribe_detailed`)."""
    result.duration = samples.shape[0] / SAMPLING_RATE
    if chunked or (chunked is None and samples.shape[0] > MAX_WINDOWS * WINDOW_SAMPLES):
        return [Unit(result, i, w.numpy()) for i, w in enumerate(split_windows(torch.from_numpy(samples)))]
    return [Unit(result, None, samples)]


def finish(result: FileResult, units: list[Unit]) -> FileResult:
    """Texts and segments as transcribe_detailed makes them: one segment for a whole input, one per window
    (texts joined) for an input transcribed window by window."""
    if result.error is not None:
        return result
    if not units or units[0].span is not None:  # VAD pieces (none in silence)
        result.text = _join([u.decoded.text for u in units])
        result.segments = [Segment(*u.span, u.decoded.text, u.decoded.truncated) for u in units]
    elif units[0].index is None:
        result.text = units[0].decoded.text
        result.segments = [Segment(0.0, result.duration, result.text, units[0].decoded.truncated)]
    else:
        units = sorted(units, key=lambda u: u.index)
        result.text = _join([u.decoded.text for u in units])
        result.segments = [Segment(u.index * CHUNK_SECONDS, min((u.index + 1) * CHUNK_SECONDS, result.duration), u.decoded.text,
                                   u.decoded.truncated) for u in units]
    result.stopped_on_repeat = any(u.decoded.stopped_on_repeat for u in units)
    result.truncated = any(u.decoded.truncated for u in units)
    return result
