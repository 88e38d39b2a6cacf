"""A live stream's utterances: Silero VAD run chunk by chunk as audio arrives, a state machine that says when
speech starts and when a pause ends it, and a cut at the least speech-like point when one runs past 30 s.

The same model and cut as long-form (glm_asr/longform): 512-sample chunks with the previous call's 64 samples
of context and the LSTM state carried per stream; the level raised towards a peak of 0.5 (by at most
`max_gain`, from the loudest chunk of the last 4 s) because Silero's probability falls with the level; and
an utterance longer than one window cut by `segmentation.cut_long` in the second half of its first 30 s.
Unlike long-form, a stream cannot look ahead: an utterance ends `silence_ms` after its speech stops, which
is the floor of the latency from the end of speech to its text.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from glm_asr.longform.segmentation import cut_long
from glm_asr.longform.vad import CHUNK_SAMPLES, CONTEXT_SAMPLES, GAIN_BLOCK_SAMPLES, TARGET_PEAK, _runner
from glm_asr.model.front_end import SAMPLING_RATE, WINDOW_SAMPLES


@dataclass(frozen=True)
class TurnOptions:
    """When an utterance starts and ends (OpenAI's server_vad names where they exist)."""

    threshold: float = 0.5
    silence_duration_ms: int = 500  # a pause this long ends the utterance
    prefix_padding_ms: int = 300  # audio kept before the first speech chunk
    min_speech_ms: int = 250  # shorter bursts (a click, a cough) are not an utterance
    max_gain: float = 100.0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"VAD threshold {self.threshold}: expected a probability between 0 and 1, such as 0.5")
        for name in ("silence_duration_ms", "prefix_padding_ms", "min_speech_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} {getattr(self, name)}: expected 0 or more")


@dataclass
class Utterance:
    """[start, end) in samples on the stream's timeline, and its audio."""

    start: int
    end: int
    samples: np.ndarray


