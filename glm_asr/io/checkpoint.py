"""Loading a checkpoint directory: config.json + model.safetensors (or a sharded index).

Paranoid and light: the model is built on the meta device and every tensor is read into one reusable buffer,
converted to the requested dtype (or kept as stored) one at a time. Three key layouts are accepted, each
through ONE explicit rename table that raises on any key it does not know; after renaming, the key set
must be exactly the model's and every shape must match, or one error lists every problem.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import ExitStack
from pathlib import Path

import torch

from glm_asr.io.safetensors_file import read_header, read_tensor
from glm_asr.model.config import AudioConfig, GlmAsrConfig
from glm_asr.model.glm_asr import GlmAsrModel
from glm_asr.runtime.prepare import prepare

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# (pattern, replacement) per layout; a key must match one rule, or the load fails naming it.
# A replacement of None drops the tensor (the original layout ships modules the model never uses).
LAYOUTS: dict[str, list[tuple[str, str | None]]] = {
    # The release and transformers 5.x save_pretrained: already our names.
    "release": [(r"^(audio_tower|multi_modal_projector|language_model\.model|language_model\.lm_head)\.(.+)$", r"\1.\2")],
    # transformers 5.x in-memory names (GlmAsrForConditionalGeneration.state_dict()).
    "transformers": [
        (r"^model\.(audio_tower|multi_modal_projector)\.(.+)$", r"\1.\2"),
        (r"^model\.language_model\.(.+)$", r"language_model.model.\1"),
        (r"^lm_head\.(.+)$", r"language_model.lm_head.\1"),
    ],
    # The pre-2025-12-27 original release (its encoder RoPE is interleaved; see _permute_rope_rows).
    "original": [
        (r"^audio_encoder\.whisper\.(conv1|conv2)\.(.+)$", r"audio_tower.\1.\2"),
        (r"^audio_encoder\.whisper\.layers\.(\d+)\.self_attn\.out_proj\.(.+)$", r"audio_tower.layers.\1.self_attn.o_proj.\2"),
        (r"^audio_encoder\.whisper\.layers\.(\d+)\.self_attn\.([qkv]_proj)\.(.+)$", r"audio_tower.layers.\1.self_attn.\2.\3"),
        (r"^audio_encoder\.whisper\.layers\.(\d+)\.self_attn_layer_norm\.(.+)$", r"audio_tower.layers.\1.input_layernorm.\2"),
        (r"^audio_encoder\.whisper\.layers\.(\d+)\.final_layer_norm\.(.+)$", r"audio_tower.layers.\1.post_attention_layernorm.\2"),
        (r"^audio_encoder\.whisper\.layers\.(\d+)\.(fc1|fc2)\.(.+)$", r"audio_tower.layers.\1.mlp.\2.\3"),
        (r"^audio_encoder\.layer_norm\.(.+)$", r"audio_tower.norm.\1"),
        (r"^audio_encoder\.adapting\.0\.(.+)$", r"multi_modal_projector.linear_1.\1"),
        (r"^audio_encoder\.adapting\.2\.(.+)$", r"multi_modal_projector.linear_2.\1"),
        (r"^model\.(.+)$", r"language_model.model.\1"),
        (r"^lm_head\.(.+)$", r"language_model.lm_head.\1"),
        (r"^audio_encoder\.(proj|whisper\.embed_positions|audio_bos_eos_token)(\..+)?$", None),
    ],
}
_ORIGINAL_ROPE_ROWS = re.compile(r"^audio_tower\.layers\.\d+\.self_attn\.(q_proj\.weight|q_proj\.bias|k_proj\.weight)$")


class CheckpointError(ValueError):
    """A checkpoint directory cannot be loaded; the message names the file and every offending key."""


def detect_layout(keys: list[str], source: str) -> str:
    if any(k.startswith("audio_encoder.") for k in keys):
        return "original"
    if any(k.startswith("model.audio_tower.") for k in keys):
        return "transformers"
    if any(k.startswith("audio_tower.") for k in keys):
        return "release"
    raise CheckpointError(f"{source}: no audio encoder tensors (audio_tower.*, model.audio_tower.* or audio_encoder.*); not a GLM-ASR checkpoint")


def rename_keys(keys: list[str], layout: str, source: str) -> dict[str, str | None]:
    """Maps each checkpoint key to our key (None: dropped); every key must match a rule of the layout."""
    renamed, unknown = {}, []
    for key in keys:
        for pattern, replacement in LAYOUTS[layout]:
            if re.match(pattern, key):
                renamed[key] = None if replacement is None else re.sub(pattern, replacement, key)
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{source}: {len(unknown)} keys unknown to the {layout} layout: {_listing(unknown)}")
    return renamed


def _permute_rope_rows(tensor: torch.Tensor, audio: AudioConfig, is_query: bool) -> torch.Tensor:
    """Interleaved RoPE rows (pairs 2i, 2i+1) -> rotate-half rows (pairs i, i + R/2), per head."""
    heads = audio.num_attention_heads if is_query else audio.num_key_value_heads
    R, Dh = audio.rotary_dim, audio.head_dim
    order = list(range(0, R, 2)) + list(range(1, R, 2)) + list(range(R, Dh))
    rows = tensor.reshape(heads, Dh, *tensor.shape[1:])
    return rows[:, order].reshape(tensor.shape)


def _tensor_files(directory: Path) -> dict[str, Path]:
    """Key -> file for a single model.safetensors or a model.safetensors.index.json shard map."""
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.exists():
        return {k: single for k in _header(single)}
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: expected JSON with a 'weight_map' object ({e})") from e
        missing = sorted({f for f in weight_map.values() if not (directory / f).exists()})
        if missing:
            raise CheckpointError(f"{index}: shard files missing: {_listing(missing)}")
        return {k: directory / f for k, f in weight_map.items()}
    raise CheckpointError(f"{directory}: neither model.safetensors nor model.safetensors.index.json found")


def load_model(path: str | os.PathLike, *, dtype: torch.dtype | None = torch.float32, device: str | torch.device = "cpu") -> GlmAsrModel:
    """Loads a GLM-ASR checkpoint directory (config.json + safetensors) into a GlmAsrModel in eval mode, on the
    kernels this machine runs fastest (glm_asr/runtime/prepare.py; the math is the plain model's).

    `dtype=None` keeps every tensor in its stored dtype (the release stores bf16): what `quantize_decoder`
    starts from, so that an int8 model never holds a full fp32 copy of the checkpoint."""
    directory = Path(path)
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype={dtype}: expected one of torch.float32, torch.bfloat16, torch.float16, or None to keep the stored dtypes")
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a directory; expected a checkpoint folder with config.json and model.safetensors")
    config = GlmAsrConfig.from_file(directory / "config.json")
    files = _tensor_files(directory)
    layout = detect_layout(list(files), str(directory))
    renamed = rename_keys(list(files), layout, str(directory))

    with torch.device("meta"):
        model = GlmAsrModel(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    tied_head = "language_model.lm_head.weight"
    targets = {ours: key for key, ours in renamed.items() if ours is not None}
    problems = []
    missing = sorted(set(expected) - set(targets) - ({tied_head} if config.tie_word_embeddings else set()))
    unexpected = sorted(set(targets) - set(expected))
    if missing:
        problems.append(f"missing {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {_listing(unexpected)}")

    state: dict[str, torch.Tensor] = {}
    headers = {f: _header(f) for f in set(files.values())}
    wanted = [headers[files[key]][key] for ours, key in targets.items() if ours in expected and key in headers[files[key]]]
    buffer = torch.empty(max((e.end - e.start for e in wanted), default=0), dtype=torch.uint8)  # every read lands here
    with ExitStack() as stack:
        handles = {f: stack.enter_context(open(f, "rb")) for f in headers}
        for ours, key in sorted(targets.items()):
            if ours not in expected:
                continue
            if key not in headers[files[key]]:
                problems.append(f"{key}: listed in the index but not in {files[key].name}")
                continue
            tensor = read_tensor(handles[files[key]], headers[files[key]][key], buffer)
            if tuple(tensor.shape) != tuple(expected[ours]) or tensor.dtype not in FLOAT_DTYPES:
                problems.append(f"{key}: {tensor.dtype} {tuple(tensor.shape)}, expected a float tensor of shape {tuple(expected[ours])}")
                continue
            if layout == "original" and _ORIGINAL_ROPE_ROWS.match(ours):
                tensor = _permute_rope_rows(tensor, config.audio_config, is_query=".q_proj." in ours)
            state[ours] = tensor.to(device=device, dtype=dtype or tensor.dtype, copy=True)  # its own memory: the buffer is reused
    del buffer
    if problems:
        raise CheckpointError(f"{directory}: checkpoint does not match config.json: " + "; ".join(problems))

    embed = state["language_model.model.embed_tokens.weight"]
    if config.tie_word_embeddings:
        if tied_head in state and not torch.equal(state[tied_head], embed):
            raise CheckpointError(f"{directory}: {targets[tied_head]} differs from the token embedding but config.json ties them (tie_word_embeddings=true)")
        state[tied_head] = embed
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.language_model.lm_head.weight = model.language_model.model.embed_tokens.weight
    return prepare(model.eval().requires_grad_(False))


def _header(path: Path) -> dict:
    try:
        return read_header(path)
    except ValueError as e:
        raise CheckpointError(str(e)) from e


def _listing(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{f', ... {len(keys) - limit} more' if len(keys) > limit else ''}] ({len(keys)})"
