"""The user-facing API: load a model and its processor, transcribe audio."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from glm_asr.model.front_end import CHUNK_SECONDS, SAMPLING_RATE, split_windows
from glm_asr.io.audio_file import AudioError, load_audio, to_mono_16k
from glm_asr.transcription.generate import greedy_generate
from glm_asr.io.checkpoint import load_model
from glm_asr.longform.segmentation import find_pieces
from glm_asr.longform.vad import VadOptions
from glm_asr.model.glm_asr import GlmAsrModel
from glm_asr.onnx.backend import OnnxModel, load_onnx_model_and_processor  # noqa: F401 (the onnxruntime backend's loader)
from glm_asr.transcription.presets import random_model, synthetic_tokenizer
from glm_asr.transcription.processor import MAX_WINDOWS, Processor
from glm_asr.runtime.quantize import AUDIO_KINDS, DECODER_KINDS, quantize_audio, quantize_decoder

AudioInput = str | os.PathLike | np.ndarray | torch.Tensor


@dataclass
class Segment:
    start: float  # seconds
    end: float
    text: str


@dataclass
class Transcription:
    text: str
    audio_seconds: float
    segments: list[Segment] = field(default_factory=list)


def load_model_and_processor(
    model_path: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    random_preset: str = "small",
    quantize: str | None = None,
    quantize_audio_path: str | None = None,
) -> tuple[GlmAsrModel, Processor]:
    """A checkpoint directory (config.json, safetensors, tokenizer.json), or with `model_path=None` random
    weights of a preset (`small`, or `full` = the released size) and a synthetic tokenizer.
    `quantize="int8"` (or `"int4"`, weight-only): quantised decoder weights for CPU decoding; `quantize_audio_path="int8"` or `"bf16"`: the audio
    encoder and projector in int8 or bf16 (glm_asr/runtime/quantize.py; both approximate, fp32 models on the CPU only)."""
    if quantize not in (None, *DECODER_KINDS):
        raise ValueError(f"quantize={quantize!r}: expected None or one of {DECODER_KINDS}")
    if quantize_audio_path not in (None, *AUDIO_KINDS):
        raise ValueError(f"quantize_audio_path={quantize_audio_path!r}: expected None or one of {AUDIO_KINDS}")
    for name, value in (("quantize", quantize), ("quantize_audio_path", quantize_audio_path)):
        if value and (dtype != torch.float32 or torch.device(device).type != "cpu"):
            raise ValueError(f"{name}={value!r} applies to an fp32 model on the CPU, not {dtype} on {device}")
    if model_path is None:
        model = random_model(random_preset, dtype=dtype, device=device)
        processor = Processor(synthetic_tokenizer(), model.config.audio_config.num_mel_bins, "synthetic tokenizer")
    else:
        directory = Path(model_path)
        if not (directory / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{directory}: no tokenizer.json; expected a model folder with config.json, model.safetensors and tokenizer.json")
        model = load_model(directory, dtype=None if quantize else dtype, device=device)  # None: as stored, see quantize_decoder
        processor = Processor.from_dir(directory, model.config.audio_config.num_mel_bins)
    if quantize:
        model = quantize_decoder(model, quantize)  # first: it casts what it leaves to fp32
    if quantize_audio_path:
        model = quantize_audio(model, quantize_audio_path)
    return model, processor


def read_audio(item: AudioInput) -> np.ndarray:
    """A path (WAV) or 16 kHz samples (1-D, or (samples, channels)) as float32 mono 16 kHz."""
    if isinstance(item, (str, os.PathLike)):
        return load_audio(item)
    samples = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
    if not np.issubdtype(samples.dtype, np.floating):
        raise AudioError(f"audio array of dtype {samples.dtype}: expected float samples in [-1, 1] at 16 kHz")
    return to_mono_16k(samples, SAMPLING_RATE, "audio array")


def _join(pieces: list[str]) -> str:
    """Window texts joined with a space, except between CJK characters, which use none."""
    out = ""
    for piece in (p.strip() for p in pieces):
        if not piece:
            continue
        cjk = out and ("\u3000" <= out[-1] <= "\u9fff" or "\u3000" <= piece[0] <= "\u9fff")
        out += piece if not out or cjk else " " + piece
    return out


def transcribe_detailed(
    model: GlmAsrModel | OnnxModel,
    processor: Processor,
    audio: AudioInput | list[AudioInput],
    *,
    max_new_tokens: int = 500,
    chunked: bool | None = None,
    batch_size: int = 8,
    vad: bool | VadOptions = False,
) -> list[Transcription]:
    """Like `transcribe`, with segments and durations. `chunked=None` chunks only audio longer than the
    reference's limit (21 windows, 630 s); `True` transcribes every 30 s window on its own (batched).
    `vad=True` (or VadOptions; needs the `vad` extra) decodes only speech, in pieces of at most 30 s cut
    where the speaker pauses, each a segment on its speech bounds (glm_asr/longform); silence gives none."""
    items = audio if isinstance(audio, list) else [audio]
    samples = [read_audio(a) for a in items]
    device = torch.device("cpu") if isinstance(model, OnnxModel) else next(model.parameters()).device
    results, whole = [], []
    for clip in samples:
        seconds = clip.shape[0] / SAMPLING_RATE
        windows = split_windows(torch.from_numpy(clip))
        if vad:
            pieces = find_pieces(clip, vad if isinstance(vad, VadOptions) else VadOptions())
            texts = _generate(model, processor, [p.samples(clip) for p in pieces], max_new_tokens, batch_size, device)
            segments = [Segment(p.start / SAMPLING_RATE, p.end / SAMPLING_RATE, t) for p, t in zip(pieces, texts)]
            results.append(Transcription(_join(texts), seconds, segments))
        elif chunked or (chunked is None and len(windows) > MAX_WINDOWS):
            texts = _generate(model, processor, [w.numpy() for w in windows], max_new_tokens, batch_size, device)
            segments = [Segment(i * CHUNK_SECONDS, min((i + 1) * CHUNK_SECONDS, seconds), t) for i, t in enumerate(texts)]
            results.append(Transcription(_join(texts), seconds, segments))
        else:
            whole.append(len(results))
            results.append(Transcription("", seconds))
    texts = _generate(model, processor, [samples[i] for i in whole], max_new_tokens, batch_size, device)
    for i, text in zip(whole, texts):
        results[i].text = text
        results[i].segments = [Segment(0.0, results[i].audio_seconds, text)]
    return results


def transcribe(
    model: GlmAsrModel | OnnxModel,
    processor: Processor,
    audio: AudioInput | list[AudioInput],
    *,
    max_new_tokens: int = 500,
    chunked: bool | None = None,
    batch_size: int = 8,
    vad: bool | VadOptions = False,
) -> list[str]:
    """One transcript per input: a WAV path, 16 kHz float samples, or a list of them. `model` is a PyTorch model,
    or an onnxruntime one from `load_onnx_model_and_processor(onnx_dir)` (a folder from tools/export_onnx.py)."""
    return [t.text for t in transcribe_detailed(model, processor, audio, max_new_tokens=max_new_tokens, chunked=chunked, batch_size=batch_size, vad=vad)]


def _generate(model: GlmAsrModel | OnnxModel, processor: Processor, clips: list[np.ndarray], max_new_tokens: int, batch_size: int, device: torch.device) -> list[str]:
    texts = []
    generate = model.generate if isinstance(model, OnnxModel) else functools.partial(greedy_generate, model)
    for start in range(0, len(clips), batch_size):
        batch = processor(clips[start : start + batch_size]).to(device)
        ids = generate(batch.input_ids, batch.attention_mask, batch.input_features, batch.input_features_mask, max_new_tokens=max_new_tokens)
        texts += [processor.decode(row) for row in ids.cpu()]
    return texts


