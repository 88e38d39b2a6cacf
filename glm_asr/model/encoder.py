"""The audio encoder (`audio_tower`): Whisper-style convolutional stem and pre-norm transformer with partial RoPE.

Differences from Whisper that matter: no position table (RoPE on the first half of each head's dims instead),
and no attention mask - padded frames of a 30 s window are attended to, exactly as the reference does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glm_asr.model.taps import record
from glm_asr.model.config import AudioConfig
from glm_asr.model.attention import ScaledDotProductAttention
from glm_asr.model.rope import apply_rope, rope_cos_sin


class EncoderAttention(nn.Module):
    def __init__(self, config: AudioConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)  # no bias on k: a trap
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=True)
        self.attention = ScaledDotProductAttention()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = self.attention(q, k, v)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class EncoderMLP(nn.Module):
    def __init__(self, config: AudioConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU, not the tanh approximation


class EncoderLayer(nn.Module):
    def __init__(self, config: AudioConfig) -> None:
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = EncoderAttention(config)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = EncoderMLP(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        h = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return h + self.mlp(self.post_attention_layernorm(h))


class AudioEncoder(nn.Module):
    def __init__(self, config: AudioConfig) -> None:
        super().__init__()
        self.config = config
        self.conv1 = nn.Conv1d(config.num_mel_bins, config.hidden_size, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(config.hidden_size, config.hidden_size, kernel_size=3, stride=2, padding=1)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def rope(self, num_frames: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(num_frames, device=x.device)
        return rope_cos_sin(positions, self.config.rotary_dim, self.config.rope_theta, x.dtype)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(W, M, F) log-mel windows -> (W, F/2, D) encoder states."""
        x = F.gelu(self.conv1(features))  # (W, D, F)
        record("conv1", x)
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (W, F/2, D)
        record("conv2", x)
        cos, sin = self.rope(x.shape[1], x)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin)
            record(f"encoder.layers.{i}", x)
        x = self.norm(x)
        record("encoder.norm", x)
        return x
