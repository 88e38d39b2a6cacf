"""What the running CPU can do, and every kernel choice glm_asr makes from it: the one place that decides.

The rules, which hold on every machine (what they chose on the CPUs measured is in docs/performance.md):

- **fp32 products of more than one row** run on oneDNN only where it beats PyTorch's default kernel on this
  machine, measured at the model's shapes (`calibrate_gemm()`), in two bands: a prompt's or an audio window's
  rows (`fp32_gemm`, timed at 400 x 2048 -> 6144) and a batched decode step's few (`fp32_few_rows`, fewer than
  FEW_ROWS rows, timed at 8). It won both by 2x on AVX-512 + VNNI, yet lost the GEMMs by 15-30% on an AVX2-only
  AMD EPYC while winning its few-row products by 2.6x: no feature flag predicts it. Unmeasured, or within
  GEMM_MARGIN of the default, the default (the plain model's kernel) is kept.
- **bf16** is *native* (PyTorch's bf16 kernels) where the CPU has bf16 arithmetic: AVX-512 BF16 or AMX.
  Elsewhere those kernels convert every element (oneDNN still reports bf16 on plain AVX-512, where it emulates
  it), 4-6x slower than fp32 for a prompt, so a prompt's products, convolutions and attention are *widened*:
  computed in fp32 from the bf16 values (exact) and rounded once (dispatch.py). Products of few rows (a decode
  step's: one row at batch 1, one per sequence batched) keep the bf16 kernel where oneDNN has one, emulated or
  not (`bf16_widen_rows`): they are bound by reading the weights, which bf16 halves, while widening converts the
  whole weight on every call. Single rows read weights packed into oneDNN's layout wherever it does bf16.
- **fp32 single-row products** (the decode steps of batch 1) go to the kernel that reads weights fastest on
  this machine: OpenBLAS (numpy's BLAS, with torch on one thread meanwhile), oneDNN or PyTorch's default. Which
  one wins depends on the CPU, its memory and the weights' shapes, not on a feature flag, so it is measured:
  `calibrate()` times each on 1 GB of decoder-layer-shaped weights (larger than the caches; about 3 s in all) and the answer is cached per machine,
  torch version and thread count in `$GLM_ASR_CACHE_DIR` (default `~/.cache/glm_asr`).
- **int8 activations** are 8-bit where the CPU has VNNI (AVX-512 VNNI or AVX-VNNI: products summed in int32)
  and 7-bit elsewhere (`reduce_range`: without VNNI the int8 kernels add pairs of products in int16, which 8-bit
  activations can overflow). 8-bit halves the activation rounding error.
- **int8 kernels**: PyTorch's `x86` quantised engine (fbgemm, or oneDNN where it judges it faster), chosen
  at quantisation time, for the decoder's single-row products; the optional int8 audio encoder's 1500-row
  products use the `onednn` engine where the CPU has AMX int8 tiles, which only oneDNN's kernels use.
- **threads**: torch's own count (one per physical core); reported, not changed.

Every capability can be forced, so each branch is tested on any machine: `with forced(native_bf16=False):`
in Python, or `GLM_ASR_FORCE="native_bf16=0,vnni=1,matvec=onednn"` in the environment (read once, at first
use). `glm-asr info` prints the CPU's features, each choice and why.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from glm_asr.runtime.products import onednn_linear, openblas_linear

MATVEC_KERNELS = ("openblas", "onednn", "torch")
GEMM_ENGINES = ("onednn", "torch")
FORCE_ENV = "GLM_ASR_FORCE"
CACHE_ENV = "GLM_ASR_CACHE_DIR"


@dataclass(frozen=True)
class Features:
    """What the CPU and this PyTorch build offer, as detected (torch.cpu, oneDNN, /proc/cpuinfo)."""

    model: str
    avx2: bool
    avx512: bool
    avx512_bf16: bool
    vnni: bool  # AVX-512 VNNI or AVX-VNNI
    amx: bool  # AMX tiles (bf16 and int8)
    onednn: bool  # this PyTorch build has oneDNN
    onednn_bf16: bool  # oneDNN runs bf16 arithmetic natively here (AVX-512 BF16 or AMX)

    @property
    def cpu_class(self) -> str:
        """A short name for the class a measurement holds on, e.g. 'AVX-512 + VNNI + BF16 + AMX'."""
        if not self.avx512:
            return "AVX2" + (" + VNNI" if self.vnni else "") if self.avx2 else "pre-AVX2"
        extras = [name for name, has in (("VNNI", self.vnni), ("BF16", self.avx512_bf16), ("AMX", self.amx)) if has]
        return " + ".join(["AVX-512", *extras])


@dataclass(frozen=True)
class Choices:
    """Every machine-dependent choice, with the reason it was made (printed by `glm-asr info`)."""

    fp32_gemm: str  # fp32 products of FEW_ROWS rows or more: one of GEMM_ENGINES
    fp32_few_rows: str  # fp32 products of 2 to FEW_ROWS - 1 rows (and single rows outside decode steps)
    native_bf16: bool  # False: bf16 GEMMs, convolutions and attention widened to fp32
    bf16_packed: bool  # bf16 decode steps read weights packed into oneDNN's layout
    bf16_widen_rows: int  # without native bf16: products of at least this many rows are widened
    matvec: str  # fp32 single-row products: one of MATVEC_KERNELS
    int8_reduce_range: bool  # 7-bit int8 activations
    int8_gemm_engine: str  # quantised engine for the int8 audio encoder's GEMMs
    threads: int
    reasons: dict[str, str] = field(default_factory=dict, compare=False)


def _cpuinfo_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def detect() -> Features:
    """The running CPU's features, as this PyTorch build sees them."""
    onednn = torch.backends.mkldnn.is_available()
    cpu = torch.cpu
    return Features(
        model=_cpuinfo_model(),
        avx2=cpu._is_avx2_supported(),
        avx512=cpu._is_avx512_supported(),
        avx512_bf16=cpu._is_avx512_bf16_supported(),
        vnni=cpu._is_vnni_supported(),
        amx=cpu._is_amx_tile_supported(),
        onednn=onednn,
        onednn_bf16=onednn and torch.ops.mkldnn._is_mkldnn_bf16_supported(),
    )


