"""A transcript in each of OpenAI's response formats.

A transcript whose decoding reached its token budget (the text may stop before the speech does) is marked in
every format: `truncated` in json and verbose_json (and on each verbose_json segment), in the stream's
`transcript.text.done` event, and a `x-glm-asr-truncated: true` header on every response, text, srt and vtt
included, whose bodies stay the transcript alone."""

from __future__ import annotations

import json

from starlette.responses import JSONResponse, PlainTextResponse, Response

from glm_asr.engine.units import FileResult
from glm_asr.corpus.subtitles import render
from glm_asr.serve import segments
from glm_asr.serve.languages import LANGUAGES

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
STREAM_FORMATS = ("json", "text")  # as OpenAI: a stream carries text deltas, not subtitles


def usage(result: FileResult) -> dict:
    return {"type": "duration", "seconds": round(result.duration, 3)}


TRUNCATED_HEADER = "x-glm-asr-truncated"


def respond(result: FileResult, fmt: str, language: str | None = None) -> Response:
    response = _respond(result, fmt, language)
    if result.truncated:
        response.headers[TRUNCATED_HEADER] = "true"
    return response


def _respond(result: FileResult, fmt: str, language: str | None) -> Response:
    if fmt == "json":
        return JSONResponse({"text": result.text, "usage": usage(result), "truncated": result.truncated})
    if fmt == "text":
        return PlainTextResponse(result.text + "\n")
    if fmt in ("srt", "vtt"):
        return PlainTextResponse(render(segments.segments(result), fmt), media_type="text/vtt" if fmt == "vtt" else "text/plain")
    assert fmt == "verbose_json", fmt
    # The model has no per-token timestamps or language tag: segments carry what exists (start, end, text) and
    # language is the one the client named (OpenAI's name for it), null rather than a guess when it named none;
    # Whisper's decoding statistics (avg_logprob, ...) are left out.
    return JSONResponse({
        "task": "transcribe", "language": LANGUAGES.get(language or ""), "duration": round(result.duration, 3), "text": result.text,
        "segments": [{"id": i, "seek": round(s.start * 100), "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text,
                      "tokens": [], "temperature": 0.0, "truncated": s.truncated} for i, s in enumerate(segments.segments(result))],
        "usage": usage(result), "truncated": result.truncated,
    })


def event(payload: dict) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
