"""Subtitle and text files from a transcript's segments: SubRip (.srt), WebVTT (.vtt) and plain text (.txt)."""

from __future__ import annotations

from collections.abc import Sequence

from glm_asr.transcription.transcribe import Segment

FORMATS = ("srt", "vtt", "txt")


def _timestamp(seconds: float, decimal: str) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{decimal}{ms % 1000:03d}"


def render(segments: Sequence[Segment], fmt: str) -> str:
    """The segments as one file's text in `fmt` (srt, vtt or txt); segments without text are left out."""
    cues = [s for s in segments if s.text.strip()]
    if fmt == "txt":
        return "".join(f"{s.text.strip()}\n" for s in cues)
    if fmt == "srt":
        return "\n".join(f"{n}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text.strip()}\n" for n, s in enumerate(cues, 1))
    if fmt == "vtt":
        return "WEBVTT\n\n" + "\n".join(f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text.strip()}\n" for s in cues)
    raise ValueError(f"subtitle format {fmt!r}: expected one of {', '.join(FORMATS)}")
