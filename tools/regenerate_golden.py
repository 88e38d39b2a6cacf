"""Regenerates golden/ from the reference implementation (transformers 5.24.0): `tox -e golden`.

    python tools/regenerate_golden.py           # rewrite golden/ (atomically; a failed run changes nothing)
    python tools/regenerate_golden.py --check   # regenerate in memory and compare, write nothing
    python tools/regenerate_golden.py --full [--check]   # golden/full/ only: the released shape (tox -e golden -- --full)

--check reports each file as byte-identical, within tolerance (made on another CPU class, which the manifest
names: bytes differ, numbers within the tolerance table) or beyond tolerance, and exits 1 only on the last.

Weights, audio and tokenizers are made by our own deterministic code (conformance/harness/weights.py, cases.py,
tokenizer_fixture.py); only the reference computes the expected tensors. The tiny models run on one thread,
so reductions run in the same order every time and two runs give byte-identical files. --full runs the
reference at the released shape on every core (2.1B parameters, a 4.3 GB bf16 checkpoint in a temporary
folder; on 2 cores about 5 minutes, peak RSS 13 GB) and keeps a few rows of every stage
(conformance/harness/stages.py sample_rows) and the greedy ids.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save  # noqa: E402

from conformance.harness import drift  # noqa: E402
from conformance.harness import golden
from conformance.harness import reference
from conformance.harness.cases import BF16_CASES, CASES, FULL, FULL_BF16_CASES, FULL_CASES, MODELS, clips  # noqa: E402
from conformance.harness.tokenizer_fixture import build_bpe_tokenizer_json  # noqa: E402
from conformance.harness.tolerances import TABLE  # noqa: E402
from conformance.harness.weights import golden_weights, save_checkpoint, weights_digest  # noqa: E402
from glm_asr.runtime import cpu  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
GENERATE_TOKENS = 24  # greedy tokens stored per fp32 case; random weights rarely say eos, so this is the length


def provenance() -> dict:
    return {
        "reference": "transformers GlmAsrForConditionalGeneration (attn_implementation=eager) fed by GlmAsrProcessor "
        "with WhisperFeatureExtractor(feature_size=num_mel_bins)",
        "transformers": reference.VERSION,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "tokenizers": tokenizers.__version__,
        "torch_threads": torch.get_num_threads(),
        # Bytes reproduce within one CPU class only: native bf16, FFT and GEMM kernels differ between classes.
        "cpu": {"model": cpu.features().model, "class": cpu.features().cpu_class,
                "native_bf16": cpu.native_bf16()},
    }


def early_stop_id(generated: torch.Tensor) -> int:
    """The first id row 1 says for the first time at its third step or later, where row 0 has not said it yet:
    as an eos id it ends row 1 there and row 0 later or never (a token both say at once would end both)."""
    first, second = generated[0].tolist(), generated[1].tolist()
    for i, token in enumerate(second):
        if i >= 2 and second.index(token) == i and token not in first[: i + 1]:
            return token
    raise SystemExit(f"no id of row 1 ({second}) can end it alone before row 0 ({first}); change the batch case")


def build(work: Path) -> dict[str, bytes]:
    """Every golden file, as relative path -> bytes."""
    files: dict[str, bytes] = {}
    manifest: dict = {
        "format": 1,
        "generated_by": "tools/regenerate_golden.py",
        "provenance": provenance(),
        "generate": {"max_new_tokens": GENERATE_TOKENS, "do_sample": False},
        "models": {},
        "clips": {case: [golden.sha256(c.tobytes()) for c in clips(case)] for case in CASES},
        "cases": {},
        "tolerances": {"/".join(k): v.as_dict() for k, v in sorted(TABLE.items())},
    }
    for name, tiny in MODELS.items():
        checkpoint = work / name
        weights = golden_weights(tiny)
        save_checkpoint(checkpoint, tiny.config, weights)
        build_bpe_tokenizer_json(checkpoint / "tokenizer.json", tiny.n_base_tokens)
        tokenizer_bytes = (checkpoint / "tokenizer.json").read_bytes()
        files[f"{name}/tokenizer.json"] = tokenizer_bytes
        manifest["models"][name] = {
            "config": tiny.config.to_dict(),
            "seed": tiny.seed,
            "residual_scale": tiny.residual_scale,
            "embed_scale": tiny.embed_scale,
            "decoder_scale": tiny.decoder_scale,
            "n_base_tokens": tiny.n_base_tokens,
            "weights_sha256": weights_digest(weights),
            "tokenizer": {"path": f"{name}/tokenizer.json", "sha256": golden.sha256(tokenizer_bytes)},
        }
        processor = reference.make_processor(checkpoint / "tokenizer.json", tiny.config.audio_config.num_mel_bins)
        manifest["models"][name]["processor_config"] = reference.processor_config(processor)
        for dtype_name, dtype in DTYPES.items():
            model = reference.load_reference(checkpoint, dtype)
            for case in CASES if dtype_name == "fp32" else BF16_CASES:
                inputs = reference.prepare_inputs(processor, clips(case))
                tensors, stage_info = reference.case_tensors(model, inputs, tiny.config)
                if dtype_name == "fp32":
                    generated = reference.generate(model, inputs, GENERATE_TOKENS)
                    tensors["generated_ids"] = generated
                    if generated.shape[0] > 1:
                        # Random weights never say eos by themselves: one more eos id ends row 1 early while row 0
                        # goes on, so the finished row must be padded.
                        eos = torch.tensor([*tiny.config.text_config.eos_token_id, early_stop_id(generated)])
                        tensors["early_stop.eos_token_id"] = eos
                        tensors["early_stop.generated_ids"] = reference.generate(model, inputs, GENERATE_TOKENS, eos.tolist())
                data = save(tensors)
                rel = f"{name}/{case}.{dtype_name}.safetensors"
                files[rel] = data
                manifest["cases"][f"{name}/{case}/{dtype_name}"] = {
                    "model": name, "audio": case, "dtype": dtype_name, "path": rel,
                    "sha256": golden.sha256(data), "stages": stage_info,
                }
                print(f"  {rel}: {len(data) / 1e6:.2f} MB", file=sys.stderr)
    files[golden.MANIFEST] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    return files


def build_full(work: Path) -> dict[str, bytes]:
    """Every file of golden/full/ (paths relative to it): slices of each stage of the released shape."""
    config, dtype = FULL.config, getattr(torch, FULL.checkpoint_dtype)
    weights = golden_weights(FULL, dtype)
    digest = weights_digest(weights)
    save_checkpoint(work, config, weights, dtype)
    del weights
    build_bpe_tokenizer_json(work / "tokenizer.json", FULL.n_base_tokens)
    manifest: dict = {
        "format": 1,
        "generated_by": "tools/regenerate_golden.py --full",
        "provenance": provenance(),
        "generate": {"max_new_tokens": GENERATE_TOKENS, "do_sample": False},
        # The tokenizer (1.8 MB) is not stored: conformance/harness/tokenizer_fixture.py makes it, checked by its sha256.
        "model": {"name": FULL.name, "config": config.to_dict(), "seed": FULL.seed, "residual_scale": FULL.residual_scale,
                  "embed_scale": FULL.embed_scale, "n_base_tokens": FULL.n_base_tokens,
                  "checkpoint_dtype": FULL.checkpoint_dtype, "weights_sha256": digest,
                  "tokenizer_sha256": golden.sha256((work / "tokenizer.json").read_bytes())},
        "clips": {case: [golden.sha256(c.tobytes()) for c in clips(case)] for case in FULL_CASES},
        "cases": {},
    }
    processor = reference.make_processor(work / "tokenizer.json", config.audio_config.num_mel_bins)
    manifest["model"]["processor_config"] = reference.processor_config(processor)
    files: dict[str, bytes] = {}
    for dtype_name, cases in (("fp32", FULL_CASES), ("bf16", FULL_BF16_CASES)):
        model = reference.load_reference(work, DTYPES[dtype_name])
        for case in cases:
            inputs = reference.prepare_inputs(processor, clips(case))
            tensors, stage_info = reference.case_tensors(model, inputs, config, sampled=True)
            if dtype_name == "fp32":
                tensors["generated_ids"] = reference.generate(model, inputs, GENERATE_TOKENS)
            data = save(tensors)
            rel = f"{case}.{dtype_name}.safetensors"
            files[rel] = data
            manifest["cases"][f"{FULL.name}/{case}/{dtype_name}"] = {
                "model": FULL.name, "audio": case, "dtype": dtype_name, "path": rel, "sha256": golden.sha256(data),
                "stages": stage_info,
            }
            print(f"  {golden.FULL}/{rel}: {len(data) / 1e6:.2f} MB", file=sys.stderr)
        del model  # the next dtype's copy is loaded in its place, not beside it
    files[golden.MANIFEST] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    return files


def report_check(root: Path, files: dict[str, bytes], total: int, skip: tuple[str, ...] = ()) -> int:
    """Prints each file's verdict against the stored tree; 1 if any is beyond tolerance."""
    try:
        made_on = golden.load_manifest(root)["provenance"].get("cpu", {}).get("class", "an unrecorded CPU class")
    except golden.GoldenError:
        made_on = "nothing (no manifest)"
    here = cpu.features().cpu_class
    results = drift.drift(root, files, skip)
    for r in results:
        if r.verdict != drift.IDENTICAL:
            print(f"{r.path}: {r.verdict}" + (f" ({r.detail})" if r.detail else ""))
    counts = {v: sum(r.verdict == v for r in results) for v in (drift.IDENTICAL, drift.WITHIN, drift.BEYOND)}
    print(f"{len(files)} files, {total / 1e6:.1f} MB, made on {made_on}, checked on {here}: "
          + ", ".join(f"{n} {v}" for v, n in counts.items()))
    if counts[drift.WITHIN] and not counts[drift.BEYOND]:
        print("bytes differ within the tolerance table: expected between CPU classes" if made_on != here else
              "bytes differ on the CPU class golden/ was made on: the reference or its dependencies changed")
    return 1 if counts[drift.BEYOND] else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="regenerate in memory and compare with golden/; write nothing")
    parser.add_argument("--full", action="store_true", help="the released shape only, into ROOT/full (peak RSS about 13 GB)")
    parser.add_argument("--root", type=Path, default=golden.ROOT, help="golden directory (default: %(default)s)")
    args = parser.parse_args()
    # One thread for the tiny models; the full-size run would take an hour on one, and its stored slices
    # are compared within the tolerance table, not byte for byte.
    torch.set_num_threads(torch.get_num_threads() if args.full else 1)
    torch.manual_seed(0)
    root = args.root / golden.FULL if args.full else args.root
    with tempfile.TemporaryDirectory() as work:
        files = build_full(Path(work)) if args.full else build(Path(work))
    total = sum(len(d) for d in files.values())
    if args.check:
        return report_check(root, files, total, skip=() if args.full else (golden.FULL,))
    golden.write_tree(root, files, keep=() if args.full else (golden.FULL,))
    print(f"wrote {len(files)} files, {total / 1e6:.1f} MB to {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
