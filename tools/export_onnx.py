"""Exports a GLM-ASR model to a self-contained folder for onnxruntime, verified against PyTorch.

    python tools/export_onnx.py --model DIR --out OUTDIR            # a checkpoint folder
    python tools/export_onnx.py --random small --out OUTDIR         # random weights, synthetic tokenizer
    ... [--force] [--dtype fp16] [--quantize int8] [--no-verify]

OUTDIR gets audio_encoder.onnx and decoder.onnx (contract in glm_asr/onnx/graphs.py; weights in a
`<graph>.data` file next to a graph whose weights exceed 2 GB), embed_tokens.npy, tokenizer.json and
metadata.json, and needs nothing else: `glm-asr transcribe --backend onnxruntime --onnx-dir OUTDIR`.
The folder is built next to OUTDIR and renamed into place only when complete and verified, so an existing
OUTDIR (replaced only with --force) is never left half-overwritten.

Verification runs the exported graphs on shapes other than the export examples (W = 1 and 3 windows; B = 1
and 3, prefill P = 0, single-token and multi-token steps with P > 0) and compares them with PyTorch: an fp32
graph that is off by more than 1e-4 relative fails the export. int8 and fp16 are reported, not gated.
PyTorch's outputs are computed first and the PyTorch model is freed before onnxruntime loads the graphs, one
folder at a time: the full-size fp32 export peaks at about 17 GB.
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.metadata
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from glm_asr.io.atomic import replace_directory  # noqa: E402
from glm_asr.model.front_end import CHUNK_SECONDS, HOP_LENGTH, N_FFT, SAMPLING_RATE, WINDOW_FRAMES, log_mel  # noqa: E402
from glm_asr.model.decoder import KVCache  # noqa: E402
from glm_asr.transcription.generate import greedy_generate, prompt_positions  # noqa: E402
from glm_asr.model.glm_asr import GlmAsrModel  # noqa: E402
from glm_asr.onnx.backend import FORMAT, OnnxModel  # noqa: E402
from glm_asr.onnx.extra import EXPORT_MODULES, quiet_exporter, require  # noqa: E402
from glm_asr.onnx.graphs import (DECODER_FILE, EMBEDDINGS_FILE, ENCODER_FILE, METADATA_FILE, OPSET,  # noqa: E402
                                 TOKENIZER_FILE, AudioEmbedder, DecoderWithPast, decoder_example, decoder_ports,
                                 encoder_example, encoder_ports)
from glm_asr.transcription.presets import demo_clip, synthetic_tokenizer_json  # noqa: E402
from glm_asr.transcription.processor import AUDIO_TOKEN, INSTRUCTION, PAD_TOKEN, PROMPT_TOKENS, Processor, prompt_text  # noqa: E402
from glm_asr.text.tokenizer import Tokenizer  # noqa: E402
from glm_asr.transcription.transcribe import load_model_and_processor  # noqa: E402

# The protobuf of one .onnx file cannot exceed 2 GiB; above this many weight bytes they go to <graph>.data.
EXTERNAL_DATA_BYTES = 2_000_000_000
# fp32 graphs must match PyTorch this closely (max abs error / max |PyTorch|). Seen: <= 1e-6 on the tiny and
# small models (onnxruntime fuses LayerNorm/GELU and orders reductions differently); a real export error (a
# frozen axis, swapped key/value, a wrong mask) is O(1).
FP32_MAX_REL = 1e-4
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


@dataclass
class Check:
    graph: str
    variant: str
    case: str
    max_abs: float
    max_rel: float
    min_cos: float


def errors(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """Max abs error, its ratio to max |ref|, and the minimum cosine over the last axis."""
    a, b = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if a.shape != b.shape:
        raise RuntimeError(f"shape {a.shape} != PyTorch's {b.shape}")
    if not np.isfinite(a).all():
        return float("inf"), float("inf"), -1.0
    max_abs = float(np.abs(a - b).max()) if a.size else 0.0
    a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    norms = np.linalg.norm(a2, axis=-1) * np.linalg.norm(b2, axis=-1)
    cos = np.where(norms > 0, (a2 * b2).sum(-1) / np.maximum(norms, 1e-300), 1.0)
    return max_abs, max_abs / max(float(np.abs(b).max()), 1e-30), float(cos.min()) if cos.size else 1.0


# --- export ------------------------------------------------------------------------------------------------


def export_graph(module: torch.nn.Module, example: tuple[tuple, dict], ports: tuple, path: Path, external: str) -> float:
    """torch.onnx.export (dynamo) with the contract's names and axis names; returns the seconds it took."""
    inputs, outputs = ports
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    started = time.perf_counter()
    try:
        with warnings.catch_warnings(), quiet_exporter():
            # The exporter warns that it will not rename axes already named by their Dim: harmless, we name them below.
            warnings.filterwarnings("ignore", message="# The axis name")
            warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)", category=FutureWarning)  # torch internals
            program = torch.onnx.export(module.eval(), example[0], dynamo=True, dynamic_shapes=example[1], opset_version=OPSET,
                                        input_names=[p.name for p in inputs], output_names=[p.name for p in outputs],
                                        optimize=True, verbose=False)
    except Exception as e:  # torch.export raises many types (UserError, ConstraintViolation, ...)
        raise RuntimeError(f"{path.name}: torch.onnx.export failed: {str(e).strip().splitlines()[0]}") from e
    import onnx_ir as ir

    # Check every axis against the contract, then give the dynamic ones its names (torch.export calls the mask's
    # derived length e.g. "s53"). A static size where the contract wants a dynamic axis is a frozen axis.
    for values, specs in ((program.model.graph.inputs, inputs), (program.model.graph.outputs, outputs)):
        assert [v.name for v in values] == [p.name for p in specs], ([v.name for v in values], [p.name for p in specs])
        for value, spec in zip(values, specs):
            found = [d if isinstance(d, int) else str(d) for d in value.shape]
            if len(found) != len(spec.shape) or any(isinstance(f, int) != isinstance(e, int) or (isinstance(e, int) and f != e)
                                                    for f, e in zip(found, spec.shape)):
                raise RuntimeError(f"{path.name}: '{value.name}' was exported with shape {found}, expected {spec.shape} "
                                   "(a static size where a dynamic axis belongs: the export froze it)")
            value.shape = ir.Shape(spec.shape)
    program.save(path, external_data=external == "always" or weight_bytes > EXTERNAL_DATA_BYTES)
    return time.perf_counter() - started


