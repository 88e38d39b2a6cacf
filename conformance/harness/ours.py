"""Runs our implementation on a golden case's inputs and returns every stage, chained or isolated.

Chained: the whole pipeline from the case's audio, as a user runs it. Isolated: each stage fed the
reference's own output of the stage before it (from the golden), so errors do not accumulate and the
tolerances can be tight enough to see one op done differently.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from glm_asr import GlmAsrModel, capture, log_mel
from glm_asr.model.projector import audio_token_counts, merge_frames

from conformance.harness.stages import Stage


def features(clips: list[np.ndarray], n_mels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of all clips in order, as the reference processor flattens a batch."""
    per_clip = [log_mel(c, n_mels=n_mels) for c in clips]
    return torch.cat([f for f, _ in per_clip]), torch.cat([m for _, m in per_clip])


def run_chained(model: GlmAsrModel, clips: list[np.ndarray], inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    dtype = next(model.parameters()).dtype
    mel, mask = features(clips, model.config.audio_config.num_mel_bins)
    with torch.inference_mode(), capture() as taps:
        model(
            input_ids=inputs["input_ids"],
            input_features=mel.to(dtype),
            input_features_mask=mask,
            attention_mask=inputs["attention_mask"],
            position_ids=inputs["position_ids"],
        )
    taps["mel"] = mel
    taps["input_features_mask"] = mask
    return taps


def _decoder_context(model: GlmAsrModel, golden: dict[str, torch.Tensor], x: torch.Tensor):  # noqa: ANN202
    return model.language_model.model.context(golden["inputs.position_ids"], golden["inputs.attention_mask"], x.shape[1], 0, x.dtype)


def isolated_steps(model: GlmAsrModel) -> dict[str, tuple[str | None, bool, Callable]]:
    """stage -> (the stage it reads, whether it works frame by frame, how to compute it).

    A stage that mixes frames (convolutions, attention) needs its input stored in full; a frame-wise one
    also runs on the cropped input.
    """
    tower, lm = model.audio_tower, model.language_model
    steps: dict[str, tuple[str | None, bool, Callable]] = {
        "conv1": ("mel", False, lambda x, g: F.gelu(tower.conv1(x))),
        "conv2": ("conv1", False, lambda x, g: F.gelu(tower.conv2(x)).transpose(1, 2)),
    }
    previous = "conv2"
    for i, layer in enumerate(tower.layers):
        steps[f"encoder.layers.{i}"] = (previous, False, lambda x, g, layer=layer: layer(x, *tower.rope(x.shape[1], x)))
        previous = f"encoder.layers.{i}"
    steps["encoder.norm"] = (previous, True, lambda x, g: tower.norm(x))
    steps["merged"] = ("encoder.norm", True, lambda x, g: merge_frames(x[:, : x.shape[1] // 4 * 4]))
    steps["projector"] = ("merged", True, lambda x, g: model.multi_modal_projector(x))

    def embeds(x: torch.Tensor, g: dict[str, torch.Tensor]) -> torch.Tensor:
        kept = audio_token_counts(g["inputs.input_features_mask"].sum(-1))
        valid = torch.arange(x.shape[1])[None, :] < kept[:, None]
        return model.embed_prompt(g["inputs.input_ids"], x[valid])

    steps["inputs_embeds"] = ("projector", True, embeds)
    previous = "inputs_embeds"
    for i, layer in enumerate(lm.model.layers):
        steps[f"decoder.layers.{i}"] = (
            previous, True, lambda x, g, layer=layer: layer(x, *_decoder_context(model, g, x), None, 0)
        )
        previous = f"decoder.layers.{i}"
    steps["decoder.norm"] = (previous, True, lambda x, g: lm.model.norm(x))
    steps["logits"] = ("decoder.norm", True, lambda x, g: lm.lm_head(x))
    return steps


def run_isolated(model: GlmAsrModel, golden: dict[str, torch.Tensor], full: dict[str, bool], stage_list: list[Stage]) -> dict[str, torch.Tensor]:
    """Every stage whose input the golden holds well enough; `full[name]` says a stage was stored uncropped."""
    dtype = next(model.parameters()).dtype
    out = {}
    with torch.inference_mode():
        for stage, (source, framewise, step) in isolated_steps(model).items():
            if source not in golden or not (framewise or full.get(source, False)):
                continue
            out[stage] = step(golden[source].to(dtype), golden)
    return out
