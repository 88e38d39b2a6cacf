"""The fastest path on this machine: what `--fast` (transcribe, serve) quantises, measured here, never assumed.

Two choices, each timed on the model's shapes and cached like cpu.py's kernel choices:

- **decoder**: a batch-1 decode step reads every weight once. int8 (`Int8Linear`, PyTorch's kernels) against
  4-bit on onnxruntime's `MatMulNBits` (`NBitsLinear`, where the `onnx` extra is installed): real decode steps
  of two full-width decoder layers, whose weights together outgrow the caches as the whole model's do.
- **audio**: the encoder's window is 1500-row GEMMs. fp32 (the engine cpu.py chose) against int8 (`Int8Linear`
  on cpu.py's int8 engine) and, where this CPU has bf16 arithmetic, bf16, at fc1's 1500 x 1280 -> 5120.

A quantised path is taken only where it wins by FAST_MARGIN over the one before it in that list. Both are
approximations of the fp32 model; their agreement is measured by tests/test_quantize.py and tools/bench.py.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from glm_asr.runtime import cpu

FAST_MARGIN = 0.05
DECODER_LAYERS = 2  # 96 M weights: 96 MB in int8, past any L3 this project has met
WINDOW_GEMM = (1500, 1280, 5120)


@dataclass(frozen=True)
class FastPath:
    decoder: str  # a quantize_decoder kind
    audio: str | None  # a quantize_audio kind, or None: fp32
    reasons: dict[str, str]


def _best_s(forms: dict[str, Callable[[], object]], rounds: int = 3) -> dict[str, float]:
    """Seconds per call of each form: the best of `rounds` after one untimed call, the forms in turn."""
    best = dict.fromkeys(forms, float("inf"))
    for round_ in range(rounds + 1):
        for name, form in forms.items():
            start = time.perf_counter()
            form()
            if round_:
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def time_decoders(config=None) -> dict[str, dict[str, float]]:  # noqa: ANN001
    """Per decoder kind, one real decode step of a full-width decoder of DECODER_LAYERS layers over a 400-token
    cache (norms, RoPE, attention and the products, as the model runs them; a small vocabulary, so the head does
    not weigh more than it does in the model): ms, and GB/s of the linear layers' weights. `config`: another
    TextConfig (tests time a tiny one).

    Products timed alone are not enough: on an AVX2 EPYC four layers' 4-bit products alone ran 1.13x faster than
    int8's, and the model decoded 14% slower (docs/performance.md)."""
    import copy
    import dataclasses

    from glm_asr.model.config import TextConfig
    from glm_asr.model.decoder import KVCache, LanguageModel
    from glm_asr.runtime.prepare import swap_modules
    from glm_asr.runtime.quantize import _quantize_linears

    torch.manual_seed(0)
    config = config or dataclasses.replace(TextConfig(), num_hidden_layers=DECODER_LAYERS, vocab_size=4096)
    plain = LanguageModel(config, tie_word_embeddings=False).requires_grad_(False)
    swap_modules(plain)  # the runtime's modules, as prepare() gives the whole model
    kinds = {"int8": 1.0}
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        from glm_asr.runtime.nbits import BLOCK

        kinds["int4-ort"] = 0.5 + 4 / BLOCK
    models = {}
    for kind in kinds:
        models[kind] = copy.deepcopy(plain)
        _quantize_linears(models[kind], "x86", kind)
    context, steps = 400, 8
    caches = {kind: KVCache.empty(config, 1, context + 4 * steps, torch.float32, "cpu") for kind in kinds}
    key_valid = torch.ones(1, context + 4 * steps, dtype=torch.bool)
    x = torch.randn(1, 1, config.hidden_size)
    offsets = dict.fromkeys(kinds, context)

    def step(kind: str) -> None:
        at = offsets[kind]
        models[kind](x, torch.full((1, 1), at), key_valid[:, : at + 1], caches[kind], at, last_only=True)
        offsets[kind] += 1

    with torch.inference_mode():
        seconds = _best_s({kind: (lambda kind=kind: step(kind)) for kind in kinds}, rounds=steps)
    weights = sum(m.weight.numel() for m in plain.modules() if isinstance(m, nn.Linear))
    return {name: {"ms": s * 1e3, "gb_per_s": weights * kinds[name] / s / 1e9} for name, s in seconds.items()}