def graph_ports(path: Path) -> dict:
    """Inputs and outputs as recorded in the file (not as intended): what metadata.json states."""
    import onnx

    graph = onnx.load(path, load_external_data=False).graph

    def ports(values) -> list[dict]:  # noqa: ANN001
        return [{"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                 "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]} for v in values]

    return {"inputs": ports(graph.input), "outputs": ports(graph.output)}


def folder_bytes(directory: Path, graph: str) -> int:
    return sum(p.stat().st_size for p in directory.glob(graph + "*") if p.is_file())


def write_metadata(directory: Path, model: GlmAsrModel, processor: Processor, dtype: str, quantize: str | None, source: str) -> None:
    import onnx
    import onnxruntime

    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    prefix, suffix = prompt_text(1).split(AUDIO_TOKEN)
    token_id = processor.tokenizer.token_to_id
    metadata = {
        "format": FORMAT,
        "generated_by": "tools/export_onnx.py",
        "source": source,
        "config": model.config.to_dict(),
        "precision": {"dtype": np.dtype(dtype).name, "quantize": quantize},
        "special_ids": {"audio_token_id": model.config.audio_token_id, "pad_token_id": processor.pad_token_id,
                        "eos_token_id": list(model.config.text_config.eos_token_id),
                        **{t: token_id(t) for t in PROMPT_TOKENS}},
        "prompt": {"prefix": prefix, "audio_token": AUDIO_TOKEN, "suffix": suffix, "instruction": INSTRUCTION,
                   "pad_token": PAD_TOKEN, "padding": "left", "position_ids": "cumsum(attention_mask) - 1 (1 on padding)",
                   "audio_tokens": "per audio: sum over its windows of floor((valid mel frames + 1) / 8)"},
        "features": {"sampling_rate": SAMPLING_RATE, "n_fft": N_FFT, "hop_length": HOP_LENGTH, "window": "periodic hann",
                     "chunk_seconds": CHUNK_SECONDS, "frames_per_window": WINDOW_FRAMES,
                     "num_mel_bins": model.config.audio_config.num_mel_bins, "mel": "slaney scale, slaney norm, 0-8000 Hz",
                     "log": "log10(max(mel, 1e-10)), clamped to window max - 8, then (x + 4) / 4",
                     "valid_frames": "ceil(window samples / 160)"},
        "embeddings": {"file": EMBEDDINGS_FILE, "shape": list(model.language_model.model.embed_tokens.weight.shape),
                       "dtype": np.dtype(dtype).name},
        "graphs": {name: {**graph_ports(directory / name), "bytes": folder_bytes(directory, name),
                          "external_data": (directory / f"{name}.data").exists()} for name in (ENCODER_FILE, DECODER_FILE)},
        "opset": OPSET,
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                     "onnxscript": version("onnxscript"), "glm_asr": version("glm-asr")},
    }
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=1, ensure_ascii=False) + "\n")


