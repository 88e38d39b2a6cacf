"""Greedy decoding with a preallocated KV cache: prefill the prompt once, then one token per step."""

from __future__ import annotations

from collections.abc import Callable

import torch

from glm_asr.model.decoder import KVCache
from glm_asr.model.glm_asr import GlmAsrModel


def prompt_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Left-padded prompts count positions from their first real token (padding gets 1, as the reference)."""
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)


@torch.inference_mode()
def greedy_generate(
    model: GlmAsrModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    input_features: torch.Tensor | None,
    input_features_mask: torch.Tensor | None,
    *,
    max_new_tokens: int = 500,
    eos_token_id: tuple[int, ...] | None = None,
    use_cache: bool = True,
    on_token: Callable[[torch.Tensor], None] | None = None,
    stop: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """New token ids (B, n <= max_new_tokens). A row that has emitted an eos id (default: the config's) is
    padded with the first eos id until every row is done, as transformers' `generate(do_sample=False)` does.
    `on_token`, if given, is called with each step's ids (B,) as soon as they are chosen (streaming, timing).
    `stop`, if given, is called with them too and returns (B,) bools: rows to end there as if at an eos id."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}: expected at least 1")
    config = model.config.text_config
    eos = torch.tensor(eos_token_id or config.eos_token_id, device=input_ids.device)
    # The audio path may run in another dtype than the decoder (quantize_audio): each takes its own.
    audio_dtype = model.audio_tower.conv1.weight.dtype
    dtype = model.language_model.model.embed_tokens.weight.dtype
    audio = None if input_features is None else model.embed_audio(input_features.to(audio_dtype), input_features_mask)
    embeds = model.embed_prompt(input_ids, audio)  # (B, T, D)
    B, T, _ = embeds.shape
    key_valid = torch.ones(B, T + max_new_tokens, dtype=torch.bool, device=input_ids.device)
    key_valid[:, :T] = attention_mask.bool()
    positions = prompt_positions(attention_mask)  # (B, T)
    cache = KVCache.empty(config, B, T + max_new_tokens, dtype, input_ids.device) if use_cache else None

    logits = model.decode(embeds, positions, key_valid[:, :T], cache, 0, last_only=True)  # (B, 1, V)
    tokens, finished = [], torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    for step in range(max_new_tokens):
        token = logits[:, -1].float().argmax(-1).masked_fill(finished, int(eos[0]))
        tokens.append(token)
        if on_token is not None:
            on_token(token)
        finished |= torch.isin(token, eos)
        if stop is not None:
            finished |= stop(token)
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        next_embeds = model.language_model.model.embed_tokens(token[:, None])  # (B, 1, D)
        next_positions = positions[:, -1:] + 1 + step
        if cache is not None:
            logits = model.decode(next_embeds, next_positions, key_valid[:, : T + step + 1], cache, T + step, last_only=True)
        else:  # the whole sequence again: the reference point that cached decoding must equal
            embeds = torch.cat([embeds, next_embeds], dim=1)
            positions_all = torch.cat([positions, positions[:, -1:] + 1 + torch.arange(step + 1, device=input_ids.device)], dim=1)
            logits = model.decode(embeds, positions_all, key_valid[:, : T + step + 1], None, 0, last_only=True)
    return torch.stack(tokens, dim=1)
