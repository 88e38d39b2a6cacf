"""Where the VAD puts speech bounds on real speech, against bounds known by construction.

    python tools/vad_boundaries.py                 # the composites of seeds 0..9, figures in ms
    python tools/vad_boundaries.py --seeds 3 --json vad.json
    python tools/vad_boundaries.py --zh-gain 20    # the Chinese clip amplified x20 (its peak near -12 dBFS)

A composite lays the real clips of ../shared/audio (example_en.wav 10.6 s, example_zh.wav 6.0 s, a quiet
voice) at known places among digital silence and white noise of known lengths and levels; one English clip
always straddles the 30.0 s mark, where fixed 30 s windows would cut it. A clip's true speech bounds are
measured on the clean clip once (the first and last 10 ms frame within 35 dB of its loudest frame) and
moved to where it was laid. Reported: the error of the detected bounds (the first region that overlaps a
clip's speech and the last one; regions carry the padding, 400 ms by default) in ms, cuts (piece bounds) that split
a clip's speech between two pieces, whether the straddling clip is decoded in exactly one piece, and speech
detected inside the noise, and the least fraction of a clip's speech inside regions. `--zh-gain 20` raises the
Chinese clip to a normal level (peak about -12 dBFS), as in the composites of issue 29.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from glm_asr.io.audio_file import load_audio  # noqa: E402
from glm_asr.longform.segmentation import Piece, cut_long, pack, speech_regions  # noqa: E402
from glm_asr.longform.vad import VadOptions, blocks_of, speech_features  # noqa: E402
from glm_asr.model.front_end import SAMPLING_RATE  # noqa: E402

AUDIO = ROOT.parent / "shared" / "audio"
STRADDLE = 30.0  # seconds: the first fixed window's end


@dataclass
class Composite:
    audio: np.ndarray
    speech: list[tuple[float, float]]  # each clip's true speech bounds (s), in order
    noise: list[tuple[float, float]]
    straddling: int  # index into speech of the clip laid across STRADDLE
    names: list[str]  # each clip's name (en, zh)


def speech_bounds(clip: np.ndarray) -> tuple[float, float]:
    """First and last 10 ms frame louder than both 30 dB below the clip's loudest frame and 12 dB above its
    floor (the 10th percentile frame), in seconds: the clean English clip's floor is 60 dB down, the quiet
    Chinese one's only 23 dB, so neither rule alone finds both."""
    frames = clip[: clip.shape[0] // 160 * 160].reshape(-1, 160)
    db = 10 * np.log10((frames.astype(np.float64) ** 2).mean(axis=1) + 1e-20)
    loud = np.flatnonzero(db >= max(db.max() - 30, np.percentile(db, 10) + 12))
    return loud[0] * 0.01, (loud[-1] + 1) * 0.01


def composite(seed: int, en: np.ndarray, zh: np.ndarray) -> Composite:
    """Clips and noise at places drawn from `seed`; the third clip (English) straddles 30.0 s."""
    rng = np.random.default_rng(seed)
    clips = {"en": (en, speech_bounds(en)), "zh": (zh, speech_bounds(zh))}
    parts: list[np.ndarray] = []
    speech, noise, names, t = [], [], [], 0.0

    def add(samples: np.ndarray) -> None:
        nonlocal t
        parts.append(samples.astype(np.float32))
        t += samples.shape[0] / SAMPLING_RATE

    def silence(seconds: float) -> None:
        add(np.zeros(round(seconds * SAMPLING_RATE), np.float32))

    def clip(name: str) -> None:
        samples, (lo, hi) = clips[name]
        speech.append((t + lo, t + hi))
        names.append(name)
        add(samples)

    silence(rng.uniform(0.3, 2.0))
    clip("en")
    silence(rng.uniform(0.2, 1.0))  # a short pause: may be bridged into one piece
    clip("zh")
    start = len(speech)
    # the straddling clip's speech centred on 30.0 s, up to 2 s either way; noise before it where room allows
    lo, hi = clips["en"][1]
    at = STRADDLE - (lo + hi) / 2 + rng.uniform(-2.0, 2.0)
    gap = at - t
    level = rng.choice([0.005, 0.02, 0.05])
    if gap > 2.5:
        silence(0.5)
        noise.append((t, t + gap - 1.0))
        add(rng.standard_normal(round((gap - 1.0) * SAMPLING_RATE)) * level)
        silence(at - t)
    else:
        silence(max(gap, 0.2))
    clip("en")
    silence(rng.uniform(3.0, 8.0))  # a long silence: never decoded
    clip("zh")
    silence(rng.uniform(0.5, 3.0))
    noise.append((t, t + 4.0))
    add(rng.standard_normal(4 * SAMPLING_RATE) * rng.choice([0.005, 0.02, 0.05]))
    silence(rng.uniform(0.5, 3.0))
    clip("en")
    silence(rng.uniform(0.5, 2.0))
    return Composite(np.concatenate(parts), speech, noise, start, names)


@dataclass
class Measured:
    names: list[str]  # of the clips detected, in order
    start_errors_ms: list[float]
    covered: list[float]  # of each detected clip's speech, the fraction inside a region
    end_errors_ms: list[float]
    missed: int  # clips with no region at all
    cuts_inside_speech: int  # piece bounds that split a clip's speech between two pieces
    straddling_in_one_piece: bool
    noise_detected_s: float


def measure(comp: Composite, opts: VadOptions = VadOptions()) -> tuple[Measured, list[Piece]]:
    n = comp.audio.shape[0]
    probs, levels = speech_features(blocks_of(comp.audio), opts.max_gain)
    regions = speech_regions(probs, n, opts, levels)
    pieces = pack(cut_long(regions, probs), max_gap_s=opts.max_gap_s)
    sec = [(s / SAMPLING_RATE, e / SAMPLING_RATE) for s, e in regions]
    names, starts, ends, covered, missed = [], [], [], [], 0
    for name, (lo, hi) in zip(comp.names, comp.speech):
        overlapping = [(s, e) for s, e in sec if s < hi and e > lo]
        if not overlapping:
            missed += 1
            continue
        names.append(name)
        covered.append(round(sum(min(e, hi) - max(s, lo) for s, e in overlapping) / (hi - lo), 4))
        starts.append(round(float(overlapping[0][0] - lo) * 1000, 1))
        ends.append(round(float(overlapping[-1][1] - hi) * 1000, 1))
    spans = [(p.start / SAMPLING_RATE, p.end / SAMPLING_RATE) for p in pieces]
    covering = [sum(s < hi and e > lo for s, e in spans) for lo, hi in comp.speech]  # pieces each clip is decoded in
    inside = int(sum(max(c - 1, 0) for c in covering))
    one_piece = bool(covering[comp.straddling] == 1)
    noisy = sum(max(0.0, min(e, b) - max(s, a)) for a, b in comp.noise for s, e in sec)
    return Measured(names, starts, covered, ends, missed, inside, one_piece, round(float(noisy), 3)), pieces


def clips(folder: Path = AUDIO) -> tuple[np.ndarray, np.ndarray]:
    return load_audio(folder / "example_en.wav"), load_audio(folder / "example_zh.wav")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10, help="composites 0..N-1")
    parser.add_argument("--max-gain", type=float, default=VadOptions.max_gain, help="1: Silero on the raw level")
    parser.add_argument("--audio", type=Path, default=AUDIO, help="folder of example_en.wav and example_zh.wav (default: ../shared/audio)")
    parser.add_argument("--zh-gain", type=float, default=1.0, help="amplitude factor on example_zh.wav (20: a normal level)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not (args.audio / "example_en.wav").is_file():
        print(f"vad_boundaries: no example_en.wav in {args.audio}; expected the shared clips beside the checkout, or --audio DIR", file=sys.stderr)
        return 2
    en, zh = clips(args.audio)
    zh = np.clip(zh * args.zh_gain, -1.0, 1.0).astype(np.float32)
    opts = VadOptions(max_gain=args.max_gain)
    rows = [measure(composite(seed, en, zh), opts)[0] for seed in range(args.seeds)]
    errors = {f"{name}_{side}": [e for r in rows for n, e in zip(r.names, getattr(r, f"{side}_errors_ms")) if n == name]
              for name in ("en", "zh") for side in ("start", "end")}
    summary = {"composites": args.seeds, "clips": sum(len(r.start_errors_ms) + r.missed for r in rows),
               "missed": sum(r.missed for r in rows), "cuts_inside_speech": sum(r.cuts_inside_speech for r in rows),
               "straddling_in_one_piece": sum(r.straddling_in_one_piece for r in rows),
               "noise_detected_s": round(sum(r.noise_detected_s for r in rows), 3),
               "least_covered": {name: min((c for r in rows for n, c in zip(r.names, r.covered) if n == name), default=None)
                                 for name in ("en", "zh")}, "max_gain": args.max_gain, "zh_gain": args.zh_gain}
    for key, values in errors.items():
        v = np.asarray(values)
        summary[f"{key}_error_ms"] = {"n": int(v.size), "median": float(np.median(v)), "p10": float(np.percentile(v, 10)),
                                      "p90": float(np.percentile(v, 90)), "min": float(v.min()), "max": float(v.max())} if v.size else {}
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": [r.__dict__ for r in rows]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