class StreamVad:
    """Speech probability per 512-sample chunk, for one stream fed blocks of any length."""

    def __init__(self, max_gain: float = 100.0) -> None:
        self.runner = _runner()  # one onnxruntime session per process; the state is the stream's own
        self.state = np.zeros((2, 1, 128), np.float32)
        self.frame = np.zeros((1, CONTEXT_SAMPLES + CHUNK_SAMPLES), np.float32)
        self.peaks: deque[float] = deque(maxlen=GAIN_BLOCK_SAMPLES // CHUNK_SAMPLES)
        self.max_gain = max_gain

    def chunk(self, chunk: np.ndarray) -> float:
        """The probability that `chunk` (512 samples) is speech."""
        self.peaks.append(float(np.abs(chunk).max()))
        peak = max(self.peaks)
        gain = min(self.max_gain, TARGET_PEAK / peak) if 0.0 < peak < TARGET_PEAK else 1.0
        self.frame[0, CONTEXT_SAMPLES:] = chunk * gain
        out: list[float] = []
        self.state = self.runner._step(self.frame, self.state, out)
        return out[0]


class Segmenter:
    """Feeds a stream's samples through the VAD; returns ("started", sample) and ("stopped", Utterance) events."""

    def __init__(self, opts: TurnOptions = TurnOptions(), vad: StreamVad | None = None) -> None:
        self.opts = opts
        self.vad = vad or StreamVad(opts.max_gain)
        self.neg = max(opts.threshold - 0.15, 0.01)
        self.pad = opts.prefix_padding_ms * SAMPLING_RATE // 1000
        self.silence_chunks = max(1, opts.silence_duration_ms * SAMPLING_RATE // 1000 // CHUNK_SAMPLES)
        self.min_speech_chunks = max(1, opts.min_speech_ms * SAMPLING_RATE // 1000 // CHUNK_SAMPLES)
        capacity = WINDOW_SAMPLES + self.pad + 2 * CHUNK_SAMPLES
        self.audio = np.zeros(capacity, np.float32)  # samples from `base` on: the pre-roll, then the utterance
        self.probs: list[float] = []  # one per chunk from `base` on
        self.base = 0  # stream sample index of audio[0]; always a multiple of CHUNK_SAMPLES
        self.filled = 0
        self.held = np.zeros(0, np.float32)  # less than one chunk, waiting for the rest
        self.start: int | None = None  # the utterance's first sample (after the pre-roll) once started
        self.candidate: int | None = None  # the first speech chunk of a burst not yet long enough
        self.speech_run = 0
        self.silence_run = 0

    @property
    def position(self) -> int:
        """Samples of the stream consumed so far (whole chunks)."""
        return self.base + self.filled

    @property
    def speaking(self) -> bool:
        return self.start is not None

    def current(self) -> np.ndarray:
        """The utterance heard so far (for partial passes)."""
        assert self.start is not None
        return self.audio[self.start - self.base : self.filled].copy()

    def feed(self, samples: np.ndarray) -> list[tuple[str, int | Utterance]]:
        events: list[tuple[str, int | Utterance]] = []
        data = np.concatenate([self.held, samples.astype(np.float32, copy=False)]) if self.held.size else samples
        whole = data.shape[0] // CHUNK_SAMPLES * CHUNK_SAMPLES
        for i in range(0, whole, CHUNK_SAMPLES):
            self._chunk(data[i : i + CHUNK_SAMPLES], events)
        self.held = np.array(data[whole:], np.float32)
        return events

    def flush(self) -> list[tuple[str, int | Utterance]]:
        """Ends the utterance in progress, if any, at the last sample received (the client said it is done)."""
        events: list[tuple[str, int | Utterance]] = []
        if self.held.size:
            self._chunk(np.pad(self.held, (0, CHUNK_SAMPLES - self.held.size)), events)
            self.held = np.zeros(0, np.float32)
        if self.start is not None:
            events.append(("stopped", self._end(self.position)))
        self.candidate, self.speech_run = None, 0
        return events

    def _chunk(self, chunk: np.ndarray, events: list) -> None:
        at = self.position
        p = self.vad.chunk(chunk)
        self.audio[self.filled : self.filled + CHUNK_SAMPLES] = chunk
        self.filled += CHUNK_SAMPLES
        self.probs.append(p)
        if self.start is None:
            self._idle(p, at, events)
        else:
            self._speaking(p, at, events)

    def _idle(self, p: float, at: int, events: list) -> None:
        if p >= self.opts.threshold:
            if self.candidate is None:
                self.candidate = at
            self.speech_run += 1
        elif p < self.neg:
            self.candidate, self.speech_run = None, 0
        if self.candidate is not None and self.speech_run >= self.min_speech_chunks:
            self.start = max(self.base, self.candidate - self.pad)
            self.candidate, self.speech_run, self.silence_run = None, 0, 0
            events.append(("started", self.start))
        elif self.candidate is None:
            self._trim(self.position - self.pad)  # keep only the pre-roll while nobody speaks

    def _speaking(self, p: float, at: int, events: list) -> None:
        assert self.start is not None
        if p >= self.opts.threshold:
            self.silence_run = 0
        elif p < self.neg:
            self.silence_run += 1
        if self.silence_run >= self.silence_chunks:
            speech_end = at + CHUNK_SAMPLES - self.silence_run * CHUNK_SAMPLES
            events.append(("stopped", self._end(min(self.position, speech_end + self.pad))))
            return
        if self.position - self.start >= WINDOW_SAMPLES:  # one window full: cut at its least speech-like point
            first = (self.start - self.base) // CHUNK_SAMPLES
            probs = np.asarray(self.probs[first:], np.float32)
            (_, cut), *_ = cut_long([(0, self.position - self.start)], probs)
            cut = self.start + cut
            events.append(("stopped", self._end(cut, keep_speaking=True)))
            events.append(("started", cut))

    def _end(self, end: int, keep_speaking: bool = False) -> Utterance:
        assert self.start is not None
        utterance = Utterance(self.start, end, self.audio[self.start - self.base : end - self.base].copy())
        self.start = end if keep_speaking else None
        self.silence_run = 0
        self._trim(end if keep_speaking else self.position - self.pad)
        return utterance

    def _trim(self, keep_from: int) -> None:
        """Drops the samples before `keep_from` (rounded down to a chunk)."""
        keep_from = max(self.base, keep_from // CHUNK_SAMPLES * CHUNK_SAMPLES)
        drop = keep_from - self.base
        if drop <= 0:
            return
        self.audio[: self.filled - drop] = self.audio[drop : self.filled]
        self.filled -= drop
        del self.probs[: drop // CHUNK_SAMPLES]
        self.base = keep_from
