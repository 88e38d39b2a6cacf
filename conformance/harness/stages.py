"""The stages the suite compares, in forward order, and which part of each tensor is compared.

Encoder-side stages are per window: only the first `n` frames along their frame axis are stored, `n` the
largest valid length of the case's windows at that stage's frame rate. Every window is still computed in
full (the reference attends to padded frames), so a padded frame that went wrong shows up in the next
stage's valid frames; what is dropped is only what no later stage can see. This keeps golden/ small.
Decoder-side stages zero the rows of left-padding tokens, whose values the reference never uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from glm_asr.model.config import GlmAsrConfig


@dataclass(frozen=True)
class Stage:
    name: str
    frame_axis: int | None  # per-window stages: the frame/token axis cropped to valid length
    rate: int  # mel frames per entry on that axis (1 mel rate, 2 after conv2, 8 per audio token)
    feature_axis: int  # rows for the cosine metric are vectors along this axis
    padded_tokens: bool = False  # decoder-side (B, T, ...): zero the left-padding rows


def stages(config: GlmAsrConfig) -> list[Stage]:
    a, t = config.audio_config.num_hidden_layers, config.text_config.num_hidden_layers
    return [
        Stage("mel", 2, 1, 1),  # (W, M, F)
        Stage("conv1", 2, 1, 1),  # (W, Da, F)
        Stage("conv2", 1, 2, 2),  # (W, F/2, Da)
        *[Stage(f"encoder.layers.{i}", 1, 2, 2) for i in range(a)],
        Stage("encoder.norm", 1, 2, 2),
        Stage("merged", 1, 8, 2),  # (W, F/8, 4Da)
        Stage("projector", 1, 8, 2),  # (W, F/8, D)
        Stage("inputs_embeds", None, 0, 2, True),  # (B, T, D)
        *[Stage(f"decoder.layers.{i}", None, 0, 2, True) for i in range(t)],
        Stage("decoder.norm", None, 0, 2, True),
        Stage("logits", None, 0, 2, True),  # (B, T, V)
    ]


def kept_length(stage: Stage, input_features_mask: torch.Tensor) -> int:
    """How many entries along the frame axis are stored: the longest valid window at this stage's rate."""
    frames = int(input_features_mask.sum(-1).max())
    if stage.rate == 8:
        return ((frames - 1) // 2 + 1) // 4  # audio tokens kept by the reference
    return math.ceil(frames / stage.rate)


def select(stage: Stage, tensor: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The part of a stage's tensor that is stored and compared, as float32 on the CPU."""
    tensor = tensor.detach().to("cpu", torch.float32)
    if stage.frame_axis is not None:
        tensor = tensor.narrow(stage.frame_axis, 0, kept_length(stage, inputs["input_features_mask"]))
    if stage.padded_tokens:
        tensor = tensor * inputs["attention_mask"].to(torch.float32)[..., None]
    return tensor.contiguous()


def row_axis(stage: Stage) -> int:
    """The frame or token axis: the one `sample_rows` picks entries along."""
    return stage.frame_axis if stage.frame_axis is not None else 1


def sample_rows(stage: Stage, inputs: dict[str, torch.Tensor], audio_token_id: int) -> list[int] | None:
    """Which entries along `row_axis` a full-size golden keeps of a stage, after `select` (None: all of it).

    Full-size stages are too large to store whole (a 30 s window is 1500 x 1280 floats per encoder layer), so
    golden/full keeps the entries where porting bugs show first: the first and last valid frames (padding and
    conv length), a middle one, and on the decoder side each row's first real token, its first, middle and last
    audio token (the merge), and the prompt's last two positions (the last one chooses the first token). Of the
    logits only the last position is kept: its 59,264 scores decide the greedy id. The mel is kept whole: a
    port is fed it.
    """
    if stage.name == "mel":
        return None
    if stage.frame_axis is not None:
        n = kept_length(stage, inputs["input_features_mask"])
        return sorted({0, 1, n // 2, n - 2, n - 1} & set(range(n)))
    T = inputs["input_ids"].shape[1]
    if stage.name == "logits":
        return [T - 1]
    rows = {T - 2, T - 1}
    for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"]):
        audio = (ids == audio_token_id).nonzero().flatten().tolist()
        rows |= {int(mask.argmax()), audio[0], audio[len(audio) // 2], audio[-1]}
    return sorted(r for r in rows if 0 <= r < T)


def take_rows(stage: Stage, tensor: torch.Tensor, rows: list[int] | None) -> torch.Tensor:
    """The entries `rows` of a selected stage tensor (all of it for None)."""
    return tensor if rows is None else tensor.index_select(row_axis(stage), torch.tensor(rows)).contiguous()
