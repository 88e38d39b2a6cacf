"""The raw matrix products the runtime chooses among, with no policy: cpu.py times them, dispatch.py calls them.

Each computes exactly `F.linear(x, weight, bias)` on CPU tensors; only the library doing the work differs.
"""

from __future__ import annotations

import torch


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear computed by oneDNN (CPU, fp32 or bf16): the op PyTorch's own compiler emits for CPU linear layers."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def openblas_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear of one row (..., K) computed by numpy's BLAS, reading the weight in place (CPU, fp32)."""
    y = torch.from_numpy(weight.detach().numpy() @ x.detach().reshape(-1).numpy())  # (N,)
    if bias is not None:
        y += bias
    return y.view(*x.shape[:-1], -1)


def pack_bf16_weight(weight: torch.Tensor) -> torch.Tensor:
    """A bf16 (N, K) weight in oneDNN's blocked layout for single-row products (an opaque oneDNN tensor). oneDNN
    packs bf16 only on CPUs with AVX-512 BW/VL/DQ or AVX-NE-CONVERT: cpu.py chooses it where bf16 is native."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, 1)
