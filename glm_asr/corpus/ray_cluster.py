"""A corpus through Ray Data, when it outgrows one machine: `glm-asr transcribe ... --ray [ADDRESS]`, or
`transcribe_items_on_ray` from Python. An optional extra: `pip install glm-asr[ray]`.

The inputs become a Ray dataset of rows; a pool of actors, each loading the model once, takes batches of
rows from the stream and transcribes each batch as `transcribe_items` does on one machine (a file that fails
is a result with an error, never an exception); the driver gets the results back as they complete and writes
the same JSONL. Every worker must see the audio at the paths the driver gives (a shared filesystem or
object-store mount) and the model at `model_path`.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

from glm_asr.corpus.batching import transcribe_items
from glm_asr.engine.units import FileResult
from glm_asr.corpus.inputs import Item

EXTRA = "pip install glm-asr[ray]"


def import_ray() -> ModuleType:
    try:
        import ray
        import ray.data  # noqa: F401 (Ray Data is its own install extra: ray[data])
    except ImportError as e:
        raise RuntimeError(f"--ray needs Ray Data, which is not installed ({e}): {EXTRA}") from e
    return ray


class _Transcriber:
    """A Ray Data actor: the model loaded once, then one call per batch of rows."""

    def __init__(self, model_kwargs: dict[str, Any], options: dict[str, Any]) -> None:
        from glm_asr.transcription.transcribe import load_model_and_processor

        self.model, self.processor = load_model_and_processor(**model_kwargs)
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[bytes]]:
        items = [pickle.loads(data) for data in batch["item"]]  # noqa: S301 (rows the driver pickled)
        results = transcribe_items(self.model, self.processor, items, batch_size=len(items), **self.options)
        return {"result": [pickle.dumps(r) for r in results]}


def transcribe_items_on_ray(
    items: list[Item],
    *,
    address: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    actors: int = 1,
    batch_size: int = 8,
    gpus_per_actor: float = 0.0,
    **options: Any,
) -> Iterator[FileResult]:
    """One FileResult per item, in the order they complete, from `actors` Ray actors each holding a model
    made by `load_model_and_processor(**model_kwargs)`. `address`: a running cluster's ("auto", or
    "ray://host:10001"); None starts a local Ray instance unless one is running. `options` are
    `transcribe_items`' (max_new_tokens, chunked, stop_on_repeat)."""
    if not items:
        return
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    dataset = ray.data.from_items([{"item": pickle.dumps(item)} for item in items], override_num_blocks=max(1, len(items) // batch_size))
    transcribed = dataset.map_batches(_Transcriber, fn_constructor_kwargs={"model_kwargs": model_kwargs or {}, "options": options},
                                      batch_size=batch_size, concurrency=actors, num_gpus=gpus_per_actor, batch_format="numpy")
    for row in transcribed.iter_rows():
        yield pickle.loads(row["result"])  # noqa: S301 (pickled by our own actors)
