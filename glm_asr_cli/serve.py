"""`glm-asr serve`: the command line of the OpenAI-compatible server (glm_asr/serve/, the `serve` extra)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from glm_asr_cli.fast import DECODER_KINDS, FAST_HELP, apply_fast

MODEL_OPTIONS_HELP = "the same model options as `glm-asr transcribe`"


def add_parser(sub: argparse._SubParsersAction, dtypes: dict[str, str], formatter_class: type[argparse.HelpFormatter]) -> None:
    sv = sub.add_parser("serve", help="serve OpenAI's POST /v1/audio/transcriptions (glm-asr[serve]): requests batched together",
                        formatter_class=formatter_class)
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="port (0: any free one, printed when ready)")
    sv.add_argument("--model", type=Path, default=None, help="checkpoint folder; default: random weights (--random)")
    sv.add_argument("--random", default="small", choices=["small", "full"], help="random preset when --model is not given")
    sv.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    sv.add_argument("--dtype", default="fp32", choices=list(dtypes), help="weights and activations")
    sv.add_argument("--quantize", choices=list(DECODER_KINDS), default=None,
                    help="int8, weight-only int4 or int4-ort (4-bit on onnxruntime's kernels) decoder weights (fp32 on the CPU only)")
    sv.add_argument("--fast", action="store_true", help=FAST_HELP)
    sv.add_argument("--quantize-audio", choices=["int8", "bf16"], default=None, help="audio encoder and projector in int8 or bf16")
    sv.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"], help="onnxruntime: run an exported --onnx-dir")
    sv.add_argument("--onnx-dir", type=Path, default=None, help="folder written by tools/export_onnx.py (with --backend onnxruntime)")
    sv.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                    help="tokens decoded per 30 s window at most (default: by the window's audio length, 8 a second + 16)")
    sv.add_argument("--batch-size", type=int, default=8, help="rows (30 s windows, from any requests) decoding together; a request with none decoding joins past it, up to twice")
    sv.add_argument("--served-model-name", action="append", default=None, metavar="NAME",
                    help="the `model` value clients send (repeatable; default glm-asr-nano-2512); others get 404")
    sv.add_argument("--max-upload-mb", type=float, default=25.0, help="largest upload accepted (413 past it)")
    sv.add_argument("--max-audio-seconds", type=float, default=1800.0, help="longest audio accepted (413 past it)")
    sv.add_argument("--max-queue", type=int, default=64, help="requests in progress at most; past it a 503 that says when to retry")
    sv.add_argument("--decode-timeout", type=float, default=30.0, help="seconds to decode one upload at most (400 past it)")
    sv.add_argument("--drain-seconds", type=float, default=300.0, help="on SIGTERM, how long requests in flight may take to finish")
    sv.add_argument("--max-streams", type=int, default=8, help="live WebSocket streams (/v1/realtime) open at once; past it a refusal")
    sv.add_argument("--stream-idle-seconds", type=float, default=60.0, help="a live stream that sends nothing this long is closed")
    sv.add_argument("--partials", default="auto", choices=["auto", "on", "off"],
                    help="live partial text (local agreement); auto: on when one pass costs less than the audio it covers")
    sv.add_argument("--silence-ms", type=int, default=500, help="the pause that ends a live utterance")
    sv.add_argument("--ray-replicas", type=int, default=None, metavar="N",
                    help="serve with N replicas on Ray Serve (glm-asr[ray-serve]), each holding one model; torch backend only")
    sv.add_argument("--ray-address", default=None, help="with --ray-replicas: a running cluster's address (default: a local Ray)")
    sv.set_defaults(run=run, dtypes=dtypes)


def _load(args: argparse.Namespace):  # noqa: ANN202
    import torch

    from glm_asr.onnx.backend import load_onnx_model_and_processor
    from glm_asr.transcription.transcribe import load_model_and_processor

    if args.backend == "onnxruntime":
        if args.onnx_dir is None:
            raise ValueError("--backend onnxruntime needs --onnx-dir: a folder written by tools/export_onnx.py")
        if args.model is not None or args.dtype != "fp32" or args.quantize or args.quantize_audio:
            raise ValueError("--backend onnxruntime takes weights and precision from --onnx-dir; drop --model, --dtype and --quantize")
        return load_onnx_model_and_processor(args.onnx_dir, device=args.device)
    if args.onnx_dir is not None:
        raise ValueError("--onnx-dir is only read with --backend onnxruntime")
    return load_model_and_processor(args.model, device=args.device, dtype=getattr(torch, args.dtypes[args.dtype]),
                                    random_preset=args.random, quantize=args.quantize, quantize_audio_path=args.quantize_audio)


def run(args: argparse.Namespace) -> int:
    try:
        from glm_asr.serve.server import import_uvicorn

        import_uvicorn()
    except ImportError as e:
        raise RuntimeError(str(e)) from e
    from glm_asr.serve.app import MODEL_NAME, Service
    from glm_asr.serve.limits import Limits
    from glm_asr.serve.realtime import RealtimeOptions
    from glm_asr.serve.server import serve
    from glm_asr.serve.utterances import TurnOptions

    for flag in ("max_upload_mb", "max_audio_seconds", "max_queue", "decode_timeout", "drain_seconds", "batch_size", "max_new_tokens",
                 "max_streams", "stream_idle_seconds", "silence_ms"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            raise ValueError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected a positive value")
    from glm_asr_cli.devices import check_device

    check_device(args.device)  # before the model loads: one line, as `transcribe` says it, not torch's traceback
    apply_fast(args)
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_audio_seconds=args.max_audio_seconds,
                    max_queue=args.max_queue, decode_seconds=args.decode_timeout)
    names = tuple(args.served_model_name or (MODEL_NAME,))
    if args.ray_replicas is not None:  # the model loads in each replica, not here
        if args.backend != "torch":
            raise ValueError("--ray-replicas runs the torch backend; drop --backend onnxruntime")
        from glm_asr.serve.ray_serve import serve_on_ray

        model_kwargs = {"model_path": args.model, "device": args.device, "dtype": getattr(__import__("torch"), args.dtypes[args.dtype]),
                        "random_preset": args.random, "quantize": args.quantize, "quantize_audio_path": args.quantize_audio}
        try:
            serve_on_ray(model_kwargs, replicas=args.ray_replicas, host=args.host, port=args.port, address=args.ray_address,
                         limits=limits, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, model_names=names)
        except ImportError as e:
            raise RuntimeError(str(e)) from e
        return 0
    if args.model is None and args.backend == "torch":
        print(f"glm-asr serve: no --model: serving random weights (--random {args.random}) and a synthetic tokenizer, so the "
              "transcripts are meaningless; pass --model DIR, a folder with the released files", file=sys.stderr)
    model, processor = _load(args)
    realtime = RealtimeOptions(max_streams=args.max_streams, idle_seconds=args.stream_idle_seconds, partials=args.partials,
                               turn=TurnOptions(silence_duration_ms=args.silence_ms))
    service = Service(model, processor, limits=limits, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                      model_names=names, realtime=realtime)
    serve(service, args.host, args.port, drain_seconds=args.drain_seconds)
    return 0
