"""Model configuration: frozen dataclasses with the field names of the checkpoint's config.json.

`GlmAsrConfig()` with no arguments is the released GLM-ASR-Nano-2512. `GlmAsrConfig.from_file` reads a
transformers-style config.json (nested `audio_config` / `text_config`, `rope_parameters` or a bare
`rope_theta`); keys this model has no use for (`architectures`, `dtype`, ...) are ignored, and a value the
model would silently compute differently with (another activation, biased Llama projections, scaled RoPE)
is rejected.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

MERGE_FACTOR = 4  # encoder frames concatenated per audio token; hard-coded in the reference model


class ConfigError(ValueError):
    """A config.json value is missing, mistyped or unsupported; the message names file and field."""


@dataclass(frozen=True)
class AudioConfig:
    """The Whisper-style encoder (`audio_tower`)."""

    hidden_size: int = 1280
    intermediate_size: int = 5120
    num_hidden_layers: int = 32
    num_attention_heads: int = 20
    num_key_value_heads: int = 20
    num_mel_bins: int = 128
    max_position_embeddings: int = 1500
    rope_theta: float = 10000.0
    partial_rotary_factor: float = 0.5
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5  # not in config.json: nn.LayerNorm's default in the reference

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)


@dataclass(frozen=True)
class TextConfig:
    """The Llama decoder (`language_model`)."""

    vocab_size: int = 59264
    hidden_size: int = 2048
    intermediate_size: int = 6144
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 4
    head_dim: int = 128
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 8192
    eos_token_id: tuple[int, ...] = (59246, 59253, 59255)
    hidden_act: str = "silu"


@dataclass(frozen=True)
class GlmAsrConfig:
    """The whole model: encoder, projector, decoder and how audio enters the prompt."""

    audio_config: AudioConfig = field(default_factory=AudioConfig)
    text_config: TextConfig = field(default_factory=TextConfig)
    audio_token_id: int = 59260
    projector_hidden_act: str = "gelu"
    tie_word_embeddings: bool = True

    def __post_init__(self) -> None:
        _check_consistency(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> GlmAsrConfig:
        """Builds a config from a parsed config.json; `source` names the file in error messages."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        audio = _sub_config(AudioConfig, _require(data, "audio_config", dict, source), "audio_config", source)
        text = _sub_config(TextConfig, _require(data, "text_config", dict, source), "text_config", source)
        top = {}
        for name in ("audio_token_id", "projector_hidden_act", "tie_word_embeddings"):
            if name in data:
                top[name] = _typed(data[name], name, _field_type(cls, name), source)
        try:
            return cls(audio_config=audio, text_config=text, **top)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from e

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> GlmAsrConfig:
        """Reads a transformers-style config.json."""
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError as e:
            raise ConfigError(f"{path}: no such file; expected a config.json") from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e}); expected a transformers config.json") from e
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The config.json the reference implementation reads (transformers 5.x layout)."""
        a, t = self.audio_config, self.text_config
        audio = {k: v for k, v in dataclasses.asdict(a).items() if k not in ("rope_theta", "partial_rotary_factor", "layer_norm_eps")}
        audio["rope_parameters"] = {"rope_theta": a.rope_theta, "partial_rotary_factor": a.partial_rotary_factor, "rope_type": "default"}
        text = {k: v for k, v in dataclasses.asdict(t).items() if k != "rope_theta"}
        text["eos_token_id"] = list(t.eos_token_id)
        text["rope_parameters"] = {"rope_theta": t.rope_theta, "rope_type": "default"}
        audio["model_type"], text["model_type"] = "glmasr_encoder", "llama"
        return {
            "architectures": ["GlmAsrForConditionalGeneration"],
            "model_type": "glmasr",
            "audio_config": audio,
            "text_config": text,
            "audio_token_id": self.audio_token_id,
            "projector_hidden_act": self.projector_hidden_act,
            "tie_word_embeddings": self.tie_word_embeddings,
        }


# Fields whose absence is an error: they fix tensor shapes, so a default could only hide a wrong file.
_REQUIRED = {
    "audio_config": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"),
    "text_config": ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "num_key_value_heads"),
}
# Values the reference accepts but this implementation does not compute; accepting them would be silent.
_ONLY = {
    "audio_config": {"hidden_act": ("gelu",), "rope_type": ("default",)},
    "text_config": {"hidden_act": ("silu",), "rope_type": ("default",), "attention_bias": (False,),
                    "mlp_bias": (False,), "pretraining_tp": (1,)},
}


def _sub_config(cls: type, data: dict[str, Any], section: str, source: str) -> Any:
    values: dict[str, Any] = {}
    for name in _REQUIRED[section]:
        if _require(data, name, int, source, f"{section}.") <= 0:
            raise ConfigError(f"{source}: {section}.{name} must be a positive integer, got {data[name]!r}")
    rope = data.get("rope_parameters") or {}
    if not isinstance(rope, dict):
        raise ConfigError(f"{source}: {section}.rope_parameters must be an object, got {rope!r}")
    flat = {**data, **{k: v for k, v in rope.items() if k in ("rope_theta", "partial_rotary_factor", "rope_type")}}
    for key, allowed in _ONLY[section].items():
        if key in flat and flat[key] not in allowed:
            raise ConfigError(f"{source}: {section}.{key} = {flat[key]!r} is not supported (expected one of {list(allowed)})")
    for f in dataclasses.fields(cls):
        if f.name in flat and flat[f.name] is not None:
            values[f.name] = _typed(flat[f.name], f"{section}.{f.name}", _field_type(cls, f.name), source)
    if cls is AudioConfig and "num_key_value_heads" not in values and "num_attention_heads" in values:
        values["num_key_value_heads"] = values["num_attention_heads"]  # the reference's default
    if cls is TextConfig and "head_dim" not in values:
        values["head_dim"] = values["hidden_size"] // values["num_attention_heads"]  # Llama's default
    return cls(**values)


def _field_type(cls: type, name: str) -> type:
    return {"int": int, "float": float, "str": str, "bool": bool, "tuple[int, ...]": tuple}[
        {f.name: f.type for f in dataclasses.fields(cls)}[name]
    ]


def _typed(value: Any, name: str, kind: type, source: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is tuple:
        ids = [value] if isinstance(value, int) and not isinstance(value, bool) else value
        if isinstance(ids, list) and ids and all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            return tuple(ids)
        raise ConfigError(f"{source}: {name} must be an integer or a list of integers, got {value!r}")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: {name} must be {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def _require(data: dict[str, Any], name: str, kind: type, source: str, prefix: str = "") -> Any:
    if name not in data:
        raise ConfigError(f"{source}: missing field {prefix}{name}; expected a GLM-ASR config.json")
    return _typed(data[name], prefix + name, kind, source)


def _check_consistency(config: GlmAsrConfig) -> None:
    a, t = config.audio_config, config.text_config
    checks = [
        (a.hidden_size > 0 and a.hidden_size % a.num_attention_heads == 0, "audio_config.hidden_size",
         f"{a.hidden_size}, a positive multiple of num_attention_heads ({a.num_attention_heads})"),
        (a.intermediate_size == MERGE_FACTOR * a.hidden_size, "audio_config.intermediate_size",
         f"{a.intermediate_size}: the projector reads {MERGE_FACTOR} merged frames, so it must be {MERGE_FACTOR * a.hidden_size}"),
        (a.num_attention_heads % a.num_key_value_heads == 0, "audio_config.num_key_value_heads",
         f"{a.num_key_value_heads}, a divisor of num_attention_heads ({a.num_attention_heads})"),
        (a.rotary_dim % 2 == 0 and 0 < a.rotary_dim <= a.head_dim, "audio_config.partial_rotary_factor",
         f"{a.partial_rotary_factor}: head_dim x factor must be an even number of dims <= head_dim ({a.head_dim})"),
        (t.num_attention_heads % t.num_key_value_heads == 0, "text_config.num_key_value_heads",
         f"{t.num_key_value_heads}, a divisor of num_attention_heads ({t.num_attention_heads})"),
        (t.head_dim % 2 == 0, "text_config.head_dim", f"{t.head_dim}, an even number"),
        (0 <= config.audio_token_id < t.vocab_size, "audio_token_id", f"{config.audio_token_id}, an id below vocab_size ({t.vocab_size})"),
    ]
    for ok, name, detail in checks:
        if not ok:
            raise ConfigError(f"{name} = {detail}")
