"""From speech probabilities to the pieces that are decoded: regions, long regions cut, regions packed.

One segmentation for files (`--vad`), uploads (`chunking_strategy`) and live streams (serve/utterances.py):
all three feed the probabilities of vad.VadStream, one 32 ms chunk at a time, to the same `Regions`, so
equal samples give equal regions however they arrive.

1. `Regions`: silero-vad's hysteresis (get_speech_timestamps 6.2.3), online: a region starts at the first
   chunk at or over `threshold` and ends where the probability fell under `neg_threshold` and stayed there
   `min_silence_duration_ms` (silero-vad lets chunks between the two thresholds count as pause; with the gain
   on, ours, they break it, up to twice min_silence: `Regions.unbroken`); regions shorter
   than `min_speech_duration_ms` are dropped; `speech_pad_ms` is added on each side. Unlike silero-vad,
   which splits a gap shorter than two pads in the middle (and so must see the next region first), the
   earlier region keeps its whole pad and the next one starts where it ends: a region is final
   `max(min_silence, pad)` after its speech ends, which is what a live stream can wait for.
2. `cut_point`: a region longer than one 30 s window is cut at its least speech-like point: the 96 ms
   (3 chunks) of lowest mean probability in the second half of its first 30 s, so that a pause, where one
   exists, is where it is cut, and no part is shorter than 15 s unless the region ends. A live stream cuts
   one chunk after the window is full, when the same chunks are known.
3. `pack`: consecutive regions joined into pieces of at most 30 s of speech (the silence between them
   left out), a pause longer than `max_gap_s` (VadOptions, 5 s) starting a new piece, so that one subtitle
   cue never spans a long silence. Every piece costs a whole 30 s window in the encoder (the reference pads
   each window to 3000 frames), so a smaller gap gives tighter cues for more windows. Deterministic.

Everything is in samples at 16 kHz on the timeline of the audio given; callers add a manifest's offset.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from glm_asr.longform.vad import CHUNK_SAMPLES, VadOptions, blocks_of, speech_features
from glm_asr.model.front_end import SAMPLING_RATE, WINDOW_SAMPLES

Region = tuple[int, int]  # [start, end) in samples
LOOKBACK_CHUNKS = 94  # 3 s: how far a region's start may move back to where its sound began
LOOKBACK_DB = 10.0  # over the quietest chunk of those 3 s
DIGITAL_SILENCE_DB = -90.0  # chunks this quiet are no floor: they are zeros, or dither
# A region is kept only if one of its 32 ms chunks reaches this RMS level (dBFS; before the gain). The gain raises
# room tone by up to 40 dB, and Silero hears example_en.wav's (-76 dBFS RMS, its loudest chunk -70.5) as speech;
# the quietest speech measured (tools/vad_levels.py: utterances at -55 dBFS RMS; example_zh.wav's loudest chunk
# -48.7) is well over it. Only with levels and the gain on (max_gain > 1): silero-vad's own rule has no floor.
SPEECH_FLOOR_DB = -60.0
LOOKBACK_BRIDGE = 3  # chunks either side: a chunk counts as loud when one within 96 ms of it is (192 ms dips bridged)


@dataclass(frozen=True)
class Piece:
    """Regions decoded together as one input; its text spans from the first region's start to the last's end."""

    regions: tuple[Region, ...]

    @property
    def start(self) -> int:
        return self.regions[0][0]

    @property
    def end(self) -> int:
        return self.regions[-1][1]

    @property
    def speech_samples(self) -> int:
        return sum(e - s for s, e in self.regions)

    def samples(self, audio: np.ndarray) -> np.ndarray:
        """The piece's audio: its regions one after the other."""
        return np.concatenate([audio[s:e] for s, e in self.regions]).astype(np.float32, copy=False)


