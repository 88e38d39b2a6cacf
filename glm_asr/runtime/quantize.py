"""Int8 (or weight-only int4) decoder weights for decoding on a CPU, and an optional int8 or bf16 audio encoder.

Each decoded token reads every decoder weight once and does two FLOPs per weight: on a CPU that is bound by
memory bandwidth, not arithmetic (tools/bench.py measures both). Int8 weights read 4x fewer bytes than
fp32. The scheme is dynamic quantisation, like onnxruntime's `quantize_dynamic` (tools/export_onnx.py
--quantize int8): weights int8, symmetric, one scale per output row (absmax / 127; the export uses one per
tensor); activations quantised per tensor at run time, to 8 bits where the CPU has VNNI and to 7 elsewhere
(`reduce_range`, chosen in cpu.py: without VNNI the int8 kernels add pairs of products in int16, which 8-bit
activations can overflow); products accumulated in int32. The kernels are PyTorch's quantised ones
(`torch.ops.quantized.linear_dynamic`), packed by the engine cpu.py names.

`quantize_decoder` quantises `language_model`: its decode steps are bound by reading weights. The audio
encoder and projector run 1500-frame products, which are bound by arithmetic; `quantize_audio` (opt-in) puts
them in int8 or bf16, which pays only where the CPU's int8 or bf16 GEMMs beat its fp32 ones (VNNI, AVX-512
BF16, AMX: `glm-asr info` and docs/performance.md). Norms, RoPE, attention and the KV cache stay as they were.

This is an approximation, not the reference: its agreement with fp32 (per-stage cosine, greedy-token match) is
measured by tests/test_quantize.py and tools/bench.py, never held to the conformance tolerances.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch
from torch import nn

from glm_asr.runtime import cpu
from glm_asr.model.glm_asr import GlmAsrModel


class Int8Linear(nn.Module):
    """An fp32 nn.Linear with int8 weights (per-row scales) and dynamically quantised activations. `engine` is
    the quantised engine that packs the weight (and so runs the products); default PyTorch's `x86`."""

    def __init__(self, linear: nn.Linear, engine: str = "x86") -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        bias = None if linear.bias is None else linear.bias.detach().float()
        scale = (weight.abs().amax(dim=1) / 127.0).clamp_min(torch.finfo(torch.float32).tiny)
        with warnings.catch_warnings():  # quantized tensors are deprecated in PyTorch, still the way into fbgemm
            warnings.filterwarnings("ignore", message=".*quantize_per_channel.*deprecated", category=UserWarning)
            qweight = torch.quantize_per_channel(weight, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)
        with _engine(engine):
            self._packed = torch.ops.quantized.linear_prepack(qweight, bias)
        self.reduce_range = cpu.rules().int8_reduce_range
        self.in_features, self.out_features, self.engine = linear.in_features, linear.out_features, engine

    def weight_and_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(out, in) int8 weights and (out,) fp32 scales, as packed."""
        qweight, _ = torch.ops.quantized.linear_unpack(self._packed)
        return qweight.int_repr(), qweight.q_per_channel_scales().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32:
            raise TypeError(f"Int8Linear takes fp32 activations, got {x.dtype}: quantise an fp32 model")
        return torch.ops.quantized.linear_dynamic(x, self._packed, self.reduce_range)

    def extra_repr(self) -> str:
        bits = 7 if self.reduce_range else 8
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights per row, {bits}-bit activations, {self.engine}"


class Int4Linear(nn.Module):
    """An nn.Linear with 4-bit weights and no activation quantisation (weight-only, as gpt-fast does on CPUs).

    Each run of `group_size` input channels of a row shares a scale and a zero point (asymmetric, 16 levels:
    w ≈ (q - 8) * scale + zero), so a weight costs half a byte plus 4 bytes per group. The product is PyTorch's
    own CPU kernel (`aten._weight_int4pack_mm_for_cpu`), which unpacks the weights as it reads them; it runs on
    bf16 activations (fp32 ones take a path 20x slower), so the input is rounded to bf16 and the result returned
    in the input's dtype. The kernel wants output rows in multiples of 16 and input channels in multiples of the
    group (32 to 256): smaller layers (the tiny test models) are zero-padded to fit."""

    def __init__(self, linear: nn.Linear, group_size: int = 128) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        N, K = weight.shape
        self.group_size = next(g for g in (group_size, 64, 32) if g <= max(K, 32))  # small layers: smaller groups
        n_pad, k_pad = -N % 16, -K % self.group_size
        weight = nn.functional.pad(weight, (0, k_pad, 0, n_pad))
        groups = weight.reshape(N + n_pad, -1, self.group_size)
        low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
        scale = ((high - low) / 15).clamp_min(torch.finfo(torch.float32).tiny)
        q = ((groups - low) / scale).round().clamp(0, 15).to(torch.int32).reshape(N + n_pad, -1)
        zero = low + 8 * scale  # the kernel's form: w = (q - 8) * scale + zero
        # Plain attributes, not buffers: `model.float()` after quantisation must not widen the bf16 scales.
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)  # (N, K / 2) uint8
        self.scales_and_zeros = torch.stack([scale[..., 0].t(), zero[..., 0].t()], dim=-1).to(torch.bfloat16).contiguous()  # (K / group, N, 2)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)
        self.in_features, self.out_features, self.k_pad = K, N, k_pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        if self.k_pad:
            rows = nn.functional.pad(rows, (0, self.k_pad))
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.packed, self.group_size, self.scales_and_zeros)
        y = y[:, : self.out_features].to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 weights in groups of {self.group_size}, bf16 activations"


_ENGINE_LOCK = threading.Lock()


@contextmanager
def _engine(name: str) -> Iterator[None]:
    """The quantised engine is a process-wide setting read when a weight is packed; the packed weight keeps it.
    Already in force (inside `_quantize_linears`' pool), it is left alone, so the pool's threads pack in parallel."""
    if torch.backends.quantized.engine == name:
        yield
        return
    with _ENGINE_LOCK:
        saved = torch.backends.quantized.engine
        torch.backends.quantized.engine = name
        try:
            yield
        finally:
            torch.backends.quantized.engine = saved


def _quantize_linears(root: nn.Module, engine: str, kind: str = "int8") -> None:
    """Every nn.Linear under `root` replaced by an Int8Linear (or an Int4Linear, or an NBitsLinear), in place."""
    slots = [(module, name) for module in list(root.modules())
             for name, child in module.named_children() if isinstance(child, nn.Linear)]
    if kind == "int4-ort":
        from glm_asr.runtime.nbits import NBitsLinear  # the onnx extra: imported only when asked for
        quantise = lambda slot: NBitsLinear(getattr(*slot), Int8Linear(getattr(*slot), engine))  # noqa: E731
    elif kind == "int4":
        quantise = lambda slot: Int4Linear(getattr(*slot))  # noqa: E731
    else:
        quantise = lambda slot: Int8Linear(getattr(*slot), engine)  # noqa: E731
    # fbgemm packs a weight on one core, so a thread per core quantises a layer each. The float layer is dropped
    # as soon as its quantised one is in place, so the peak grows by a few layers, not by the model.
    with _engine(engine), ThreadPoolExecutor(torch.get_num_threads()) as pool:  # one engine switch for the pool
        for (module, name), quantised in zip(slots, pool.map(quantise, slots)):
            setattr(module, name, quantised)


DECODER_KINDS = ("int8", "int4", "int4-ort")


def quantize_decoder(model: GlmAsrModel, kind: str = "int8") -> GlmAsrModel:
    """Replaces every linear layer of `language_model` (attention, MLP and the LM head) by an Int8Linear (or,
    with `kind="int4"`, a weight-only Int4Linear; with `kind="int4-ort"`, 4-bit weights on onnxruntime's
    MatMulNBits kernels, runtime/nbits.py), in place, and returns the model, all in fp32 but those
    layers. A tied LM head gets its own quantised copy; the embedding table stays fp32.

    The model may be in any float dtype. Each weight is widened to fp32 (exact) before it is quantised, and
    everything else is cast to fp32 afterwards, so a bf16 checkpoint loaded as stored (`load_model(dtype=None)`)
    becomes exactly the model its fp32 load would, without ever holding the whole checkpoint in fp32: the
    load peak halves (docs/performance.md)."""
    if kind not in DECODER_KINDS:
        raise ValueError(f"quantize_decoder kind={kind!r}: expected one of {DECODER_KINDS}")
    if next(model.parameters()).device.type != "cpu":
        raise ValueError(f"{kind} quantisation runs on the CPU (PyTorch's quantised kernels); load the model with device='cpu'")
    _quantize_linears(model.language_model, "x86", kind)
    return model.float()


AUDIO_KINDS = ("int8", "bf16")


def quantize_audio(model: GlmAsrModel, kind: str) -> GlmAsrModel:
    """Puts `audio_tower` and `multi_modal_projector` in int8 (their linear layers; the convolutions stay fp32)
    or in bf16, in place, and returns the model. The decoder is left as it is, in fp32 or int8: the audio
    embeddings are cast to its dtype where they enter the prompt. Opt-in and approximate (module doc)."""
    if kind not in AUDIO_KINDS:
        raise ValueError(f"quantize_audio kind={kind!r}: expected one of {AUDIO_KINDS}")
    if next(model.audio_tower.parameters()).device.type != "cpu":
        raise ValueError("audio quantisation is for the CPU; on a GPU load the model in bf16 instead")
    audio = (model.audio_tower, model.multi_modal_projector)
    if kind == "bf16":
        for module in audio:
            module.to(torch.bfloat16)
        return model
    for module in audio:
        module.float()
        _quantize_linears(module, cpu.rules().int8_gemm_engine)
    return model
