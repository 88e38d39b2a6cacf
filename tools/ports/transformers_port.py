"""The reference implementation (transformers' GlmAsrForConditionalGeneration) as a port: every stage captured
with forward hooks on its own modules, results written as the kit's README asks. The reference must pass its
own kit. Needs transformers (tox -e kit installs 5.24.0); imports nothing of this project.

    python tools/ports/transformers_port.py KIT RESULTS [--own-front-end]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import scipy.io.wavfile  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    GlmAsrForConditionalGeneration,
    GlmAsrProcessor,
    PreTrainedTokenizerFast,
    WhisperFeatureExtractor,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# The kit README's prompt, with one <|pad|> that the processor expands to the audio's token count.
PROMPT = "<|user|>\n<|begin_of_audio|><|pad|><|end_of_audio|><|user|>\nPlease transcribe this audio into text<|assistant|>\n"


def front_end(kit: Path, case: dict, n_mels: int) -> dict[str, torch.Tensor]:
    folder = kit / case["dir"]
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(kit / case["checkpoint"] / "tokenizer.json"),
                                        pad_token="<|endoftext|>", eos_token="<|endoftext|>")
    processor = GlmAsrProcessor(WhisperFeatureExtractor(feature_size=n_mels), tokenizer)
    clips = [scipy.io.wavfile.read(folder / c["file"])[1] for c in case["clips"]]
    batch = processor(text=[PROMPT] * len(clips), audio=clips, sampling_rate=16000)
    mask = batch["attention_mask"]
    return {"input_ids": batch["input_ids"], "attention_mask": mask, "input_features": batch["input_features"],
            "input_features_mask": batch["input_features_mask"],
            "position_ids": (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)}


def stages(model: GlmAsrForConditionalGeneration, inputs: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    taps: dict[str, torch.Tensor] = {}
    hooks = []

    def first(value):  # noqa: ANN001, ANN202 - decoder layers may return a tuple
        return (value[0] if isinstance(value, tuple) else value).detach().clone()

    def pre(module, name, kwarg):  # noqa: ANN001, ANN202 - what a module receives
        hooks.append(module.register_forward_pre_hook(lambda m, a, k: taps.__setitem__(name, first(a[0] if a else k[kwarg])), with_kwargs=True))

    def post(module, name):  # noqa: ANN001, ANN202 - what a module returns
        hooks.append(module.register_forward_hook(lambda m, a, out: taps.__setitem__(name, first(out))))

    inner = model.model
    tower, lm = inner.audio_tower, inner.language_model
    pre(tower.conv2, "conv1", "input")  # GELU(conv1(mel)), what conv2 reads
    pre(tower.layers[0], "conv2", "hidden_states")  # GELU(conv2(.)) transposed, what layer 0 reads
    for i, layer in enumerate(tower.layers):
        post(layer, f"encoder.layers.{i}")
    post(tower.norm, "encoder.norm")
    pre(inner.multi_modal_projector, "merged", "audio_features")
    post(inner.multi_modal_projector, "projector")
    pre(lm, "inputs_embeds", "inputs_embeds")
    for i, layer in enumerate(lm.layers):
        post(layer, f"decoder.layers.{i}")
    post(lm.norm, "decoder.norm")
    try:
        with torch.inference_mode():
            out = model(input_ids=inputs["input_ids"], input_features=inputs["input_features"].to(dtype),
                        input_features_mask=inputs["input_features_mask"], attention_mask=inputs["attention_mask"],
                        position_ids=inputs["position_ids"], use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    taps["logits"] = out.logits
    return taps


def run_case(kit: Path, case: dict, max_new_tokens: int, own_front_end: bool) -> dict[str, torch.Tensor]:
    folder = kit / case["dir"]
    dtype = DTYPES[case["dtype"]]
    model = GlmAsrForConditionalGeneration.from_pretrained(kit / case["checkpoint"], dtype=dtype, attn_implementation="eager").eval()
    inputs = load_file(folder / "inputs.safetensors")
    out = {}
    if own_front_end:
        inputs = front_end(kit, case, model.config.audio_config.num_mel_bins)
        out = {"input_ids": inputs["input_ids"], "input_features_mask": inputs["input_features_mask"], "mel": inputs["input_features"]}
    out.update(stages(model, inputs, dtype))
    eos = list(model.config.text_config.eos_token_id)
    with torch.inference_mode():
        generated = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                   input_features=inputs["input_features"].to(dtype), input_features_mask=inputs["input_features_mask"],
                                   do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=eos[0])
    out["generated_ids"] = generated[:, inputs["input_ids"].shape[1]:]
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kit", type=Path)
    parser.add_argument("results", type=Path)
    parser.add_argument("--case", default="", help="only cases whose id contains this text")
    parser.add_argument("--own-front-end", action="store_true", help="features and prompt ids from the WAVs by transformers' processor")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    kit = json.loads((args.kit / "kit.json").read_text())
    args.results.mkdir(parents=True, exist_ok=True)
    for case_id, case in kit["cases"].items():
        if args.case in case_id:
            # The tiny goldens were made on one thread; the full-size ones on all (one would take an hour).
            torch.set_num_threads(threads if case.get("sampled") else 1)
            save_file(run_case(args.kit, case, kit["generate"]["max_new_tokens"], args.own_front_end), args.results / case["results"])
            print(f"{case_id}: {args.results / case['results']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
