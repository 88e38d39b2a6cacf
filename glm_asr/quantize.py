"""Int8 decoder weights, for decoding on a CPU.

Each decoded token reads every decoder weight once and does two FLOPs per weight: on a CPU that is bound by
memory bandwidth, not arithmetic (tools/bench.py measures both). Int8 weights read 4x fewer bytes than
fp32. The scheme is dynamic quantisation, like onnxruntime's `quantize_dynamic` (tools/export_onnx.py
--quantize int8): weights int8, symmetric, one scale per output row (absmax / 127; the export uses one per
tensor); activations quantised per tensor at run time to 7-bit unsigned (`reduce_range`: without AVX-512
VNNI the int8 kernels add pairs of products in int16, which 8-bit activations can overflow; onnxruntime's
kernels use 8); products accumulated in int32. The kernels are PyTorch's fbgemm ones (`torch.ops.quantized.linear_dynamic`).

Only `language_model` is quantised. The audio encoder and projector run 1500-frame matmuls, which are
compute-bound, and int8 GEMMs ran no faster than fp32 on the CPU measured (README, Performance).
Norms, RoPE, attention and the KV cache stay in fp32.

This is an approximation, not the reference: its agreement with fp32 (logit cosine, greedy-token match) is
measured by tests/test_quantize.py and tools/bench.py, never held to the conformance tolerances.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from .model import GlmAsrModel


class Int8Linear(nn.Module):
    """A bias-free fp32 nn.Linear with int8 weights (per-row scales) and dynamically quantised activations."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        if linear.bias is not None:
            raise ValueError("Int8Linear quantises bias-free linear layers; the decoder has no biases")
        weight = linear.weight.detach().float()
        scale = (weight.abs().amax(dim=1) / 127.0).clamp_min(torch.finfo(torch.float32).tiny)
        with warnings.catch_warnings():  # quantized tensors are deprecated in PyTorch, still the way into fbgemm
            warnings.filterwarnings("ignore", message=".*quantize_per_channel.*deprecated", category=UserWarning)
            qweight = torch.quantize_per_channel(weight, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)
        self._packed = torch.ops.quantized.linear_prepack(qweight, None)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def weight_and_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(out, in) int8 weights and (out,) fp32 scales, as packed."""
        qweight, _ = torch.ops.quantized.linear_unpack(self._packed)
        return qweight.int_repr(), qweight.q_per_channel_scales().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32:
            raise TypeError(f"Int8Linear takes fp32 activations, got {x.dtype}: quantise an fp32 model")
        return torch.ops.quantized.linear_dynamic(x, self._packed, True)  # True: reduce_range, see the module doc

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights per row"


def quantize_decoder(model: GlmAsrModel) -> GlmAsrModel:
    """Replaces every linear layer of `language_model` (attention, MLP and the LM head) by an Int8Linear, in
    place, and returns the model, all in fp32 but those layers. A tied LM head gets its own int8 copy; the
    embedding table stays fp32.

    The model may be in any float dtype. Each weight is widened to fp32 (exact) before it is quantised, and
    everything else is cast to fp32 afterwards, so a bf16 checkpoint loaded as stored (`load_model(dtype=None)`)
    becomes exactly the model its fp32 load would, without ever holding the whole checkpoint in fp32: the
    load peak halves (README, Performance)."""
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("int8 quantisation runs on the CPU (the fbgemm kernels); load the model with device='cpu'")
    slots = [(module, name) for module in list(model.language_model.modules())
             for name, child in module.named_children() if isinstance(child, nn.Linear)]
    # fbgemm packs a weight on one core, so a thread per core quantises a layer each. The float layer is dropped
    # as soon as its int8 one is in place, so the peak grows by a few layers, not by the decoder.
    with ThreadPoolExecutor(torch.get_num_threads()) as pool:
        for (module, name), int8 in zip(slots, pool.map(lambda slot: Int8Linear(getattr(*slot)), slots)):
            setattr(module, name, int8)
    return model.float()
