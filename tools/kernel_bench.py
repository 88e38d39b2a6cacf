"""The kernel measurements behind glm_asr/runtime/cpu.py's row rules, on this machine.

    python tools/bench.py --kernels                 # 2 threads (torch's count), decoder-shaped weights
    python tools/bench.py --kernels --threads 1     # one thread: less swayed by other load on a shared machine

A product of R rows with one of twelve 2048 -> 6144 weights (the decoder MLP's shape; 604 MB in fp32, more than
any cache, so each product reads its weight from memory as a decode step does), for R from 1 (a batch-1 decode
step) through 8 (a batched step) to 389 (a 30 s prompt), in each form glm_asr runs one: fp32 on oneDNN and on
PyTorch's default kernel, bf16 widened to fp32, bf16 on PyTorch's kernel and on oneDNN's packed weights, int8
(dynamic, fbgemm) and int4 (weight-only); and, where onnxruntime is installed, the same products as one-node
onnxruntime graphs: int8 in the format tools/export_onnx.py writes (uint8 x uint8, dynamic) and 4-bit
`MatMulNBits` as glm_asr's int4-ort runs it (runtime/nbits.py: symmetric, blocks of 32, and here also 128;
`accuracy_level` 4: int8 dot products on activations quantized per block, the path onnxruntime GenAI takes for
LLMs on CPU). Then attention of one query over a 400-token
cache (a decode step: 16 query heads, 4 kv heads, head_dim 128), PyTorch's SDPA against glm_asr's
`single_query_attention`, in fp32 and bf16. Each figure is the best of --rounds rounds in which every form
takes its turn, ms per product (or per 28 layers of attention).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from glm_asr.runtime import cpu  # noqa: E402
from glm_asr.runtime.dispatch import single_query_attention, widened_linear  # noqa: E402
from glm_asr.runtime.products import onednn_linear, pack_bf16_weight  # noqa: E402
from glm_asr.runtime.quantize import Int4Linear, Int8Linear  # noqa: E402

ROWS = (1, 2, 4, 8, 16, 64, 389)


def best_ms(forms: dict[str, Callable[[int], object]], count: int, rounds: int) -> dict[str, float]:
    """ms per call of each form, called on items 0..count-1 in turn; the forms alternate within each round."""
    best = dict.fromkeys(forms, float("inf"))
    for round_ in range(rounds + 1):  # the first round warms up
        for name, form in forms.items():
            start = time.perf_counter()
            for i in range(count):
                form(i)
            if round_:
                best[name] = min(best[name], (time.perf_counter() - start) / count * 1e3)
    return best


def onnxruntime_forms(layers: list[torch.nn.Linear], threads: int) -> dict[str, list]:
    """name -> one onnxruntime session per layer computing x @ weight.T; {} without onnxruntime. The sessions'
    threads sleep between calls, as glm_asr's own do (runtime/nbits.py): threads spinning for the next call
    would take the cores from every other form timed here (they made fp32 16x slower)."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        print("onnxruntime forms left out: pip install 'glm-asr[onnx]'")
        return {}
    import logging
    import tempfile

    from glm_asr.runtime.nbits import matmul_session, pack_4bit, session_options

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer logs advice to the root logger
    forms: dict[str, list] = {"ort int8": [], "ort int4 b32": [], "ort int4 b128": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i, layer in enumerate(layers):
            out_features, in_features = layer.weight.shape
            graph = helper.make_graph(
                [helper.make_node("MatMul", ["x", "w"], ["y"])], "product",
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", in_features])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", out_features])],
                [numpy_helper.from_array(layer.weight.T.contiguous().numpy(), "w")])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
            fp32, int8 = Path(tmp) / f"fp32_{i}.onnx", Path(tmp) / f"int8_{i}.onnx"
            onnx.save(model, fp32)
            quantize_dynamic(fp32, int8, weight_type=QuantType.QUInt8, per_channel=True)
            forms["ort int8"].append(ort.InferenceSession(str(int8), session_options(threads), providers=["CPUExecutionProvider"]))
            for block in (32, 128):
                forms[f"ort int4 b{block}"].append(matmul_session(*pack_4bit(layer.weight, block), None, block, threads))
    return forms


def products(weights: int, rounds: int) -> dict[int, dict[str, float]]:
    torch.manual_seed(0)
    layers = [torch.nn.Linear(2048, 6144, bias=False).requires_grad_(False) for _ in range(weights)]
    fp32 = [layer.weight for layer in layers]
    bf16 = [w.bfloat16() for w in fp32]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = [Int8Linear(layer) for layer in layers]
    int4 = [Int4Linear(layer) for layer in layers]
    packed = [pack_bf16_weight(w) for w in bf16] if cpu.features().onednn_bf16 else None
    sessions = onnxruntime_forms(layers, torch.get_num_threads())
    table = {}
    with torch.inference_mode():
        for rows in ROWS:
            x = torch.randn(rows, 2048)
            xb = x.bfloat16()
            forms = {"fp32 oneDNN": lambda i: onednn_linear(x, fp32[i]), "fp32 torch": lambda i: F.linear(x, fp32[i]), "bf16 widened": lambda i: widened_linear(xb, bf16[i]),
                     "bf16 kernel": lambda i: F.linear(xb, bf16[i]), "int8": lambda i: int8[i](x), "int4": lambda i: int4[i](x)}
            if packed is not None:
                forms["bf16 packed"] = lambda i: onednn_linear(xb, packed[i], None)
            xn = x.numpy()
            for name, per_layer in sessions.items():
                forms[name] = lambda i, per_layer=per_layer: per_layer[i].run(None, {"x": xn})
            table[rows] = best_ms(forms, weights, rounds)
            print(f"{rows:4d} rows  " + "  ".join(f"{k} {v:7.2f}" for k, v in table[rows].items()), flush=True)
    return table


def attention(rounds: int) -> dict[str, float]:
    torch.manual_seed(0)
    result = {}
    mask = torch.ones(1, 1, 1, 400, dtype=torch.bool)
    with torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            q = torch.randn(1, 16, 1, 128).to(dtype)
            k, v = torch.randn(28, 1, 4, 400, 128).to(dtype), torch.randn(28, 1, 4, 400, 128).to(dtype)
            name = "fp32" if dtype == torch.float32 else "bf16"
            forms = {f"{name} SDPA": lambda i: F.scaled_dot_product_attention(q, k[i], v[i], attn_mask=mask, enable_gqa=True),
                     f"{name} single_query_attention": lambda i: single_query_attention(q, k[i], v[i], mask)}
            result.update({key: ms * 28 for key, ms in best_ms(forms, 28, rounds).items()})
    print("attention of one query, ms per 28 layers:  " + "  ".join(f"{k} {v:.2f}" for k, v in result.items()))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own count)")
    parser.add_argument("--weights", type=int, default=12, help="distinct weights cycled through (12: 604 MB in fp32)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    for name in ("threads", "weights", "rounds"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} {value}: expected 1 or more")
    if args.json and not args.json.parent.is_dir():
        parser.error(f"--json {args.json}: its folder does not exist; create it or name another")
    if args.threads:
        torch.set_num_threads(args.threads)
    f = cpu.features()
    print(f"CPU: {f.model}, class {f.cpu_class}; {torch.get_num_threads()} threads; ms per product with a 2048 -> 6144 weight")
    record = {"cpu": f.cpu_class, "threads": torch.get_num_threads(), "products_ms": products(args.weights, args.rounds),
              "attention_ms_per_28_layers": attention(args.rounds)}
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
