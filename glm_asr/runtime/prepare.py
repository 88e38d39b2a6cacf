"""Puts a built model on the kernels this machine runs fastest, from outside the model's code.

`GlmAsrModel(config)` is plain PyTorch: nn.Linear, nn.Conv1d, the model's own ScaledDotProductAttention and
LanguageModel. `prepare(model)` swaps each for its dispatch.py subclass by changing the instance's class, which
keeps every parameter, the tied LM head, hooks and checkpoint keys exactly as they were; the subclasses decide
per call (cpu.py's rules) and fall back to the plain forward wherever a choice does not apply. `load_model` and
the random presets call it; quantize.py swaps modules the same way, after it.
"""

from __future__ import annotations

import torch
from torch import nn

from glm_asr.model.attention import ScaledDotProductAttention
from glm_asr.model.decoder import LanguageModel
from glm_asr.model.glm_asr import GlmAsrModel
from glm_asr.runtime import cpu, dispatch

SWAPS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: dispatch.Linear,
    nn.Conv1d: dispatch.Conv1d,
    ScaledDotProductAttention: dispatch.Attention,
    LanguageModel: dispatch.DecodeStepsLanguageModel,
}


def swap_modules(root: nn.Module) -> None:
    """Every plain module under `root` swapped for its dispatch.py subclass, in place."""
    for module in root.modules():
        swap = SWAPS.get(type(module))  # exact type: a module already swapped, or quantised, is left alone
        if swap is not None:
            module.__class__ = swap


def prepare(model: GlmAsrModel) -> GlmAsrModel:
    """Swaps `model`'s plain modules for the runtime's, in place, and returns it. Where the decode steps of batch
    1 will run fp32 on this CPU, the single-row kernel is chosen now (measured once per machine and cached: about
    2 s the first time, see cpu.calibrate), not at the first token."""
    swap_modules(model)
    head = model.language_model.lm_head.weight
    if head.device.type == "cpu" and head.dtype == torch.float32:
        cpu.choices()
    return model
