"""nn.Linear whose fp32 CPU products go to the fastest kernel measured on a CPU, not to MKL.

PyTorch's CPU build hands fp32 matmuls to MKL. On the AMD EPYC this project is measured on (README,
Performance), MKL's matrix-vector product, which is all a decode step does, reads weights at 13-17 GB/s,
and its GEMMs at encoder shapes run 60-64 GFLOP/s. Two kernels ship with the dependencies and do better:

- oneDNN, inside the same PyTorch build (`torch.ops.mkldnn._linear_pointwise`, the op PyTorch's own
  compiler emits for CPU linear layers): 67-70 GFLOP/s at encoder shapes. Every fp32 CPU product uses it.
- OpenBLAS, numpy's BLAS: its matrix-vector product reads the decoder's weights at 20-27 GB/s where
  oneDNN's reads 14-23. It takes single-row products inside `openblas_matvec()`, which `greedy_generate`
  wraps around its decode steps. OpenBLAS runs its own threads, so torch drops to one thread meanwhile:
  both pools spinning on the same cores made a step 1.7x slower.

Same fp32 math; only the summation order differs, which the conformance tolerances cover. Everything else
takes the plain `F.linear` path: other dtypes and devices, autograd, and tracing by torch.export /
torch.compile (the ONNX export must see an ordinary matmul).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

ONEDNN = torch.backends.mkldnn.is_available()

_matvec_on_openblas: ContextVar[bool] = ContextVar("glm_asr_matvec_on_openblas", default=False)


def use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    if not ONEDNN or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)))


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear computed by oneDNN (CPU, fp32); callers check `use_onednn` first."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def openblas_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear of one row (..., K) computed by numpy's BLAS, reading the weight in place (CPU, fp32)."""
    y = torch.from_numpy(weight.detach().numpy() @ x.detach().reshape(-1).numpy())  # (N,)
    if bias is not None:
        y += bias
    return y.view(*x.shape[:-1], -1)


@contextmanager
def openblas_matvec() -> Iterator[None]:
    """Inside the block, single-row fp32 CPU products run on OpenBLAS and torch runs on one thread."""
    threads = torch.get_num_threads()
    token = _matvec_on_openblas.set(True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        _matvec_on_openblas.reset(token)


class Linear(nn.Linear):
    """An nn.Linear (same parameters, same state_dict keys) with the CPU kernel choice above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_onednn(x, self.weight):
            if x.numel() == x.shape[-1] and _matvec_on_openblas.get():
                return openblas_linear(x, self.weight, self.bias)
            return onednn_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)
