"""Runs this project's PyTorch model (glm_asr) on every case of a conformance kit and writes the results
the kit's README asks for: one safetensors file per case, one tensor per stage.

    python tools/ports/ours_port.py KIT RESULTS                  # fed the kit's inputs.safetensors
    python tools/ports/ours_port.py KIT RESULTS --own-front-end  # features and prompt from the WAVs, by glm_asr
    glm-asr kit check KIT RESULTS

Only glm_asr is used, as a port would use its own code: nothing of the conformance harness.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import glm_asr
from glm_asr.transcription.generate import greedy_generate, prompt_positions

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def load(kit: Path, case: dict) -> glm_asr.GlmAsrModel:
    return glm_asr.load_model(kit / case["checkpoint"], dtype=DTYPES[case["dtype"]])


def run_case(model: glm_asr.GlmAsrModel, kit: Path, case: dict, max_new_tokens: int, own_front_end: bool) -> dict[str, torch.Tensor]:
    """Every stage of one case, named as the kit's README asks."""
    folder = kit / case["dir"]
    inputs = load_file(folder / "inputs.safetensors")
    out: dict[str, torch.Tensor] = {}
    if own_front_end:
        processor = glm_asr.Processor.from_dir(kit / case["checkpoint"], model.config.audio_config.num_mel_bins)
        batch = processor([glm_asr.load_audio(folder / c["file"]) for c in case["clips"]])
        inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                  "input_features": batch.input_features, "input_features_mask": batch.input_features_mask}
        out = {"input_ids": batch.input_ids, "input_features_mask": batch.input_features_mask, "mel": batch.input_features}
    # Positions as our generation computes them, not the kit's copy: a bug there must show.
    inputs["position_ids"] = prompt_positions(inputs["attention_mask"])
    features = inputs["input_features"].to(DTYPES[case["dtype"]])
    with torch.inference_mode(), glm_asr.capture() as taps:
        model(input_ids=inputs["input_ids"], input_features=features, input_features_mask=inputs["input_features_mask"],
              attention_mask=inputs["attention_mask"], position_ids=inputs["position_ids"])
    out.update(taps)
    out["generated_ids"] = greedy_generate(model, inputs["input_ids"], inputs["attention_mask"], features,
                                           inputs["input_features_mask"], max_new_tokens=max_new_tokens)
    return {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in out.items()}  # clone: merged is a view of encoder.norm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kit", type=Path)
    parser.add_argument("results", type=Path)
    parser.add_argument("--case", default="", help="only cases whose id contains this text")
    parser.add_argument("--own-front-end", action="store_true", help="compute features and prompt ids from the WAVs and dump them too")
    args = parser.parse_args()
    kit = json.loads((args.kit / "kit.json").read_text())
    args.results.mkdir(parents=True, exist_ok=True)
    for case_id, case in kit["cases"].items():
        if args.case in case_id:
            results = run_case(load(args.kit, case), args.kit, case, kit["generate"]["max_new_tokens"], args.own_front_end)
            save_file(results, args.results / case["results"])
            print(f"{case_id}: {args.results / case['results']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
