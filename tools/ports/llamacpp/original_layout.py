"""Writes a checkpoint in the layout llama.cpp's converter reads: zai-org's original (pre-2025-12-27) release
of GLM-ASR-Nano ("GlmasrModel", `audio_encoder.whisper.*`, `audio_encoder.adapting.*`, `model.*`), from a
checkpoint in the transformers layout (`audio_tower.*`, `multi_modal_projector.*`, `language_model.*`) such as
the conformance kit's.

    python tools/ports/llamacpp/original_layout.py KIT_CHECKPOINT OUT_DIR

The weights map one to one (SPEC.md's weight-layout section, the inverse of glm_asr's "original" rename
table) except:
- the encoder's q_proj.weight, q_proj.bias and k_proj.weight rows go back to the original's interleaved RoPE
  order (per head, rotate-half row j came from interleaved row 2j, row R/2 + j from 2j + 1);
- `audio_encoder.whisper.embed_positions.weight` is written as zeros: the original ships a Whisper position
  table that transformers drops (its encoder has no table), and llama.cpp's whisper graph adds whatever it
  holds; zeros add nothing, as in the reference;
- `audio_encoder.audio_bos_eos_token.weight` (2, D) is written from the text embedding rows of
  `<|begin_of_audio|>` and `<|end_of_audio|>`: llama.cpp's projector appends these two rows around the audio
  rows where transformers looks up the tokens' embeddings, so these values make both the same;
- `lm_head.weight` is the embedding when the checkpoint is tied and has none (the release stores a copy).

Needs numpy and safetensors only (nothing of glm_asr), so it runs in the converter's environment too.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

# transformers-layout key -> original key; every key of the checkpoint must match exactly one rule.
RULES: list[tuple[str, str]] = [
    (r"^audio_tower\.(conv1|conv2)\.(weight|bias)$", r"audio_encoder.whisper.\1.\2"),
    (r"^audio_tower\.layers\.(\d+)\.self_attn\.o_proj\.(weight|bias)$", r"audio_encoder.whisper.layers.\1.self_attn.out_proj.\2"),
    (r"^audio_tower\.layers\.(\d+)\.self_attn\.([qkv]_proj)\.(weight|bias)$", r"audio_encoder.whisper.layers.\1.self_attn.\2.\3"),
    (r"^audio_tower\.layers\.(\d+)\.input_layernorm\.(weight|bias)$", r"audio_encoder.whisper.layers.\1.self_attn_layer_norm.\2"),
    (r"^audio_tower\.layers\.(\d+)\.post_attention_layernorm\.(weight|bias)$", r"audio_encoder.whisper.layers.\1.final_layer_norm.\2"),
    (r"^audio_tower\.layers\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)$", r"audio_encoder.whisper.layers.\1.\2.\3"),
    (r"^audio_tower\.norm\.(weight|bias)$", r"audio_encoder.layer_norm.\1"),
    (r"^multi_modal_projector\.linear_1\.(weight|bias)$", r"audio_encoder.adapting.0.\1"),
    (r"^multi_modal_projector\.linear_2\.(weight|bias)$", r"audio_encoder.adapting.2.\1"),
    (r"^language_model\.model\.(.+)$", r"model.\1"),
    (r"^language_model\.lm_head\.weight$", r"lm_head.weight"),
]
_ROPE_ROWS = re.compile(r"^audio_encoder\.whisper\.layers\.\d+\.self_attn\.(q_proj\.weight|q_proj\.bias|k_proj\.weight)$")
BEGIN_OF_AUDIO, END_OF_AUDIO = "<|begin_of_audio|>", "<|end_of_audio|>"


def rope_dims(audio: dict) -> tuple[int, int]:
    """(rotary_dim, head_dim) of the encoder, from the transformers audio_config."""
    head_dim = audio.get("head_dim") or audio["hidden_size"] // audio["num_attention_heads"]
    rope = audio.get("rope_parameters") or {}
    factor = rope.get("partial_rotary_factor", audio.get("partial_rotary_factor", 0.5))
    return int(head_dim * factor), head_dim


def to_interleaved(rows: np.ndarray, rotary: int, head_dim: int) -> np.ndarray:
    """Rotate-half rows -> the original's interleaved rows, per head (the inverse of glm_asr's loader)."""
    half = rotary // 2
    order = [0] * head_dim  # order[interleaved row] = rotate-half row it takes
    for j in range(half):
        order[2 * j], order[2 * j + 1] = j, half + j
    order[rotary:] = range(rotary, head_dim)
    heads = rows.reshape(-1, head_dim, *rows.shape[1:])
    return np.ascontiguousarray(heads[:, order].reshape(rows.shape))


def special_ids(tokenizer_json: Path) -> dict[str, int]:
    added = json.loads(tokenizer_json.read_text())["added_tokens"]
    return {t["content"]: t["id"] for t in added}


def original_config(config: dict) -> dict:
    """The original release's config.json shape: lm_config (Llama) and whisper_config (Whisper names)."""
    audio, text = config["audio_config"], config["text_config"]
    text_rope = text.get("rope_parameters") or {}
    lm = {k: v for k, v in text.items() if k not in ("rope_parameters", "model_type")}
    lm.update(architectures=["LlamaForCausalLM"], model_type="llama",
              rope_theta=text_rope.get("rope_theta", text.get("rope_theta", 10000.0)),
              tie_word_embeddings=config.get("tie_word_embeddings", True))
    audio_rope = audio.get("rope_parameters") or {}
    whisper = {
        "model_type": "whisper", "d_model": audio["hidden_size"], "encoder_layers": audio["num_hidden_layers"],
        "encoder_attention_heads": audio["num_attention_heads"], "encoder_ffn_dim": audio["intermediate_size"],
        "num_mel_bins": audio["num_mel_bins"], "max_source_positions": audio["max_position_embeddings"],
        "activation_function": "gelu",
        # Not read by llama.cpp (its graph has no encoder RoPE); kept so the file says what the model is.
        "rope_theta": audio_rope.get("rope_theta", audio.get("rope_theta", 10000.0)),
        "partial_rotary_factor": audio_rope.get("partial_rotary_factor", 0.5),
    }
    return {"architectures": ["GlmasrModel"], "model_type": "Glmasr", "lm_config": lm, "whisper_config": whisper,
            "merge_factor": 4, "use_rope": True, "adapter_type": "mlp", "mlp_adapter_act": "gelu",
            "max_whisper_length": audio["max_position_embeddings"], "audio_token_id": config["audio_token_id"]}


