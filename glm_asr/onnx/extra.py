"""The optional `onnx` extra: a one-line hint when its packages are missing, and a quiet exporter.

torch's dynamo exporter logs one "torchvision is not installed. Skipping torchvision::..." warning per
torchvision operator it could register (eight or so) the first time it runs; this model uses none of them,
so the lines say nothing to a user and are dropped while we export.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager

EXTRA = "pip install 'glm-asr[onnx]'"
EXPORT_MODULES = ("onnx", "onnxscript", "onnx_ir")
REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"


def require(*modules: str, purpose: str = "the ONNX export") -> None:
    """Imports `modules`, or raises one ImportError that names the missing ones and the extra to install."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(f"{purpose} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: {EXTRA}")


class _NoTorchvision(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("torchvision is not installed")


@contextmanager
def quiet_exporter() -> Iterator[None]:
    """Drops the exporter's torchvision warnings (only those) while the block runs."""
    logger, dropped = logging.getLogger(REGISTRATION_LOGGER), _NoTorchvision()
    logger.addFilter(dropped)
    try:
        yield
    finally:
        logger.removeFilter(dropped)
