"""Linear layers, convolutions, attention and decode steps on the kernels cpu.py chooses, not PyTorch's defaults.

Each class here subclasses the plain module of glm_asr/model that it stands in for (same parameters, same
checkpoint keys) and is swapped in after loading by prepare.py: the model's own files never name them. The choices and the rules behind them live in cpu.py; this module carries them out:

- fp32 products of more than one row: oneDNN (`torch.ops.mkldnn._linear_pointwise`, the op PyTorch's own
  compiler emits for CPU linear layers) where cpu.py measured it faster than PyTorch's default for that many
  rows (`cpu.choices().fp32_gemm` for a prompt's or a window's rows, `fp32_few_rows` for a batched step's).
- fp32 single-row products inside `single_row_kernel()`, which `DecodeStepsLanguageModel` enters for the
  cached decode steps of batch 1: the kernel `cpu.choices().matvec` names. OpenBLAS (numpy's BLAS,
  reading the weight in place) runs its own threads, so torch drops to one thread meanwhile: both pools spinning on the same cores made a step
  1.7x slower.
- bf16 where the CPU has no native bf16 (`cpu.native_bf16()` False): a bf16 GEMM multiplies bf16 values
  exactly and sums in fp32, so widening the operands to fp32 (exact) and rounding the result to bf16 once is
  the same math in another summation order. Convolutions, attention of more than one query (where the bf16
  kernel also rounds the softmax weights to bf16 on the way; the bf16 goldens show no larger error without
  that rounding) and products of at least `cpu.rules().bf16_widen_rows` rows (a prompt's; the few rows of a
  batched decode step keep the bf16 kernel where oneDNN has one) are computed that way. Single-row products
  stay bf16: they are bound by reading weights, which bf16 halves. Where the CPU has native bf16, PyTorch's
  bf16 kernels are kept. Inside `single_row_kernel()`, wherever oneDNN does bf16, single rows read a copy of the
  weight packed into its layout (`packed_bf16_linear`).
- attention of a single query (every decode step) in bf16 or fp16 as two small matmuls in fp32
  (`single_query_attention`): PyTorch's CPU flash kernel is built for many queries, 5x slower there.

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

from glm_asr.model.attention import ScaledDotProductAttention
from glm_asr.model.decoder import KVCache, LanguageModel
from glm_asr.runtime import cpu
from glm_asr.runtime.products import onednn_linear, openblas_linear, pack_bf16_weight

ONEDNN = torch.backends.mkldnn.is_available()

_single_row: ContextVar[str | None] = ContextVar("glm_asr_single_row", default=None)


def _eager_cpu(*tensors: torch.Tensor) -> bool:
    """CPU tensors outside autograd and tracing: where a kernel of our choosing may replace PyTorch's."""
    if not ONEDNN or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    return all(t.device.type == "cpu" for t in tensors) and not grad


def fp32_engine(rows: int) -> str:
    """The engine cpu.py measured fastest for an fp32 product of `rows` rows: "onednn" or "torch"."""
    c = cpu.choices()
    return c.fp32_gemm if rows >= cpu.FEW_ROWS else c.fp32_few_rows


