"""GlmAsrModel: wires the stages together. Attribute names are the released checkpoint's keys.

    audio (16 kHz) -> log_mel (front_end.py)            (W, M, F=3000)
      -> audio_tower: conv stem + encoder (encoder.py)   (W, F/2, Da)
      -> merge 4 frames + multi_modal_projector (projector.py)  (W, F/8, D), valid tokens kept
      -> written over the <|pad|> audio-token embeddings of the prompt        (B, T, D)
      -> language_model.model: Llama decoder (decoder.py)                     (B, T, D)
      -> language_model.lm_head                                               (B, T, V)
"""

from __future__ import annotations

import torch
from torch import nn

from glm_asr.model.taps import record
from glm_asr.model.config import MERGE_FACTOR, GlmAsrConfig
from glm_asr.model.decoder import KVCache, LanguageModel
from glm_asr.model.encoder import AudioEncoder
from glm_asr.model.projector import Projector, audio_token_counts, merge_frames


class GlmAsrModel(nn.Module):
    """GLM-ASR-Nano-2512: `audio_tower`, `multi_modal_projector`, `language_model`."""

    def __init__(self, config: GlmAsrConfig) -> None:
        super().__init__()
        self.config = config
        self.audio_tower = AudioEncoder(config.audio_config)
        self.multi_modal_projector = Projector(config)
        self.language_model = LanguageModel(config.text_config, config.tie_word_embeddings)

    def embed_audio(self, input_features: torch.Tensor, input_features_mask: torch.Tensor) -> torch.Tensor:
        """(W, M, F) log-mel windows and their (W, F) valid-frame mask -> (N, D) audio embeddings, windows in order."""
        W, M, F = input_features.shape
        if M != self.config.audio_config.num_mel_bins or F % (2 * MERGE_FACTOR):
            raise ValueError(
                f"input_features has shape {tuple(input_features.shape)}: expected (windows, "
                f"{self.config.audio_config.num_mel_bins}, frames a multiple of 8), as log_mel gives"
            )
        input_features = input_features.to(self.audio_tower.conv1.weight.dtype)  # its own dtype under quantize_audio
        merged = merge_frames(self.audio_tower(input_features))  # (W, F/8, 4Da)
        record("merged", merged)
        projected = self.multi_modal_projector(merged)  # (W, F/8, D)
        record("projector", projected)
        kept = audio_token_counts(input_features_mask.sum(-1))
        valid = torch.arange(projected.shape[1], device=projected.device)[None, :] < kept[:, None].to(projected.device)
        return projected[valid]  # (N, D)

    def embed_prompt(self, input_ids: torch.Tensor, audio_embeds: torch.Tensor | None) -> torch.Tensor:
        """(B, T) ids -> (B, T, D) embeddings with audio-token rows overwritten, in order, by `audio_embeds`."""
        embeds = self.language_model.model.embed_tokens(input_ids)
        is_audio = input_ids == self.config.audio_token_id
        n_slots, n_audio = int(is_audio.sum()), 0 if audio_embeds is None else audio_embeds.shape[0]
        if n_slots != n_audio:
            raise ValueError(
                f"the prompt has {n_slots} audio tokens (id {self.config.audio_token_id}) but the audio gives "
                f"{n_audio} embeddings: build input_ids with the processor from the same audio"
            )
        if audio_embeds is not None:
            embeds = embeds.masked_scatter(is_audio[..., None], audio_embeds.to(embeds.dtype))
        record("inputs_embeds", embeds)
        return embeds

    def forward(
        self,
        input_ids: torch.Tensor,
        input_features: torch.Tensor | None = None,
        input_features_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, V) for a whole prompt, arguments as for the reference's forward.

        `attention_mask` (B, T) marks real tokens (0 for left padding); `position_ids` (B, T) default to
        0..T-1 like the reference's (generation passes cumsum(attention_mask) - 1 instead).
        """
        audio = None
        if input_features is not None:
            if input_features_mask is None:
                input_features_mask = torch.ones(input_features.shape[0], input_features.shape[2], dtype=torch.int32, device=input_features.device)
            audio = self.embed_audio(input_features, input_features_mask)
        embeds = self.embed_prompt(input_ids, audio)
        return self.decode(embeds, position_ids, None if attention_mask is None else attention_mask.bool())

    def decode(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        key_valid: torch.Tensor | None = None,
        cache: KVCache | None = None,
        offset: int = 0,
        last_only: bool = False,
    ) -> torch.Tensor:
        """(B, T, D) embeddings -> (B, T, V) logits, optionally continuing a KV cache at `offset`; the last
        position's only, (B, 1, V), with `last_only`. `key_valid` (B, offset + T) is bool, False for padding."""
        B, T, _ = inputs_embeds.shape
        if position_ids is None:
            position_ids = torch.arange(offset, offset + T, device=inputs_embeds.device).expand(B, T)
        if key_valid is None:
            key_valid = torch.ones(B, offset + T, dtype=torch.bool, device=inputs_embeds.device)
        logits = self.language_model(inputs_embeds, position_ids, key_valid, cache, offset, last_only)
        if not last_only:
            record("logits", logits)
        return logits
