"""Linear layers, convolutions and attention on the kernels glm_asr/runtime/cpu.py chooses, not PyTorch's defaults.

The choices and the rules behind them live in cpu.py; this module carries them out:

- fp32 products of more than one row: oneDNN (`torch.ops.mkldnn._linear_pointwise`, the op PyTorch's own
  compiler emits for CPU linear layers) where the build has it.
- fp32 single-row products inside `decode_matvec()`, which `greedy_generate` wraps around the decode steps of
  batch 1: the kernel `cpu.choices().matvec` names. OpenBLAS (numpy's BLAS, reading the weight in place) runs
  its own threads, so torch drops to one thread meanwhile: both pools spinning on the same cores made a step
  1.7x slower.
- bf16 where the CPU has no native bf16 (`cpu.native_bf16()` False): a bf16 GEMM multiplies bf16 values
  exactly and sums in fp32, so widening the operands to fp32 (exact) and rounding the result to bf16 once is
  the same math in another summation order. Products of more than one row, convolutions and attention (where
  the bf16 kernel also rounds the softmax weights to bf16 on the way; the bf16 goldens show no larger error
  without that rounding) are computed that way. Single-row products stay bf16: they are bound by reading
  weights, which bf16 halves. Where the CPU has native bf16, PyTorch's bf16 kernels are kept, and inside
  `decode_matvec()` single rows read a copy of the weight packed into oneDNN's layout (`packed_bf16_linear`).

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

from glm_asr.runtime import cpu

ONEDNN = torch.backends.mkldnn.is_available()

_decode_matvec: ContextVar[str | None] = ContextVar("glm_asr_decode_matvec", default=None)


def _eager_cpu(*tensors: torch.Tensor) -> bool:
    """CPU tensors outside autograd and tracing: where a kernel of our choosing may replace PyTorch's."""
    if not (ONEDNN and cpu.rules().onednn_fp32) or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    return all(t.device.type == "cpu" for t in tensors) and not grad


def use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return x.dtype == torch.float32 and weight.dtype == torch.float32 and _eager_cpu(x, weight)


def widen_bf16(*tensors: torch.Tensor) -> bool:
    """bf16 CPU tensors on a CPU without native bf16: compute in fp32, round once (module doc)."""
    return not cpu.native_bf16() and all(t.dtype == torch.bfloat16 for t in tensors) and _eager_cpu(*tensors)


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
def decode_matvec(kernel: str | None = None) -> Iterator[str]:
    """Inside the block, single-row fp32 CPU products run on `kernel` (default: the one cpu.py chose for this
    machine, see `cpu.choices().matvec`), and single-row bf16 ones on packed weights where cpu.py says so.
    torch runs on one thread while the fp32 kernel is OpenBLAS: pass the kernel a bf16 model needs ("torch")."""
    kernel = kernel or cpu.choices().matvec
    threads = torch.get_num_threads()
    token = _decode_matvec.set(kernel)
    if kernel == "openblas":
        torch.set_num_threads(1)
    try:
        yield kernel
    finally:
        torch.set_num_threads(threads)
        _decode_matvec.reset(token)


def pack_bf16_weight(weight: torch.Tensor) -> torch.Tensor:
    """A bf16 (N, K) weight in oneDNN's blocked layout for single-row products (an opaque oneDNN tensor). oneDNN
    packs bf16 only on CPUs with AVX-512 BW/VL/DQ or AVX-NE-CONVERT: cpu.py chooses it where bf16 is native."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, 1)


def packed_bf16_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, layer: nn.Module) -> torch.Tensor:
    """F.linear of bf16 tensors on a copy of `weight` packed into oneDNN's blocked layout, made on first use and
    kept on `layer` (not in its state_dict); remade if the weight has changed since (another dtype, a load)."""
    key = (weight.data_ptr(), weight._version, weight.dtype)
    packed = getattr(layer, "_packed_bf16", None)
    if packed is None or packed[0] != key:
        packed = (key, pack_bf16_weight(weight.detach()))
        layer._packed_bf16 = packed
    # oneDNN's single-row kernel is fastest on a 2-D (1, K) input: 15% faster than the same row as (1, 1, K).
    return onednn_linear(x.reshape(1, -1), packed[1], bias).view(*x.shape[:-1], -1)


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

    def __getstate__(self) -> dict:
        # The packed bf16 weight is an opaque oneDNN tensor, which can be neither copied nor pickled: a copy
        # (copy.deepcopy, pickle) leaves it out and packs again on first use.
        state = dict(self.__dict__)
        state.pop("_packed_bf16", None)
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_onednn(x, self.weight):
            matvec = _decode_matvec.get() if x.numel() == x.shape[-1] else None
            if matvec == "openblas":
                return openblas_linear(x, self.weight, self.bias)
            if matvec == "torch":
                return F.linear(x, self.weight, self.bias)
            return onednn_linear(x, self.weight, self.bias)
        if x.numel() > x.shape[-1] and widen_bf16(x, self.weight):
            return widened_linear(x, self.weight, self.bias)
        if (x.numel() == x.shape[-1] and _decode_matvec.get() and x.dtype == self.weight.dtype == torch.bfloat16
                and cpu.rules().bf16_packed and _eager_cpu(x, self.weight)):
            return packed_bf16_linear(x, self.weight, self.bias, self)
        return F.linear(x, self.weight, self.bias)
