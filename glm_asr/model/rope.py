"""Rotary position embedding, rotate-half form, as in the reference (Llama and the GLM-ASR encoder).

The encoder rotates only the first `rotary_dim` of each head's dims (partial_rotary_factor 0.5: 32 of 64);
dim j pairs with j + rotary_dim/2. The decoder rotates all 128. Tables are computed on the fly from the
positions: the cost is negligible and nothing position-dependent has to live in the checkpoint or on meta.
"""

from __future__ import annotations

import torch


def rope_cos_sin(positions: torch.Tensor, rotary_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (..., T, rotary_dim) for integer positions (..., T); computed in fp32, then cast."""
    # Same expression and op order as the reference, so fp32 tables agree bit for bit.
    inv_freq = 1.0 / (theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.float, device=positions.device) / rotary_dim))
    freqs = positions[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates the first cos.shape[-1] dims of x (B, H, T, Dh); cos/sin broadcast as (B or 1, 1, T, R)."""
    rotary_dim = cos.shape[-1]
    if rotary_dim == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    return torch.cat((x_rot * cos + rotate_half(x_rot) * sin, x_pass), dim=-1)