def chosen_fp32(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """An fp32 CPU product outside autograd and tracing: one whose kernel cpu.py's choices decide."""
    return x.dtype == torch.float32 and weight.dtype == torch.float32 and _eager_cpu(x, weight)


def use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """This fp32 product runs on oneDNN (outside a decode step's single rows, which `single_row_kernel` routes)."""
    return chosen_fp32(x, weight) and fp32_engine(x.numel() // x.shape[-1]) == "onednn"


def widen_bf16(*tensors: torch.Tensor) -> bool:
    """bf16 CPU tensors on a CPU without native bf16: compute in fp32, round once (module doc)."""
    return not cpu.native_bf16() and all(t.dtype == torch.bfloat16 for t in tensors) and _eager_cpu(*tensors)


def widened_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear of bf16 tensors computed in fp32 by the engine chosen for fp32 and rounded once; callers check
    `widen_bf16` first."""
    linear = onednn_linear if fp32_engine(x.numel() // x.shape[-1]) == "onednn" else F.linear
    return linear(x.float(), weight.float(), None if bias is None else bias.float()).to(x.dtype)


@contextmanager
def single_row_kernel(kernel: str | None = None) -> Iterator[str]:
    """Inside the block, single-row fp32 CPU products run on `kernel` (default: the one cpu.py chose for this
    machine, see `cpu.choices().matvec`), and single-row bf16 ones on packed weights where cpu.py says so.
    torch runs on one thread while the fp32 kernel is OpenBLAS: pass the kernel a bf16 model needs ("torch").
    Any other kernel leaves torch's thread count alone. The count set is the calling thread's (torch's CPU
    build runs OpenMP, whose count is per thread): another thread's products keep theirs meanwhile."""
    kernel = kernel or cpu.choices().matvec
    token = _single_row.set(kernel)
    threads = torch.get_num_threads() if kernel == "openblas" else None
    if threads is not None:
        torch.set_num_threads(1)
    try:
        yield kernel
    finally:
        if threads is not None:
            torch.set_num_threads(threads)
        _single_row.reset(token)


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


def single_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Attention of one query position (a decode step) as two batched matmuls in fp32, rounded once to q's dtype.

    PyTorch's CPU SDPA runs its flash kernel here, built for many queries: in bf16 it took 26.8 ms a step (28
    layers, a 400-token cache) against 5.3 ms for this, and 4.3 ms in fp32, where SDPA is kept (this took 4.8;
    `tools/bench.py --kernels`, AVX-512 + VNNI). The g = H / Hkv query heads that share a kv head are stacked as
    rows of one (g, Dh) @ (Dh, S) product, so the cache is never repeated per head.
    q (B, H, 1, Dh); k, v (B, Hkv, S, Dh); mask (B, 1, 1, S) bool, True where the query may look."""
    B, H, _, Dh = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    rows = q.reshape(B, Hkv, H // Hkv, Dh).float()  # query head h reads kv head h // (H / Hkv)
    scores = torch.matmul(rows, k.float().transpose(-1, -2)).mul_(Dh**-0.5)  # (B, Hkv, g, S)
    if mask is not None:
        scores.masked_fill_(~mask.view(B, 1, 1, S), float("-inf"))
    return torch.matmul(scores.softmax(-1), v.float()).reshape(B, H, 1, Dh).to(q.dtype)


class Attention(ScaledDotProductAttention):
    """The model's attention: one query position (decode steps) in a reduced precision as
    `single_query_attention`, and widened to fp32 for bf16 on CPUs without native bf16 (module doc)."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if q.shape[2] == 1 and q.dtype != torch.float32 and _eager_cpu(q, k, v):
            return single_query_attention(q, k, v, mask)
        if widen_bf16(q, k, v):
            return super().forward(q.float(), k.float(), v.float(), mask).to(q.dtype)
        return super().forward(q, k, v, mask)


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
        if chosen_fp32(x, self.weight):
            matvec = _single_row.get() if x.numel() == x.shape[-1] else None
            if matvec == "openblas":
                return openblas_linear(x, self.weight, self.bias)
            if matvec == "torch":
                return F.linear(x, self.weight, self.bias)
            if matvec == "onednn":  # oneDNN's single-row kernel reads fastest on a 2-D (1, K) input (packed_bf16_linear)
                return onednn_linear(x.reshape(1, -1), self.weight, self.bias).view(*x.shape[:-1], -1)
            if fp32_engine(x.numel() // x.shape[-1]) == "onednn":
                return onednn_linear(x, self.weight, self.bias)
            return F.linear(x, self.weight, self.bias)
        if x.numel() >= cpu.rules().bf16_widen_rows * x.shape[-1] and widen_bf16(x, self.weight):
            return widened_linear(x, self.weight, self.bias)
        if (x.numel() == x.shape[-1] and _single_row.get() and x.dtype == self.weight.dtype == torch.bfloat16
                and cpu.rules().bf16_packed and _eager_cpu(x, self.weight)):
            return packed_bf16_linear(x, self.weight, self.bias, self)
        return F.linear(x, self.weight, self.bias)


class DecodeStepsLanguageModel(LanguageModel):
    """The model's `language_model`, whose cached CPU steps of one row (batch-1 decoding: every product is a
    single row) run inside `single_row_kernel()`: fp32 on the kernel that reads weights fastest here, bf16 on
    packed weights where cpu.py chose them. Everything else is the plain forward."""

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        key_valid: torch.Tensor,
        cache: KVCache | None = None,
        offset: int = 0,
        last_only: bool = False,
    ) -> torch.Tensor:
        B, T, _ = inputs_embeds.shape
        if B != 1 or T != 1 or cache is None or inputs_embeds.device.type != "cpu" or not isinstance(self.lm_head, Linear):
            return super().forward(inputs_embeds, position_ids, key_valid, cache, offset, last_only)
        # torch drops to one thread while the fp32 kernel is OpenBLAS (see single_row_kernel); a bf16 model's
        # rows take PyTorch's kernel or the packed weights, never OpenBLAS.
        kernel = None if chosen_fp32(inputs_embeds, self.lm_head.weight) else "torch"
        with single_row_kernel(kernel):
            return super().forward(inputs_embeds, position_ids, key_valid, cache, offset, last_only)
