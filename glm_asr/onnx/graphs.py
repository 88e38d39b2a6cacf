"""The two ONNX graphs of an exported folder: what they compute (torch modules reusing the model's own
layers) and their input/output contract, shared by the exporter (tools/export_onnx.py) and the
onnxruntime backend (onnx_backend.py).

    audio_encoder.onnx  input_features (W, M, 3000) -> audio_embeds (W, 375, D)
        the encoder, the 4-frame merge and the projector; every window's 375 tokens come out and the
        valid ones (`audio_token_counts` of the window's mel mask) are picked outside, as
        `GlmAsrModel.embed_audio` does: the mask is data the graph would only pass through.
    decoder.onnx        inputs_embeds (B, T, D), position_ids (B, T), attention_mask (B, P+T),
                        past_key.i / past_value.i (B, Hkv, P, Dh)
                        -> logits (B, T, V), present_key.i / present_value.i (B, Hkv, P+T, Dh)
        one graph for prefill (P = 0) and decoding (T = 1). Embeddings go in, not ids: the audio rows of
        the prompt are merged in before the decoder, so the caller needs the embedding table anyway; it
        ships as embed_tokens.npy (looked up in numpy, memory-mapped) instead of a second graph input path.

Nothing here imports onnx or onnxruntime: the exporter does, lazily.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from glm_asr.model.front_end import WINDOW_FRAMES
from glm_asr.model.config import MERGE_FACTOR, GlmAsrConfig
from glm_asr.model.glm_asr import GlmAsrModel
from glm_asr.model.projector import merge_frames

ENCODER_FILE = "audio_encoder.onnx"
DECODER_FILE = "decoder.onnx"
EMBEDDINGS_FILE = "embed_tokens.npy"
METADATA_FILE = "metadata.json"
TOKENIZER_FILE = "tokenizer.json"
OPSET = 20
TOKENS_PER_WINDOW = WINDOW_FRAMES // (2 * MERGE_FACTOR)  # 375: stride-2 conv, then 4 frames per token

Dims = list[int | str]  # a static size, or the name of a dynamic axis


@dataclass(frozen=True)
class Port:
    name: str
    dtype: str  # numpy name: float32, float16, int64
    shape: Dims


def encoder_ports(config: GlmAsrConfig, dtype: str) -> tuple[list[Port], list[Port]]:
    M, D = config.audio_config.num_mel_bins, config.text_config.hidden_size
    return ([Port("input_features", dtype, ["windows", M, WINDOW_FRAMES])],
            [Port("audio_embeds", dtype, ["windows", TOKENS_PER_WINDOW, D])])


def decoder_ports(config: GlmAsrConfig, dtype: str) -> tuple[list[Port], list[Port]]:
    t = config.text_config
    past = [Port(f"past_{kind}.{i}", dtype, ["batch", t.num_key_value_heads, "past", t.head_dim])
            for kind in ("key", "value") for i in range(t.num_hidden_layers)]
    present = [Port(f"present_{kind}.{i}", dtype, ["batch", t.num_key_value_heads, "past+tokens", t.head_dim])
               for kind in ("key", "value") for i in range(t.num_hidden_layers)]
    inputs = [Port("inputs_embeds", dtype, ["batch", "tokens", t.hidden_size]), Port("position_ids", "int64", ["batch", "tokens"]),
              Port("attention_mask", "int64", ["batch", "past+tokens"]), *past]
    return inputs, [Port("logits", dtype, ["batch", "tokens", t.vocab_size]), *present]


class AudioEmbedder(nn.Module):
    """audio_encoder.onnx: (W, M, F) log-mel windows -> (W, F/8, D) projected audio tokens, all of them."""

    def __init__(self, model: GlmAsrModel) -> None:
        super().__init__()
        self.audio_tower = model.audio_tower  # same attribute names: initializers keep the checkpoint's keys
        self.multi_modal_projector = model.multi_modal_projector

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        return self.multi_modal_projector(merge_frames(self.audio_tower(input_features)))


class ConcatCache:
    """`KVCache.update` as a Concat: each layer's past (B, Hkv, P, Dh) comes in as a graph input and
    cat(past, new) goes out as its present, so the exported graph takes a past of any length P with no
    buffer and no scatter (ScatterND made a decode step 4-9x slower in onnxruntime than Concat)."""

    def __init__(self, past_keys: list[torch.Tensor], past_values: list[torch.Tensor]) -> None:
        self.past = list(zip(past_keys, past_values))
        self.present: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.past)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        # offset is P, the past's length, by construction (DecoderWithPast): the past is all there is before it.
        assert self.present[layer] is None, "one update per layer and forward"
        past_k, past_v = self.past[layer]
        self.present[layer] = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        return self.present[layer]

    def presents(self) -> list[torch.Tensor]:
        """Keys of every layer, then values: the graph's output order."""
        assert all(p is not None for p in self.present), "a layer did not update the cache"
        return [p[0] for p in self.present] + [p[1] for p in self.present]  # type: ignore[index]


