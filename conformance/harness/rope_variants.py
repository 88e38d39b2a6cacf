"""RoPE as some ports pair the dims: interleaved (2i, 2i+1) instead of rotate-half (i, i + R/2). Imports only
torch, so a mutated glm_asr can import it (tools/mutation_check.py) without an import cycle."""

from __future__ import annotations

import torch


def apply_rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """glm_asr.model.rope.apply_rope's signature and tables, but pair i is dims (2i, 2i+1), rotated by frequency i."""
    rotary_dim = cos.shape[-1]
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    even, odd = x_rot[..., 0::2], x_rot[..., 1::2]  # (..., R/2) each
    c, s = cos[..., : rotary_dim // 2], sin[..., : rotary_dim // 2]  # the table repeats its R/2 frequencies
    rotated = torch.stack((even * c - odd * s, odd * c + even * s), dim=-1).flatten(-2)
    return torch.cat((rotated, x_pass), dim=-1)
