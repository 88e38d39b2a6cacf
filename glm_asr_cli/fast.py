"""`--fast` for `transcribe` and `serve`: the fastest path this machine measured (glm_asr/runtime/fastest.py)."""

from __future__ import annotations

import argparse
import sys

# glm_asr/runtime/quantize.py's DECODER_KINDS (tests/test_fastest.py checks they match), here so that `--help`
# imports no torch
DECODER_KINDS = ("int8", "int4", "int4-ort")
FAST_HELP = "the fastest path this machine measured (`glm-asr info`): sets --quantize and --quantize-audio; approximate"


def apply_fast(args: argparse.Namespace) -> None:
    """`--fast`: sets --quantize and --quantize-audio to the fastest path this machine measured (runtime/fastest.py)."""
    if not args.fast:
        return
    if args.quantize or args.quantize_audio or args.dtype != "fp32" or args.device != "cpu" or args.backend != "torch":
        raise ValueError("--fast picks --quantize and --quantize-audio itself, for --dtype fp32 on --device cpu with the torch backend: "
                         "drop the others, or --fast")
    from glm_asr.runtime import fastest

    path = fastest.fast_path()
    args.quantize, args.quantize_audio = path.decoder, path.audio
    print(f"--fast: --quantize {path.decoder}" + (f" --quantize-audio {path.audio}" if path.audio else "") +
          " (measured on this machine: glm-asr info)", file=sys.stderr)
