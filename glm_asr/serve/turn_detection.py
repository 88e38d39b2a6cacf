"""OpenAI's `server_vad` fields, checked once for both places that take them: an upload's `chunking_strategy`
(fields.py) and a live stream's `turn_detection` (GA `audio.input.turn_detection`, beta `turn_detection`).
Both end in the one segmentation's VadOptions through `VadOptions.server_vad`: a stream's TurnOptions.vad
calls it, so equal fields give equal regions whether the audio is uploaded or streamed.

A stream's turn detection is one of three:
- `{"type": "server_vad", ...}`: the fields given replace the server's defaults (`glm-asr serve`'s), the rest
  keep them; OpenAI's conversation fields (`create_response`, `interrupt_response`, `idle_timeout_ms`) are
  taken and have no effect in a transcription session.
- `null`: manual turns (as OpenAI's models without VAD): nothing is segmented, the audio accumulates until
  `input_audio_buffer.commit`, and that whole buffer is one item.
- `{"type": "semantic_vad", "eagerness": ...}`: there is no model here that judges whether a sentence is
  finished, so it runs as server_vad with the server's defaults; the session object sent back says
  server_vad, so a client sees what runs. `eagerness` is checked (low, medium, high, auto) and not used.
"""

from __future__ import annotations

import dataclasses

from glm_asr.serve.utterances import TurnOptions

SERVER_VAD_FIELDS = {"threshold": float, "prefix_padding_ms": int, "silence_duration_ms": int}
_CONVERSATION_FIELDS = ("create_response", "interrupt_response", "idle_timeout_ms")  # a response's, not a transcript's
_EAGERNESS = ("low", "medium", "high", "auto")


class FieldError(ValueError):
    """A field refused: its name (`field`, "" for the object itself) and a message that starts with it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def server_vad_values(fields: dict) -> dict[str, float | int]:
    """The server_vad fields given (None or "" is absent) as numbers for VadOptions.server_vad; FieldError
    naming the first that is not a number of its kind or lies outside OpenAI's range."""
    values: dict[str, float | int] = {}
    for key, kind in SERVER_VAD_FIELDS.items():
        if fields.get(key) in (None, ""):
            continue
        raw = fields[key]
        try:
            if isinstance(raw, bool):
                raise ValueError
            value = kind(raw)
            if kind is int and value != float(raw):
                raise ValueError
        except (TypeError, ValueError):
            raise FieldError(key, f"{key} {raw!r}: expected {'a number' if kind is float else 'whole milliseconds'}") from None
        if not (0.0 < value < 1.0 if key == "threshold" else 0 <= value <= 10_000):
            raise FieldError(key, f"{key} {value}: expected " + ("a probability between 0 and 1, such as 0.35"
                                                                 if key == "threshold" else "0 to 10000 ms"))
        values[key] = value
    return values


def parse(value: object, defaults: TurnOptions) -> TurnOptions | None:
    """A session update's turn_detection as the TurnOptions a stream segments with, or None for manual turns."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise FieldError("", f"{value!r}: expected null or an object such as {{\"type\": \"server_vad\", \"silence_duration_ms\": 500}}")
    kind = value.get("type", "server_vad")
    if kind == "semantic_vad":
        unknown = sorted(set(value) - {"type", "eagerness", *_CONVERSATION_FIELDS})
        if unknown:
            raise FieldError(unknown[0], f"{unknown[0]!r} is not a semantic_vad field; expected eagerness")
        if value.get("eagerness", "auto") not in _EAGERNESS:
            raise FieldError("eagerness", f"eagerness {value['eagerness']!r}: expected one of {', '.join(_EAGERNESS)}")
        return defaults
    if kind != "server_vad":
        raise FieldError("type", f"type {kind!r}: expected \"server_vad\", \"semantic_vad\", or turn_detection null for manual turns")
    unknown = sorted(set(value) - {"type", *SERVER_VAD_FIELDS, *_CONVERSATION_FIELDS})
    if unknown:
        raise FieldError(unknown[0], f"{unknown[0]!r} is not a server_vad field; expected {', '.join(SERVER_VAD_FIELDS)}")
    return dataclasses.replace(defaults, **server_vad_values(value))


def shown(turn: TurnOptions | None) -> dict | None:
    """The turn_detection a session object reports: what the stream segments with."""
    if turn is None:
        return None
    return {"type": "server_vad", "threshold": turn.threshold, "prefix_padding_ms": turn.prefix_padding_ms,
            "silence_duration_ms": turn.silence_duration_ms}
