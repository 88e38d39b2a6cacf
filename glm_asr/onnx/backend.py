"""Transcription with onnxruntime from a folder written by tools/export_onnx.py.

Features come from `log_mel` (torch), exactly as for the PyTorch model; audio embeddings from
audio_encoder.onnx; the valid audio tokens are picked and written over the prompt's <|pad|> rows in numpy;
decoder.onnx prefills the prompt, then runs one token per step on its own past keys/values. Greedy
decoding, eos and padding follow `glm_asr.transcription.generate.greedy_generate`, so a correct export gives the same ids.

onnxruntime is imported when a folder is loaded, never at package import.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from glm_asr.model.config import ConfigError, GlmAsrConfig
from glm_asr.transcription.generate import prompt_positions
from glm_asr.onnx.extra import EXTRA
from glm_asr.onnx.graphs import (DECODER_FILE, EMBEDDINGS_FILE, ENCODER_FILE, METADATA_FILE, TOKENIZER_FILE, Port,
                          decoder_ports, encoder_ports)
from glm_asr.transcription.processor import Processor
from glm_asr.model.projector import audio_token_counts

FORMAT = 1
ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64"}
# TF32 off on CUDA: parity with PyTorch needs true fp32 matmuls, as `glm-asr conformance --device cuda` sets for torch.
PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]}

ArrayLike = np.ndarray | torch.Tensor


def _numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _ports_json(ports: list[Port]) -> list[dict]:
    return [{"name": p.name, "dtype": p.dtype, "shape": list(p.shape)} for p in ports]


def _session_ports(values: list) -> list[dict]:  # noqa: ANN001
    return [{"name": v.name, "dtype": ORT_TYPES.get(v.type, v.type), "shape": list(v.shape)} for v in values]


def _first_difference(found: list[dict], expected: list[dict]) -> str:
    if [p["name"] for p in found] != [p["name"] for p in expected]:
        return f"names {[p['name'] for p in found][:6]}... != expected {[p['name'] for p in expected][:6]}... ({len(found)} vs {len(expected)})"
    for f, e in zip(found, expected):
        if f != e:
            return f"'{f['name']}' is {f['dtype']} {f['shape']}, expected {e['dtype']} {e['shape']}"
    return ""


class OnnxModel:
    """The two graphs and the embedding table of an exported folder, checked against its metadata.json.

    Every inconsistency (a missing file, a graph whose inputs/outputs are not what the metadata's config
    implies, an embedding table of another shape, a tokenizer whose special ids differ) is a ValueError of
    one line naming the file and what is wrong.
    """

    def __init__(self, directory: str | os.PathLike, *, device: str = "cpu", threads: int | None = None) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ValueError(f"{self.directory}: not a directory; expected a folder written by tools/export_onnx.py")
        self.metadata = self._read_metadata()
        try:
            self.config = GlmAsrConfig.from_dict(self.metadata["config"], f"{self.directory / METADATA_FILE}: config")
        except (ConfigError, KeyError) as e:
            raise ValueError(f"{self.directory / METADATA_FILE}: bad config ({e})") from e
        self.dtype = self.metadata["precision"].get("dtype") if isinstance(self.metadata["precision"], dict) else None
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"{self.directory / METADATA_FILE}: precision.dtype {self.dtype!r}, expected float32 or float16")
        for name in (ENCODER_FILE, DECODER_FILE, EMBEDDINGS_FILE, TOKENIZER_FILE):
            if not (self.directory / name).is_file():
                raise ValueError(f"{self.directory / name}: missing; the folder is incomplete, export it again with tools/export_onnx.py")
        self.encoder = self._session(ENCODER_FILE, encoder_ports(self.config, self.dtype), device, threads)
        self.decoder = self._session(DECODER_FILE, decoder_ports(self.config, self.dtype), device, threads)
        self.embed_tokens = np.load(self.directory / EMBEDDINGS_FILE, mmap_mode="r")  # (V, D); only looked-up rows are read
        t = self.config.text_config
        if self.embed_tokens.shape != (t.vocab_size, t.hidden_size) or self.embed_tokens.dtype != np.dtype(self.dtype):
            raise ValueError(f"{self.directory / EMBEDDINGS_FILE}: {self.embed_tokens.dtype} {self.embed_tokens.shape}, "
                             f"expected {self.dtype} {(t.vocab_size, t.hidden_size)} from {METADATA_FILE}'s config")
        self.device = device

    def _read_metadata(self) -> dict:
        path = self.directory / METADATA_FILE
        try:
            metadata = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise ValueError(f"{path}: missing; expected a folder written by tools/export_onnx.py") from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
            raise ValueError(f"{path}: format {metadata.get('format') if isinstance(metadata, dict) else None!r}, expected {FORMAT}")
        for key in ("config", "precision", "graphs", "special_ids"):
            if key not in metadata:
                raise ValueError(f"{path}: no '{key}' entry; export the folder again")
        return metadata

    def _session(self, name: str, ports: tuple[list[Port], list[Port]], device: str, threads: int | None):  # noqa: ANN202
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise RuntimeError(f"the onnxruntime backend needs onnxruntime, which is not installed: {EXTRA}") from e
        if device not in PROVIDERS:
            raise ValueError(f"device {device!r}: the onnxruntime backend runs on {' or '.join(PROVIDERS)}")
        provider = PROVIDERS[device][0] if isinstance(PROVIDERS[device][0], str) else PROVIDERS[device][0][0]
        if provider not in ort.get_available_providers():
            raise RuntimeError(f"device {device!r}: this onnxruntime has no {provider} (install onnxruntime-gpu)")
        path = self.directory / name
        expected = {"inputs": _ports_json(ports[0]), "outputs": _ports_json(ports[1])}
        recorded = self.metadata["graphs"].get(name, {})
        for side in ("inputs", "outputs"):
            problem = _first_difference(recorded.get(side, []), expected[side])
            if problem:
                raise ValueError(f"{self.directory / METADATA_FILE}: graphs.{name}.{side} disagree with its own config: {problem}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(str(path), options, providers=PROVIDERS[device])
        except Exception as e:  # onnxruntime's own exception types (Fail, InvalidGraph, ...) derive from Exception only
            raise ValueError(f"{path}: onnxruntime cannot load it: {str(e).splitlines()[0]}") from e
        if session.get_providers()[0] != provider:  # onnxruntime falls back to the CPU with only a logged warning
            raise RuntimeError(f"{path}: onnxruntime could not start {provider} (it offers {session.get_providers()})")
        for side, values in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
            problem = _first_difference(_session_ports(values), expected[side])
            if problem:
                raise ValueError(f"{path}: {side} do not match {METADATA_FILE}: {problem}")
        return session

    def _run(self, session, name: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:  # noqa: ANN001
        try:
            return session.run(None, feed)
        except Exception as e:  # onnxruntime's Fail / InvalidArgument derive from Exception only
            shapes = ", ".join(f"{k} {v.shape}" for k, v in list(feed.items())[:4])
            raise RuntimeError(f"{self.directory / name}: onnxruntime failed on {shapes}: {str(e).strip().splitlines()[0]}") from e

    def audio_windows(self, input_features: ArrayLike) -> np.ndarray:
        """(W, M, 3000) log-mel windows -> (W, 375, D) audio embeddings, valid or not (the raw graph output)."""
        features = _numpy(input_features).astype(self.dtype, copy=False)
        M = self.config.audio_config.num_mel_bins
        if features.ndim != 3 or features.shape[1:] != (M, 3000):
            raise ValueError(f"input_features has shape {features.shape}: expected (windows, {M}, 3000), as log_mel gives")
        return self._run(self.encoder, ENCODER_FILE, {"input_features": features})[0]

    def embed_audio(self, input_features: ArrayLike, input_features_mask: ArrayLike) -> np.ndarray:
        """(N, D) embeddings of the valid audio tokens, windows in order, as `GlmAsrModel.embed_audio`."""
        projected = self.audio_windows(input_features)
        kept = audio_token_counts(torch.from_numpy(_numpy(input_features_mask).sum(-1))).numpy()
        return projected[np.arange(projected.shape[1])[None, :] < kept[:, None]]

    def embed_prompt(self, input_ids: np.ndarray, audio_embeds: np.ndarray | None) -> np.ndarray:
        """(B, T) ids -> (B, T, D), audio-token rows overwritten in order, as `GlmAsrModel.embed_prompt`."""
        embeds = np.array(self.embed_tokens[input_ids])
        is_audio = input_ids == self.config.audio_token_id
        n_slots, n_audio = int(is_audio.sum()), 0 if audio_embeds is None else audio_embeds.shape[0]
        if n_slots != n_audio:
            raise ValueError(f"the prompt has {n_slots} audio tokens (id {self.config.audio_token_id}) but the audio gives "
                             f"{n_audio} embeddings: build input_ids with the processor from the same audio")
        if audio_embeds is not None:
            embeds[is_audio] = audio_embeds  # boolean indexing is row-major: the same order as masked_scatter
        return embeds

    def empty_past(self, batch: int) -> list[np.ndarray]:
        t = self.config.text_config
        return [np.zeros((batch, t.num_key_value_heads, 0, t.head_dim), self.dtype) for _ in range(2 * t.num_hidden_layers)]

    def decode(self, inputs_embeds: np.ndarray, position_ids: np.ndarray, attention_mask: np.ndarray,
               past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One decoder.onnx call: logits (B, T, V) and the presents, keys of all layers then values."""
        feed = {"inputs_embeds": inputs_embeds.astype(self.dtype, copy=False), "position_ids": position_ids.astype(np.int64, copy=False),
                "attention_mask": attention_mask.astype(np.int64, copy=False)}
        feed.update(zip((i.name for i in self.decoder.get_inputs()[3:]), past))
        logits, *present = self._run(self.decoder, DECODER_FILE, feed)
        return logits, present

    def generate(
        self,
        input_ids: ArrayLike,
        attention_mask: ArrayLike,
        input_features: ArrayLike | None,
        input_features_mask: ArrayLike | None,
        *,
        max_new_tokens: int = 500,
        eos_token_id: tuple[int, ...] | None = None,
        on_token: Callable[[torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """New token ids (B, n <= max_new_tokens), with the semantics of `greedy_generate` (`on_token` too)."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens}: expected at least 1")
        eos = np.array(eos_token_id or self.config.text_config.eos_token_id)
        ids, mask = _numpy(input_ids).astype(np.int64), _numpy(attention_mask).astype(np.int64)
        audio = None if input_features is None else self.embed_audio(input_features, input_features_mask)
        positions = prompt_positions(torch.from_numpy(mask)).numpy()  # (B, T)
        logits, past = self.decode(self.embed_prompt(ids, audio), positions, mask, self.empty_past(ids.shape[0]))
        tokens, finished = [], np.zeros(ids.shape[0], dtype=bool)
        for step in range(max_new_tokens):
            token = np.where(finished, eos[0], logits[:, -1].astype(np.float32).argmax(-1))
            tokens.append(token)
            if on_token is not None:
                on_token(torch.from_numpy(token))
            finished |= np.isin(token, eos)
            if finished.all() or step == max_new_tokens - 1:
                break
            mask = np.concatenate([mask, np.ones_like(mask[:, :1])], axis=1)
            next_embeds = np.array(self.embed_tokens[token[:, None]])  # (B, 1, D)
            logits, past = self.decode(next_embeds, positions[:, -1:] + 1 + step, mask, past)
        return torch.from_numpy(np.stack(tokens, axis=1).astype(np.int64))


def load_onnx_model_and_processor(onnx_dir: str | os.PathLike, *, device: str = "cpu", threads: int | None = None) -> tuple[OnnxModel, Processor]:
    """An exported folder as (model, processor), accepted by `transcribe` like the PyTorch pair."""
    model = OnnxModel(onnx_dir, device=device, threads=threads)
    processor = Processor.from_dir(model.directory, model.config.audio_config.num_mel_bins)
    special = model.metadata["special_ids"]
    if (processor.audio_token_id, processor.pad_token_id) != (special.get("audio_token_id"), special.get("pad_token_id")) \
            or processor.audio_token_id != model.config.audio_token_id:
        raise ValueError(f"{model.directory / TOKENIZER_FILE}: <|pad|> / <|endoftext|> ids {processor.audio_token_id} / "
                         f"{processor.pad_token_id} differ from {METADATA_FILE}'s {special.get('audio_token_id')} / {special.get('pad_token_id')}")
    return model, processor
