"""The projector (`multi_modal_projector`): four encoder frames become one decoder embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glm_asr.model.config import MERGE_FACTOR, GlmAsrConfig


def merge_frames(encoder_states: torch.Tensor) -> torch.Tensor:
    """(W, F/2, D) -> (W, F/8, 4D): token t concatenates frames 4t..4t+3."""
    W, frames, D = encoder_states.shape
    return encoder_states.reshape(W, frames // MERGE_FACTOR, MERGE_FACTOR * D)


def audio_token_counts(valid_frames: torch.Tensor) -> torch.Tensor:
    """Audio tokens kept per window of L valid mel frames: floor(ceil(L / 2) / 4), i.e. 375 for 30 s."""
    after_conv2 = (valid_frames - 1) // 2 + 1  # stride-2 conv, kernel 3, padding 1
    return (after_conv2 - MERGE_FACTOR) // MERGE_FACTOR + 1


class Projector(nn.Module):
    def __init__(self, config: GlmAsrConfig) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(config.audio_config.intermediate_size, 2 * config.text_config.hidden_size)
        self.linear_2 = nn.Linear(2 * config.text_config.hidden_size, config.text_config.hidden_size)

    def forward(self, merged: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(merged)))
