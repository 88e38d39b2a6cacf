"""Scaled dot-product attention, the one op the encoder and the decoder share."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ScaledDotProductAttention(nn.Module):
    """softmax(q kᵀ / √Dh + mask) v for (B, H, T, Dh) queries on (B, Hkv, S, Dh) keys and values.

    Where Hkv < H (the decoder's GQA), query head h reads kv head h // (H / Hkv). `mask` is bool, True where a
    query may see a key; the encoder passes none. A module with no parameters, so it adds no checkpoint key:
    being a module is what lets the runtime swap in another kernel after loading (glm_asr/runtime/prepare.py).
    """

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=k.shape[1] != q.shape[1])
