"""The `glm-asr` command. Errors become one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from collections.abc import Sequence


def _conformance(args: argparse.Namespace) -> int:
    try:
        from conformance import golden, runner
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
    failed = sum(not r.ok for r in rows)
    print(f"\n{len(rows) - failed} passed, {failed} failed ({len(case_ids)} cases, device {args.device})")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glm-asr", description="GLM-ASR-Nano-2512 in plain PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)
    conf = sub.add_parser("conformance", help="compare every stage with the stored reference goldens; exit 1 on any failure")
    conf.add_argument("--golden", type=Path, default=None, help="golden directory (default: the checkout's golden/)")
    conf.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    conf.add_argument("--case", default="", help="only cases whose id contains this text, e.g. tiny_a/ or /bf16")
    conf.add_argument("--failures-only", action="store_true", help="print only the failing rows")
    conf.set_defaults(run=_conformance)
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
