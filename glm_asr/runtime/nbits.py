"""4-bit decoder weights on onnxruntime's `MatMulNBits` kernels, inside the PyTorch model.

A decode step reads every decoder weight once, so its speed is the bytes it reads: 4-bit weights read 2x fewer
than int8 and 8x fewer than fp32. PyTorch's own int4 kernel (`runtime/quantize.py` `Int4Linear`) unpacks its
weights at a fraction of the memory's speed (docs/performance.md); onnxruntime's `MatMulNBits` is the kernel
ONNX Runtime GenAI runs LLMs on CPUs with: at `accuracy_level` 4 it quantises the activations to int8 per block
and takes int8 dot products (AVX2's `vpmaddubsw`, VNNI's `vpdpbusd`, AMX where present).

This is a hybrid, not the ONNX backend: each decoder linear layer becomes a one-node onnxruntime graph
(`NBitsLinear`), and everything else (embedding, norms, RoPE, attention, the KV cache, greedy decoding) stays
this project's PyTorch code. Only single rows (batch-1 decode steps) take the 4-bit kernel: at 2 rows and more
its per-block activation quantisation made it slower than PyTorch's int8 kernel on every row count measured
(`tools/bench.py --kernels` on AVX2: 1.4x slower at 8 rows, 2.1x at 64), so the layer also keeps int8
weights (`runtime/quantize.py` `Int8Linear`) for prompts and batched steps: 1.6 bytes a weight in all, against
4 for fp32. Weights: symmetric 4-bit, one fp32 scale per `block` input channels of a row
(w = (q - 8) * scale, q in 0..15, scale = absmax / 7); `MatMulNBits`'s packing: two values a byte, the
even channel in the low nibble.

Whether it beats int8 depends on the machine: on an AVX2 EPYC its large products alone ran 1.5x faster than
int8's, and the model decoded 14% slower (docs/performance.md). `--fast` (runtime/fastest.py) measures it.

Approximate, like every quantised path: its agreement with fp32 is measured by tests/test_quantize.py and
tools/bench.py. Needs the `onnx` extra (onnxruntime), imported when a model is quantised.
"""

from __future__ import annotations

import torch
from torch import nn

from glm_asr.onnx.extra import require  # the hint that names the extra; imports nothing heavy

BLOCK = 32
ACCURACY_LEVEL = 4  # int8 activations per block, int8 dot products: the fast CPU path


def pack_4bit(weight: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) float weight -> (N, K / block, block / 2) uint8 codes and (N, K / block) fp32 scales, in
    MatMulNBits' layout. K must be a multiple of `block`."""
    N, K = weight.shape
    blocks = weight.float().reshape(N, K // block, block)
    scale = (blocks.abs().amax(-1) / 7).clamp_min(torch.finfo(torch.float32).tiny)
    q = (blocks / scale[..., None]).round().clamp(-8, 7).to(torch.int32) + 8
    codes = (q[..., 0::2] | (q[..., 1::2] << 4)).to(torch.uint8)
    return codes.contiguous(), scale.contiguous()


def unpack_4bit(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float weight `pack_4bit`'s codes stand for: what the kernel multiplies by (tests compare with it)."""
    q = torch.stack([codes & 15, codes >> 4], dim=-1).reshape(*codes.shape[:2], -1).float() - 8
    return (q * scale[..., None]).reshape(codes.shape[0], -1)


def session_options(threads: int):  # noqa: ANN201
    """onnxruntime options for a product called between PyTorch's work: `threads` threads that sleep between calls.
    Spinning threads (onnxruntime's default) wait for the next call on the cores PyTorch's norms and attention run
    on: with them one row through four decoder layers' products took 2.4x as long (AVX2, 2 cores,
    docs/performance.md)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def matmul_session(codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, block: int, threads: int):  # noqa: ANN201
    """One onnxruntime session computing y = x @ W.T (+ bias) with `MatMulNBits`, x of shape (rows, K)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    N, K = codes.shape[0], codes.shape[1] * block
    inputs = ["x", "codes", "scales"] + (["", "", "bias"] if bias is not None else [])
    node = helper.make_node("MatMulNBits", inputs, ["y"], domain="com.microsoft", K=K, N=N, bits=4, block_size=block,
                            accuracy_level=ACCURACY_LEVEL)
    initializers = [numpy_helper.from_array(codes.numpy(), "codes"), numpy_helper.from_array(scale.reshape(-1).numpy(), "scales")]
    if bias is not None:
        initializers.append(numpy_helper.from_array(bias.float().numpy(), "bias"))
    graph = helper.make_graph([node], "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", N])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    return ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])


class NBitsLinear(nn.Module):
    """An nn.Linear whose product runs on onnxruntime's `MatMulNBits` with 4-bit weights (module doc)."""

    def __init__(self, linear: nn.Linear, rows: nn.Module, block: int = BLOCK) -> None:
        """`rows`: the layer for products of 2 rows or more (quantize.py gives its Int8Linear)."""
        super().__init__()
        require("onnx", "onnxruntime", purpose="4-bit weights on onnxruntime (--quantize int4-ort)")
        weight = linear.weight.detach().float()
        N, K = weight.shape
        # Input channels come in whole blocks; a narrow layer (the tiny test models') is zero-padded to fit,
        # and its input with it. The full-size model's 2048 and 6144 need no padding.
        self.k_pad = -K % block
        codes, scale = pack_4bit(nn.functional.pad(weight, (0, self.k_pad)), block)
        bias = None if linear.bias is None else linear.bias.detach().float()
        self._session = matmul_session(codes, scale, bias, block, torch.get_num_threads())
        self.rows = rows
        self.in_features, self.out_features, self.block = K, N, block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32:
            raise TypeError(f"NBitsLinear takes fp32 activations, got {x.dtype}: quantise an fp32 model")
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] > 1:
            return self.rows(x)
        if self.k_pad:
            rows = nn.functional.pad(rows, (0, self.k_pad))
        (y,) = self._session.run(None, {"x": rows.contiguous().numpy()})
        return torch.from_numpy(y).view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, 4-bit weights in blocks of {self.block}, "
                f"onnxruntime MatMulNBits (accuracy level {ACCURACY_LEVEL})")
