"""Transcribing a corpus: inputs (files, folders, manifests), batching across files with read-ahead, results
files, subtitles, and Ray.

    import glm_asr
    items = glm_asr.corpus.expand_inputs(["meetings/"])
    for result in glm_asr.corpus.transcribe_items(model, processor, items): ...

The names below are loaded on first use, so that `import glm_asr` stays as light as the model alone.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "expand_inputs": "glm_asr.corpus.inputs", "read_manifest": "glm_asr.corpus.inputs", "Item": "glm_asr.corpus.inputs",
    "transcribe_items": "glm_asr.corpus.batching", "FileResult": "glm_asr.engine.units",
    "ResultsFile": "glm_asr.corpus.results", "record": "glm_asr.corpus.results",
    "transcribe_items_on_ray": "glm_asr.corpus.ray_cluster",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'glm_asr.corpus' has no attribute {name!r}")