class DecoderWithPast(nn.Module):
    """decoder.onnx: `Decoder.forward` and the LM head, exactly the cached path of `greedy_generate`,
    with the past keys/values as inputs and the presents as outputs."""

    def __init__(self, model: GlmAsrModel) -> None:
        super().__init__()
        self.language_model = model.language_model

    def forward(
        self,
        inputs_embeds: torch.Tensor,  # (B, T, D)
        position_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor,  # (B, P+T): 1 real, 0 left padding
        past_keys: list[torch.Tensor],  # L x (B, Hkv, P, Dh)
        past_values: list[torch.Tensor],
    ) -> tuple[torch.Tensor, ...]:
        cache = ConcatCache(past_keys, past_values)
        offset = past_keys[0].shape[2]
        hidden = self.language_model.model(inputs_embeds, position_ids, attention_mask.bool(), cache, offset)  # type: ignore[arg-type]
        return (self.language_model.lm_head(hidden), *cache.presents())  # (B, T, V), 2L x (B, Hkv, P+T, Dh)


def encoder_example(config: GlmAsrConfig, dtype: torch.dtype) -> tuple[tuple, dict]:
    """Example inputs and dynamic shapes. W = 2: torch.export specialises an axis whose example size is 0 or 1."""
    features = torch.randn(2, config.audio_config.num_mel_bins, WINDOW_FRAMES).to(dtype)
    return (features,), {"input_features": {0: torch.export.Dim("windows")}}


def decoder_example(config: GlmAsrConfig, dtype: torch.dtype) -> tuple[tuple, dict]:
    """B = 2, T = 3, P = 4 (none of them 0 or 1, so none is frozen), left padding in the last row."""
    t = config.text_config
    B, T, P = 2, 3, 4
    mask = torch.ones(B, P + T, dtype=torch.long)
    mask[-1, :2] = 0
    positions = (mask.cumsum(-1) - 1).clamp_min(0)[:, P:]
    past = [torch.randn(B, t.num_key_value_heads, P, t.head_dim).to(dtype) for _ in range(t.num_hidden_layers)]
    args = (torch.randn(B, T, t.hidden_size).to(dtype), positions, mask, past, [p.clone() for p in past])
    batch, tokens, past_len = torch.export.Dim("batch"), torch.export.Dim("tokens"), torch.export.Dim("past")
    kv = {0: batch, 2: past_len}
    # The mask's length is past + tokens; torch.export cannot declare a sum of two dims, so AUTO lets it derive it.
    shapes = {"inputs_embeds": {0: batch, 1: tokens}, "position_ids": {0: batch, 1: tokens},
              "attention_mask": {0: batch, 1: torch.export.Dim.AUTO},
              "past_keys": [kv] * t.num_hidden_layers, "past_values": [kv] * t.num_hidden_layers}
    return args, shapes
