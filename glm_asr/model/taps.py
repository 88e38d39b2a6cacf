"""Named taps on intermediate tensors, for the conformance suite and for debugging.

The forward code calls `record(name, tensor)` at every stage boundary; outside a `capture()` block that is
a no-op, so the math never depends on whether anyone is listening. Stage names (`mel`, `conv1`,
`encoder.layers.N`, `logits`, ...) are listed in `conformance/harness/stages.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

_taps: ContextVar[dict[str, torch.Tensor] | None] = ContextVar("glm_asr_taps", default=None)


@contextmanager
def capture() -> Iterator[dict[str, torch.Tensor]]:
    """Collects every recorded stage tensor of the forward passes run inside the block."""
    taps: dict[str, torch.Tensor] = {}
    token = _taps.set(taps)
    try:
        yield taps
    finally:
        _taps.reset(token)


def record(name: str, tensor: torch.Tensor) -> None:
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return
    taps = _taps.get()
    if taps is not None:
        taps[name] = tensor.detach()
