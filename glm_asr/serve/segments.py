"""Where a request's units of work and its segments come from: the one place to swap in another
segmentation (a VAD's speech pieces in place of 30 s windows) without touching the scheduler or the API."""

from __future__ import annotations

import numpy as np

from glm_asr.engine.units import FileResult, Unit, cut_units
from glm_asr.transcription.transcribe import Segment


def cut(result: FileResult, samples: np.ndarray) -> list[Unit]:
    """A request's audio as units that the scheduler interleaves with other requests' units. Every 30 s window
    is its own unit (as `glm-asr transcribe --chunked`), so a short request waits for one batch at most, never
    for a long request's whole prompt."""
    return cut_units(result, samples, chunked=True)


def segments(result: FileResult) -> list[Segment]:
    """verbose_json's, srt's and vtt's segments: today one per window, as `transcribe_detailed` makes them."""
    return result.segments
