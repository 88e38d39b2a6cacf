"""The user-facing API: load a model and its processor, transcribe audio."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from glm_asr.model.front_end import CHUNK_SECONDS, SAMPLING_RATE, split_windows
from glm_asr.io.audio_file import AudioError, load_audio, to_mono_16k
from glm_asr.transcription.generate import greedy_generate
from glm_asr.io.checkpoint import load_model
from glm_asr.longform.segmentation import find_pieces
from glm_asr.longform.vad import VadOptions
from glm_asr.model.config import GlmAsrConfig
from glm_asr.model.glm_asr import GlmAsrModel
from glm_asr.transcription.presets import random_model, synthetic_tokenizer
from glm_asr.transcription.processor import MAX_WINDOWS, Processor, token_budget
from glm_asr.transcription.repetition import RepeatStop
from glm_asr.runtime.quantize import AUDIO_KINDS, DECODER_KINDS, quantize_audio, quantize_decoder

AudioInput = str | os.PathLike | np.ndarray | torch.Tensor


class BackendModel(Protocol):
    """A model that runs its own decoding loop, with `greedy_generate`'s semantics (glm_asr/onnx's OnnxModel).
    This room names no backend: the faces load one and pass it in, and anything not a torch module is one."""

    config: GlmAsrConfig

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, input_features: torch.Tensor,
                 input_features_mask: torch.Tensor, *, max_new_tokens: int, eos_token_id: tuple[int, ...],
                 on_token: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor: ...


Model = GlmAsrModel | BackendModel


@dataclass
class Segment:
    start: float  # seconds
    end: float
    text: str
    truncated: bool = False  # decoding reached its token budget: the text may stop before the speech does


@dataclass
class Transcription:
    text: str
    audio_seconds: float
    segments: list[Segment] = field(default_factory=list)

    @property
    def truncated(self) -> bool:
        """Whether any segment's decoding stopped at its token budget."""
        return any(s.truncated for s in self.segments)


@dataclass
class Decoded:
    """One prompt's decoding: its text, and how it ended."""

    text: str
    truncated: bool = False  # at the token budget, without an end-of-text token
    stopped_on_repeat: bool = False


def load_model_and_processor(
    model_path: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    random_preset: str | None = None,
    quantize: str | None = None,
    quantize_audio_path: str | None = None,
) -> tuple[GlmAsrModel, Processor]:
    """A checkpoint directory (config.json, safetensors, tokenizer.json), or with `model_path=None` random
    weights of a preset (`small`, the default, or `full` = the released size) and a synthetic tokenizer: with
    neither a folder nor a preset named, a warning says so, since such a model's transcripts are meaningless.
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
        if random_preset is None:
            warnings.warn("load_model_and_processor() with no model folder: random weights (preset 'small') and a synthetic "
                          "tokenizer, so the transcripts are meaningless; pass the folder of the released files, or "
                          "random_preset='small' to mean it", UserWarning, stacklevel=2)
        model = random_model(random_preset or "small", dtype=dtype, device=device)
        processor = Processor(synthetic_tokenizer(), model.config.audio_config.num_mel_bins, "synthetic tokenizer")
    else:
        directory = Path(model_path)
        if not directory.is_dir():
            hub = "" if directory.is_absolute() or len(directory.parts) != 2 else (
                f"; {model_path} looks like a Hugging Face name: download the released files first, e.g. "
                f"`huggingface-cli download {model_path} --local-dir {directory.name}` (https://huggingface.co/{model_path}), "
                f"and pass that folder")
            raise FileNotFoundError(f"{directory}: no such folder; expected a local model folder with config.json, "
                                    f"model.safetensors and tokenizer.json{hub}")
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
    model: Model,
    processor: Processor,
    audio: AudioInput | list[AudioInput],
    *,
    max_new_tokens: int | None = None,
    chunked: bool | None = None,
    batch_size: int = 8,
    vad: bool | VadOptions = False,
) -> list[Transcription]:
    """Like `transcribe`, with segments and durations. `chunked=None` chunks only audio longer than the
    reference's limit (21 windows, 630 s); `True` transcribes every 30 s window on its own (batched).
    `vad=True` (or VadOptions; needs the `vad` extra) decodes only speech, in pieces of at most 30 s cut
    where the speaker pauses, each a segment on its speech bounds (glm_asr/longform); silence gives none.
    A segment whose decoding reached its token budget has `truncated` set."""
    items = audio if isinstance(audio, list) else [audio]
    samples = [read_audio(a) for a in items]
    results, whole = [], []
    for clip in samples:
        seconds = clip.shape[0] / SAMPLING_RATE
        windows = split_windows(torch.from_numpy(clip))
        if vad:
            pieces = find_pieces(clip, vad if isinstance(vad, VadOptions) else VadOptions())
            decoded = _generate(model, processor, [p.samples(clip) for p in pieces], max_new_tokens, batch_size)
            segments = [Segment(p.start / SAMPLING_RATE, p.end / SAMPLING_RATE, d.text, d.truncated) for p, d in zip(pieces, decoded)]
            results.append(Transcription(_join([d.text for d in decoded]), seconds, segments))
        elif chunked or (chunked is None and len(windows) > MAX_WINDOWS):
            decoded = _generate(model, processor, [w.numpy() for w in windows], max_new_tokens, batch_size)
            segments = [Segment(i * CHUNK_SECONDS, min((i + 1) * CHUNK_SECONDS, seconds), d.text, d.truncated) for i, d in enumerate(decoded)]
            results.append(Transcription(_join([d.text for d in decoded]), seconds, segments))
        else:
            whole.append(len(results))
            results.append(Transcription("", seconds))
    decoded = _generate(model, processor, [samples[i] for i in whole], max_new_tokens, batch_size)
    for i, d in zip(whole, decoded):
        results[i].text = d.text
        results[i].segments = [Segment(0.0, results[i].audio_seconds, d.text, d.truncated)]
    return results


def transcribe(
    model: Model,
    processor: Processor,
    audio: AudioInput | list[AudioInput],
    *,
    max_new_tokens: int | None = None,
    chunked: bool | None = None,
    batch_size: int = 8,
    vad: bool | VadOptions = False,
) -> list[str]:
    """One transcript per input: a WAV path, 16 kHz float samples, or a list of them. `model` is a PyTorch model,
    or an onnxruntime one from `load_onnx_model_and_processor(onnx_dir)` (a folder from tools/export_onnx.py).
    `max_new_tokens=None` gives each prompt a budget that follows its audio's length (processor.token_budget)."""
    return [t.text for t in transcribe_detailed(model, processor, audio, max_new_tokens=max_new_tokens, chunked=chunked, batch_size=batch_size, vad=vad)]


