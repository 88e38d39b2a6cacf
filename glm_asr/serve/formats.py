"""A transcript in each of OpenAI's response formats."""

from __future__ import annotations

import json

from starlette.responses import JSONResponse, PlainTextResponse, Response

from glm_asr.engine.units import FileResult
from glm_asr.corpus.subtitles import render
from glm_asr.serve import segments

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
STREAM_FORMATS = ("json", "text")  # as OpenAI: a stream carries text deltas, not subtitles


def usage(result: FileResult) -> dict:
    return {"type": "duration", "seconds": round(result.duration, 3)}


def respond(result: FileResult, fmt: str) -> Response:
    if fmt == "json":
        return JSONResponse({"text": result.text, "usage": usage(result)})
    if fmt == "text":
        return PlainTextResponse(result.text + "\n")
    if fmt in ("srt", "vtt"):
        return PlainTextResponse(render(segments.segments(result), fmt), media_type="text/vtt" if fmt == "vtt" else "text/plain")
    assert fmt == "verbose_json", fmt
    # The model has no per-token timestamps or language tag: segments carry what exists (start, end, text) and
    # language is null rather than a guess; Whisper's decoding statistics (avg_logprob, ...) are left out.
    return JSONResponse({
        "task": "transcribe", "language": None, "duration": round(result.duration, 3), "text": result.text,
        "segments": [{"id": i, "seek": round(s.start * 100), "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text,
                      "tokens": [], "temperature": 0.0} for i, s in enumerate(segments.segments(result))],
        "usage": usage(result),
    })


def event(payload: dict) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
