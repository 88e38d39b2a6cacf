"""Deterministic random weights for a config, made by our own code (not an initialiser that changes
between library versions): every tensor from numpy's PCG64 seeded by (seed, crc32 of its key)."""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from glm_asr.model.config import GlmAsrConfig
from glm_asr.model.glm_asr import GlmAsrModel

from conformance.harness.cases import GoldenModel

# Layers that write into a residual stream: their gain sets the stream's scale.
_RESIDUAL_WRITERS = ("conv2.weight", "self_attn.o_proj.weight", "mlp.fc2.weight", "mlp.down_proj.weight")


def make_weights(config: GlmAsrConfig, seed: int, residual_scale: float = 1.0, dtype: torch.dtype = torch.float32,
                 embed_scale: float | None = None, decoder_scale: float | None = None) -> dict[str, torch.Tensor]:
    """Release-layout state dict (lm_head left out when tied, as transformers saves it), drawn in float32 and
    cast to `dtype` tensor by tensor (a full-size bf16 checkpoint never holds 8.5 GB of float32 at once).
    `embed_scale` and `decoder_scale` (default: `residual_scale`) set the token embeddings' scale and the gain
    of the decoder's residual writers on their own."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in GlmAsrModel(config).state_dict().items()}
    if config.tie_word_embeddings:
        del shapes["language_model.lm_head.weight"]

    def gain(weight_key: str) -> float:
        if not weight_key.endswith(_RESIDUAL_WRITERS):
            return 1.0
        return decoder_scale if decoder_scale is not None and weight_key.startswith("language_model.") else residual_scale

    weights = {}
    for key, shape in sorted(shapes.items()):
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        noise = rng.standard_normal(shape, dtype=np.float32)
        if "norm" in key and key.endswith(".weight"):
            value = 1.0 + 0.1 * noise  # LayerNorm / RMSNorm scales around 1
        elif key.endswith(".bias"):
            value = 0.02 * noise * gain(key.replace(".bias", ".weight"))
        elif key == "language_model.model.embed_tokens.weight":
            value = (residual_scale if embed_scale is None else embed_scale) * noise
        else:
            fan_in = math.prod(shape[1:])
            value = noise * (gain(key) / math.sqrt(fan_in))
        weights[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)).to(dtype)
    return weights


def golden_weights(model: GoldenModel, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The weights of a golden model (conformance/harness/cases.py), with every scale it names."""
    return make_weights(model.config, model.seed, model.residual_scale, dtype, model.embed_scale, model.decoder_scale)


def save_checkpoint(directory: Path, config: GlmAsrConfig, weights: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> Path:
    """Writes config.json and model.safetensors (release layout) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    save_file({k: v.to(dtype).contiguous() for k, v in weights.items()}, directory / "model.safetensors")
    return directory


def weights_digest(weights: dict[str, torch.Tensor]) -> str:
    """sha256 over keys and bytes: the manifest records it so drift in generation is caught by name."""
    h = hashlib.sha256()
    for key in sorted(weights):
        h.update(key.encode())
        h.update(weights[key].contiguous().view(torch.uint8).numpy().tobytes())  # the raw bytes, bf16 included
    return h.hexdigest()