def _generate(model: Model, processor: Processor, clips: list[np.ndarray], max_new_tokens: int | None, batch_size: int) -> list[Decoded]:
    decoded = []
    for start in range(0, len(clips), batch_size):
        decoded += transcribe_batch(model, processor, clips[start : start + batch_size], max_new_tokens)
    return decoded


def token_budgets(model: Model, prompt_lengths: list[int], clips: list[np.ndarray], max_new_tokens: int | None) -> list[int]:
    """Each prompt's budget of new tokens: `max_new_tokens` when given; else one that follows the audio's
    length (processor.token_budget), within the decoder's positions after the prompt."""
    if max_new_tokens is not None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens}: expected at least 1")
        return [max_new_tokens] * len(clips)
    limit = model.config.text_config.max_position_embeddings
    return [max(1, min(token_budget(c.shape[0] / SAMPLING_RATE), limit - n)) for c, n in zip(clips, prompt_lengths)]


class _BudgetStop:
    """A `stop` callback for greedy_generate: ends each row at its budget, and where `inner` says."""

    def __init__(self, budgets: list[int], inner: RepeatStop | None) -> None:
        self.budgets, self.inner, self.steps = torch.tensor(budgets), inner, 0

    def __call__(self, token: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        ended = (self.budgets <= self.steps).to(token.device)
        return ended | self.inner(token) if self.inner is not None else ended


def transcribe_batch(
    model: Model,
    processor: Processor,
    clips: list[np.ndarray],
    max_new_tokens: int | None = None,
    *,
    eos_token_id: tuple[int, ...] | None = None,
    stop_on_repeat: int | None = None,
    on_token: list[Callable[[int], None] | None] | None = None,
) -> list[Decoded]:
    """Greedy transcripts of 16 kHz clips decoded together, each within its own token budget. The batch runs to
    the largest budget and each row is cut at its own, so a clip's text is the same alone or in any batch.
    `on_token`, one entry per clip: called with each new token id of that row as it is chosen (streaming)."""
    backend = not isinstance(model, torch.nn.Module)
    if stop_on_repeat is not None and backend:
        raise ValueError("--stop-on-repeat runs with the torch backend only")
    device = torch.device("cpu") if backend else next(model.parameters()).device
    batch = processor(clips).to(device)
    budgets = token_budgets(model, batch.attention_mask.sum(1).tolist(), clips, max_new_tokens)
    eos = eos_token_id or tuple(model.config.text_config.eos_token_id)
    stop = None if stop_on_repeat is None else RepeatStop(len(clips), stop_on_repeat, eos)
    if backend:
        generate = functools.partial(model.generate, eos_token_id=eos)
    else:  # rows end at their own budget too, so that a short clip beside a long one costs no extra steps
        generate = functools.partial(greedy_generate, model, eos_token_id=eos, stop=_BudgetStop(budgets, stop))
    listeners = [(row, f) for row, f in enumerate(on_token or []) if f is not None]
    if listeners:
        generate = functools.partial(generate, on_token=lambda token: [f(int(token[row])) for row, f in listeners])
    ids = generate(batch.input_ids, batch.attention_mask, batch.input_features, batch.input_features_mask, max_new_tokens=max(budgets)).cpu()
    out = []
    for row, budget in enumerate(budgets):
        kept = ids[row, :budget]
        stopped = bool(stop and stop.stopped[row])
        ended = bool(torch.isin(kept, torch.tensor(eos)).any())
        # A transcript with leading whitespace (a tokenizer's word-initial space) reads the same without it.
        out.append(Decoded(processor.decode(kept).strip(), truncated=not ended and not stopped and kept.shape[0] == budget,
                           stopped_on_repeat=stopped))
    return out
