"""A live stream's utterances: the one segmentation of glm_asr/longform (vad.VadStream's probabilities,
segmentation.Regions, segmentation.cut_point) run chunk by chunk as audio arrives, so that a stream gives the
regions that the same samples give as a file (`--vad`) or an upload (`chunking_strategy`).

An utterance starts (speech_started) once its speech has lasted `min_speech_ms`, at its padded start; it ends
(speech_stopped) when a pause of `silence_duration_ms` has passed, at its last speech chunk plus the padding;
one that runs past 30 s is cut at its least speech-like point in the second half of its first 30 s, once the
chunk after that window is in. A stream cannot look ahead: `silence_duration_ms` is the floor of the latency
from the end of speech to its text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from glm_asr.longform.segmentation import LOOKBACK_CHUNKS, Regions, cut_point
from glm_asr.longform.vad import CHUNK_SAMPLES, VadOptions, VadStream
from glm_asr.model.front_end import SAMPLING_RATE, WINDOW_SAMPLES

_DEFAULT = VadOptions()


@dataclass(frozen=True)
class TurnOptions:
    """When an utterance starts and ends: OpenAI's server_vad names for VadOptions' fields, the same defaults."""

    threshold: float = _DEFAULT.threshold  # neg_threshold follows it, 0.2 under it (VadOptions.server_vad)
    silence_duration_ms: int = _DEFAULT.min_silence_duration_ms  # a pause this long ends the utterance
    prefix_padding_ms: int = _DEFAULT.speech_pad_ms  # audio kept before the first speech chunk (and after the last)
    min_speech_ms: int = _DEFAULT.min_speech_duration_ms  # shorter bursts (a click, a cough) are not an utterance
    max_gain: float = _DEFAULT.max_gain

    def __post_init__(self) -> None:
        self.vad  # noqa: B018 (the same checks as VadOptions, with its messages)

    @property
    def vad(self) -> VadOptions:
        return VadOptions.server_vad(self.threshold, self.prefix_padding_ms, self.silence_duration_ms,
                                     min_speech_duration_ms=self.min_speech_ms, max_gain=self.max_gain)


@dataclass
class Utterance:
    """[start, end) in samples on the stream's timeline, and its audio."""

    start: int
    end: int
    samples: np.ndarray


class Segmenter:
    """Feeds a stream's samples through the VAD; returns ("started", sample) and ("stopped", Utterance) events."""

    def __init__(self, opts: TurnOptions = TurnOptions(), vad: VadStream | None = None) -> None:
        self.opts = opts
        self.vad = vad or VadStream(opts.max_gain)
        self.regions = Regions(opts.vad)
        self.retune(opts)
        capacity = WINDOW_SAMPLES + self.preroll + max(self.regions.min_silence, self.pad) + 4 * CHUNK_SAMPLES
        self.audio = np.zeros(capacity, np.float32)  # samples from `base` on: the pre-roll, then the utterance
        self.probs: list[float] = []  # one per chunk from `base` on
        self.base = 0  # stream sample index of audio[0]; always a multiple of CHUNK_SAMPLES
        self.filled = 0
        self.held = np.zeros(0, np.float32)  # less than one chunk, waiting for the rest
        self.start: int | None = None  # the utterance's first sample (padded) once started

    def retune(self, opts: TurnOptions) -> None:
        """New threshold, padding and silence from the next chunk on (a session.update's turn_detection)."""
        assert opts.max_gain == self.opts.max_gain, "the VadStream's gain is fixed: a new Segmenter for a new gain"
        self.opts = opts
        self.regions.retune(opts.vad)
        self.pad = self.regions.pad
        self.preroll = self.pad + (LOOKBACK_CHUNKS + 1) * CHUNK_SAMPLES  # what a region's start may reach back to

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
        received = self.position + self.held.size
        if self.held.size:
            self._chunk(self.held, events)  # the stream's last chunk: short, zero-padded by the VAD and here
            self.held = np.zeros(0, np.float32)
        for region in self.regions.finish(received):
            self._emit(region, events)
        return events

    def _chunk(self, chunk: np.ndarray, events: list) -> None:
        if self.filled + CHUNK_SAMPLES > self.audio.shape[0]:  # only while the probability hovers between the
            self.audio = np.concatenate([self.audio, np.zeros_like(self.audio)])  # thresholds: a region undecided
        p = self.vad.chunk(chunk)
        self.audio[self.filled : self.filled + CHUNK_SAMPLES] = 0.0
        self.audio[self.filled : self.filled + chunk.shape[0]] = chunk
        self.filled += CHUNK_SAMPLES
        self.probs.append(p)
        for region in self.regions.push(p, self.vad.level):
            self._emit(region, events)
        if self.start is None and self.regions.started is not None:
            # a padding widened mid-stream (retune) may reach back past the pre-roll kept: the utterance starts there
            self.start = max(self.regions.started, self.base)
            events.append(("started", self.start))
        if self.start is not None:
            self._cut_if_full(events)
        elif self.regions.begin is None and self.regions.closed is None:
            self._trim(self.position - self.preroll)  # keep only the pre-roll while nobody speaks

    def _emit(self, region: tuple[int, int], events: list) -> None:
        if self.start is None:  # a region that ended before it was announced (the stream's end)
            self.start = max(region[0], self.base)
            events.append(("started", self.start))
        start, end = self.start, region[1]
        events.append(("stopped", Utterance(start, end, self.audio[start - self.base : end - self.base].copy())))
        self.start = None
        self._trim(end)

    def _cut_if_full(self, events: list) -> None:
        """Past one window, cut where `cut_long` cuts the whole region, as soon as the region is sure to be longer."""
        assert self.start is not None
        earliest_end = (self.regions.silent_from or self.position) + self.pad
        if self.regions.closed is not None:
            earliest_end = self.regions.closed[1] + self.pad
        while self.position >= self.start + WINDOW_SAMPLES + CHUNK_SAMPLES and earliest_end > self.start + WINDOW_SAMPLES:
            cut = cut_point(np.asarray(self.probs, np.float32), self.start, self.base // CHUNK_SAMPLES)
            events.append(("stopped", Utterance(self.start, cut, self.audio[self.start - self.base : cut - self.base].copy())))
            events.append(("started", cut))
            self.start = cut
            self._trim(cut)

    def _trim(self, keep_from: int) -> None:
        """Drops the samples before `keep_from` (rounded down to a chunk)."""
        keep_from = max(self.base, keep_from // CHUNK_SAMPLES * CHUNK_SAMPLES)
        drop = min(keep_from - self.base, self.filled)
        if drop <= 0:
            return
        self.audio[: self.filled - drop] = self.audio[drop : self.filled]
        self.filled -= drop
        del self.probs[: drop // CHUNK_SAMPLES]
        self.base += drop
