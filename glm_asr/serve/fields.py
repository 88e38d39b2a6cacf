"""The multipart form's fields, checked against what the model can honour: anything it cannot (sampling
temperature, word timestamps, a language it does not cover) is a 400 naming the field, never a silent ignore.
Two fields that OpenAI's clients send as a matter of course are taken: `language` (checked, echoed in
verbose_json: languages.py) and `prompt` (taken and not used: the model's instruction is fixed, and whether
it can be steered with hotwords is an open question; the response says so in a header, docs/serving.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.datastructures import FormData, UploadFile

from glm_asr.longform.vad import VadOptions
from glm_asr.serve import languages, turn_detection
from glm_asr.serve.formats import RESPONSE_FORMATS, STREAM_FORMATS
from glm_asr.serve.limits import ApiError

FIELDS = ("file", "model", "language", "prompt", "response_format", "temperature", "timestamp_granularities[]", "stream")


@dataclass
class Options:
    upload: UploadFile
    response_format: str
    stream: bool
    language: str | None = None  # the code sent, reduced to its primary tag
    prompt: bool = False  # a prompt was sent (and is not used)
    chunking: VadOptions | None = None  # chunking_strategy: None, one block (30 s windows past 30 s)


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, f"{param}: {message}", param=param, code="invalid_value")


def parse(form: FormData, model_names: tuple[str, ...]) -> Options:
    unknown = sorted({k for k in form.keys() if k not in FIELDS and k not in CHUNKING_FIELDS})
    if unknown:
        raise _bad(unknown[0], f"not a field this endpoint takes; expected only {', '.join(FIELDS)}")
    repeated = [k for k in FIELDS + CHUNKING_FIELDS if k != "timestamp_granularities[]" and len(form.getlist(k)) > 1]
    if repeated:
        raise _bad(repeated[0], "given more than once; send it once")
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise _bad("file", "missing, or not a file part; send the audio as a multipart file field named 'file'")
    model = form.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", f"missing; send model={model_names[0]!r} (GET /v1/models lists the served names)")
    if model not in model_names:
        raise ApiError(404, f"model {model!r} is not served here; expected one of {', '.join(model_names)}", param="model",
                       code="model_not_found")
    fmt = _text(form, "response_format") or "json"
    if fmt not in RESPONSE_FORMATS:
        raise _bad("response_format", f"{fmt!r}; expected one of {', '.join(RESPONSE_FORMATS)}")
    temperature = _text(form, "temperature")
    if temperature:
        try:
            value = float(temperature)
        except ValueError as e:
            raise _bad("temperature", f"{temperature!r} is not a number; expected 0") from e
        if value != 0:
            raise _bad("temperature", f"{value:g}: decoding is greedy, so only 0 is honoured; omit it or send 0")
    for granularity in form.getlist("timestamp_granularities[]"):
        if granularity == "word":
            raise _bad("timestamp_granularities[]", "'word': the model has no word timestamps; ask for 'segment' (windows)")
        if granularity != "segment":
            raise _bad("timestamp_granularities[]", f"{granularity!r}; expected 'segment'")
        if fmt != "verbose_json":
            raise _bad("timestamp_granularities[]", "needs response_format=verbose_json, as in OpenAI's API")
    stream = (_text(form, "stream") or "false").lower()
    if stream not in ("true", "false"):
        raise _bad("stream", f"{stream!r}; expected true or false")
    if stream == "true" and fmt not in STREAM_FORMATS:
        raise _bad("stream", f"a stream carries text deltas; response_format {fmt!r} cannot stream, use json or text")
    language, prompt = _language_and_prompt(form)
    return Options(upload, fmt, stream == "true", language, prompt, chunking(form))


def _language_and_prompt(form: FormData) -> tuple[str | None, bool]:
    language = _text(form, "language")
    try:
        code = languages.check(language) if language else None
    except languages.LanguageError as e:
        raise _bad("language", str(e)) from None
    return code, bool(_text(form, "prompt"))


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    if value is not None and not isinstance(value, str):
        raise _bad(name, "sent as a file; expected a plain form field")
    return (value or "").strip()


# chunking_strategy, as OpenAI defines it: "auto", or {"type": "server_vad", "threshold", "prefix_padding_ms",
# "silence_duration_ms"} sent as a JSON string or, as OpenAI's Python client sends it, as bracketed fields.
CHUNKING_FIELDS = ("chunking_strategy", *(f"chunking_strategy[{k}]" for k in ("type", "threshold", "prefix_padding_ms", "silence_duration_ms")))
_SERVER_VAD = turn_detection.SERVER_VAD_FIELDS  # checked as a live stream's turn_detection is


def chunking(form: FormData) -> VadOptions | None:
    """The upload's segmentation: None when the field is absent (one block, as OpenAI), else VadOptions."""
    text = _text(form, "chunking_strategy")
    nested = {k[len("chunking_strategy["):-1]: _text(form, k) for k in CHUNKING_FIELDS[1:] if form.get(k) is not None}
    if text and nested:
        raise _bad("chunking_strategy", "given both as a value and as chunking_strategy[...] fields; send one")
    if not text and not nested:
        return None
    if text == "auto":
        return _available(VadOptions())
    if text:
        try:
            nested = json.loads(text)
        except ValueError:
            nested = None
        if not isinstance(nested, dict):
            raise _bad("chunking_strategy", f"{text[:40]!r}; expected \"auto\" or a JSON object such as "
                       '{"type": "server_vad", "threshold": 0.35, "prefix_padding_ms": 400, "silence_duration_ms": 500}')
    if nested.get("type") != "server_vad":
        raise _bad("chunking_strategy", f"type {nested.get('type')!r}; expected \"server_vad\" (or the string \"auto\")")
    unknown = sorted(set(nested) - {"type", *_SERVER_VAD})
    if unknown:
        raise _bad("chunking_strategy", f"{unknown[0]!r} is not a server_vad field; expected {', '.join(_SERVER_VAD)}")
    try:
        values = turn_detection.server_vad_values(nested)
    except turn_detection.FieldError as e:
        raise _bad("chunking_strategy", e.message) from None
    return _available(VadOptions.server_vad(**values))


def _available(opts: VadOptions) -> VadOptions:
    from glm_asr.longform.vad import VadUnavailable, model_path

    try:
        model_path()
    except VadUnavailable as e:
        raise _bad("chunking_strategy", f"this server has no voice activity detection ({e}); omit the field") from e
    return opts
