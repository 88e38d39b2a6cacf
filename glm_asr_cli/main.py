"""The `glm-asr` command. Errors become one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from collections.abc import Sequence

from glm_asr_cli.devices import check_device
from glm_asr_cli.fast import DECODER_KINDS, FAST_HELP, apply_fast


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

        check_device(args.device)
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
RELEASE = "https://huggingface.co/zai-org/GLM-ASR-Nano-2512"


def _demo(args: argparse.Namespace) -> int:
    import time

    import torch

    from glm_asr import capture
    from glm_asr.transcription.generate import greedy_generate
    from glm_asr.transcription.presets import demo_clip, human, parameter_count
    from glm_asr.transcription.transcribe import load_model_and_processor

    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens {args.max_new_tokens}: expected 1 or more")
    started = time.perf_counter()
    model, processor = load_model_and_processor(None, random_preset=args.preset, dtype=getattr(torch, DTYPES[args.dtype]))
    loaded = time.perf_counter()
    print(f"glm-asr demo: random {args.preset} model ({args.dtype}), synthetic tokenizer, bundled synthetic clip; no download")
    for name, module in model.named_children():
        print(f"  {name:22} {parameter_count(module):>14,} parameters")
    print(f"  {'total':22} {parameter_count(model):>14,} ({human(parameter_count(model))}; the released model: 2,136,470,528)")
    clip = demo_clip()
    with torch.inference_mode(), capture() as taps:  # features and one forward pass over the prompt, every stage recorded
        batch = processor([clip])
        model(batch.input_ids, batch.input_features, batch.input_features_mask, batch.attention_mask)
    ids = greedy_generate(model, batch.input_ids, batch.attention_mask, batch.input_features, batch.input_features_mask,
                          max_new_tokens=args.max_new_tokens)
    done = time.perf_counter()
    taps = {"mel": taps["mel"], "input_ids": batch.input_ids, **taps}
    print(f"stages for {clip.shape[0] / 16000:.1f} s of audio:")
    for name, tensor in taps.items():
        if not name.startswith(("encoder.layers.", "decoder.layers.")) or name.endswith(".0"):
            print(f"  {name:22} {' x '.join(map(str, tensor.shape))}")
    layers = sum(n.startswith(("encoder.layers.", "decoder.layers.")) for n in taps)
    print(f"  ({layers} encoder and decoder layers in all; .0 of each shown)")
    print(f"greedy decoding, KV cache, {ids.shape[1]} tokens: {processor.decode(ids[0])!r}")
    print(f"(meaningless: the weights are random) load {loaded - started:.2f} s, run {done - loaded:.2f} s")
    return 0


def _random_notice(args: argparse.Namespace) -> None:
    if args.model is None and args.random is None:
        print(f"glm-asr: no --model: transcribing with random weights (--random small) and a synthetic tokenizer, so the "
              f"transcripts are meaningless; pass --model DIR, a folder with the released files ({RELEASE})", file=sys.stderr)


def _transcribe(args: argparse.Namespace) -> int:
    import torch

    from glm_asr_cli import corpus as corpus_cli
    from glm_asr.corpus.batching import transcribe_items
    from glm_asr.onnx.backend import load_onnx_model_and_processor
    from glm_asr.transcription.transcribe import load_model_and_processor

    plan = corpus_cli.prepare(args)
    apply_fast(args)
    dtype = getattr(torch, DTYPES[args.dtype])
    if args.backend == "torch" and args.ray is None:
        check_device(args.device)
    for flag, value in (("--quantize", args.quantize), ("--quantize-audio", args.quantize_audio)):
        if value and (args.dtype != "fp32" or torch.device(args.device).type != "cpu"):
            raise ValueError(f"{flag} {value} applies to --dtype fp32 on --device cpu, not --dtype {args.dtype} on --device {args.device}")
    if args.ray is not None:  # the model loads in each Ray actor, not here
        if args.backend != "torch":
            raise ValueError("--ray runs the torch backend; drop --backend onnxruntime")
        from glm_asr.corpus.ray_cluster import import_ray, transcribe_items_on_ray

        import_ray()
        _random_notice(args)
        model_kwargs = {"model_path": args.model, "device": args.device, "dtype": dtype, "random_preset": args.random or "small",
                        "quantize": args.quantize, "quantize_audio_path": args.quantize_audio}
        stream = transcribe_items_on_ray(plan.todo, address=args.ray or None, model_kwargs=model_kwargs, actors=args.ray_actors or 1,
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
        model, processor = load_model_and_processor(args.model, device=args.device, dtype=dtype, random_preset=args.random or "small",
                                                    quantize=args.quantize, quantize_audio_path=args.quantize_audio)
        _random_notice(args)
    return corpus_cli.run(args, plan, transcribe_items(model, processor, plan.todo, **corpus_cli.options(args)))


def _info(args: argparse.Namespace) -> int:
    from glm_asr.runtime import cpu, fastest

    if args.recalibrate:
        cpu.calibrate(refresh=True)
        cpu.calibrate_gemm(refresh=True)
    print(cpu.describe())
    print(fastest.describe(fastest.fast_path(refresh=args.recalibrate)))
    return 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default: its value, "off" for a choice left unset, nothing for a switch or where the
    help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if "default" in (action.help or "") or action.default is False:
            return action.help or ""
        if action.default is None:
            return f"{action.help} (default: off)" if action.choices and action.option_strings else action.help or ""
        return super()._get_help_string(action)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("glm-asr")
    except PackageNotFoundError:
        return "unknown (not installed: run from a checkout with `pip install -e .`)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glm-asr", description="GLM-ASR-Nano-2512 in plain PyTorch", formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    conf = sub.add_parser("conformance", help="compare every stage with the stored reference goldens; exit 1 on any failure",
                          formatter_class=_HelpFormatter)
    conf.add_argument("--golden", type=Path, default=None, help="golden directory (default: the checkout's golden/)")
    conf.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model runs (cuda: TF32 off, for parity)")
    conf.add_argument("--case", default="", help="only cases whose id contains this text, e.g. tiny_a/ or /bf16 (default: every case)")
    conf.add_argument("--failures-only", action="store_true", help="print only the failing rows")
    conf.add_argument("--plot", type=Path, default=None, help="write a PNG per case of the error per stage into this folder (needs glm-asr[plot])")
    conf.set_defaults(run=_conformance)

    kit = sub.add_parser("kit", help="conformance kit for other implementations: export the cases, check a port's results",
                         formatter_class=_HelpFormatter)
    kit_sub = kit.add_subparsers(dest="kit_command", required=True)
    export = kit_sub.add_parser("export", help="write every golden case, with a README for porters, into a new folder",
                                formatter_class=_HelpFormatter)
    export.add_argument("out", type=Path, help="a folder that does not exist yet (or is empty)")
    export.add_argument("--full", action="store_true",
                        help="add the released shape's cases: a 4.3 GB random bf16 checkpoint and slices of the reference's stages "
                        "(about 80 s and 5 GB of memory to write on 2 cores)")
    check = kit_sub.add_parser("check", help="compare a port's results with the kit; exit 0 pass, 1 fail, 2 unusable input",
                               formatter_class=_HelpFormatter)
    check.add_argument("kit", type=Path, help="a folder written by `glm-asr kit export`")
    check.add_argument("results", type=Path, help="the port's results: <case>.safetensors files, tensors named by stage")
    check.add_argument("--json", type=Path, default=None, help="also write the report as JSON to this file")
    check.add_argument("--plot", type=Path, default=None, help="write a PNG per case of the error per stage into this folder (needs glm-asr[plot])")
    check.add_argument("--case", default="", help="only cases whose id contains this text (or one of several, comma-separated); "
                       "without it every case of the kit must have a results file")
    kit.set_defaults(run=_kit)

    demo = sub.add_parser("demo", help="run the whole pipeline on random weights and a bundled clip, in seconds", formatter_class=_HelpFormatter)
    demo.add_argument("--preset", default="small", choices=["small", "full"], help="random model size (full: the released shape, 2.1B)")
    demo.add_argument("--dtype", default="fp32", choices=list(DTYPES), help="weights and activations")
    demo.add_argument("--max-new-tokens", type=int, default=16, help="tokens to decode greedily")
    demo.set_defaults(run=_demo)

    info = sub.add_parser("info", help="this CPU's features and every kernel choice made from them, with the reason", formatter_class=_HelpFormatter)
    info.add_argument("--recalibrate", action="store_true", help="measure the decode and GEMM kernels again instead of reading the cache")
    info.set_defaults(run=_info)

    tr = sub.add_parser("transcribe", help="transcribe audio files, directories or manifests: one line per file, --json, or --output results.jsonl",
                        formatter_class=_HelpFormatter)
    tr.add_argument("files", nargs="+", type=Path, help="audio files (WAV; any format ffmpeg decodes with glm-asr[audio]), "
                    "directories (searched recursively by extension) and .jsonl manifests (NeMo's audio_filepath, offset, duration)")
    tr.add_argument("--model", type=Path, default=None, help="a local checkpoint folder (config.json, model.safetensors, tokenizer.json), "
                    f"e.g. the released files from {RELEASE} (default: random weights, with a notice)")
    tr.add_argument("--random", default=None, choices=["small", "full"], help="random preset when --model is not given (default: small)")
    tr.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    tr.add_argument("--dtype", default="fp32", choices=list(DTYPES), help="weights and activations")
    tr.add_argument("--quantize", choices=list(DECODER_KINDS), default=None,
                    help="int8 decoder weights, weight-only int4 (half int8's bytes), or int4-ort (4-bit on onnxruntime's kernels, "
                         "glm-asr[onnx]): faster CPU decoding, approximate (fp32 on the CPU only)")
    tr.add_argument("--fast", action="store_true", help=FAST_HELP)
    tr.add_argument("--quantize-audio", choices=["int8", "bf16"], default=None,
                    help="audio encoder and projector in int8 or bf16: faster where the CPU has VNNI, AVX-512 BF16 or AMX "
                         "(see `glm-asr info`), approximate (fp32 on the CPU only)")
    tr.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                    help="new tokens per prompt at most (default: by the audio's length, 8 a second + 16; 256 for a 30 s window); "
                         "a transcript that reaches it is marked truncated")
    tr.add_argument("--chunked", action="store_true", help="transcribe every 30 s window on its own, with per-window segments")
    tr.add_argument("--vad", action="store_true", help="decode only speech (Silero VAD, needs glm-asr[vad]): pieces of <= 30 s cut "
                    "where the speaker pauses, segments and --format cues on speech bounds (docs/longform.md)")
    vad = tr.add_argument_group("--vad tuning (VadOptions; defaults in docs/longform.md)")
    vad.add_argument("--vad-threshold", type=float, default=None, metavar="P", help="speech probability that starts a region (0.35)")
    vad.add_argument("--vad-neg-threshold", type=float, default=None, metavar="P", help="probability under which a pause counts (0.15)")
    vad.add_argument("--vad-min-speech-ms", type=int, default=None, metavar="MS", help="shorter bursts are dropped (250)")
    vad.add_argument("--vad-min-silence-ms", type=int, default=None, metavar="MS", help="a pause this long ends a region (500)")
    vad.add_argument("--vad-pad-ms", type=int, default=None, metavar="MS", help="audio kept before and after each region (400)")
    vad.add_argument("--vad-max-gain", type=float, default=None, metavar="X", help="level raised before the VAD by at most X (100; 1: off)")
    vad.add_argument("--vad-max-gap", type=float, default=None, metavar="S", help="longest pause inside one decoded piece and cue (5 s)")
    vad.add_argument("--vad-max-piece", type=float, default=None, metavar="S", help="most speech in one piece and cue, 1-30 s (30)")
    tr.add_argument("--json", action="store_true", help="print each input's record as a JSON line (the keys of the --output file; with --output, both)")
    tr.add_argument("--output", type=Path, default=None, help="append one JSONL record per input as it completes (an existing file: see --resume, --overwrite)")
    tr.add_argument("--resume", action="store_true", help="continue an --output file: skip the inputs it records")
    tr.add_argument("--retry-failed", action="store_true", help="with --resume: transcribe again the inputs recorded as failed, replacing their lines")
    tr.add_argument("--overwrite", action="store_true", help="replace an existing --output file and --format files")
    tr.add_argument("--format", choices=["srt", "vtt", "txt"], default=None, help="also write a subtitle or text file per input into --output-dir")
    tr.add_argument("--output-dir", type=Path, default=None, help="folder for the --format files (mirrors directory inputs' layout)")
    tr.add_argument("--batch-size", type=int, default=8, help="inputs (or 30 s windows) decoded together")
    tr.add_argument("--stop-on-repeat", type=int, default=None, metavar="N",
                    help="end an input's decoding when an n-gram (n = 1..8) has repeated N times in a row (recorded as stopped_on_repeat)")
    tr.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                    help="transcribe with Ray Data actors (glm-asr[ray]): a running cluster's address (e.g. auto), or none for a local Ray")
    tr.add_argument("--ray-actors", type=int, default=None, metavar="N", help="with --ray: actors, each holding one model (default: 1)")
    tr.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"], help="onnxruntime: run an exported --onnx-dir")
    tr.add_argument("--onnx-dir", type=Path, default=None, help="folder written by tools/export_onnx.py (with --backend onnxruntime)")
    tr.set_defaults(run=_transcribe)
    from glm_asr_cli import serve as serve_cli  # `glm-asr serve`: its options live in serve.py
    serve_cli.add_parser(sub, DTYPES, _HelpFormatter)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("glm-asr: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the path and the reason, not Python's "[Errno 13] ..." form
        print(f"glm-asr: error: {f'{e.filename}: {e.strerror}' if e.filename and e.strerror else e}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as e:
        print(f"glm-asr: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:  # an optional extra a flag needs: its message names the extra to install
        print(f"glm-asr: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
