"""Speed and memory of glm-asr against transformers and against this machine's limits.

    python tools/bench.py                          # every system available here, full size, prints a table
    python tools/bench.py --json bench.json        # and one record per system and dtype
    python tools/bench.py --smoke                  # small preset, one repetition: what CI runs
    python tools/bench.py --bulk                   # corpus throughput, one file at a time and batched (tools/bulk_bench.py)
    python tools/bench.py --bulk --vad             # VAD cost per hour, time saved on a half-silent corpus (tools/vad_bench.py)
    python tools/bench.py --kernels                # single products by row count and form, the cpu.py rules' basis (tools/kernel_bench.py)

One deterministic random full-size checkpoint (release layout, bf16 safetensors, the synthetic GLM-size
tokenizer) is made once into --cache, and for the onnxruntime systems exported once next to it by
tools/export_onnx.py (fp32: 8.5 GB on disk, int8: 2.5 GB). Each system and dtype runs in a fresh process on
the same 30 s clip: load (wall time, peak RSS), audio encoder + projector per 30 s window, prefill of the
prompt, decode ms per token over --decode-tokens steps (eos ignored: the weights are random), end-to-end
real-time factor for a 30 s clip and 100 tokens. Medians of --reps repetitions; decode is the median
interval between consecutive tokens, each timestamped as it is chosen. With --rounds N the whole list of
systems runs N times in turn (ours, transformers, ours, transformers, ...) and each figure is the median
over the rounds, so a machine that drifts over the run (this project's does, 10-20% between hours) weighs
on every system alike. Every system is also reported as a speedup over transformers in the same dtype
(int8: over transformers fp32), the form the goals take. Each system's 100 end-to-end tokens
are compared with the first fp32 system's: fp32 systems should agree exactly, int8 ones report their drift.
The machine's memory bandwidth and matmul FLOP/s are measured in the same run, and decode and encoder times
are reported against them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# system -> the dtypes it runs. int8: ours = int8 decoder weights (glm_asr/runtime/quantize.py) and an fp32 audio path;
# int8+bf16audio / int8+int8audio: the same with the audio encoder and projector in bf16 / int8
# (quantize_audio); int4-ort: 4-bit decoder weights on onnxruntime's MatMulNBits inside our model
# (glm_asr/runtime/nbits.py); onnxruntime = the export's --quantize int8 (dynamic int8 MatMul weights in both
# graphs). bf16 ONNX graphs are not exported.
SYSTEMS = {"ours": ("fp32", "bf16", "int8", "int8+bf16audio", "int8+int8audio", "int4", "int4+bf16audio", "int4-ort", "int4-ort+int8audio"),
           "transformers": ("fp32", "bf16"), "onnxruntime": ("fp32", "int8")}
AUDIO_QUANT = {"int8+bf16audio": "bf16", "int8+int8audio": "int8", "int4+bf16audio": "bf16", "int4-ort+int8audio": "int8"}
NEVER = -1  # an eos id no token has: decoding runs the full length
# One utterance's pass, what a live stream pays after each utterance ends: its 30 s audio window (every window is
# padded to 3000 frames, SPEC.md), the prefill of its prompt and its tokens. 5 s and 10.6 s (the shared English
# clip's length); the tokens it writes are taken as 4 per second of speech (about the rate of conversational
# English in this tokenizer's words, and of Mandarin at one token a character): random weights never stop early.
UTTERANCES_S = (5.0, 10.6)
TOKENS_PER_SPEECH_S = 4


def peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM), which includes memory-mapped file pages it touched."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def median_time(fn, reps: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def best_time(fn, reps: int) -> float:  # noqa: ANN001 - a limit is the best the machine did, not the typical
    return min(median_time(fn, 1) for _ in range(reps))


# ---------------------------------------------------------------------------------------------------------
# the checkpoint


def make_checkpoint(directory: Path, preset: str) -> Path:
    """Writes config.json, model.safetensors (bf16, release layout, lm_head left out as tied) and
    tokenizer.json once; later runs reuse it."""
    import torch
    from safetensors.torch import save_file

    from conformance.harness.tokenizer_fixture import build_bpe_tokenizer_json
    from glm_asr.transcription.presets import FIRST_SPECIAL_ID, PRESETS, random_model

    if (directory / "model.safetensors").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    model = random_model(preset, dtype=torch.bfloat16, seed=1234)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "language_model.lm_head.weight"}
    (directory / "config.json").write_text(json.dumps(PRESETS[preset].to_dict(), indent=2))
    build_bpe_tokenizer_json(directory / "tokenizer.json", FIRST_SPECIAL_ID)
    save_file(state, directory / "model.safetensors.tmp")
    (directory / "model.safetensors.tmp").rename(directory / "model.safetensors")
    return directory


def clip_30s():  # noqa: ANN201
    from conformance.harness.cases import _speech_like

    return _speech_like(30.0, seed=5).astype("float32")


# ---------------------------------------------------------------------------------------------------------
# one system in one process


def worker(system: str, dtype_name: str, checkpoint: Path, reps: int, decode_tokens: int) -> dict:
    import torch

    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32  # int8: fp32 activations
    torch.manual_seed(0)
    if system == "transformers":  # its import is not part of the load time, as ours is imported above
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import transformers  # noqa: F401
    if system == "onnxruntime":
        import onnxruntime  # noqa: F401
    start = time.perf_counter()
    if system == "ours":
        run = _ours(checkpoint, dtype, quantize=dtype_name.split("+")[0] if dtype_name.startswith("int") else None, audio=AUDIO_QUANT.get(dtype_name))
    elif system == "transformers":
        run = _transformers(checkpoint, dtype)
    else:
        run = _onnxruntime(onnx_folder(checkpoint, dtype_name))
    load_s = time.perf_counter() - start
    load_rss = peak_rss_bytes()

    from glm_asr import Processor

    processor = Processor.from_dir(checkpoint)
    batch = processor([clip_30s()])
    features = batch.input_features.to(torch.bfloat16 if dtype_name == "bf16" or AUDIO_QUANT.get(dtype_name) == "bf16" else dtype)
    with torch.inference_mode():
        encoder_s = median_time(lambda: run["audio"](features, batch.input_features_mask), reps)
        # Each generated token is timestamped as it is chosen (a callback, or transformers' streamer): the first
        # after the audio path and prefill, the others one decode step apart. Differencing whole runs instead
        # would bury the steps in the audio path's run-to-run noise.
        first, steps = [], []
        for _ in range(reps):
            stamps, _ = run["generate"](batch, decode_tokens + 1)
            first.append(stamps[0])
            steps += [b - a for a, b in zip(stamps, stamps[1:])]
        prefill_s = statistics.median(first) - encoder_s  # time to the first token minus its audio path
        decode_ms = statistics.median(steps) * 1e3
        # End to end: features from the raw samples, the audio path, prefill and 100 generated tokens.
        audio = clip_30s()
        tokens = []

        def end_to_end() -> None:
            tokens[:] = run["generate"](processor([audio]), 100)[1][0].tolist()

        e2e_s = median_time(end_to_end, 1)
        utterances = {}
        for seconds in UTTERANCES_S:
            utterance, n = processor([audio[: round(seconds * 16000)]]), math.ceil(seconds * TOKENS_PER_SPEECH_S)
            utterances[str(seconds)] = {"pass_s": median_time(lambda: run["generate"](utterance, n), reps), "tokens": n,
                                        "prompt_tokens": int(utterance.input_ids.shape[1])}
        rows = {f"decode_step_ms_{n}rows": run["step_ms"](n, int(batch.input_ids.shape[1])) for n in (1, 8)} if "step_ms" in run else {}
    from glm_asr.runtime import cpu

    return {
        "system": system,
        "dtype": dtype_name,
        "threads": torch.get_num_threads(),
        "cpu": cpu_record(cpu) if system == "ours" else {"model": cpu.features().model, "class": cpu.features().cpu_class},
        "load_s": load_s,
        "load_peak_rss_bytes": load_rss,
        "encoder_s_per_window": encoder_s,
        "prompt_tokens": int(batch.input_ids.shape[1]),
        "prefill_s": prefill_s,
        "decode_ms_per_token": decode_ms,
        "rtf_30s_100tok": e2e_s / 30.0,
        "tokens": tokens,  # the end-to-end run's 100 greedy ids: agreement between systems
        "utterances": utterances,
        **rows,
    }


from glm_asr import load_model  # noqa: E402
from glm_asr.model.decoder import KVCache  # noqa: E402
from glm_asr.transcription.generate import greedy_generate  # noqa: E402
from glm_asr.runtime.quantize import quantize_audio, quantize_decoder  # noqa: E402


def cpu_record(cpu) -> dict:  # noqa: ANN001
    """The CPU, its features and every choice glm_asr/runtime/cpu.py made, with the reasons: a figure holds on its class."""
    import dataclasses

    choices = cpu.choices()
    return {"model": cpu.features().model, "class": cpu.features().cpu_class, "features": dataclasses.asdict(cpu.features()),
            "choices": {k: v for k, v in dataclasses.asdict(choices).items() if k != "reasons"}, "reasons": choices.reasons}


def _ours(checkpoint: Path, dtype, quantize: str | None, audio: str | None = None) -> dict:  # noqa: ANN001
    import torch

    # int8 quantises from the stored bf16 (exactly the fp32 model's int8 weights), as glm-asr transcribe does
    model = quantize_decoder(load_model(checkpoint, dtype=None), quantize) if quantize else load_model(checkpoint, dtype=dtype)
    if audio:
        model = quantize_audio(model, audio)

    def generate(batch, n: int) -> tuple[list[float], torch.Tensor]:  # noqa: ANN001
        stamps, start = [], time.perf_counter()
        ids = greedy_generate(model, batch.input_ids, batch.attention_mask, batch.input_features, batch.input_features_mask,
                              max_new_tokens=n, eos_token_id=(NEVER,), on_token=lambda _: stamps.append(time.perf_counter() - start))
        return stamps, ids

    def step_ms(rows: int, context: int, n: int = 8) -> float:
        """Median ms of one cached decode step of `rows` rows over `context` cached positions: 1 and 8 rows side
        by side show what batched decoding (serving, corpus work) costs per step against batch 1."""
        config = model.config.text_config
        dtype = model.language_model.model.embed_tokens.weight.dtype
        cache = KVCache.empty(config, rows, context + n, dtype, "cpu")
        cache.k.normal_(), cache.v.normal_()  # what the keys hold does not change the cost
        key_valid = torch.ones(rows, context + n, dtype=torch.bool)
        embeds = model.language_model.model.embed_tokens(torch.arange(rows)[:, None])
        times = []
        for s in range(n):
            start = time.perf_counter()
            model.decode(embeds, torch.full((rows, 1), context + s), key_valid[:, : context + s + 1], cache, context + s, last_only=True)
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:]) * 1e3  # the first step warms up

    return {"audio": model.embed_audio, "generate": generate, "step_ms": step_ms}


def _transformers(checkpoint: Path, dtype) -> dict:  # noqa: ANN001
    from transformers import GlmAsrForConditionalGeneration

    model = GlmAsrForConditionalGeneration.from_pretrained(checkpoint, dtype=dtype).eval()

    class Stamps:  # a transformers streamer: put() gets the prompt first, then each new token as it is chosen
        def __init__(self) -> None:
            self.start, self.stamps, self.prompt_seen = time.perf_counter(), [], False

        def put(self, value) -> None:  # noqa: ANN001
            if self.prompt_seen:
                self.stamps.append(time.perf_counter() - self.start)
            self.prompt_seen = True

        def end(self) -> None:
            pass

    def generate(batch, n: int) -> tuple[list[float], torch.Tensor]:  # noqa: ANN001
        streamer = Stamps()
        ids = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             input_features=batch.input_features.to(dtype), input_features_mask=batch.input_features_mask,
                             do_sample=False, max_new_tokens=n, min_new_tokens=n, eos_token_id=[NEVER], pad_token_id=0, streamer=streamer)
        return streamer.stamps, ids[:, batch.input_ids.shape[1]:]

    def audio(features, mask):  # noqa: ANN001, ANN202
        return model.get_audio_features(features, mask).pooler_output

    return {"audio": audio, "generate": generate}


def _onnxruntime(folder: Path) -> dict:
    import torch

    from glm_asr import OnnxModel

    model = OnnxModel(folder, threads=torch.get_num_threads())  # as many threads as the PyTorch systems

    def generate(batch, n: int) -> tuple[list[float], torch.Tensor]:  # noqa: ANN001
        stamps, start = [], time.perf_counter()
        ids = model.generate(batch.input_ids, batch.attention_mask, batch.input_features, batch.input_features_mask,
                             max_new_tokens=n, eos_token_id=(NEVER,), on_token=lambda _: stamps.append(time.perf_counter() - start))
        return stamps, ids

    return {"audio": model.embed_audio, "generate": generate}


def onnx_folder(checkpoint: Path, dtype_name: str) -> Path:
    return checkpoint.parent / f"{checkpoint.name}-onnx-{dtype_name}"


def export_onnx_folder(checkpoint: Path, dtype_name: str) -> Path:
    """The checkpoint exported by tools/export_onnx.py, once (verification is the exporter's and its tests' job)."""
    folder = onnx_folder(checkpoint, dtype_name)
    if not folder.exists():
        command = [sys.executable, str(ROOT / "tools" / "export_onnx.py"), "--model", str(checkpoint), "--out", str(folder), "--no-verify"]
        print(f"bench: exporting {checkpoint.name} to ONNX ({dtype_name}), once", file=sys.stderr, flush=True)
        subprocess.run(command + (["--quantize", "int8"] if dtype_name == "int8" else []), check=True, capture_output=True)
    return folder


# ---------------------------------------------------------------------------------------------------------
# this machine's limits


def machine_limits(size_mb: int = 1024) -> dict:
    """Memory bandwidth (GB/s) and matmul GFLOP/s at the benchmarks' threads, each the best that any kernel on
    this machine reaches, so the limit is the hardware's and not one library's:
    - bandwidth: a large fp32 matrix-vector product (the decode access pattern) through MKL (F.linear),
      oneDNN and OpenBLAS (numpy's; glm_asr/runtime/products.py uses both);
    - GFLOP/s: a 512-token linear layer 2048 -> 2048 (the shape models run), fp32 through MKL and oneDNN,
      bf16 through PyTorch's default path and widened to fp32 in oneDNN (what glm_asr/runtime/products.py does on CPUs
      without native bf16, where it is the fastest way to a bf16 GEMM's result).
    Each kernel's own figure is kept in the record too."""
    import torch
    import torch.nn.functional as F

    from glm_asr.runtime.dispatch import ONEDNN as onednn
    from glm_asr.runtime.dispatch import widened_linear
    from glm_asr.runtime.products import onednn_linear, openblas_linear

    rows = size_mb * 2**20 // 4 // 4096
    weight = torch.randn(rows, 4096)
    vector = torch.randn(1, 4096)
    gemv = {"mkl": lambda: F.linear(vector, weight), "openblas": lambda: openblas_linear(vector, weight)}
    if onednn:
        gemv["onednn"] = lambda: onednn_linear(vector, weight)
    result = {"threads": torch.get_num_threads()}
    for name, fn in gemv.items():
        fn()
        result[f"bandwidth_gbs_{name}"] = weight.numel() * 4 / best_time(fn, 7) / 1e9
    result["bandwidth_gbs"] = max(result[f"bandwidth_gbs_{name}"] for name in gemv)
    del weight
    for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        x, w = torch.randn(1, 512, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        kernels = {"mkl": lambda: F.linear(x, w)}
        if onednn and dtype == torch.float32:
            kernels["onednn"] = lambda: onednn_linear(x, w)
        if onednn and dtype == torch.bfloat16:
            kernels["onednn_fp32"] = lambda: widened_linear(x, w)
        for name, fn in kernels.items():
            fn()
            result[f"matmul_gflops_{dtype_name}_{name}"] = 2 * 512 * 2048 * 2048 / best_time(fn, 3) / 1e9
        result[f"matmul_gflops_{dtype_name}"] = max(result[f"matmul_gflops_{dtype_name}_{name}"] for name in kernels)
    result.update(int8_gemm_rates())
    return result


def int8_gemm_rates() -> dict:
    """GOP/s of a 512-token dynamically quantised int8 linear layer 2048 -> 2048 on each quantised engine (what
    the int8 audio path and int8 prefill run), and the best of them."""
    import warnings

    import torch

    from glm_asr.runtime.quantize import Int8Linear

    x, layer = torch.randn(1, 512, 2048), torch.nn.Linear(2048, 2048)
    result = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for engine in ("x86", "fbgemm", "onednn"):
            if engine not in torch.backends.quantized.supported_engines:
                continue
            q = Int8Linear(layer, engine)
            q(x)
            result[f"matmul_gops_int8_{engine}"] = 2 * 512 * 2048 * 2048 / best_time(lambda: q(x), 3) / 1e9
    result["matmul_gops_int8"] = max(result.values()) if result else float("nan")
    return result


def model_costs(preset: str, prompt_tokens: int) -> dict:
    """Bytes read per decoded token (every decoder weight and the LM head once) and the FLOPs of one audio window,
    by kind: the linear layers (encoder and projector), attention over the window's 1500 frames, the convolutions."""
    from glm_asr.transcription.presets import PRESETS

    c = PRESETS[preset]
    a, t = c.audio_config, c.text_config
    frames = 1500
    layer = 4 * a.hidden_size * a.hidden_size + 2 * a.hidden_size * a.intermediate_size  # q k v o, fc1 fc2
    products = 2 * frames * a.num_hidden_layers * layer
    products += 2 * 375 * (a.intermediate_size * 2 * t.hidden_size + 2 * t.hidden_size * t.hidden_size)  # projector
    attention = 2 * a.num_hidden_layers * 2 * frames * frames * a.hidden_size  # q kᵀ and p v
    convolutions = 2 * 3000 * 3 * a.num_mel_bins * a.hidden_size + 2 * frames * 3 * a.hidden_size**2
    kv = t.num_key_value_heads * t.head_dim
    per_layer = t.hidden_size * (t.num_attention_heads * t.head_dim * 2 + 2 * kv) + 3 * t.hidden_size * t.intermediate_size
    decoder_params = t.num_hidden_layers * per_layer + t.vocab_size * t.hidden_size  # + the LM head
    return {"decoder_params_per_token": decoder_params,
            "encoder_flops_per_window": {"products": products, "attention": attention, "convolutions": convolutions}}


# The arithmetic each part of the audio path runs in, by the audio path's precision (bf16, AUDIO_QUANT's, or
# fp32: ours int8 and int4 keep an fp32 audio path); with int8 audio only the linear layers are int8 (attention and the convolutions stay fp32), as in onnxruntime's
# int8 graphs (dynamic quantisation makes int8 only the MatMuls with a weight); bf16 audio runs all three in bf16.
AUDIO_ARITHMETIC = {
    "fp32": {"products": "fp32", "attention": "fp32", "convolutions": "fp32"},
    "bf16": {"products": "bf16", "attention": "bf16", "convolutions": "bf16"},
    "int8": {"products": "int8", "attention": "fp32", "convolutions": "fp32"},
}


def audio_limit_s(flops: dict[str, int], arithmetic: dict[str, str], limits: dict) -> float:
    """The audio path's limit: each part's FLOPs at the rate this machine reaches in the arithmetic it runs in."""
    rate = {"int8": limits["matmul_gops_int8"], "fp32": limits["matmul_gflops_fp32"], "bf16": limits["matmul_gflops_bf16"]}
    return sum(n / (rate[arithmetic[part]] * 1e9) for part, n in flops.items())


# ---------------------------------------------------------------------------------------------------------
# the driver


def tokenizer_speed(checkpoint: Path) -> dict:
    """Encoding 1 MB of mixed English / Chinese text: ours against the tokenizers library."""
    from glm_asr import Tokenizer

    import random

    rng = random.Random(0)  # varied text, so neither side lives off a cache of repeated words
    words = "the of and to in is was for on that with as by at from speech audio model token window".split()
    pieces = []
    while sum(len(p.encode()) for p in pieces) < 1_000_000:
        if rng.random() < 0.7:
            pieces.append(" ".join(rng.choice(words) + str(rng.randrange(1000)) * (rng.random() < 0.1) for _ in range(12)) + ". ")
        else:
            pieces.append("".join(chr(rng.randrange(0x4E00, 0x9FA5)) for _ in range(12)) + "，")
    text = "".join(pieces)
    ours = Tokenizer.from_file(checkpoint / "tokenizer.json")
    ours_s = median_time(lambda: ours.encode(text), 3)
    record = {"tokenizer_bytes": len(text.encode()), "tokenizer_ours_s": ours_s}
    try:
        from tokenizers import Tokenizer as Reference
    except ImportError:
        return record
    reference = Reference.from_file(str(checkpoint / "tokenizer.json"))
    record["tokenizer_reference_s"] = median_time(lambda: reference.encode(text, add_special_tokens=False), 3)
    record["tokenizer_ratio"] = ours_s / record["tokenizer_reference_s"]
    return record


def failure_line(stderr: str, log: Path) -> str:
    """The line that says why a subprocess failed (the last `...Error: ...` line, not a warning printed
    before it), with the whole stderr kept in `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(stderr)
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()] or ["no output"]
    errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception|error)\b", ln) or ln.startswith("glm-asr: error")]
    return f"{(errors or lines)[-1]} (full stderr: {log})"


def runnable(system: str, dtype: str, checkpoint: Path) -> bool:
    """Whether a system can run here; onnxruntime's folder is exported on the first call."""
    if system == "onnxruntime":
        try:
            export_onnx_folder(checkpoint, dtype)
        except subprocess.CalledProcessError as e:
            why = failure_line(e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr or "",
                               checkpoint.parent / f"export-{dtype}.log")
            print(f"bench: {system} {dtype} skipped: the export failed: {why}", file=sys.stderr)
            return False
    return True


def run_worker(system: str, dtype: str, checkpoint: Path, reps: int, decode_tokens: int) -> dict | None:
    """One system in one dtype, in a fresh process; None, said on stderr, when it cannot run here."""
    command = [sys.executable, __file__, "--worker", system, dtype, "--checkpoint", str(checkpoint),
               "--reps", str(reps), "--decode-tokens", str(decode_tokens)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        print(f"bench: {system} {dtype} skipped: {failure_line(done.stderr, checkpoint.parent / f'{system}-{dtype}.log')}", file=sys.stderr)
        return None
    print(f"  done: {system} {dtype}", file=sys.stderr, flush=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    if "--bulk" in sys.argv[1:] and "--vad" in sys.argv[1:]:  # its own options: tools/vad_bench.py
        import vad_bench

        return vad_bench.main([a for a in sys.argv[1:] if a not in ("--bulk", "--vad")])
    if "--kernels" in sys.argv[1:]:  # its own options: tools/kernel_bench.py
        import kernel_bench

        return kernel_bench.main([a for a in sys.argv[1:] if a != "--kernels"])
    if "--bulk" in sys.argv[1:]:  # its own options: tools/bulk_bench.py
        import bulk_bench

        return bulk_bench.main([a for a in sys.argv[1:] if a != "--bulk"])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bulk", action="store_true", help="corpus throughput instead; see `bench.py --bulk --help`")
    parser.add_argument("--kernels", action="store_true", help="single products by row count instead; see `bench.py --kernels --help`")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--dtypes", default="fp32,bf16,int8", help="each system runs those of these it supports")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="run every system this many times in turn; medians over the rounds")
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "glm-asr-bench")
    parser.add_argument("--smoke", action="store_true", help="the small preset, one repetition, 16 tokens: a quick check that it runs")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", nargs=2, metavar=("SYSTEM", "DTYPE"), help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.checkpoint, args.reps, args.decode_tokens)))
        return 0

    preset = "small" if args.smoke else "full"
    reps, decode_tokens = (1, 16) if args.smoke else (args.reps, args.decode_tokens)
    checkpoint = make_checkpoint(args.cache / f"{preset}-bf16", preset)
    systems = [s for s in args.systems.split(",") if s]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        print(f"bench: unknown system {', '.join(unknown)}; expected some of {', '.join(SYSTEMS)}", file=sys.stderr)
        return 2
    if args.rounds < 1:
        print(f"bench: --rounds {args.rounds}: expected 1 or more", file=sys.stderr)
        return 2
    size_mb = 64 if args.smoke else 1024
    measured_limits = [machine_limits(size_mb)]
    pairs = [(system, dtype) for system in systems for dtype in args.dtypes.split(",") if dtype in SYSTEMS[system]]
    pairs = [(system, dtype) for system, dtype in pairs if runnable(system, dtype, checkpoint)]  # exports once, before any round
    runs: dict[tuple[str, str], list[dict]] = {}  # (system, dtype) -> one record per round, in run order
    for _ in range(args.rounds):
        for system, dtype in pairs:
            record = run_worker(system, dtype, checkpoint, reps, decode_tokens)
            if record is not None:
                runs.setdefault((system, dtype), []).append(record)
        measured_limits.append(machine_limits(size_mb))  # once more after each round: the best of them is the limit
    records = [merge_rounds(rounds) for rounds in runs.values()]
    for record in records:
        costs = model_costs(preset, record["prompt_tokens"])
        dtype = record["dtype"]
        # int4: half a byte a weight plus a bf16 scale and zero per group of 128 (4 bytes / 128 weights);
        # int4-ort: half a byte plus an fp32 scale per block of 32 (runtime/nbits.py)
        record["decode_bytes_per_token"] = costs["decoder_params_per_token"] * (
            1 if dtype.startswith("int8") else 0.5 + 4 / 32 if dtype.startswith("int4-ort") else 0.5 + 4 / 128 if dtype.startswith("int4")
            else {"fp32": 4, "bf16": 2}[dtype])
    limits = best_limits(measured_limits, records)
    for record in records:
        costs = model_costs(preset, record["prompt_tokens"])
        dtype = record["dtype"]
        bytes_per_token = record["decode_bytes_per_token"]
        record.update(limits)
        record["decode_limit_ms_per_token"] = bytes_per_token / (limits["bandwidth_gbs"] * 1e9) * 1e3
        record["decode_vs_limit"] = record["decode_ms_per_token"] / record["decode_limit_ms_per_token"]
        audio = "bf16" if dtype == "bf16" else AUDIO_QUANT.get(dtype, "fp32")  # the arithmetic of the audio path's products
        if record["system"] == "onnxruntime" and dtype == "int8":
            audio = "int8"
        arithmetic = AUDIO_ARITHMETIC[audio]
        record["encoder_arithmetic"] = arithmetic
        record["encoder_limit_s"] = audio_limit_s(costs["encoder_flops_per_window"], arithmetic, limits)
        record["encoder_vs_limit"] = record["encoder_s_per_window"] / record["encoder_limit_s"]
        for u in record.get("utterances", {}).values():
            # its window, its prompt's products at the decoder's arithmetic rate (or one read of the weights, if
            # that takes longer), and its tokens at the weight-read limit
            rate = limits["matmul_gops_int8"] if dtype.startswith("int") else limits[f"matmul_gflops_{'bf16' if dtype == 'bf16' else 'fp32'}"]
            prefill = max(2 * costs["decoder_params_per_token"] * u["prompt_tokens"] / (rate * 1e9), record["decode_limit_ms_per_token"] / 1e3)
            u["limit_s"] = record["encoder_limit_s"] + prefill + u["tokens"] * record["decode_limit_ms_per_token"] / 1e3
            u["vs_limit"] = u["pass_s"] / u["limit_s"]
    add_speedups(records)
    # Greedy-token agreement with the first fp32 system run (ours, when it ran; else the first system): fp32
    # systems should agree exactly; the others report how far they drift. Random weights: the ids mean
    # nothing, equality does.
    anchor = next((r for r in records if r["dtype"] == "fp32"), records[0] if records else None)
    for r in records:
        same = sum(a == b for a, b in zip(r["tokens"], anchor["tokens"]))
        r["tokens_equal_to"] = f"{anchor['system']} {anchor['dtype']}"
        r["tokens_equal_fraction"] = same / max(len(anchor["tokens"]), 1)
    tokenizer = tokenizer_speed(checkpoint)
    print_table(records, limits, tokenizer, preset)
    if args.json:
        from glm_asr.runtime import cpu

        machine = {**limits, "cpu": cpu_record(cpu)}
        args.json.write_text(json.dumps({"records": records, "machine": machine, "tokenizer": tokenizer}, indent=2) + "\n")
    return 0


def best_limits(measured: list[dict], records: list[dict]) -> dict:
    """The run's limits: each figure the best of the measurements taken through the run (a limit taken once, on a
    machine that was busy then, made every "x limit" wrong), and the bandwidth never below what a system's decode
    reached in the run (its weight bytes a token over its time a token; `bandwidth_source` says which)."""
    limits = {k: max(m[k] for m in measured) if isinstance(measured[0][k], float) else measured[0][k] for k in measured[0]}
    limits["limit_measurements"] = len(measured)
    limits["bandwidth_source"] = "measured"
    for r in records:
        reached = r["decode_bytes_per_token"] / (r["decode_ms_per_token"] / 1e3) / 1e9
        if reached > limits["bandwidth_gbs"]:
            limits["bandwidth_gbs"], limits["bandwidth_source"] = reached, f"reached by {r['system']} {r['dtype']} decode"
    return limits


TIMINGS = ("load_s", "load_peak_rss_bytes", "encoder_s_per_window", "prefill_s", "decode_ms_per_token", "rtf_30s_100tok",
           "decode_step_ms_1rows", "decode_step_ms_8rows")  # the last two: ours only


def merge_rounds(rounds: list[dict]) -> dict:
    """One record from a system's rounds: each timing the median over them, every round's value kept in
    `per_round`; the rest (tokens included) from the first round."""
    record = dict(rounds[0], rounds=len(rounds))
    if len(rounds) > 1:
        record["per_round"] = {key: [r[key] for r in rounds] for key in TIMINGS if key in rounds[0]}
        record.update({key: statistics.median(values) for key, values in record["per_round"].items()})
    return record


# speedup key -> the timing it compares (baseline / ours: above 1 is faster than transformers)
SPEEDUPS = {"decode": "decode_ms_per_token", "audio_path": "encoder_s_per_window", "prefill": "prefill_s", "end_to_end": "rtf_30s_100tok"}


def add_speedups(records: list[dict]) -> None:
    """`speedup_vs_transformers` on every other record: against transformers in the same dtype, or in fp32
    for int8 (whose activations are fp32); absent when that transformers run is not in this run."""
    baselines = {r["dtype"]: r for r in records if r["system"] == "transformers"}
    for r in records:
        baseline = baselines.get("fp32" if r["dtype"].startswith(("int8", "int4")) else r["dtype"])
        if r["system"] == "transformers" or baseline is None:
            continue
        r["speedup_vs"] = f"transformers {baseline['dtype']}"
        r["speedup_vs_transformers"] = {name: baseline[key] / r[key] for name, key in SPEEDUPS.items()}


def print_table(records: list[dict], limits: dict, tokenizer: dict, preset: str) -> None:
    kernels = ", ".join(f"{k.rsplit('_', 1)[1]} {v:.1f}" for k, v in limits.items() if k.startswith("bandwidth_gbs_"))
    from glm_asr.runtime import cpu

    print(f"CPU: {cpu.features().model}, class {cpu.features().cpu_class}; choices: bf16 "
          f"{'native' if cpu.rules().native_bf16 else 'widened'}, decode matvec {cpu.choices().matvec}, "
          f"int8 activations {'7' if cpu.rules().int8_reduce_range else '8'}-bit")
    print(f"preset {preset}; machine, {limits['threads']} threads: {limits['bandwidth_gbs']:.1f} GB/s matrix-vector bandwidth "
          f"({kernels}), {limits['matmul_gflops_fp32']:.0f} / {limits['matmul_gflops_bf16']:.0f} GFLOP/s fp32 / bf16 matmul, "
          f"{limits['matmul_gops_int8']:.0f} GOP/s int8; the best of {limits['limit_measurements']} measurements through the run, "
          f"bandwidth {limits['bandwidth_source']}")
    header = (f"{'system':12} {'dtype':14} {'load s':>6} {'load RSS GB':>11} {'audio s/win':>11} {'x limit':>7} {'prefill s':>9} "
              f"{'decode ms/tok':>13} {'x limit':>7} {'RTF 30s+100':>11} {'same ids':>8}")
    print(header)
    print("-" * len(header))
    for r in records:
        print(f"{r['system']:12} {r['dtype']:14} {r['load_s']:6.1f} {r['load_peak_rss_bytes'] / 1e9:11.2f} "
              f"{r['encoder_s_per_window']:11.2f} {r['encoder_vs_limit']:7.2f} {r['prefill_s']:9.2f} "
              f"{r['decode_ms_per_token']:13.1f} {r['decode_vs_limit']:7.2f} {r['rtf_30s_100tok']:11.3f} "
              f"{100 * r['tokens_equal_fraction']:7.0f}%")
    if records:
        print(f"same ids: the end-to-end run's 100 greedy ids against {records[0]['tokens_equal_to']}'s")
        rounds = records[0]["rounds"]
        if rounds > 1:
            print(f"each figure: the median of {rounds} rounds, the systems run in turn")
    for r in records:
        if "speedup_vs_transformers" in r:
            x = r["speedup_vs_transformers"]
            print(f"{r['system']} {r['dtype']} against {r['speedup_vs']}: decode {x['decode']:.2f}x, audio path {x['audio_path']:.2f}x, "
                  f"prefill {x['prefill']:.2f}x, end to end {x['end_to_end']:.2f}x faster")
    for r in records:
        for seconds, u in r.get("utterances", {}).items():
            print(f"{r['system']} {r['dtype']}: one {seconds} s utterance's pass (its window, a {u['prompt_tokens']}-token prefill, "
                  f"{u['tokens']} tokens) {u['pass_s']:.2f} s, {u['vs_limit']:.2f}x its limit {u['limit_s']:.2f} s")
    for r in records:
        if "decode_step_ms_8rows" in r:
            one, eight = r["decode_step_ms_1rows"], r["decode_step_ms_8rows"]
            print(f"{r['system']} {r['dtype']}: a decode step of 8 rows {eight:.1f} ms, of 1 row {one:.1f} ms ({eight / one:.2f}x), "
                  f"over a {r['prompt_tokens']}-token cache")
    if "tokenizer_ratio" in tokenizer:
        print(f"tokenizer, {tokenizer['tokenizer_bytes'] / 1e6:.1f} MB of text: ours {tokenizer['tokenizer_ours_s']:.2f} s, "
              f"tokenizers {tokenizer['tokenizer_reference_s']:.2f} s ({tokenizer['tokenizer_ratio']:.1f}x)")


if __name__ == "__main__":
    sys.exit(main())