def time_audio() -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) of the window's fc1 GEMM in fp32, int8 and, with bf16 arithmetic, bf16."""
    from glm_asr.runtime.dispatch import Linear
    from glm_asr.runtime.quantize import Int8Linear

    torch.manual_seed(0)
    rows, k, n = WINDOW_GEMM
    fp32 = nn.Linear(k, n).requires_grad_(False)
    fp32.__class__ = Linear  # the fp32 engine cpu.py chose, as prepare() would
    int8 = Int8Linear(fp32, cpu.rules().int8_gemm_engine)
    x = torch.randn(rows, k)
    forms = {"fp32": lambda: fp32(x), "int8": lambda: int8(x)}
    if cpu.rules().native_bf16:
        bf16, xb = nn.Linear(k, n).to(torch.bfloat16).requires_grad_(False), x.bfloat16()
        forms["bf16"] = lambda: bf16(xb)
    with torch.inference_mode():
        seconds = _best_s(forms)
    return {name: 2 * rows * k * n / s / 1e9 for name, s in seconds.items()}


def _pick(rates: dict[str, float], order: tuple[str, ...]) -> str:
    """The first of `order` unless a later one beats the one kept so far by FAST_MARGIN."""
    kept = order[0]
    for name in order[1:]:
        if name in rates and rates[name] > (1 + FAST_MARGIN) * rates[kept]:
            kept = name
    return kept


def _shown(rates: dict[str, float], unit: str) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in sorted(rates.items(), key=lambda kv: -kv[1])) + f" {unit}"


def fast_path(refresh: bool = False) -> FastPath:
    """This machine's fastest path, measured once (about 10 s) and cached beside cpu.py's answers."""
    path = cpu._cache_path(cpu.detect(), "fastest")
    cached = None if refresh else cpu._read_cache(path)
    onnxruntime_now = bool(importlib.util.find_spec("onnxruntime"))
    if cached and cached.get("onnxruntime") == onnxruntime_now and "decoder_steps" in cached:
        decoders, audio, where = cached["decoder_steps"], cached["audio_gflop_per_s"], f"cached in {path}"
    else:
        decoders, audio = time_decoders(), time_audio()
        where = cpu._write_cache(path, {"decoder_steps": decoders, "audio_gflop_per_s": audio, "onnxruntime": onnxruntime_now,
                                        "cpu": cpu.detect().model})
    # by speed, not bytes: 4-bit weights are fewer bytes, so the same time reads fewer GB/s
    decoder = _pick({name: 1 / d["ms"] for name, d in decoders.items()}, ("int8", "int4-ort"))
    audio_kind = _pick(audio, ("fp32", "int8", "bf16"))
    missing = "" if "int4-ort" in decoders else "; int4-ort needs the onnx extra: pip install 'glm-asr[onnx]'"
    steps = ", ".join(f"{name} {d['ms']:.1f} ms ({d['gb_per_s']:.1f} GB/s)" for name, d in sorted(decoders.items(), key=lambda kv: kv[1]["ms"]))
    reasons = {"decoder": f"a decode step of {DECODER_LAYERS} full-width decoder layers: {steps}{missing} ({where})",
               "audio": f"the window's {' x '.join(map(str, WINDOW_GEMM[:2]))} -> {WINDOW_GEMM[2]} GEMM at {_shown(audio, 'GFLOP/s')}"}
    return FastPath(decoder, None if audio_kind == "fp32" else audio_kind, reasons)


def describe(fast: FastPath) -> str:
    """The lines `glm-asr info` prints under the kernel choices."""
    return "\n".join([f"  {'--fast decoder: ' + fast.decoder:34} {fast.reasons['decoder']}",
                      f"  {'--fast audio path: ' + (fast.audio or 'fp32'):34} {fast.reasons['audio']}"])
