"""Transcribing many inputs: audio read ahead in a thread, inputs batched across files by length.

A background thread decodes the next inputs while the model works, holding at most `prefetch` decoded
inputs: with the pool below, at most `batch_size * pool_batches + prefetch` inputs' samples are in memory
(16 kHz float32: 230 MB an hour), however long the corpus. The main thread takes `batch_size * pool_batches`
inputs at a time, cuts them into units (a whole input of up to 21 windows, as `transcribe` does, or one 30 s
window each when chunked or longer), sorts the units by length so that a batch pads little, and decodes each
batch greedily with the KV cache. Results come out in input order, each as soon as it and those before it
are done. The texts equal one-at-a-time `transcribe_detailed` ones (tests/test_bulk.py checks it in fp32).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import numpy as np

from glm_asr.engine.batch import run_batch
from glm_asr.engine.units import FileResult, Unit, cut_units, finish
from glm_asr.io.audio_file import AudioError, load_audio
from glm_asr.corpus.inputs import Item
from glm_asr.longform.segmentation import find_pieces
from glm_asr.longform.vad import VadOptions, model_path
from glm_asr.model.front_end import SAMPLING_RATE
from glm_asr.model.glm_asr import GlmAsrModel
from glm_asr.onnx.backend import OnnxModel
from glm_asr.transcription.processor import Processor


def _read_ahead(items: list[Item], out: queue.Queue, cancelled: threading.Event, vad: VadOptions | None = None) -> None:
    for item in items:
        started = time.perf_counter()
        try:
            samples: np.ndarray | str = load_audio(item.path, item.offset, item.duration)
            if vad is not None:  # here, in the reader thread, so that it overlaps the model's work; only speech is kept
                pieces = find_pieces(samples, vad)
                samples = (samples.shape[0], pieces, [p.samples(samples) for p in pieces])
        except (AudioError, OSError) as e:
            samples = str(e) if str(item.path) in str(e) else f"{item.path}: {e}"
        except Exception as e:  # noqa: BLE001 (anything else one file raises is that file's error: the main thread must not wait forever)
            samples = f"{item.path}: {type(e).__name__}: {e}"
        entry = (item, samples, time.perf_counter() - started)
        while not cancelled.is_set():
            try:
                out.put(entry, timeout=0.1)
                break
            except queue.Full:
                continue
        if cancelled.is_set():
            return


def transcribe_items(
    model: GlmAsrModel | OnnxModel,
    processor: Processor,
    items: list[Item],
    *,
    max_new_tokens: int | None = None,
    chunked: bool | None = None,
    batch_size: int = 8,
    pool_batches: int = 2,
    prefetch: int = 8,
    stop_on_repeat: int | None = None,
    eos_token_id: tuple[int, ...] | None = None,
    vad: VadOptions | None = None,
) -> Iterator[FileResult]:
    """One FileResult per item, in order, each yielded as soon as it is done. A file that cannot be read
    gets a result with `error` set, and the rest go on. `chunked` and `max_new_tokens` (None: a budget that
    follows each prompt's audio length) as in `transcribe_detailed`; with `vad`, only speech is decoded, in
    pieces batched with the other inputs' (glm_asr/longform), segments on its bounds."""
    if batch_size < 1 or pool_batches < 1 or prefetch < 1:
        raise ValueError(f"batch_size {batch_size}, pool_batches {pool_batches}, prefetch {prefetch}: expected each >= 1")
    if stop_on_repeat is not None and isinstance(model, OnnxModel):
        raise ValueError("--stop-on-repeat runs with the torch backend only")
    if vad is not None:
        model_path()  # a missing extra is one error now, not one per file
    decoded: queue.Queue = queue.Queue(maxsize=prefetch)
    cancelled = threading.Event()
    reader = threading.Thread(target=_read_ahead, args=(items, decoded, cancelled, vad), daemon=True, name="glm-asr-read-ahead")
    reader.start()
    try:
        pool_size = batch_size * pool_batches
        for start in range(0, len(items), pool_size):
            pool = [decoded.get() for _ in items[start : start + pool_size]]
            yield from _transcribe_pool(model, processor, pool, max_new_tokens, chunked, batch_size, stop_on_repeat, eos_token_id)
    finally:
        cancelled.set()  # a consumer that stops early stops the reader too


def _transcribe_pool(model, processor, pool, max_new_tokens, chunked, batch_size, stop_on_repeat, eos_token_id) -> Iterator[FileResult]:  # noqa: ANN001
    results: list[tuple[FileResult, list[Unit]]] = []
    for item, samples, read_seconds in pool:
        result, units = FileResult(item, read_seconds=read_seconds), []
        if isinstance(samples, str):
            result.error = samples
        elif isinstance(samples, tuple):  # VAD pieces; times on the file's timeline, a manifest's offset added
            length, pieces, speech = samples
            result.duration = length / SAMPLING_RATE
            units = [Unit(result, i, x, span=(item.offset + p.start / SAMPLING_RATE, item.offset + p.end / SAMPLING_RATE))
                     for i, (p, x) in enumerate(zip(pieces, speech))]
        else:
            units = cut_units(result, samples, chunked)
        results.append((result, units))
    queue_ = sorted((u for _, units in results for u in units), key=lambda u: u.samples.shape[0])  # little padding
    emitted = 0
    for start in range(0, len(queue_) + 1, batch_size):  # + 1: a pool of failed reads still emits them
        if queue_[start : start + batch_size]:
            run_batch(model, processor, queue_[start : start + batch_size], max_new_tokens, stop_on_repeat, eos_token_id)
        while emitted < len(results) and all(u.decoded is not None for u in results[emitted][1]):
            yield finish(*results[emitted])
            emitted += 1