def check_graphs(directory: Path) -> None:
    import onnx

    for name in (ENCODER_FILE, DECODER_FILE):
        try:
            onnx.checker.check_model(str(directory / name), full_check=False)  # a path, so external data is checked too
        except onnx.checker.ValidationError as e:
            raise RuntimeError(f"{directory / name}: onnx.checker: {str(e).splitlines()[0]}") from e


# The int8 format, chosen so that the graphs give the same numbers on every x86 CPU class. Weights are uint8
# (asymmetric, one scale and zero point per output channel), activations uint8 (dynamic, per tensor): onnxruntime
# multiplies uint8 by uint8 by widening both to int16 and summing pairs in int32 (vpmaddwd, or VNNI's vpdpwssd),
# which is exact. Its default, uint8 activations by int8 weights, sums pairs of products in int16 with
# saturation (vpmaddubsw) on every CPU without VNNI, so the same file agreed with fp32 at cosine 0.932 on an
# AVX2-only CPU against 0.993 with VNNI; onnxruntime's quantisation guide names uint8 weights (or 7-bit
# `reduce_range`, 0.988 there) as the remedy. uint8 x uint8 measured 0.995 / 0.998 (tiny_a / tiny_b, prefill
# logits) on that AVX2 CPU, and per-channel scales cost nothing measurable. docs/onnx.md has the table.
INT8_FORMAT = {
    "weights": "uint8, asymmetric, per output channel",
    "activations": "uint8, dynamic, per tensor",
    "products": "uint8 x uint8 summed exactly in int32 on every x86 class (no int16 saturation)",
    "quantizer": "onnxruntime.quantization.quantize_dynamic(weight_type=QUInt8, per_channel=True)",
}


def quantize_folder(src: Path, dst: Path, external: bool) -> None:
    """`dst` = the fp32 folder `src` with both graphs dynamically quantized to int8 (INT8_FORMAT) for every
    weight MatMul (attention's q @ k and p @ v are not quantized: MatMulConstBOnly)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst.mkdir(parents=True, exist_ok=True)
    for name in (EMBEDDINGS_FILE, TOKENIZER_FILE):
        shutil.copy(src / name, dst / name)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a warning to the root logger suggesting pre-processing
    try:
        for name in (ENCODER_FILE, DECODER_FILE):
            quantize_dynamic(src / name, dst / name, op_types_to_quantize=["MatMul"], weight_type=QuantType.QUInt8,
                             per_channel=True, use_external_data_format=external, extra_options={"MatMulConstBOnly": True})
    finally:
        root.setLevel(level)
    metadata = json.loads((src / METADATA_FILE).read_text())
    metadata["precision"]["quantize"] = "int8"
    metadata["precision"]["int8"] = INT8_FORMAT
    for name in (ENCODER_FILE, DECODER_FILE):
        metadata["graphs"][name].update(graph_ports(dst / name), bytes=folder_bytes(dst, name),
                                        external_data=(dst / f"{name}.data").exists())
    (dst / METADATA_FILE).write_text(json.dumps(metadata, indent=1, ensure_ascii=False) + "\n")


# --- verification ------------------------------------------------------------------------------------------


@dataclass
class Step:
    """One decoder.onnx call of the verification and PyTorch's answer to it."""

    case: str
    embeds: np.ndarray
    positions: np.ndarray
    mask: np.ndarray
    logits: np.ndarray
    presents: np.ndarray  # (2L, B, Hkv, P+T, Dh): keys of all layers, then values


