"""The processor: audio -> prompt ids + features, and new ids -> text, as the reference's GlmAsrProcessor.

Prompt for each audio, N its audio-token count over all of its 30 s windows:

    <|user|>\\n<|begin_of_audio|> N x <|pad|> <|end_of_audio|><|user|>\\nPlease transcribe this audio into text<|assistant|>\\n

Batches are left-padded with <|endoftext|> and a 0 in the attention mask.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from glm_asr.model.front_end import CHUNK_SECONDS, SAMPLING_RATE, log_mel
from glm_asr.model.projector import audio_token_counts
from glm_asr.text.tokenizer import Tokenizer

AUDIO_TOKEN = "<|pad|>"
PAD_TOKEN = "<|endoftext|>"
PROMPT_TOKENS = ("<|user|>", "<|assistant|>", "<|begin_of_audio|>", "<|end_of_audio|>", AUDIO_TOKEN, PAD_TOKEN)
INSTRUCTION = "Please transcribe this audio into text"
# The reference caps audio at 655 s, i.e. 21 whole windows (630 s): about the decoder's 8192 positions.
MAX_WINDOWS = int(655 // CHUNK_SECONDS)
# The default decoding budget follows the audio's length: fast speech is about 4 words (English, some 5-6
# tokens) or 6 characters (Chinese, about one token each) a second, so 8 tokens a second leaves room, and the
# fixed part covers a short clip's punctuation and the end-of-text token. A 30 s window gets 256 tokens.
TOKENS_PER_SECOND = 8
BUDGET_BASE = 16


def token_budget(seconds: float) -> int:
    """New tokens allowed for `seconds` of audio when no fixed max_new_tokens is given."""
    return BUDGET_BASE + math.ceil(TOKENS_PER_SECOND * seconds)


def prompt_text(n_audio_tokens: int, instruction: str = INSTRUCTION) -> str:
    return f"<|user|>\n<|begin_of_audio|>{AUDIO_TOKEN * n_audio_tokens}<|end_of_audio|><|user|>\n{instruction}<|assistant|>\n"


@dataclass
class Batch:
    """Model inputs for B audios with W windows in all."""

    input_ids: torch.Tensor  # (B, T) int64, left-padded
    attention_mask: torch.Tensor  # (B, T) int64
    input_features: torch.Tensor  # (W, M, 3000) float32
    input_features_mask: torch.Tensor  # (W, 3000) int32
    windows: list[int]  # windows per audio, in order

    def to(self, device: str | torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.input_features.to(device),
                     self.input_features_mask.to(device), self.windows)


class Processor:
    """Tokenizer plus feature extraction for the transcription prompt."""

    def __init__(self, tokenizer: Tokenizer, num_mel_bins: int = 128, source: str = "tokenizer") -> None:
        missing = [t for t in PROMPT_TOKENS if tokenizer.token_to_id(t) is None]
        if missing:
            raise ValueError(f"{source}: lacks the special tokens the prompt needs: {', '.join(missing)}")
        self.tokenizer = tokenizer
        self.num_mel_bins = num_mel_bins
        self.audio_token_id = tokenizer.token_to_id(AUDIO_TOKEN)
        self.pad_token_id = tokenizer.token_to_id(PAD_TOKEN)

    @classmethod
    def from_dir(cls, directory: str | os.PathLike, num_mel_bins: int = 128) -> Processor:
        path = Path(directory) / "tokenizer.json"
        return cls(Tokenizer.from_file(path), num_mel_bins, str(path))

    def __call__(self, audios: list[np.ndarray], max_windows: int | None = MAX_WINDOWS) -> Batch:
        """Prompts and features for 16 kHz mono float audios; each is cut to `max_windows` 30 s windows."""
        features, masks, windows, prompts = [], [], [], []
        for audio in audios:
            if max_windows is not None:
                audio = audio[: max_windows * CHUNK_SECONDS * SAMPLING_RATE]
            mel, mask = log_mel(audio, n_mels=self.num_mel_bins)
            features.append(mel)
            masks.append(mask)
            windows.append(mel.shape[0])
            n_tokens = int(audio_token_counts(mask.sum()))  # the reference counts over all windows at once
            prompts.append(self.tokenizer.encode(prompt_text(n_tokens)))
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros(len(prompts), width, dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        return Batch(input_ids, attention_mask, torch.cat(features), torch.cat(masks), windows)

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """Text of generated ids, special tokens (eos, padding) skipped."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)
