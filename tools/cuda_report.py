#!/usr/bin/env python3
"""The README's CUDA table in one run, the day a GPU is lent: parity of every stage, then speed.

    python tools/cuda_report.py --out docs/cuda.md           # on a machine with a GPU (tox -e cuda-report)
    python tools/cuda_report.py --dry-run --out /tmp/cuda.md # here: the same script on the CPU, small preset

1. Parity: every golden case through our model on the device, TF32 off (matmuls and cuDNN convolutions),
   every stage against the stored reference with the conformance tolerances (conformance/harness/runner.py),
   fp32 and bf16; then the onnxruntime-cuda tests of tests/test_onnx.py where that provider is installed.
2. Speed: full-size random weights (bf16, release layout, made once by tools/bench.py's make_checkpoint), a
   30 s clip and 100 new tokens, batch 1 and 8: decode ms per token and end to end, ours against transformers
   in bf16 where transformers is installed. Timings synchronise the device before each clock read.

Prints the markdown it writes; exit 1 when a parity case fails. `--dry-run` swaps the device for the CPU and
the full shape for the small preset with 8 tokens, so that every line of the script runs on any machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench import NEVER, clip_30s, make_checkpoint  # noqa: E402

from conformance.harness import golden, runner  # noqa: E402
from glm_asr import GlmAsrConfig, Processor, load_model  # noqa: E402
from glm_asr.transcription.generate import greedy_generate  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def parity(device: str) -> tuple[list[str], bool]:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    manifest = golden.load_manifest()
    rows, ok = ["| case | stages | worst max_rel | verdict |", "|---|---|---|---|"], True
    for case_id in sorted(manifest["cases"]):
        if case_id.startswith("full/"):
            continue
        measured = runner.run_case(case_id, device, golden.ROOT, manifest)
        failing = [r for r in measured if not r.ok]
        worst = max((r.metrics.max_rel for r in measured if r.metrics.max_rel == r.metrics.max_rel), default=0.0)
        ok &= not failing
        rows.append(f"| {case_id} | {len(measured)} | {worst:.1e} | {'pass' if not failing else 'FAIL at ' + failing[0].stage} |")
    return rows, ok


def onnx_cuda() -> str:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime-cuda: CUDAExecutionProvider not installed; skipped"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda", str(ROOT / "tests" / "test_onnx.py")],
                         capture_output=True, text=True, cwd=ROOT)
    return f"onnxruntime-cuda (tests/test_onnx.py -k cuda): {run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-300:]}"


def speed(system: str, checkpoint: Path, device: str, batch: int, tokens: int) -> dict:
    processor = Processor.from_dir(checkpoint, GlmAsrConfig.from_file(checkpoint / "config.json").audio_config.num_mel_bins)
    inputs = processor([clip_30s()] * batch).to(device)
    if system == "ours":
        model = load_model(checkpoint, dtype=torch.bfloat16, device=device)

        def generate(on_token):  # noqa: ANN001, ANN202
            return greedy_generate(model, inputs.input_ids, inputs.attention_mask, inputs.input_features, inputs.input_features_mask,
                                   max_new_tokens=tokens, eos_token_id=(NEVER,), on_token=on_token)
    else:
        from transformers import GlmAsrForConditionalGeneration

        model = GlmAsrForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.bfloat16).to(device).eval()

        class Streamer:
            def __init__(self, on_token) -> None:  # noqa: ANN001
                self.on_token, self.prompt_seen = on_token, False

            def put(self, value) -> None:  # noqa: ANN001
                if self.prompt_seen:
                    self.on_token(value)
                self.prompt_seen = True

            def end(self) -> None:
                pass

        def generate(on_token):  # noqa: ANN001, ANN202
            return model.generate(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask,
                                  input_features=inputs.input_features.to(torch.bfloat16), input_features_mask=inputs.input_features_mask,
                                  do_sample=False, max_new_tokens=tokens, min_new_tokens=tokens, eos_token_id=[NEVER], pad_token_id=0,
                                  streamer=Streamer(on_token))

    generate(lambda _: None)  # warm-up: kernels chosen, memory allocated
    runs = []
    for _ in range(3):
        stamps = []
        sync(device)
        start = time.perf_counter()

        def stamp(_token, stamps=stamps, start=start) -> None:  # noqa: ANN001
            sync(device)
            stamps.append(time.perf_counter() - start)

        with torch.inference_mode():
            generate(stamp)
        sync(device)
        total = time.perf_counter() - start
        runs.append((stamps[0], (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1) * 1e3, total))
    first, per_token, total = (statistics.median(x) for x in zip(*runs))
    return {"first_token_s": first, "decode_ms": per_token, "total_s": total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dry-run", action="store_true", help="CPU, small preset, 8 tokens: checks the script, measures nothing of interest")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/glm-asr-cuda-report"), help="where the random full-size checkpoint is kept")
    args = parser.parse_args()
    device, preset, tokens = ("cpu", "small", 8) if args.dry_run else (args.device, "full", 100)
    if not args.dry_run and not torch.cuda.is_available():
        print("cuda_report: no CUDA device visible to torch; run with --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU (dry run)"
    lines = [f"# CUDA report: {name}", "", f"torch {torch.__version__}, TF32 off for parity; `python tools/cuda_report.py{' --dry-run' if args.dry_run else ''}`", ""]
    rows, ok = parity(device)
    lines += ["## Parity: every golden case, every stage", "", *rows, "", onnx_cuda(), ""]
    checkpoint = make_checkpoint(args.cache / f"{preset}-bf16", preset)
    systems = ["ours"]
    try:
        import transformers  # noqa: F401

        systems.append("transformers")
    except ImportError:
        lines.append("transformers is not installed here: its rows are left out (tox -e cuda-report installs it)")
    lines += ["## Speed: bf16, a 30 s clip per row, " + f"{tokens} new tokens", "",
              "| system | batch | first token s | decode ms / token | end to end s |", "|---|---|---|---|---|"]
    for system in systems:
        for batch in (1, 8):
            r = speed(system, checkpoint, device, batch, tokens)
            lines.append(f"| {system} | {batch} | {r['first_token_s']:.3f} | {r['decode_ms']:.2f} | {r['total_s']:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
