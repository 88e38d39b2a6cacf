"""The `glm-asr` command. Errors become one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from collections.abc import Sequence


def _conformance(args: argparse.Namespace) -> int:
    try:
        from conformance.harness import golden, runner
    except ImportError as e:
        raise RuntimeError(f"the conformance harness is not importable ({e}); run from a source checkout installed with `pip install -e .`") from e
    root = args.golden or golden.ROOT
    manifest = golden.load_manifest(root)
    for entry in golden.all_entries(manifest):
        golden.read_verified(root, entry)  # every hash before any number
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: no CUDA device is visible to torch")
        torch.backends.cuda.matmul.allow_tf32 = False  # parity needs true fp32 matmuls and convolutions
        torch.backends.cudnn.allow_tf32 = False
    case_ids = [c for c in manifest["cases"] if not args.case or args.case in c]
    if not case_ids:
        raise ValueError(f"--case {args.case!r} matches none of the {len(manifest['cases'])} golden cases")
    rows = []
    for case_id in case_ids:
        rows += runner.run_case(case_id, args.device, root, manifest)
    shown = [r for r in rows if not r.ok] if args.failures_only else rows
    print(runner.format_table(shown))
    if args.plot:
        from conformance.harness import plot

        for path in plot.plot_conformance(rows, args.plot):
            print(f"plot: {path}")
    failed = sum(not r.ok for r in rows)
    print(f"\n{len(rows) - failed} passed, {failed} failed ({len(case_ids)} cases, device {args.device})")
    return 1 if failed else 0


def _kit(args: argparse.Namespace) -> int:
    try:
        from conformance.kit import check as kit_check, export as kit
    except ImportError as e:
        raise RuntimeError(f"the conformance harness is not importable ({e}); install glm-asr with its conformance package") from e
    if args.kit_command == "export":
        made = kit.export(args.out, full=args.full)
        print(f"wrote {len(made['cases'])} cases, {len(made['files'])} files to {args.out}; read {args.out / 'README.md'}")
        return 0
    results = kit_check.check(args.kit, args.results, args.case)
    print(kit_check.format_report(results))
    if args.json:
        import json

        args.json.write_text(json.dumps(kit_check.report_json(args.kit, args.results, results), indent=1) + "\n")
    if args.plot:
        from conformance.harness import plot

        for path in plot.plot_kit(results, args.plot):
            print(f"plot: {path}")
    return 0 if all(c.passed for c in results) else 1


DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _demo(args: argparse.Namespace) -> int:
    import time

    import torch

    from glm_asr import capture
    from glm_asr.transcription.generate import greedy_generate
    from glm_asr.transcription.presets import demo_clip, human, parameter_count
    from glm_asr.transcription.transcribe import load_model_and_processor

    started = time.perf_counter()
    model, processor = load_model_and_processor(None, random_preset=args.preset, dtype=getattr(torch, DTYPES[args.dtype]))
    loaded = time.perf_counter()
    print(f"glm-asr demo: random {args.preset} model ({args.dtype}), synthetic tokenizer, bundled synthetic clip; no download")
    for name, module in model.named_children():
        print(f"  {name:22} {parameter_count(module):>14,} parameters")
    print(f"  {'total':22} {parameter_count(model):>14,} ({human(parameter_count(model))}; the released model: 2,136,470,528)")
    clip = demo_clip()
    batch = processor([clip])
    with torch.inference_mode(), capture() as taps:  # one forward pass over the prompt, every stage recorded
        model(batch.input_ids, batch.input_features, batch.input_features_mask, batch.attention_mask)
    ids = greedy_generate(model, batch.input_ids, batch.attention_mask, batch.input_features, batch.input_features_mask,
                          max_new_tokens=args.max_new_tokens)
    done = time.perf_counter()
    taps = {"mel": batch.input_features, "input_ids": batch.input_ids, **taps}
    print(f"stages for {clip.shape[0] / 16000:.1f} s of audio:")
    for name, tensor in taps.items():
        if not name.startswith(("encoder.layers.", "decoder.layers.")) or name.endswith(".0"):
            print(f"  {name:22} {' x '.join(map(str, tensor.shape))}")
    layers = sum(n.startswith(("encoder.layers.", "decoder.layers.")) for n in taps)
    print(f"  ({layers} encoder and decoder layers in all; .0 of each shown)")
    print(f"greedy decoding, KV cache, {ids.shape[1]} tokens: {processor.decode(ids[0])!r}")
    print(f"(meaningless: the weights are random) load {loaded - started:.2f} s, run {done - loaded:.2f} s")
    return 0


def _transcribe(args: argparse.Namespace) -> int:
    import torch

    from glm_asr_cli import corpus as corpus_cli
    from glm_asr.corpus.batching import transcribe_items
    from glm_asr.transcription.transcribe import load_model_and_processor, load_onnx_model_and_processor

    plan = corpus_cli.prepare(args)
    if args.ray is not None:  # the model loads in each Ray actor, not here
        if args.backend != "torch":
            raise ValueError("--ray runs the torch backend; drop --backend onnxruntime")
        from glm_asr.corpus.ray_cluster import transcribe_items_on_ray

        model_kwargs = {"model_path": args.model, "device": args.device, "dtype": getattr(torch, DTYPES[args.dtype]),
                        "random_preset": args.random, "quantize": args.quantize, "quantize_audio_path": args.quantize_audio}
        stream = transcribe_items_on_ray(plan.todo, address=args.ray or None, model_kwargs=model_kwargs, actors=args.ray_actors,
                                         gpus_per_actor=1.0 if args.device.startswith("cuda") else 0.0, **corpus_cli.options(args))
        return corpus_cli.run(args, plan, stream)
    if args.backend == "onnxruntime":
        if args.onnx_dir is None:
            raise ValueError("--backend onnxruntime needs --onnx-dir: a folder written by tools/export_onnx.py")
        if args.model is not None or args.dtype != "fp32" or args.quantize or args.quantize_audio:
            raise ValueError("--backend onnxruntime takes weights and precision from --onnx-dir; drop --model, --dtype and --quantize")
        model, processor = load_onnx_model_and_processor(args.onnx_dir, device=args.device)
    elif args.onnx_dir is not None:
        raise ValueError("--onnx-dir is only read with --backend onnxruntime")
    else:
        model, processor = load_model_and_processor(args.model, device=args.device, dtype=getattr(torch, DTYPES[args.dtype]),
                                                    random_preset=args.random, quantize=args.quantize,
                                                    quantize_audio_path=args.quantize_audio)
    return corpus_cli.run(args, plan, transcribe_items(model, processor, plan.todo, **corpus_cli.options(args)))


def _info(args: argparse.Namespace) -> int:
    from glm_asr.runtime import cpu

    if args.recalibrate:
        cpu.calibrate(refresh=True)
    print(cpu.describe())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glm-asr", description="GLM-ASR-Nano-2512 in plain PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)
    conf = sub.add_parser("conformance", help="compare every stage with the stored reference goldens; exit 1 on any failure")
    conf.add_argument("--golden", type=Path, default=None, help="golden directory (default: the checkout's golden/)")
    conf.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    conf.add_argument("--case", default="", help="only cases whose id contains this text, e.g. tiny_a/ or /bf16")
    conf.add_argument("--failures-only", action="store_true", help="print only the failing rows")
    conf.add_argument("--plot", type=Path, default=None, help="write a PNG per case of the error per stage into this folder (needs glm-asr[plot])")
    conf.set_defaults(run=_conformance)

    kit = sub.add_parser("kit", help="conformance kit for other implementations: export the cases, check a port's results")
    kit_sub = kit.add_subparsers(dest="kit_command", required=True)
    export = kit_sub.add_parser("export", help="write every golden case, with a README for porters, into a new folder")
    export.add_argument("out", type=Path, help="a folder that does not exist yet (or is empty)")
    export.add_argument("--full", action="store_true",
                        help="add the released shape's cases: a 4.3 GB random bf16 checkpoint and slices of the reference's stages "
                        "(about 80 s and 5 GB of memory to write on 2 cores)")
    check = kit_sub.add_parser("check", help="compare a port's results with the kit; exit 0 pass, 1 fail, 2 unusable input")
    check.add_argument("kit", type=Path, help="a folder written by `glm-asr kit export`")
    check.add_argument("results", type=Path, help="the port's results: <case>.safetensors files, tensors named by stage")
    check.add_argument("--json", type=Path, default=None, help="also write the report as JSON to this file")
    check.add_argument("--plot", type=Path, default=None, help="write a PNG per case of the error per stage into this folder (needs glm-asr[plot])")
    check.add_argument("--case", default="", help="only cases whose id contains this text (or one of several, comma-separated); "
                       "without it every case of the kit must have a results file")
    kit.set_defaults(run=_kit)

    demo = sub.add_parser("demo", help="run the whole pipeline on random weights and a bundled clip, in seconds")
    demo.add_argument("--preset", default="small", choices=["small", "full"])
    demo.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    demo.add_argument("--max-new-tokens", type=int, default=16)
    demo.set_defaults(run=_demo)

    info = sub.add_parser("info", help="this CPU's features and every kernel choice made from them, with the reason")
    info.add_argument("--recalibrate", action="store_true", help="measure the decode kernels again instead of reading the cache")
    info.set_defaults(run=_info)

    tr = sub.add_parser("transcribe", help="transcribe audio files, directories or manifests: one line per file, --json, or --output results.jsonl")
    tr.add_argument("files", nargs="+", type=Path, help="audio files (WAV; any format ffmpeg decodes with glm-asr[audio]), "
                    "directories (searched recursively by extension) and .jsonl manifests (NeMo's audio_filepath, offset, duration)")
    tr.add_argument("--model", type=Path, default=None, help="checkpoint folder (config.json, model.safetensors, tokenizer.json); default: random weights")
    tr.add_argument("--random", default="small", choices=["small", "full"], help="random preset when --model is not given")
    tr.add_argument("--device", default="cpu")
    tr.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    tr.add_argument("--quantize", choices=["int8"], default=None,
                    help="int8 decoder weights: faster CPU decoding, approximate (fp32 on the CPU only)")
    tr.add_argument("--quantize-audio", choices=["int8", "bf16"], default=None,
                    help="audio encoder and projector in int8 or bf16: faster where the CPU has VNNI, AVX-512 BF16 or AMX "
                         "(see `glm-asr info`), approximate (fp32 on the CPU only)")
    tr.add_argument("--max-new-tokens", type=int, default=500)
    tr.add_argument("--chunked", action="store_true", help="transcribe every 30 s window on its own, with per-window segments")
    tr.add_argument("--json", action="store_true", help="print JSON: text, segments, audio seconds, wall time, real-time factor")
    tr.add_argument("--output", type=Path, default=None, help="append one JSONL record per input as it completes (never overwritten: see --resume)")
    tr.add_argument("--resume", action="store_true", help="continue an --output file: skip the inputs it records")
    tr.add_argument("--format", choices=["srt", "vtt", "txt"], default=None, help="also write a subtitle or text file per input into --output-dir")
    tr.add_argument("--output-dir", type=Path, default=None, help="folder for the --format files (mirrors directory inputs' layout)")
    tr.add_argument("--batch-size", type=int, default=8, help="inputs (or 30 s windows) decoded together")
    tr.add_argument("--stop-on-repeat", type=int, default=None, metavar="N",
                    help="end an input's decoding when an n-gram (n = 1..8) has repeated N times in a row (recorded in --output)")
    tr.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                    help="transcribe with Ray Data actors (glm-asr[ray]): a running cluster's address (e.g. auto), or none for a local Ray")
    tr.add_argument("--ray-actors", type=int, default=1, help="with --ray: actors, each holding one model")
    tr.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"], help="onnxruntime: run an exported --onnx-dir")
    tr.add_argument("--onnx-dir", type=Path, default=None, help="folder written by tools/export_onnx.py (with --backend onnxruntime)")
    tr.set_defaults(run=_transcribe)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("glm-asr: interrupted", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as e:
        print(f"glm-asr: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