class Regions:
    """Speech regions, online: `push` one chunk's probability at a time, `finish` at the end of the audio.

    `push` returns the regions that became final, [start, end) in samples with the padding; `started` is the
    padded start of the region in progress once it is long enough to be kept (a live stream's
    speech_started), else None. Cutting at 30 s is the caller's (`cut_point`): it needs the probabilities."""

    def __init__(self, opts: VadOptions = VadOptions()) -> None:
        ms = SAMPLING_RATE // 1000
        self.threshold, self.negative = opts.threshold, opts.negative
        self.min_speech, self.min_silence = opts.min_speech_duration_ms * ms, opts.min_silence_duration_ms * ms
        self.pad = opts.speech_pad_ms * ms
        # silero-vad counts a pause from the first chunk under neg_threshold, and only a chunk at or over the
        # threshold ends it: chunks in between count as pause. Over 8 kHz G.711 the quiet example_zh.wav, raised
        # by the gain with its quantisation noise, scores 0.12-0.3 for 1.5 s mid-sentence, one chunk under 0.15
        # and none over 0.35 for 0.7 s: silero's rule cut it in two. With the gain on (ours), a pause ends a
        # region when its chunks stay under neg_threshold without a break for min_silence (`quiet_from`), or when
        # no chunk reached the threshold for twice that (`silent_from`, silero's clock): the second bound keeps
        # an end in noise that Silero scores between the thresholds from running on (tools/vad_levels.py: with
        # the first rule alone, 24 of 120 ends were over 1 s late; with both, 16; with silero's, 13). max_gain 1:
        # silero-vad's rule.
        self.unbroken = opts.max_gain > 1.0
        self.long_silence = 2 * self.min_silence
        self.chunks = 0  # chunks pushed so far
        self.levels: deque[float] = deque(maxlen=LOOKBACK_CHUNKS + 1)  # the last 3 s of chunk levels, and this one's
        self.loudest = -100.0  # the loudest chunk (dB) of the region in progress, from its onset (SPEECH_FLOOR_DB)
        self.floor = -100.0  # SPEECH_FLOOR_DB once a level is given with the gain on
        self.onset = 0  # the first chunk at or over the threshold of the region in progress
        self.begin: int | None = None  # where its sound began: the onset, or earlier (`_look_back`)
        self.silent_from = 0  # where the probability fell under neg_threshold inside it (0: it has not)
        self.quiet_from = 0  # where the present run of chunks under neg_threshold began (0: none)
        self.started: int | None = None  # its padded start, once it is kept
        self.closed: Region | None = None  # a region whose speech ended, waiting for its end padding
        self.last_end = 0  # the end of the last region given out: the next one starts no earlier

    def retune(self, opts: VadOptions) -> None:
        """Options in force from the next chunk on (a live stream's turn_detection update); a region in progress
        keeps its start and ends by the new ones."""
        fresh = Regions(opts)
        self.threshold, self.negative, self.pad = fresh.threshold, fresh.negative, fresh.pad
        self.min_speech, self.min_silence = fresh.min_speech, fresh.min_silence

    def push(self, p: float, level: float | None = None) -> list[Region]:
        """One chunk's probability, and its level in dB (VadStream.level; None: no look-back)."""
        at = self.chunks * CHUNK_SAMPLES
        self.chunks += 1
        self.levels.append(-100.0 if level is None else level)
        if level is not None and self.unbroken:  # the floor is the gain's counterpart: max_gain 1 has neither
            self.floor = SPEECH_FLOOR_DB
        out = self._settle(at)
        if self.begin is None:
            if p >= self.threshold:
                self.onset, self.silent_from, self.quiet_from = at, 0, 0
                self.begin = self._look_back(at) if level is not None else at
                self.loudest = -100.0 if level is None else level
        elif level is not None and level > self.loudest:
            self.loudest = level
        if self.begin is None or self.onset == at:
            pass
        elif p >= self.threshold:
            self.silent_from = self.quiet_from = 0
        else:
            quiet = p < self.negative
            if quiet:
                self.silent_from = self.silent_from or at
            self.quiet_from = (self.quiet_from or at) if quiet else 0  # between the thresholds: the quiet run is broken
            end = self._pause_end(at, quiet)
            if end is not None:
                if end - self.onset > self.min_speech and self.loudest >= self.floor:
                    self._close(end)
                self.begin = self.started = None
                self.silent_from = self.quiet_from = 0
                out += self._settle(at)
                return out
        if (self.begin is not None and self.started is None and not self.silent_from and at + CHUNK_SAMPLES - self.onset > self.min_speech
                and self.loudest >= self.floor):
            self.started = self._padded_start(self.begin)  # kept whatever comes: its silence starts at the next chunk at the earliest
        return out

    def finish(self, n_samples: int) -> list[Region]:
        """The regions still open when the audio ends at `n_samples`; the tracker is then empty again."""
        out = []
        if self.closed is not None:
            out.append((self.closed[0], min(n_samples, self.closed[1] + self.pad)))
            self.last_end, self.closed = out[-1][1], None
        if self.begin is not None and n_samples - self.onset > self.min_speech and self.loudest >= self.floor:
            out.append((self._padded_start(self.begin), n_samples))
            self.last_end = n_samples
        self.begin = self.started = None
        self.silent_from = self.quiet_from = 0
        return [r for r in out if r[1] > r[0]]

    def _pause_end(self, at: int, quiet: bool) -> int | None:
        """Where the region in progress ends, if the pause up to chunk `at` ends it (the conditions are tested on
        the chunk's start, as silero-vad's), else None."""
        if not self.silent_from:
            return None
        if not self.unbroken:
            return self.silent_from if quiet and at - self.silent_from >= self.min_silence else None
        if quiet and at - self.quiet_from >= self.min_silence:
            return self.quiet_from
        return self.silent_from if at - self.silent_from >= self.long_silence else None

    def _look_back(self, at: int) -> int:
        """Where the sound of speech starting at `at` began: Silero's probability can stay low for a second or two
        of quiet speech before it rises (example_zh.wav's first words, depending on where the 32 ms chunks fall),
        so the start moves back over the chunks before it that are LOOKBACK_DB louder than the quietest of the
        last 3 s (a maximum over LOOKBACK_BRIDGE chunks either side bridges dips of up to 192 ms between
        syllables: at one chunk either side, seed 0 of tools/vad_boundaries.py started 1.45 s late); in steady
        noise nothing is that loud."""
        levels = list(self.levels)[:-1]  # the chunks before this one, oldest first
        heard = [v for v in levels if v > DIGITAL_SILENCE_DB]  # a floor of digital silence would let any hiss count
        if not heard:
            return at
        floor = min(heard) + LOOKBACK_DB
        smooth = [max(levels[max(i - LOOKBACK_BRIDGE, 0) : i + LOOKBACK_BRIDGE + 1]) for i in range(len(levels))]
        back = 0
        while back < len(smooth) and smooth[-1 - back] >= floor:
            back += 1
        return at - back * CHUNK_SAMPLES

    def _padded_start(self, begin: int) -> int:
        earlier = self.last_end if self.closed is None else self.closed[1] + self.pad  # no overlap with the one before
        return max(begin - self.pad, earlier, 0)

    def _close(self, end: int) -> None:
        assert self.begin is not None
        # Speech that began and ended inside the last region's end padding (a pad longer than the pause) would start
        # where that padding ends, after its own end: it joins that region, which now ends with it.
        if self.closed is not None:
            self.closed = (self.closed[0], end)
            return
        self.closed = (self.started if self.started is not None else self._padded_start(self.begin), end)

    def _settle(self, at: int) -> list[Region]:
        """The closed region, once the audio has reached the end of its padding (`at`: samples pushed before)."""
        if self.closed is None or at < self.closed[1] + self.pad:
            return []
        region, self.closed = (self.closed[0], self.closed[1] + self.pad), None
        self.last_end = region[1]
        return [region]


