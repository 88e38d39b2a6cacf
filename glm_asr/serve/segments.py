"""Where a request's units of work and its segments come from: 30 s windows, or, with `chunking_strategy`,
the speech pieces of the one segmentation that `--vad` and the live stream use (glm_asr/longform)."""

from __future__ import annotations

import numpy as np

from glm_asr.engine.units import FileResult, Unit, cut_units
from glm_asr.longform.segmentation import Piece, find_pieces
from glm_asr.longform.vad import VadOptions
from glm_asr.model.front_end import SAMPLING_RATE
from glm_asr.transcription.transcribe import Segment


def pieces(samples: np.ndarray, opts: VadOptions) -> list[Piece]:
    """The speech pieces of an upload (CPU work: about a minute per hour of audio; run it off the event loop)."""
    return find_pieces(samples, opts)


def cut(result: FileResult, samples: np.ndarray, speech: list[Piece] | None = None) -> list[Unit]:
    """A request's audio as units that the scheduler interleaves with other requests' units. Without `speech`,
    every 30 s window is its own unit (as `glm-asr transcribe --chunked`), so a short request waits for one
    batch at most, never for a long request's whole prompt; with it, one unit per piece, its segment on the
    piece's speech bounds (silence gives no unit and no segment)."""
    if speech is None:
        return cut_units(result, samples, chunked=True)
    result.duration = samples.shape[0] / SAMPLING_RATE
    return [Unit(result, i, p.samples(samples), span=(p.start / SAMPLING_RATE, p.end / SAMPLING_RATE)) for i, p in enumerate(speech)]


def segments(result: FileResult) -> list[Segment]:
    """verbose_json's, srt's and vtt's segments: one per window, or one per speech piece."""
    return result.segments
