"""nn.Linear whose fp32 CPU products go to oneDNN instead of MKL.

PyTorch's CPU build hands fp32 matmuls to MKL. On the AMD EPYC this project is measured on (README,
Performance), MKL's matrix-vector product, which is all a decode step does, reads weights at 14-15 GB/s
where oneDNN's reads 21-24 GB/s, and MKL's GEMMs at encoder shapes run 60-64 GFLOP/s against oneDNN's
67-70. oneDNN ships inside the same PyTorch build (`torch.ops.mkldnn._linear_pointwise`, the op PyTorch's
own compiler emits for CPU linear layers). Same fp32 math; only the summation order differs, which the
conformance tolerances cover.

Everything else takes the plain `F.linear` path: other dtypes and devices, autograd, and tracing by
torch.export / torch.compile (the ONNX export must see an ordinary matmul).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ONEDNN = torch.backends.mkldnn.is_available()


def use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    if not ONEDNN or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)))


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear computed by oneDNN (CPU, fp32); callers check `use_onednn` first."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class Linear(nn.Linear):
    """An nn.Linear (same parameters, same state_dict keys) with the oneDNN path above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_onednn(x, self.weight):
            return onednn_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)
