"""The Llama decoder (`language_model`): GQA attention with full RoPE, SwiGLU MLP, RMSNorm, explicit KV cache."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from glm_asr.model.taps import record
from glm_asr.model.config import TextConfig
from glm_asr.model.attention import ScaledDotProductAttention
from glm_asr.model.rope import apply_rope, rope_cos_sin


@dataclass
class KVCache:
    """Preallocated keys and values of every layer, (L, B, Hkv, S, Dh); filled up to the caller's offset."""

    k: torch.Tensor
    v: torch.Tensor

    @classmethod
    def empty(cls, config: TextConfig, batch: int, max_len: int, dtype: torch.dtype, device: torch.device | str) -> KVCache:
        shape = (config.num_hidden_layers, batch, config.num_key_value_heads, max_len, config.head_dim)
        return cls(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Writes a layer's new keys and values (B, Hkv, T, Dh) in place at positions offset..offset+T-1 and
        returns all of that layer's so far, (B, Hkv, offset+T, Dh), as views: nothing is reallocated."""
        end = offset + k.shape[2]
        self.k[layer, :, :, offset:end] = k
        self.v[layer, :, :, offset:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32, cast back to the input dtype, THEN scale: the reference's order, visible in bf16.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class DecoderAttention(nn.Module):
    def __init__(self, config: TextConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx  # its layer in the KV cache
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)
        self.attention = ScaledDotProductAttention()

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
        cache: KVCache | None,
        offset: int,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, Dh)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v, offset)  # (B, Hkv, offset + T, Dh)
        out = self.attention(q, k, v, mask)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class DecoderMLP(nn.Module):
    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: TextConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = DecoderAttention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = DecoderMLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
        cache: KVCache | None,
        offset: int,
    ) -> torch.Tensor:
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, offset)
        return h + self.mlp(self.post_attention_layernorm(h))


def attention_mask(key_valid: torch.Tensor, num_queries: int, offset: int) -> torch.Tensor:
    """(B, 1, T, S) bool: causal over cache positions, padded keys hidden.

    `key_valid` (B, S) marks real tokens (0 for left padding). A padded query would see no key at all, which
    makes softmax NaN; it is allowed to see itself instead. Its output is never used.
    """
    S = key_valid.shape[1]
    query_pos = torch.arange(offset, offset + num_queries, device=key_valid.device)[:, None]
    key_pos = torch.arange(S, device=key_valid.device)[None, :]
    allowed = (key_pos <= query_pos) & key_valid[:, None, :].bool()
    return (allowed | (key_pos == query_pos))[:, None]


class Decoder(nn.Module):
    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def context(
        self, position_ids: torch.Tensor, key_valid: torch.Tensor, num_queries: int, offset: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What every layer shares: RoPE cos/sin (B, 1, T, Dh) and the attention mask (B, 1, T, S)."""
        cos, sin = rope_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta, dtype)
        return cos[:, None], sin[:, None], attention_mask(key_valid, num_queries, offset)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        key_valid: torch.Tensor,
        cache: KVCache | None = None,
        offset: int = 0,
    ) -> torch.Tensor:
        """(B, T, D) embeddings at `position_ids` (B, T) -> (B, T, D) final hidden states.

        `key_valid` (B, S) covers every key the queries may see: T of them without a cache, offset + T with.
        `cache` is a KVCache, or anything with its `update` (the ONNX export's ConcatCache).
        """
        x = inputs_embeds
        cos, sin, mask = self.context(position_ids, key_valid, x.shape[1], offset, x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, cache, offset)
            record(f"decoder.layers.{i}", x)
        x = self.norm(x)
        record("decoder.norm", x)
        return x


class LanguageModel(nn.Module):
    """`language_model`: the decoder (`.model`) and its LM head, named as in the released checkpoint."""

    def __init__(self, config: TextConfig, tie_word_embeddings: bool) -> None:
        super().__init__()
        self.model = Decoder(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        key_valid: torch.Tensor,
        cache: KVCache | None = None,
        offset: int = 0,
        last_only: bool = False,
    ) -> torch.Tensor:
        """(B, T, D) embeddings -> (B, T, V) logits; (B, 1, V) with `last_only`, all that generation needs (the
        head is the largest product, and a prompt's other positions would cost T times as much)."""
        hidden = self.model(inputs_embeds, position_ids, key_valid, cache, offset)
        return self.lm_head(hidden[:, -1:] if last_only else hidden)