def original_weights(weights: dict[str, np.ndarray], config: dict, ids: dict[str, int]) -> dict[str, np.ndarray]:
    rotary, head_dim = rope_dims(config["audio_config"])
    out: dict[str, np.ndarray] = {}
    unknown = []
    for key, value in weights.items():
        for pattern, replacement in RULES:
            if re.match(pattern, key):
                new = re.sub(pattern, replacement, key)
                out[new] = to_interleaved(value, rotary, head_dim) if _ROPE_ROWS.match(new) else value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{len(unknown)} keys are not in the transformers layout: {sorted(unknown)[:8]}")
    embed = out["model.embed_tokens.weight"]
    if "lm_head.weight" not in out:
        if not config.get("tie_word_embeddings", True):
            raise ValueError("no language_model.lm_head.weight and tie_word_embeddings is false")
        out["lm_head.weight"] = embed.copy()
    audio = config["audio_config"]
    out["audio_encoder.whisper.embed_positions.weight"] = np.zeros(
        (audio["max_position_embeddings"], audio["hidden_size"]), dtype=embed.dtype)
    out["audio_encoder.audio_bos_eos_token.weight"] = np.stack([embed[ids[BEGIN_OF_AUDIO]], embed[ids[END_OF_AUDIO]]])
    return out


def write_original(src: Path, dst: Path) -> None:
    """src: config.json, model.safetensors, tokenizer.json in the transformers layout; dst: the original layout
    plus the tokenizer_config.json that transformers' AutoTokenizer (used by the converter) needs."""
    config = json.loads((src / "config.json").read_text())
    ids = special_ids(src / "tokenizer.json")
    missing = [t for t in (BEGIN_OF_AUDIO, END_OF_AUDIO, "<|endoftext|>", "<|user|>") if t not in ids]
    if missing:
        raise ValueError(f"{src / 'tokenizer.json'}: no added tokens {missing}; expected a GLM-ASR tokenizer")
    weights = original_weights(load_file(src / "model.safetensors"), config, ids)
    dst.mkdir(parents=True, exist_ok=True)
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    (dst / "config.json").write_text(json.dumps(original_config(config), indent=2))
    (dst / "tokenizer.json").write_bytes((src / "tokenizer.json").read_bytes())
    (dst / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": False}))
    for name in ("preprocessor_config.json",):
        if (src / name).exists():
            (dst / name).write_bytes((src / name).read_bytes())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="folder: config.json, model.safetensors, tokenizer.json")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (args.checkpoint / name).exists():
            sys.exit(f"{args.checkpoint / name}: not found; expected a transformers-layout GLM-ASR checkpoint folder")
    try:
        write_original(args.checkpoint, args.out)
    except (ValueError, KeyError) as e:
        sys.exit(f"{args.checkpoint}: {e}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
