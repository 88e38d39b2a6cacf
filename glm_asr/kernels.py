"""Linear layers, convolutions and attention on the fastest CPU kernels measured, not PyTorch's defaults.

PyTorch's CPU build hands fp32 matmuls to MKL. On the AMD EPYC this project is measured on (README,
Performance), MKL's matrix-vector product, which is all a decode step does, reads weights at 13-17 GB/s,
and its GEMMs at encoder shapes run 60-64 GFLOP/s. Two kernels ship with the dependencies and do better:

- oneDNN, inside the same PyTorch build (`torch.ops.mkldnn._linear_pointwise`, the op PyTorch's own
  compiler emits for CPU linear layers): 67-70 GFLOP/s at encoder shapes. Every fp32 CPU product uses it.
- OpenBLAS, numpy's BLAS: its matrix-vector product reads the decoder's weights at 20-27 GB/s where
  oneDNN's reads 14-23. It takes single-row products inside `openblas_matvec()`, which `greedy_generate`
  wraps around its decode steps. OpenBLAS runs its own threads, so torch drops to one thread meanwhile:
  both pools spinning on the same cores made a step 1.7x slower.

bf16 on a CPU without native bf16 (no AVX-512 BF16 or AMX: oneDNN reports none) runs PyTorch's fallback
GEMM at 11 GFLOP/s against 69 for fp32. A bf16 GEMM multiplies bf16 values exactly and sums in fp32, so
widening the operands to fp32 (exact) and rounding the result to bf16 once is the same math in another
summation order. On such CPUs, products of more than one row are computed that way (convolutions too: the
bf16 fallback took 62 s for the encoder's two), and so is attention
(where the bf16 kernel also rounds the softmax weights to bf16 on the way; the bf16 goldens show no larger
error without that rounding). Single-row products stay bf16: they are bound by reading weights, which bf16
halves.

Only the summation order differs from the default kernels, which the conformance tolerances cover.
Everything else takes the plain PyTorch path: other dtypes and devices, autograd, and tracing by
torch.export / torch.compile (the ONNX export must see an ordinary matmul).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

ONEDNN = torch.backends.mkldnn.is_available()
NATIVE_BF16 = ONEDNN and torch.ops.mkldnn._is_mkldnn_bf16_supported()

_matvec_on_openblas: ContextVar[bool] = ContextVar("glm_asr_matvec_on_openblas", default=False)


def _eager_cpu(*tensors: torch.Tensor) -> bool:
    """CPU tensors outside autograd and tracing: where a kernel of our choosing may replace PyTorch's."""
    if not ONEDNN or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    return all(t.device.type == "cpu" for t in tensors) and not grad


def use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return x.dtype == torch.float32 and weight.dtype == torch.float32 and _eager_cpu(x, weight)


def widen_bf16(*tensors: torch.Tensor) -> bool:
    """bf16 CPU tensors on a CPU without native bf16: compute in fp32, round once (module doc)."""
    return not NATIVE_BF16 and all(t.dtype == torch.bfloat16 for t in tensors) and _eager_cpu(*tensors)


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear computed by oneDNN (CPU, fp32); callers check `use_onednn` first."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def widened_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear of bf16 tensors computed in fp32 by oneDNN and rounded once; callers check `widen_bf16` first."""
    return onednn_linear(x.float(), weight.float(), None if bias is None else bias.float()).to(x.dtype)


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


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """F.scaled_dot_product_attention of (B, H, T, Dh) queries on (B, Hkv, S, Dh) keys and values (GQA)."""
    gqa = k.shape[1] != q.shape[1]
    if widen_bf16(q, k, v):
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, enable_gqa=gqa).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


class Conv1d(nn.Conv1d):
    """An nn.Conv1d (same parameters and keys) whose bf16 CPU convolutions are widened (module doc)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if widen_bf16(x, self.weight):
            bias = None if self.bias is None else self.bias.float()
            return self._conv_forward(x.float(), self.weight.float(), bias).to(x.dtype)
        return super().forward(x)


class Linear(nn.Linear):
    """An nn.Linear (same parameters, same state_dict keys) with the CPU kernel choice above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_onednn(x, self.weight):
            if x.numel() == x.shape[-1] and _matvec_on_openblas.get():
                return openblas_linear(x, self.weight, self.bias)
            return onednn_linear(x, self.weight, self.bias)
        if x.numel() > x.shape[-1] and widen_bf16(x, self.weight):
            return widened_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)