@dataclass
class Expected:
    """PyTorch's outputs on the verification inputs, computed once, before the PyTorch model is freed:
    at full size the fp32 model (8.5 GB) and an onnxruntime session of the same weights do not both fit
    beside the exporter's working memory in 24 GB."""

    encoder: list[tuple[str, np.ndarray, np.ndarray]]  # case, log-mel windows, audio embeddings
    decoder: list[list[Step]]  # sequences of steps, each on the presents of the step before
    generate_args: tuple
    greedy_ids: torch.Tensor


def expected_outputs(reference: GlmAsrModel, processor: Processor, seed: int = 0, max_new_tokens: int = 16) -> Expected:
    """Fresh inputs whose shapes differ from the export examples (W = 1, 3; B = 1, 3; prefill, then single-
    and multi-token steps; left padding), and PyTorch fp32's outputs for them."""
    rng = np.random.default_rng(seed)
    M = reference.config.audio_config.num_mel_bins
    embedder = AudioEmbedder(reference)
    encoder = []
    for windows in (1, 3):
        audio = (rng.standard_normal(int((windows - 0.5) * CHUNK_SECONDS * SAMPLING_RATE)) * 0.1).astype(np.float32)
        features, _ = log_mel(audio, n_mels=M)
        with torch.inference_mode():
            encoder.append((f"W={windows}", features.numpy(), embedder(features).numpy()))

    t = reference.config.text_config
    table = reference.language_model.model.embed_tokens.weight.detach().float().numpy()
    decoder = []
    for B, T, steps in ((1, 9, (1, 4)), (3, 7, (1, 1, 3))):
        mask = np.ones((B, T), np.int64)
        mask[1:, : T // 3] = 0  # rows after the first are left-padded
        positions = prompt_positions(torch.from_numpy(mask)).numpy()
        cache = KVCache.empty(t, B, T + sum(steps), torch.float32, "cpu")
        offset, sequence = 0, []
        embeds = table[rng.integers(0, t.vocab_size, (B, T))]
        for n in (T, *steps):
            if offset:
                mask = np.concatenate([mask, np.ones((B, n), np.int64)], axis=1)
                positions = positions[:, -1:] + 1 + np.arange(n)[None, :]
                embeds = table[rng.integers(0, t.vocab_size, (B, n))]
            with torch.inference_mode():
                hidden = reference.language_model.model(torch.from_numpy(embeds), torch.from_numpy(positions),
                                                        torch.from_numpy(mask).bool(), cache, offset)
                logits = reference.language_model.lm_head(hidden).numpy()
            offset += n
            presents = np.concatenate([cache.k[:, :, :, :offset].numpy(), cache.v[:, :, :, :offset].numpy()])
            sequence.append(Step(f"B={B} T={n} P={offset - n}", embeds, positions, mask, logits, presents))
        decoder.append(sequence)

    # Greedy ids over two synthetic clips, one batch of two: the end-to-end agreement.
    clips = [demo_clip(3.0), (0.05 * np.random.default_rng(1).standard_normal(40_000)).astype(np.float32)]
    batch = processor(clips)
    args = (batch.input_ids, batch.attention_mask, batch.input_features, batch.input_features_mask)
    return Expected(encoder, decoder, args, greedy_generate(reference, *args, max_new_tokens=max_new_tokens))


def verify(onnx_model: OnnxModel, expected: Expected, variant: str) -> list[Check]:
    """Both graphs against PyTorch's stored outputs; the decoder runs on its own presents."""
    checks = [Check(ENCODER_FILE, variant, case, *errors(onnx_model.audio_windows(features), embeds))
              for case, features, embeds in expected.encoder]
    for sequence in expected.decoder:
        past = onnx_model.empty_past(sequence[0].embeds.shape[0])
        for step in sequence:
            logits, past = onnx_model.decode(step.embeds, step.positions, step.mask, past)
            checks.append(Check(DECODER_FILE, variant, f"{step.case} logits", *errors(logits, step.logits)))
            checks.append(Check(DECODER_FILE, variant, f"{step.case} presents", *errors(np.stack(past), step.presents)))
    return checks


def agreement(onnx_model: OnnxModel, expected: Expected) -> float:
    """Greedy token match rate with PyTorch fp32 over the stored clips."""
    ours, theirs = onnx_model.generate(*expected.generate_args, max_new_tokens=expected.greedy_ids.shape[1]), expected.greedy_ids
    n = min(ours.shape[1], theirs.shape[1])
    return float((ours[:, :n] == theirs[:, :n]).float().mean()) if n else 1.0


def speed(onnx_model: OnnxModel, steps: int = 8) -> tuple[float, float]:
    """Seconds for one 30 s window through the encoder and per decode step (B = 1, a 64-token past), warm."""
    M = onnx_model.config.audio_config.num_mel_bins
    features = np.zeros((1, M, WINDOW_FRAMES), np.float32)
    onnx_model.audio_windows(features)  # the first run allocates and plans
    started = time.perf_counter()
    onnx_model.audio_windows(features)
    encoder = time.perf_counter() - started
    D = onnx_model.config.text_config.hidden_size
    mask, positions = np.ones((1, 64), np.int64), np.arange(64)[None]
    _, past = onnx_model.decode(np.zeros((1, 64, D), np.float32), positions, mask, onnx_model.empty_past(1))
    started = time.perf_counter()
    for step in range(steps):
        mask = np.ones((1, 65 + step), np.int64)
        _, past = onnx_model.decode(np.zeros((1, 1, D), np.float32), np.array([[64 + step]]), mask, past)
    return encoder, (time.perf_counter() - started) / steps


# --- the folder --------------------------------------------------------------------------------------------


@dataclass
class Source:
    """What is exported. `build` drops `model` once PyTorch's expected outputs are computed."""

    model: GlmAsrModel | None  # fp32
    processor: Processor
    tokenizer_text: str  # written as tokenizer.json
    description: str


def load_source(args: argparse.Namespace) -> Source:
    if args.model is not None:
        model, processor = load_model_and_processor(args.model)
        return Source(model, processor, (Path(args.model) / TOKENIZER_FILE).read_text(encoding="utf-8"), str(Path(args.model).resolve()))
    model, processor = load_model_and_processor(None, random_preset=args.random)
    tokenizer_json = synthetic_tokenizer_json()
    Processor(Tokenizer(tokenizer_json, "synthetic tokenizer"))  # the written file must give the same processor
    return Source(model, processor, json.dumps(tokenizer_json, ensure_ascii=False), f"random {args.random} (seed 0)")


def build(staging: Path, args: argparse.Namespace, source: Source) -> list[str]:
    """Writes and verifies the whole folder in `staging`; returns the report lines."""
    model, processor = source.model, source.processor
    assert model is not None, "a Source is built once"
    dtype = DTYPES[args.dtype]
    exported = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
    external = "always" if args.external_data == "always" else "auto"
    np_dtype = np.float32 if dtype == torch.float32 else np.float16
    graph_dir = staging / "_fp32" if args.quantize else staging  # int8: quantized from an fp32 folder made first
    graph_dir.mkdir(parents=True, exist_ok=True)
    seconds = {
        ENCODER_FILE: export_graph(AudioEmbedder(exported), encoder_example(exported.config, dtype),
                                   encoder_ports(exported.config, np.dtype(np_dtype).name), graph_dir / ENCODER_FILE, external),
        DECODER_FILE: export_graph(DecoderWithPast(exported), decoder_example(exported.config, dtype),
                                   decoder_ports(exported.config, np.dtype(np_dtype).name), graph_dir / DECODER_FILE, external),
    }
    np.save(graph_dir / EMBEDDINGS_FILE, exported.language_model.model.embed_tokens.weight.detach().numpy().astype(np_dtype))
    (graph_dir / TOKENIZER_FILE).write_text(source.tokenizer_text, encoding="utf-8")
    write_metadata(graph_dir, model, processor, np_dtype, None, source.description)
    check_graphs(graph_dir)
    fp32_bytes = sum(p.numel() * 4 for p in model.parameters())
    expected = None if args.no_verify else expected_outputs(model, processor)
    # From here on only onnxruntime runs: free the PyTorch model so that one session at a time fits beside it.
    source.model = model = exported = None
    gc.collect()
    if args.quantize:
        quantize_folder(graph_dir, staging, external == "always" or fp32_bytes > EXTERNAL_DATA_BYTES)
        check_graphs(staging)
    lines, checks = [], []
    variant = args.quantize or args.dtype
    if expected is not None:
        # The fp32 graphs first when int8 is made from them: int8 is reported against fp32, and fp32 is gated.
        for name, directory in ((("fp32", graph_dir),) if args.quantize else ()) + ((variant, staging),):
            try:
                onnx_model = OnnxModel(directory, threads=args.threads or None)
            except ValueError as e:
                if name != "fp16" or "onnxruntime cannot load" not in str(e):
                    raise
                lines.append(f"fp16: not verified, this onnxruntime cannot run the fp16 graphs ({e})")
                continue
            try:
                checks += verify(onnx_model, expected, name)
            except Exception as e:  # onnxruntime's run errors derive from Exception only
                raise RuntimeError(f"running the exported graphs failed: {str(e).strip().splitlines()[0]}") from e
            bad = [c for c in checks if c.variant == "fp32" and not c.max_rel <= FP32_MAX_REL]
            if bad:
                raise RuntimeError(f"{bad[0].graph} disagrees with PyTorch at {bad[0].case}: max rel {bad[0].max_rel:.2e} > {FP32_MAX_REL:g}")
            encoder_s, step_s = speed(onnx_model)
            lines.append(f"{name}: greedy tokens equal to PyTorch fp32's {100 * agreement(onnx_model, expected):.1f}%, "
                         f"encoder {1000 * encoder_s:.1f} ms/window, decoder {1000 * step_s:.2f} ms/step (B=1, P=64)")
            del onnx_model
    sizes = {name: folder_bytes(staging, name) for name in (ENCODER_FILE, DECODER_FILE)}
    if args.quantize:
        fp32_sizes = {name: folder_bytes(graph_dir, name) for name in sizes}
        lines += [f"{name}: int8 {sizes[name] / 1e6:.2f} MB vs fp32 {fp32_sizes[name] / 1e6:.2f} MB" for name in sizes]
        shutil.rmtree(graph_dir)
    umask = os.umask(0)
    os.umask(umask)
    for path in staging.iterdir():  # onnx writes external data files 0600; make the folder's files alike
        path.chmod(0o666 & ~umask)
    return report(sizes, seconds, checks) + lines


def report(sizes: dict[str, int], seconds: dict[str, float], checks: list[Check]) -> list[str]:
    lines = [f"{'graph':19} {'MB':>9} {'export s':>8}  {'variant':7} {'check':26} {'max abs':>9} {'max rel':>9} {'1-min cos':>9}"]
    for name in sizes:
        first = True
        for c in [c for c in checks if c.graph == name] or [None]:
            head = f"{name:19} {sizes[name] / 1e6:9.2f} {seconds[name]:8.1f}" if first else " " * 38
            first = False
            lines.append(head if c is None else f"{head}  {c.variant:7} {c.case:26} {c.max_abs:9.2e} {c.max_rel:9.2e} {1 - c.min_cos:9.1e}")
    return lines


def write_folder(out: Path, force: bool, make: Callable[[Path], list[str]]) -> list[str]:
    """Runs make(staging) in a fresh folder next to `out`, then swaps it in; on any failure `out` is untouched."""
    if out.exists() and not force:
        raise ValueError(f"{out}: already exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    return replace_directory(out, make)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="export_onnx.py", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="checkpoint folder: config.json, model.safetensors, tokenizer.json")
    source.add_argument("--random", choices=["small", "full"], help="random weights of a preset and the synthetic tokenizer")
    parser.add_argument("--out", type=Path, required=True, help="the folder to write")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists (swapped in only when complete)")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES), help="weights and activations (fp16: for GPUs)")
    parser.add_argument("--quantize", choices=["int8"], default=None, help="dynamic int8 weights for every weight MatMul")
    parser.add_argument("--no-verify", action="store_true", help="skip the comparison with PyTorch (full size: minutes)")
    parser.add_argument("--external-data", choices=["auto", "always"], default="auto",
                        help=f"weights in <graph>.data: when over {EXTERNAL_DATA_BYTES:,} bytes (auto), or always")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads for verification (0: its default)")
    args = parser.parse_args(argv)
    if args.quantize and args.dtype != "fp32":
        parser.error("--quantize int8 quantizes fp32 graphs; leave --dtype at fp32")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.out.exists() and not args.force:  # before the minutes a load and export can take
            raise ValueError(f"{args.out}: already exists; pass --force to replace it")
        require(*EXPORT_MODULES, "onnxruntime")
        source = load_source(args)
        print(f"exporting {source.description} ({args.quantize or args.dtype}) to {args.out}", flush=True)
        lines = write_folder(args.out, args.force, lambda staging: build(staging, args, source))
    except KeyboardInterrupt:
        print("export_onnx: interrupted; nothing written", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError, ImportError) as e:
        print(f"export_onnx: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
