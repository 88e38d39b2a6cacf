"""From speech probabilities to the pieces that are decoded: regions, long regions cut, regions packed.

1. `speech_regions`: silero-vad's get_speech_timestamps (6.2.3) on probabilities already computed, at
   16 kHz, with its parameters, names and defaults (VadOptions): hysteresis between `threshold` and
   `neg_threshold`, pauses shorter than `min_silence_duration_ms` bridged, regions shorter than
   `min_speech_duration_ms` dropped, `speech_pad_ms` added on each side (halved where two regions meet).
2. `cut_long`: a region longer than one 30 s window is cut at its least speech-like point: the 96 ms
   (3 frames) of lowest mean probability in the second half of its first 30 s, so that a pause, where
   one exists, is where it is cut, and no piece is shorter than 15 s unless the region ends.
3. `pack`: consecutive regions joined into pieces of at most 30 s of speech (the silence between them
   left out), a pause longer than `max_gap_s` (VadOptions, 5 s) starting a new piece, so that one subtitle
   cue never spans a long silence. Every piece costs a whole 30 s window in the encoder (the reference pads
   each window to 3000 frames), so a smaller gap gives tighter cues for more windows: at 2 s, the shared
   clips laid end to end (their own lead and tail make 3.3 s pauses) took more windows than fixed 30 s
   windows did. Deterministic: the same regions always give the same pieces.

Everything is in samples at 16 kHz on the timeline of the audio given; callers add a manifest's offset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from glm_asr.longform.vad import CHUNK_SAMPLES, VadOptions, blocks_of, speech_probabilities
from glm_asr.model.front_end import SAMPLING_RATE, WINDOW_SAMPLES

Region = tuple[int, int]  # [start, end) in samples


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


def speech_regions(probs: np.ndarray, n_samples: int, opts: VadOptions = VadOptions()) -> list[Region]:
    """silero-vad's get_speech_timestamps_from_probs (use_max_poss_sil_at_max_speech=True), in samples."""
    window, sr = CHUNK_SAMPLES, SAMPLING_RATE
    min_speech = sr * opts.min_speech_duration_ms / 1000
    pad = sr * opts.speech_pad_ms / 1000
    max_speech = sr * opts.max_speech_duration_s - window - 2 * pad
    min_silence = sr * opts.min_silence_duration_ms / 1000
    min_silence_at_max = sr * opts.min_silence_at_max_speech / 1000
    neg = opts.neg_threshold if opts.neg_threshold is not None else max(opts.threshold - 0.15, 0.01)
    triggered, speeches, current = False, [], {}
    temp_end = prev_end = next_start = 0
    possible_ends: list[tuple[int, int]] = []
    for i, p in enumerate(probs.tolist()):
        cur = window * i
        if p >= opts.threshold and temp_end:
            if cur - temp_end > min_silence_at_max:
                possible_ends.append((temp_end, cur - temp_end))
            temp_end = 0
            if next_start < prev_end:
                next_start = cur
        if p >= opts.threshold and not triggered:
            triggered, current = True, {"start": cur}
            continue
        if triggered and cur - current["start"] > max_speech:
            if possible_ends:  # the longest pause inside the region so far
                prev_end, dur = max(possible_ends, key=lambda x: x[1])
                speeches.append({"start": current["start"], "end": prev_end})
                next_start = prev_end + dur
                current = {"start": next_start} if next_start < prev_end + cur else {}
                triggered = bool(current)
            else:  # no pause: cut here
                speeches.append({"start": current["start"], "end": cur})
                current, triggered = {}, False
                prev_end = next_start = temp_end = 0
                possible_ends = []
                continue
            prev_end = next_start = temp_end = 0
            possible_ends = []
        if p < neg and triggered:
            temp_end = temp_end or cur
            if cur - temp_end < min_silence:
                continue
            if temp_end - current["start"] > min_speech:
                speeches.append({"start": current["start"], "end": temp_end})
            current, triggered = {}, False
            prev_end = next_start = temp_end = 0
            possible_ends = []
    if current and n_samples - current["start"] > min_speech:
        speeches.append({"start": current["start"], "end": n_samples})
    for i, speech in enumerate(speeches):
        if i == 0:
            speech["start"] = int(max(0, speech["start"] - pad))
        if i != len(speeches) - 1:
            gap = speeches[i + 1]["start"] - speech["end"]
            if gap < 2 * pad:
                speech["end"] += int(gap // 2)
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - gap // 2))
            else:
                speech["end"] = int(min(n_samples, speech["end"] + pad))
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - pad))
        else:
            speech["end"] = int(min(n_samples, speech["end"] + pad))
    return [(s["start"], s["end"]) for s in speeches if s["end"] > s["start"]]


def cut_long(regions: list[Region], probs: np.ndarray, max_samples: int = WINDOW_SAMPLES) -> list[Region]:
    """Each region longer than `max_samples` cut, again and again, at its least speech-like point."""
    smooth = np.convolve(probs, np.ones(3) / 3, mode="same") if probs.size else probs
    out = []
    for start, end in regions:
        while end - start > max_samples:
            lo = (start + max_samples // 2) // CHUNK_SAMPLES
            hi = max(lo + 1, (start + max_samples) // CHUNK_SAMPLES)  # the frames starting inside the window
            frames = smooth[lo:hi]
            last_min = frames.size - 1 - int(np.argmin(frames[::-1]))  # ties: the latest, for the longest piece
            cut = (lo + last_min) * CHUNK_SAMPLES + CHUNK_SAMPLES // 2 if frames.size else start + max_samples
            cut = min(cut, start + max_samples)
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


def plan_pieces(probs: np.ndarray, n_samples: int, opts: VadOptions = VadOptions()) -> list[Piece]:
    """Probabilities to pieces: regions, long ones cut, packed into windows of at most 30 s."""
    return pack(cut_long(speech_regions(probs, n_samples, opts), probs), WINDOW_SAMPLES, opts.max_gap_s)


def find_pieces(audio: np.ndarray, opts: VadOptions = VadOptions()) -> list[Piece]:
    """The pieces of an in-memory 16 kHz clip: the VAD run over it in views (no copy), then `plan_pieces`."""
    return plan_pieces(speech_probabilities(blocks_of(audio), opts.max_gain), audio.shape[0], opts)