def _parse_force(text: str) -> dict[str, object]:
    """GLM_ASR_FORCE="native_bf16=0,vnni=1,matvec=onednn" -> {...}; names any unknown or malformed entry."""
    kernels = {"matvec": MATVEC_KERNELS, "fp32_gemm": GEMM_ENGINES, "fp32_few_rows": GEMM_ENGINES}
    known = {f.name for f in dataclasses.fields(Features) if f.type in (bool, "bool")} | {"native_bf16", "bf16_packed"} | set(kernels)
    out: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name not in known:
            raise ValueError(f"{FORCE_ENV}={text!r}: {item!r} is not NAME=VALUE with NAME in {sorted(known)}")
        if name in kernels:
            if value not in kernels[name]:
                raise ValueError(f"{FORCE_ENV}: {name}={value!r}, expected one of {kernels[name]}")
            out[name] = value
        elif value in ("0", "1"):
            out[name] = value == "1"
        else:
            raise ValueError(f"{FORCE_ENV}: {name}={value!r}, expected 0 or 1")
    return out


# ---- the matrix-vector calibration --------------------------------------------------------------------------

def _cache_path(features: Features, kind: str = "matvec") -> Path:
    key = json.dumps([dataclasses.asdict(features), torch.__version__, np.__version__, torch.get_num_threads()])
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "glm_asr")
    return root / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def _read_cache(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_cache(path: Path, record: dict) -> str:
    """Where the answer came from, as `glm-asr info` says it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(record))
        tmp.replace(path)  # atomic: parallel first runs never read half a file
        return f"measured now, cached in {path}"
    except OSError as e:
        return f"measured now; not cached ({e})"


# One decoder layer's weights at the released shape, (out, in): q, k, v, o, gate, up, down. A kernel's speed
# depends on the shape (seen on one machine: PyTorch's kernel read a 6144 x 2048 weight at half the rate of a
# 2048 x 6144 one), so it is timed on the mix a decode step reads, not on one shape.
LAYER_SHAPES = ((2048, 2048), (512, 2048), (512, 2048), (2048, 2048), (6144, 2048), (6144, 2048), (2048, 6144))


def time_matvec_kernels(megabytes: int = 1024, rounds: int = 2) -> dict[str, float]:
    """GB/s at which each kernel reads fp32 weights in single-row products, cycling through `megabytes` of
    decoder layers (LAYER_SHAPES) so that they stream from memory, as in a decode step. Each kernel runs
    `rounds` timed passes after an untimed one, which absorbs what the kernel before it left behind (OpenBLAS's
    threads spin on after a call: the kernel timed right after one read at half its rate); the kernels are
    swept twice, in opposite orders, so a machine whose speed drifts while it is measured (a shared VM's
    does) weighs on every kernel alike. Each keeps its best pass."""
    layer_bytes = 4 * sum(n * k for n, k in LAYER_SHAPES)
    weights = [torch.empty(n, k).uniform_(-1, 1) for _ in range(max(1, megabytes * 2**20 // layer_bytes)) for n, k in LAYER_SHAPES]
    inputs = {k: torch.randn(1, k) for _, k in LAYER_SHAPES}
    kernels = {"openblas": openblas_linear, "torch": torch.nn.functional.linear}
    if torch.backends.mkldnn.is_available():
        kernels["onednn"] = onednn_linear
    best = dict.fromkeys(kernels, float("inf"))
    threads = torch.get_num_threads()
    with torch.inference_mode():
        for sweep in (list(kernels), list(kernels)[::-1]):
            for name in sweep:
                torch.set_num_threads(1 if name == "openblas" else threads)  # as single_row_kernel() runs it
                try:
                    for pass_ in range(rounds + 1):
                        started = time.perf_counter()
                        for w in weights:
                            kernels[name](inputs[w.shape[1]], w)
                        if pass_:
                            best[name] = min(best[name], time.perf_counter() - started)
                finally:
                    torch.set_num_threads(threads)
    return {name: sum(w.numel() for w in weights) * 4 / t / 1e9 for name, t in best.items()}


# Kernels within MATVEC_MARGIN of the fastest are a tie, settled in this order: PyTorch's kernel first (the plain
# model's: a choice is made only where it beats it), then oneDNN, which keeps torch's own thread pool, where
# OpenBLAS brings a second one. A 2 s measurement on a shared VM is not finer than
# a few percent (seen: 36.5 against 32.2 GB/s at calibration, 44.9 against 46.5 an hour later).
MATVEC_MARGIN = 0.05
MATVEC_TIE_ORDER = ("torch", "onednn", "openblas")


def fastest_matvec(rates: dict[str, float]) -> str:
    """The kernel to use given each one's GB/s: the first of MATVEC_TIE_ORDER within MATVEC_MARGIN of the best."""
    top = max(rates.values())
    return next(name for name in MATVEC_TIE_ORDER if rates.get(name, 0.0) >= (1 - MATVEC_MARGIN) * top)


def calibrate(refresh: bool = False) -> tuple[str, dict[str, float], str]:
    # refresh=True (`glm-asr info --recalibrate`) measures again and replaces the cached answer.
    """(fastest fp32 matvec kernel, GB/s of each, where the answer came from); measured once per machine."""
    path = _cache_path(detect())
    cached = None if refresh else _read_cache(path)
    if cached and {"fastest", "gb_per_s"} <= set(cached):
        return cached["fastest"], cached["gb_per_s"], f"cached in {path}"
    rates = time_matvec_kernels()
    fastest = fastest_matvec(rates)
    return fastest, rates, _write_cache(path, {"fastest": fastest, "gb_per_s": rates, "cpu": detect().model})


# ---- the fp32 GEMM calibration ------------------------------------------------------------------------------

# Products of fewer rows than this are a batched decode step's (one row per sequence); more are a prompt's or an
# audio window's. The two bands are timed apart because the engines rank differently in each (module doc).
FEW_ROWS = 32
# (rows, in, out) products timed for each band: a decode layer's gate/up product for 8 sequences; for 32 rows
# and more, a 400-token prompt's and an audio window's fc1 and fc2, timed together. The window's products are
# the larger part of a transcription's arithmetic, and they did not rank as the prompt's did: on an AVX2 EPYC
# oneDNN won the prompt's product by 20% and lost fc1 and fc2 by 15-30%, which made the audio path 22% slower.
GEMM_SHAPES = {"fp32_few_rows": ((8, 2048, 6144),), "fp32_gemm": ((400, 2048, 6144), (1500, 1280, 5120), (1500, 5120, 1280))}
# oneDNN must beat the default by this much to be used: the default is the plain model's kernel, and a 1 s
# measurement on a shared machine is not finer than a few percent.
GEMM_MARGIN = 0.05


def time_gemm_engines(rounds: int = 2) -> dict[str, dict[str, float]]:
    """GFLOP/s of each engine (GEMM_ENGINES) over each band's products (GEMM_SHAPES), all of them per pass: each
    engine's best of `rounds` timed passes after an untimed one, the engines taken in turn and then in reverse, as
    time_matvec_kernels."""
    engines = {"torch": torch.nn.functional.linear}
    if torch.backends.mkldnn.is_available():
        engines["onednn"] = onednn_linear
    out: dict[str, dict[str, float]] = {}
    with torch.inference_mode():
        for band, shapes in GEMM_SHAPES.items():
            operands = [(torch.randn(rows, k), torch.empty(n, k).uniform_(-1, 1)) for rows, k, n in shapes]
            repeat = max(1, 64 // min(rows for rows, _, _ in shapes))  # a few-row product takes about a millisecond: several per pass
            best = dict.fromkeys(engines, float("inf"))
            for sweep in (list(engines), list(engines)[::-1]):
                for name in sweep:
                    for pass_ in range(rounds + 1):
                        started = time.perf_counter()
                        for _ in range(repeat):
                            for x, w in operands:
                                engines[name](x, w)
                        if pass_:
                            best[name] = min(best[name], (time.perf_counter() - started) / repeat)
            flops = sum(2 * rows * k * n for rows, k, n in shapes)
            out[band] = {name: flops / t / 1e9 for name, t in best.items()}
    return out


def fastest_gemm(rates: dict[str, float]) -> str:
    """oneDNN where it beats PyTorch's default kernel by more than GEMM_MARGIN, the default otherwise."""
    return "onednn" if rates.get("onednn", 0.0) > (1 + GEMM_MARGIN) * rates["torch"] else "torch"


def calibrate_gemm(refresh: bool = False) -> tuple[dict[str, str], dict[str, dict[str, float]], str]:
    """({band: engine}, {band: GFLOP/s of each engine}, where the answer came from); measured once per machine
    and cached beside the matvec answer (`glm-asr info --recalibrate` measures both again)."""
    path = _cache_path(detect(), "gemm")
    cached = None if refresh else _read_cache(path)
    if cached and cached.get("shapes") == json.loads(json.dumps(GEMM_SHAPES)):  # timed on today's shapes
        rates, where = cached["gflop_per_s"], f"cached in {path}"
    else:
        rates = time_gemm_engines()
        where = _write_cache(path, {"gflop_per_s": rates, "shapes": GEMM_SHAPES, "cpu": detect().model})
    return {band: fastest_gemm(r) for band, r in rates.items()}, rates, where


# ---- the choices --------------------------------------------------------------------------------------------

def decide(features: Features, force: dict[str, object] | None = None, *, measure: bool = True) -> Choices:
    """The choices for `features`, with any forced value taking precedence. `measure=False` skips the
    calibrations (the fallbacks are used: OpenBLAS for single rows, PyTorch's default for more), for callers that
    only need the other choices."""
    force = dict(force or {})
    f = dataclasses.replace(features, **{k: v for k, v in force.items() if k in {x.name for x in dataclasses.fields(Features)}})
    f = f if f.onednn else dataclasses.replace(f, onednn_bf16=False)  # no oneDNN (forced off): none of its bf16 either
    reasons = {}
    forced_note = " (forced)"

    engines, gemm_rates, gemm_where = ({}, {}, "") if not (measure and f.onednn) else calibrate_gemm()
    for band, shapes in GEMM_SHAPES.items():
        if band in force:
            engines[band], reasons[band] = str(force[band]), "forced"
        elif not f.onednn:
            engines[band], reasons[band] = "torch", "this PyTorch build has no oneDNN: PyTorch's default kernel"
        elif not measure:
            engines[band], reasons[band] = "torch", "not measured (measure=False): PyTorch's default, the plain model's"
        else:
            shown = ", ".join(f"{k_} {v:.0f}" for k_, v in sorted(gemm_rates[band].items(), key=lambda kv: -kv[1]))
            at = " + ".join(f"{rows} x {k} -> {n}" for rows, k, n in shapes)
            reasons[band] = f"GFLOP/s at {at}: {shown}; oneDNN needs a {GEMM_MARGIN:.0%} win ({gemm_where})"
        if engines[band] == "onednn" and not f.onednn:
            engines[band], reasons[band] = "torch", "oneDNN absent: PyTorch's default"
    if "native_bf16" in force:
        native_bf16 = bool(force["native_bf16"])
        reasons["native_bf16"] = ("PyTorch's bf16 kernels" if native_bf16 else "bf16 widened to fp32, rounded once") + forced_note
    else:
        # oneDNN also reports bf16 on AVX-512 CPUs without AVX-512 BF16, where it emulates it: a 1500-row GEMM
        # took 4x as long as the same GEMM widened to fp32 there (docs/performance.md), so only the hardware counts.
        native_bf16 = f.onednn_bf16 and (f.avx512_bf16 or f.amx)
        if native_bf16:
            reasons["native_bf16"] = "AVX-512 BF16 or AMX: PyTorch's bf16 kernels"
        elif f.onednn_bf16:
            reasons["native_bf16"] = ("oneDNN emulates bf16 here (AVX-512 without AVX-512 BF16 or AMX): bf16 GEMMs, convolutions and "
                                      "attention widened to fp32")
        else:
            reasons["native_bf16"] = "no native bf16 (no AVX-512 BF16 or AMX): bf16 GEMMs, convolutions and attention widened to fp32"

    if "bf16_packed" in force:
        bf16_packed, reasons["bf16_packed"] = bool(force["bf16_packed"]), "forced"
    else:
        # oneDNN packs bf16 wherever it does bf16 arithmetic, emulated included: a single row is bound by reading
        # the weights, which its blocked layout reads faster than PyTorch's kernel does.
        bf16_packed = f.onednn_bf16
        reasons["bf16_packed"] = ("oneDNN does bf16: decode steps read weights packed once into its layout (a second copy)"
                                  if bf16_packed else "oneDNN has no bf16 here: decode steps read the plain bf16 weights")

    # Widening converts the whole weight to fp32 on every call: worth it for a prompt's hundreds of rows, not for a
    # batched decode step's few. Where oneDNN does bf16 (emulated), its bf16 kernel was 3-8x faster for 2 to 16 rows
    # and widening 1.3x faster from 64 (2048 x 6144 weights, docs/performance.md). Without it, PyTorch's bf16 kernel
    # converts element by element, so more than one row is widened.
    bf16_widen_rows = 1 if native_bf16 else 32 if f.onednn_bf16 else 2
    reasons["bf16_widen_rows"] = ("native bf16: nothing is widened" if native_bf16 else
                                  f"products of {bf16_widen_rows} rows or more widened to fp32" +
                                  ("; fewer rows keep oneDNN's bf16 kernel" if f.onednn_bf16 else ""))

    if "matvec" in force:
        matvec, reasons["matvec"] = str(force["matvec"]), "forced"
    elif not measure:
        matvec, reasons["matvec"] = "openblas", "not measured (measure=False): the fallback"
    else:
        matvec, rates, where = calibrate()
        shown = ", ".join(f"{k} {v:.1f}" for k, v in sorted(rates.items(), key=lambda kv: -kv[1]))
        reasons["matvec"] = f"fastest single-row fp32 product, GB/s: {shown} ({where})"
    if matvec == "onednn" and not f.onednn:
        matvec, reasons["matvec"] = "torch", "oneDNN absent: PyTorch's default"

    int8_reduce_range = not f.vnni
    reasons["int8_reduce_range"] = ("VNNI sums int8 products in int32: 8-bit activations" if f.vnni else
                                    "no VNNI: 7-bit activations, so int16 pair sums cannot saturate") + (forced_note if "vnni" in force else "")
    int8_gemm_engine = "onednn" if f.amx and "onednn" in torch.backends.quantized.supported_engines else "x86"
    reasons["int8_gemm_engine"] = ("AMX int8 tiles, which only oneDNN's int8 kernels use" if int8_gemm_engine == "onednn" else
                                   "no AMX: PyTorch's x86 engine (fbgemm, VNNI where present)") + (forced_note if "amx" in force else "")
    threads = torch.get_num_threads()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    reasons["threads"] = f"torch's own count; {usable} logical CPUs usable by this process"
    return Choices(engines["fp32_gemm"], engines["fp32_few_rows"], native_bf16, bf16_packed, bf16_widen_rows, matvec, int8_reduce_range, int8_gemm_engine, threads, reasons)


_features: Features | None = None
_choices: Choices | None = None  # every choice, the measured one included
_rules: Choices | None = None  # the choices made from features alone (matvec not measured)
_forced: dict[str, object] = {}


def features() -> Features:
    global _features
    if _features is None:
        _features = detect()
    return _features


def _force() -> dict[str, object]:
    return {**_parse_force(os.environ.get(FORCE_ENV, "")), **_forced}


def choices() -> Choices:
    """The choices in force: decided at first use from the running CPU, `GLM_ASR_FORCE` and `forced()`,
    the matvec kernel measured (or read from the cache) on first call."""
    global _choices
    if _choices is None:
        _choices = decide(features(), _force())
    return _choices


def rules() -> Choices:
    """The choices that need no measurement (all but the kernels measured: `matvec`, `fp32_gemm`, `fp32_few_rows`,
    which take PyTorch's default here): cheap, read on every bf16 product."""
    global _rules
    if _rules is None:
        _rules = decide(features(), _force(), measure=False)
    return _rules


def native_bf16() -> bool:
    return rules().native_bf16


@contextmanager
def forced(**values: object) -> Iterator[None]:
    """Within the block, the given capabilities or choices are taken as given (tests force every branch):
    Features fields (`vnni=False`, `amx=True`, ...), `native_bf16=`, `bf16_packed=`, `matvec=`, `fp32_gemm=`
    and `fp32_few_rows=`."""
    global _choices, _rules, _forced
    _parse_force(",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in values.items()))  # validates
    saved = (_choices, _rules, _forced)
    _forced, _choices, _rules = {**_forced, **values}, None, None
    try:
        yield
    finally:
        _choices, _rules, _forced = saved


def describe(c: Choices | None = None, f: Features | None = None) -> str:
    """The text `glm-asr info` prints."""
    f, c = f or features(), c or choices()
    flags = ", ".join(name for name in ("avx2", "avx512", "avx512_bf16", "vnni", "amx", "onednn", "onednn_bf16") if getattr(f, name))
    lines = [f"CPU: {f.model}", f"class: {f.cpu_class}", f"features: {flags or 'none of interest'}",
             f"torch {torch.__version__}, numpy {np.__version__}", "choices:"]
    shown = {"fp32_gemm": f"fp32 GEMMs ({FEW_ROWS}+ rows): {c.fp32_gemm}",
             "fp32_few_rows": f"fp32 few rows (2-{FEW_ROWS - 1}): {c.fp32_few_rows}",
             "native_bf16": "bf16: native" if c.native_bf16 else "bf16: widened to fp32",
             "bf16_packed": f"bf16 decode weights: {'packed' if c.bf16_packed else 'plain'}",
             "bf16_widen_rows": f"bf16 rows widened: {'none' if c.native_bf16 else f'{c.bf16_widen_rows}+'}",
             "matvec": f"fp32 decode matvec: {c.matvec}",
             "int8_reduce_range": f"int8 activations: {'7' if c.int8_reduce_range else '8'}-bit",
             "int8_gemm_engine": f"int8 encoder GEMMs: {c.int8_gemm_engine} engine",
             "threads": f"threads: {c.threads}"}
    for key, text in shown.items():
        lines.append(f"  {text:34} {c.reasons.get(key, '')}")
    if os.environ.get(FORCE_ENV):
        lines.append(f"{FORCE_ENV}={os.environ[FORCE_ENV]}")
    return "\n".join(lines)
