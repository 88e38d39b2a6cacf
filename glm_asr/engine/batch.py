"""A whole batch: units decoded together from their prompts to their last token, as the corpus path runs them."""

from __future__ import annotations

import time

from glm_asr.engine.units import Unit
from glm_asr.model.glm_asr import GlmAsrModel
from glm_asr.onnx.backend import OnnxModel
from glm_asr.transcription.processor import Processor
from glm_asr.transcription.transcribe import transcribe_batch


def run_batch(model: GlmAsrModel | OnnxModel, processor: Processor, batch: list[Unit], max_new_tokens: int | None,
              stop_on_repeat: int | None = None, eos_token_id: tuple[int, ...] | None = None) -> None:
    """Decodes the units together, greedily, each within its token budget; sets each one's `decoded` and adds
    its share of the time."""
    started = time.perf_counter()
    decoded = transcribe_batch(model, processor, [u.samples for u in batch], max_new_tokens, eos_token_id=eos_token_id,
                           stop_on_repeat=stop_on_repeat, on_token=[u.on_token for u in batch])
    wall = time.perf_counter() - started
    total = sum(u.samples.shape[0] for u in batch) or 1
    for unit, d in zip(batch, decoded):
        unit.decoded = d
        unit.result.model_seconds += wall * unit.samples.shape[0] / total