def speech_regions(probs: np.ndarray, n_samples: int, opts: VadOptions = VadOptions(), levels: np.ndarray | None = None) -> list[Region]:
    """The regions of a whole clip's probabilities (one per 512 samples), padded, not yet cut at 30 s; with the
    chunks' `levels` (dB, VadStream.features), each start looks back to where its sound began."""
    tracker = Regions(opts)
    if levels is None:
        regions = [r for p in probs.tolist() for r in tracker.push(p)]
    else:
        regions = [r for p, level in zip(probs.tolist(), levels.tolist()) for r in tracker.push(p, level)]
    return regions + tracker.finish(n_samples)


def cut_point(probs: np.ndarray, start: int, first_chunk: int = 0, max_samples: int = WINDOW_SAMPLES) -> int:
    """Where a region starting at `start` and longer than `max_samples` is cut: the middle of the least
    speech-like 96 ms (mean of 3 chunks; the latest of equals, for the longest part) among the chunks that
    start in the second half of its first window. `probs[i]` is chunk `first_chunk + i`; it must reach one
    chunk past the window (a live stream waits for it)."""
    lo = (start + max_samples // 2) // CHUNK_SAMPLES
    hi = max(lo + 1, (start + max_samples) // CHUNK_SAMPLES)
    padded = np.concatenate([[0.0], probs, [0.0]])  # np.convolve(mode="same")'s zeros past either end
    window = padded[lo - first_chunk : hi - first_chunk + 2]
    if window.size < 3:
        return start + max_samples
    smooth = np.convolve(window, np.ones(3) / 3, mode="valid")  # smooth[k]: chunks lo+k-1 .. lo+k+1
    last_min = smooth.size - 1 - int(np.argmin(smooth[::-1]))
    return min((lo + last_min) * CHUNK_SAMPLES + CHUNK_SAMPLES // 2, start + max_samples)


def cut_long(regions: list[Region], probs: np.ndarray, max_samples: int = WINDOW_SAMPLES) -> list[Region]:
    """Each region longer than `max_samples` cut, again and again, at its least speech-like point."""
    out = []
    for start, end in regions:
        while end - start > max_samples:
            cut = cut_point(probs, start, 0, max_samples)
            out.append((start, cut))
            start = cut
        out.append((start, end))
    return out


def pack(regions: list[Region], max_samples: int = WINDOW_SAMPLES, max_gap_s: float = VadOptions.max_gap_s) -> list[Piece]:
    """Consecutive regions joined while their speech fits one window and no pause exceeds `max_gap_s`."""
    pieces: list[list[Region]] = []
    for region in regions:
        assert region[1] - region[0] <= max_samples, "cut_long first"
        last = pieces[-1] if pieces else None
        if (last is not None and region[0] - last[-1][1] <= max_gap_s * SAMPLING_RATE
                and sum(e - s for s, e in last) + region[1] - region[0] <= max_samples):
            last.append(region)
        else:
            pieces.append([region])
    return [Piece(tuple(p)) for p in pieces]


def plan_pieces(probs: np.ndarray, n_samples: int, opts: VadOptions = VadOptions(), levels: np.ndarray | None = None) -> list[Piece]:
    """Probabilities (and levels) to pieces: regions, long ones cut, packed into pieces of at most `max_piece_s`."""
    longest = min(WINDOW_SAMPLES, round(opts.max_piece_s * SAMPLING_RATE))
    return pack(cut_long(speech_regions(probs, n_samples, opts, levels), probs, longest), longest, opts.max_gap_s)


def find_pieces(audio: np.ndarray, opts: VadOptions = VadOptions()) -> list[Piece]:
    """The pieces of an in-memory 16 kHz clip: the VAD run over it in views (no copy), then `plan_pieces`."""
    probs, levels = speech_features(blocks_of(audio), opts.max_gain)
    return plan_pieces(probs, audio.shape[0], opts, levels)
