"""Runs the reference implementation (transformers 5.24.0) and captures every stage by name.

Imported only where transformers is installed: `tools/regenerate_golden.py` (tox -e golden) and the live
oracle tests (tox -e oracle). The reference's own modules are hooked; nothing of ours runs here.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    GlmAsrForConditionalGeneration,
    GlmAsrProcessor,
    PreTrainedTokenizerFast,
    WhisperFeatureExtractor,
)

from glm_asr.model.config import GlmAsrConfig  # noqa: E402

from conformance.harness.cases import PROMPT  # noqa: E402
from conformance.harness.stages import sample_rows, select, stages, take_rows  # noqa: E402

VERSION = transformers.__version__


def load_reference(checkpoint: Path, dtype: torch.dtype) -> GlmAsrForConditionalGeneration:
    model = GlmAsrForConditionalGeneration.from_pretrained(checkpoint, dtype=dtype, attn_implementation="eager")
    return model.eval()


def make_processor(tokenizer_json: Path, num_mel_bins: int) -> GlmAsrProcessor:
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json), pad_token="<|endoftext|>", eos_token="<|endoftext|>")
    return GlmAsrProcessor(WhisperFeatureExtractor(feature_size=num_mel_bins), tokenizer)


def processor_config(processor: GlmAsrProcessor) -> dict:
    """processor_config.json as the reference saves it (transformers 5.x: the feature extractor nested in it)."""
    with tempfile.TemporaryDirectory() as saved:
        processor.save_pretrained(saved)
        return json.loads((Path(saved) / "processor_config.json").read_text())


def prepare_inputs(processor: GlmAsrProcessor, clips: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """The processor's tensors for the SPEC prompt, plus the position ids generation would use."""
    batch = processor(text=[PROMPT] * len(clips), audio=clips, sampling_rate=16000)
    mask = batch["attention_mask"]
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": mask,
        "position_ids": (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1),  # as generate() computes them
        "input_features": batch["input_features"],
        "input_features_mask": batch["input_features_mask"],
    }


def run_stages(model: GlmAsrForConditionalGeneration, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every stage tensor of one forward pass, named as in conformance/harness/stages.py."""
    taps: dict[str, torch.Tensor] = {}
    inner = model.model
    hooks = []

    def first(value):  # noqa: ANN001, ANN202 - decoder layers may return a tuple
        return (value[0] if isinstance(value, tuple) else value).detach().clone()

    def pre(module, name, kwarg):  # noqa: ANN001, ANN202 - record what a module receives
        def hook(m, args, kwargs):  # noqa: ANN001, ANN202
            taps[name] = first(args[0] if args else kwargs[kwarg])

        hooks.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def post(module, name):  # noqa: ANN001, ANN202 - record what a module returns
        hooks.append(module.register_forward_hook(lambda m, args, output: taps.__setitem__(name, first(output))))

    tower, lm = inner.audio_tower, inner.language_model
    pre(tower.conv2, "conv1", "input")  # GELU(conv1(x)) is what conv2 receives
    pre(tower.layers[0], "conv2", "hidden_states")  # GELU(conv2(.)) transposed, what layer 0 receives
    for i, layer in enumerate(tower.layers):
        post(layer, f"encoder.layers.{i}")
    post(tower.norm, "encoder.norm")
    pre(inner.multi_modal_projector, "merged", "audio_features")
    post(inner.multi_modal_projector, "projector")
    pre(lm, "inputs_embeds", "inputs_embeds")
    for i, layer in enumerate(lm.layers):
        post(layer, f"decoder.layers.{i}")
    post(lm.norm, "decoder.norm")
    dtype = next(model.parameters()).dtype
    try:
        with torch.inference_mode():
            out = model(
                input_ids=inputs["input_ids"],
                input_features=inputs["input_features"].to(dtype),
                input_features_mask=inputs["input_features_mask"],
                attention_mask=inputs["attention_mask"],
                position_ids=inputs["position_ids"],
                use_cache=False,
            )
    finally:
        for h in hooks:
            h.remove()
    taps["mel"] = inputs["input_features"]
    taps["logits"] = out.logits
    return taps


def generate(
    model: GlmAsrForConditionalGeneration, inputs: dict[str, torch.Tensor], max_new_tokens: int, eos: list[int] | None = None
) -> torch.Tensor:
    """The reference's greedy continuation (B, n), eos ids and padding as generate() returns them."""
    eos = eos or list(model.config.text_config.eos_token_id)
    with torch.inference_mode():
        out = model.generate(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            input_features=inputs["input_features"],
            input_features_mask=inputs["input_features_mask"],
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
            pad_token_id=eos[0],
        )
    return out[:, inputs["input_ids"].shape[1] :].contiguous()


def case_tensors(
    model: GlmAsrForConditionalGeneration, inputs: dict[str, torch.Tensor], config: GlmAsrConfig, sampled: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """What a golden file holds for one case: the processor's inputs (`inputs.*`) and every stage cut by
    `select`, plus per stage its stored shape and whether it was stored uncropped. `sampled` (full-size
    cases) keeps only the entries `sample_rows` picks of each stage and records them as `rows`."""
    taps = run_stages(model, inputs)
    tensors = {f"inputs.{k}": v.contiguous() for k, v in inputs.items() if k != "input_features"}
    info = {}
    for stage in stages(config):
        kept = select(stage, taps[stage.name], inputs)
        full = stage.frame_axis is None or kept.shape[stage.frame_axis] == taps[stage.name].shape[stage.frame_axis]
        info[stage.name] = {"shape": list(kept.shape), "stored_full": full}
        if sampled:
            rows = sample_rows(stage, inputs, config.audio_token_id)
            kept = take_rows(stage, kept, rows)
            info[stage.name].update(rows=rows, stored_shape=list(kept.shape))
        tensors[stage.name] = kept
    return tensors, info
