"""Runs this project's PyTorch model (glm_asr) on every case of a conformance kit and writes the results
the kit's README asks for: one safetensors file per case, one tensor per stage.

    python tools/ports/ours_port.py KIT RESULTS                  # fed the kit's inputs.safetensors
    python tools/ports/ours_port.py KIT RESULTS --own-front-end  # features and prompt from the WAVs, by glm_asr
    glm-asr kit check KIT RESULTS

Only glm_asr is used, as a port would use its own code: nothing of the conformance harness.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import glm_asr
from glm_asr.transcription.generate import greedy_generate, prompt_positions

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def load(kit: Path, case: dict) -> glm_asr.GlmAsrModel:
    return glm_asr.load_model(kit / case["checkpoint"], dtype=DTYPES[case["dtype"]])


@contextlib.contextmanager
def sub_stages(model: glm_asr.GlmAsrModel) -> Iterator[dict[str, torch.Tensor]]:
    """The kit's optional sub-stage tensors (its README, "Sub-stages"), taken with forward hooks on the modules
    that compute them, so a change inside a module's forward still shows in what they see."""
    out: dict[str, torch.Tensor] = {}
    handles = []

    def after(module: torch.nn.Module, name: str) -> None:
        handles.append(module.register_forward_hook(lambda m, args, result: out.__setitem__(name, result.detach().clone())))

    def before(module: torch.nn.Module, name: str) -> None:
        handles.append(module.register_forward_pre_hook(lambda m, args: out.__setitem__(name, args[0].detach().clone())))

    tower, decoder = model.audio_tower, model.language_model.model
    after(tower.conv1, "conv1.conv")
    after(tower.conv2, "conv2.conv")
    for side, layers in (("encoder", tower.layers), ("decoder", decoder.layers)):
        for i, layer in enumerate(layers):
            p = f"{side}.layers.{i}."
            after(layer.input_layernorm, p + "input_layernorm")
            for proj in ("q_proj", "k_proj", "v_proj"):
                after(getattr(layer.self_attn, proj), p + f"self_attn.{proj}")
            before(layer.self_attn.o_proj, p + "self_attn.context")
            after(layer.self_attn, p + "self_attn")
            before(layer.post_attention_layernorm, p + "attn_residual")
            after(layer.post_attention_layernorm, p + "post_attention_layernorm")
            mlp = layer.mlp
            if side == "encoder":
                after(mlp.fc1, p + "mlp.fc1")
                before(mlp.fc2, p + "mlp.act")
            else:
                after(mlp.gate_proj, p + "mlp.gate_proj")
                after(mlp.up_proj, p + "mlp.up_proj")
                before(mlp.down_proj, p + "mlp.act")
            after(mlp, p + "mlp")
    after(model.multi_modal_projector.linear_1, "projector.linear_1")
    before(model.multi_modal_projector.linear_2, "projector.act")
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


def run_case(model: glm_asr.GlmAsrModel, kit: Path, case: dict, max_new_tokens: int, own_front_end: bool,
             with_sub_stages: bool = True) -> dict[str, torch.Tensor]:
    """Every stage of one case, named as the kit's README asks, and its sub-stages unless told not to."""
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
    with torch.inference_mode(), glm_asr.capture() as taps, sub_stages(model) if with_sub_stages else contextlib.nullcontext({}) as subs:
        model(input_ids=inputs["input_ids"], input_features=features, input_features_mask=inputs["input_features_mask"],
              attention_mask=inputs["attention_mask"], position_ids=inputs["position_ids"])
    out.update(taps)
    out.update(subs)
    out["generated_ids"] = greedy_generate(model, inputs["input_ids"], inputs["attention_mask"], features,
                                           inputs["input_features_mask"], max_new_tokens=max_new_tokens)
    return {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in out.items()}  # clone: merged is a view of encoder.norm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kit", type=Path)
    parser.add_argument("results", type=Path)
    parser.add_argument("--case", default="", help="only cases whose id contains this text")
    parser.add_argument("--own-front-end", action="store_true", help="compute features and prompt ids from the WAVs and dump them too")
    parser.add_argument("--no-sub-stages", action="store_true", help="dump the stages only, as a port that cannot give sub-stages")
    args = parser.parse_args()
    kit = json.loads((args.kit / "kit.json").read_text())
    args.results.mkdir(parents=True, exist_ok=True)
    for case_id, case in kit["cases"].items():
        if args.case in case_id:
            results = run_case(load(args.kit, case), args.kit, case, kit["generate"]["max_new_tokens"], args.own_front_end,
                               not args.no_sub_stages)
            save_file(results, args.results / case["results"])
            print(f"{case_id}: {args.results / case['results']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
