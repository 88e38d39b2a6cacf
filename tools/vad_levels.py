"""How much speech the VAD keeps, per level and language, on composites whose speech extents are known.

    python tools/vad_levels.py                      # 12 composites of 10 utterances at -55..-10 dBFS; a table
    python tools/vad_levels.py --path live          # the same audio through the live stream's Segmenter
    python tools/vad_levels.py --json levels.json   # every clip's figures too
    python tools/vad_levels.py --pieces             # windows per hour and cue lengths by piece length and gap
    python tools/vad_levels.py --pieces --cost 4    # and the decode's wall time per hour, random small model

A composite lays 10 utterances, each at its own level (-55..-10 dBFS in a random order, so a quiet voice
often follows a loud one), drawn so that no level, language or voice dominates, among gaps of 0.3-3 s filled
with digital silence, white, pink or brown noise or a low babble (six synthetic voices at once), 20 dB under
the quieter neighbour. Utterances: the shared clips of ../shared/audio (example_en.wav, English;
example_zh.wav, quiet Mandarin) and espeak-ng's speech (English voices and Mandarin `cmn`; Debian's
`espeak-ng` package), every one re-levelled so that its speech has its RMS level (dBFS).
Speech extents: a synthesised utterance's are exact (its first and last 10 ms frame within 50 dB of its
loudest: espeak-ng writes digital silence around it); a shared clip's are those of tools/vad_boundaries.py.
Noise-only files (white, pink, brown at -45, -35 and -25 dBFS RMS, 20 s each) say what is found where
nobody speaks. Reported per level and language: the fraction of each utterance's speech inside a region
(the least of them and the mean), the start error (region start minus speech start; positive: late) and the
end error, in seconds. Goals: every utterance at least 95% covered, no start more than 0.25 s late,
nothing found in noise at -45 dBFS.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.io.wavfile
import scipy.signal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from vad_boundaries import AUDIO, clips, speech_bounds  # noqa: E402

from glm_asr.longform.segmentation import speech_regions  # noqa: E402
from glm_asr.longform.vad import VadOptions, blocks_of, speech_probabilities  # noqa: E402

SR = 16000
LEVELS = (-55, -50, -45, -40, -35, -30, -25, -20, -15, -10)
FILLERS = ("silence", "white", "pink", "brown", "babble")
SENTENCES = {
    "en": ["the quick brown fox jumps over the lazy dog", "please call stella and ask her to bring these things with her",
           "we will meet at the station at half past nine", "she sells sea shells by the sea shore every summer"],
    "zh": ["我们明天早上去公园散步", "今天的天气非常好，适合出去走一走", "请把这份文件送到三楼的办公室", "他说话的声音很小，但是每个字都很清楚"],
}
VOICES = {"en": ["en-us", "en-gb", "en-us+f3", "en-gb-scotland", "en+m3", "en-us+f2"], "zh": ["cmn", "cmn+f3", "cmn+m3", "cmn+f2"]}


@functools.cache
def espeak(voice: str, text: str, speed: int) -> tuple[np.ndarray, tuple[float, float]]:
    """espeak-ng's samples at 16 kHz and their exact speech extent (s)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("vad_levels: espeak-ng is not installed; apt-get install -y espeak-ng")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.wav"
        subprocess.run([exe, "-v", voice, "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)
        rate, data = scipy.io.wavfile.read(path)
    audio = scipy.signal.resample_poly(data.astype(np.float64) / 32768, SR, rate).astype(np.float32)
    frames = audio[: audio.size // 160 * 160].reshape(-1, 160)
    db = 10 * np.log10((frames.astype(np.float64) ** 2).mean(axis=1) + 1e-20)
    loud = np.flatnonzero(db >= db.max() - 50)
    return audio, (loud[0] * 0.01, (loud[-1] + 1) * 0.01)


def relevel(audio: np.ndarray, extent: tuple[float, float], level_db: float) -> np.ndarray:
    """`audio` scaled so that its speech (inside `extent`) has an RMS of `level_db` dBFS."""
    speech = audio[round(extent[0] * SR) : round(extent[1] * SR)].astype(np.float64)
    return (audio * (10 ** (level_db / 20) / np.sqrt((speech**2).mean()))).astype(np.float32)


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise: white, pink (1/f power) or brown (1/f^2)."""
    alpha = {"white": 0, "pink": 1, "brown": 2}[kind]
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    x = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) / f ** (alpha / 2), n)
    return (x / np.sqrt((x**2).mean())).astype(np.float32)


def babble(n: int, rng: np.random.Generator) -> np.ndarray:
    """Six synthetic voices talking at once, looped to `n` samples, unit RMS."""
    out = np.zeros(n, np.float32)
    for i in range(6):
        lang = ("en", "zh")[i % 2]
        audio, _ = espeak(VOICES[lang][i % len(VOICES[lang])], SENTENCES[lang][i % 4], 160)
        out += np.roll(np.resize(audio, n), int(rng.integers(n)))
    return (out / np.sqrt((out.astype(np.float64) ** 2).mean())).astype(np.float32)


def utterance(k: int, rng: np.random.Generator, shared: dict) -> tuple[str, str, np.ndarray, tuple[float, float]]:
    """The k-th utterance of a composite: (language, source, samples, extent), cycling so none dominates."""
    lang = ("en", "zh")[k % 2]
    if k % 4 in (0, 1) and shared:  # a shared clip every other pair
        audio = shared[lang]
        return lang, f"shared_{lang}", audio, speech_bounds(audio)
    voice = VOICES[lang][int(rng.integers(len(VOICES[lang])))]
    audio, extent = espeak(voice, SENTENCES[lang][int(rng.integers(4))], int(rng.integers(130, 200)))
    return lang, voice, audio, extent


def composite(seed: int, shared: dict, levels: tuple[float, ...] = LEVELS, count: int = 10) -> tuple[np.ndarray, list[dict]]:
    """`count` utterances, each at its own level (the levels in a random order: a quiet voice often follows
    a loud one), the gaps filled 20 dB under the quieter neighbour."""
    rng = np.random.default_rng(seed)
    order = [levels[i % len(levels)] for i in rng.permutation(max(count, len(levels)))][:count]
    parts, truth, t = [], [], 0
    for k in range(count + 1):
        gap = round(rng.uniform(0.3, 3.0) * SR)
        kind = FILLERS[(k + seed) % len(FILLERS)]
        level = min(order[max(k - 1, 0)], order[min(k, count - 1)]) - 20
        filler = np.zeros(gap, np.float32) if kind == "silence" else (
            babble(gap, rng) if kind == "babble" else noise(kind, gap, rng)) * 10 ** (level / 20)
        parts.append(filler.astype(np.float32))
        t += gap
        if k == count:
            break
        lang, source, audio, (lo, hi) = utterance(k + seed, rng, shared)
        parts.append(relevel(audio, (lo, hi), order[k]))
        truth.append({"lang": lang, "source": source, "level_db": float(order[k]), "start": round(t / SR + float(lo), 3),
                      "end": round(t / SR + float(hi), 3), "after": kind})
        t += audio.size
    return np.concatenate(parts), truth


def regions_of(audio: np.ndarray, opts: VadOptions, path: str) -> list[tuple[float, float]]:
    """Speech regions (s) as a file gets them, or as the live stream's utterances (fed 100 ms at a time)."""
    if path == "live":
        from glm_asr.serve.utterances import Segmenter, TurnOptions

        seg = Segmenter(TurnOptions(threshold=opts.threshold, silence_duration_ms=opts.min_silence_duration_ms,
                                    prefix_padding_ms=opts.speech_pad_ms, min_speech_ms=opts.min_speech_duration_ms,
                                    max_gain=opts.max_gain))
        events = [e for i in range(0, audio.size, 1600) for e in seg.feed(audio[i : i + 1600])] + seg.flush()
        return [(u.start / SR, u.end / SR) for name, u in events if name == "stopped"]
    try:
        from glm_asr.longform.vad import speech_features
    except ImportError:  # a checkout from before the look-back (to compare with)
        probs, levels = speech_probabilities(blocks_of(audio), opts.max_gain), None
    else:
        probs, levels = speech_features(blocks_of(audio), opts.max_gain)
    regions = speech_regions(probs, audio.size, opts) if levels is None else speech_regions(probs, audio.size, opts, levels)
    return [(s / SR, e / SR) for s, e in regions]


def score(regions: list[tuple[float, float]], clip: dict) -> dict:
    lo, hi = clip["start"], clip["end"]
    over = [(s, e) for s, e in regions if s < hi and e > lo]
    covered = sum(min(e, hi) - max(s, lo) for s, e in over)
    return clip | {"covered": round(covered / (hi - lo), 4),
                   "start_error_s": round(over[0][0] - lo, 3) if over else None,
                   "end_error_s": round(over[-1][1] - hi, 3) if over else None}


def piece_table(audios: list[np.ndarray], opts: VadOptions) -> str:
    """Pieces (each one 30 s encoder window) per hour of audio, and cue lengths, for a few piece lengths and gaps."""
    from dataclasses import replace

    from glm_asr.longform.segmentation import plan_pieces
    from glm_asr.longform.vad import speech_features

    features = [speech_features(blocks_of(a), opts.max_gain) for a in audios]
    hours = sum(a.size for a in audios) / SR / 3600
    out = ["| max_piece_s | max_gap_s | windows per hour | cue on the timeline s: median, max | speech per cue s: median, max |",
           "|---|---|---|---|---|"]
    for piece in (7.0, 15.0, 30.0):
        for gap in (0.0, 2.0, 5.0):
            o = replace(opts, max_piece_s=piece, max_gap_s=gap)
            pieces = [p for a, (probs, levels) in zip(audios, features) for p in plan_pieces(probs, a.size, o, levels)]
            span = np.array([(p.end - p.start) / SR for p in pieces])
            speech = np.array([p.speech_samples / SR for p in pieces])
            out.append(f"| {piece:g} | {gap:g} | {len(pieces) / hours:.0f} | {np.median(span):.1f}, {span.max():.1f} | "
                       f"{np.median(speech):.1f}, {speech.max():.1f} |")
    return "\n".join(out)


COST_SETTINGS = ((7.0, 0.0), (15.0, 0.0), (15.0, 2.0), (30.0, 0.0), (30.0, 5.0))


def cost_table(audios: list[np.ndarray], opts: VadOptions, tokens: int) -> str:
    """The wall time of `transcribe_items --vad` (as `glm-asr transcribe --vad --random small`) per hour of audio,
    for a few piece lengths and gaps: every piece gets exactly `tokens` new tokens (eos ignored: the weights are
    random), so what differs between rows is the per-piece cost (one padded 30 s encoder window, one prompt); the
    decoder's work on the text, which follows the speech, is the same in every row and left out."""
    import tempfile
    import time
    from dataclasses import replace

    import torch

    from glm_asr.corpus.batching import transcribe_items
    from glm_asr.corpus.inputs import Item
    from glm_asr.runtime import cpu
    from glm_asr.transcription.transcribe import load_model_and_processor

    model, processor = load_model_and_processor(None, random_preset="small")
    hours = sum(a.size for a in audios) / SR / 3600
    out = [f"random small model, fp32, {torch.get_num_threads()} threads, CPU class {cpu.features().cpu_class}, "
           f"{hours * 60:.1f} min of audio, {tokens} new tokens per piece", "",
           "| max_piece_s | max_gap_s | pieces | pieces per hour | wall s per hour of audio | wall s per piece |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as folder:
        items = []
        for i, audio in enumerate(audios):
            path = Path(folder) / f"c{i:02d}.wav"
            scipy.io.wavfile.write(path, SR, audio.astype(np.float32))
            items.append(Item(path, str(path)))
        list(transcribe_items(model, processor, items[:1], max_new_tokens=2, batch_size=8, eos_token_id=(-1,), vad=opts))  # warm-up
        for piece, gap in COST_SETTINGS:
            started = time.perf_counter()
            results = list(transcribe_items(model, processor, items, max_new_tokens=tokens, batch_size=8, eos_token_id=(-1,),
                                            vad=replace(opts, max_piece_s=piece, max_gap_s=gap)))
            wall = time.perf_counter() - started
            assert not any(r.error for r in results), [r.error for r in results if r.error]
            units = sum(len(r.segments) for r in results)
            out.append(f"| {piece:g} | {gap:g} | {units} | {units / hours:.0f} | {wall / hours:.0f} | {wall / units:.2f} |")
    return "\n".join(out)


def table(rows: list[dict], noise_rows: list[dict]) -> str:
    out = ["| level (dBFS) | language | utterances | covered: least / mean | start error s: median, max late | end error s: median, min |",
           "|---|---|---|---|---|---|"]
    for level in sorted({r["level_db"] for r in rows}):
        for lang in ("en", "zh"):
            rs = [r for r in rows if r["level_db"] == level and r["lang"] == lang]
            if not rs:
                continue
            cov = np.array([r["covered"] for r in rs])
            st = np.array([r["start_error_s"] for r in rs if r["start_error_s"] is not None])
            en = np.array([r["end_error_s"] for r in rs if r["end_error_s"] is not None])
            out.append(f"| {level} | {lang} | {len(rs)} | {cov.min():.0%} / {cov.mean():.1%} | "
                       + (f"{np.median(st):+.2f}, {st.max():+.2f} | {np.median(en):+.2f}, {en.min():+.2f} |" if st.size else "- | - |"))
    out.append("")
    out.append("| noise only (20 s) | " + " | ".join(f"{r['kind']} {r['level_db']}" for r in noise_rows) + " |")
    out.append("|---|" + "---|" * len(noise_rows))
    out.append("| speech found (s) | " + " | ".join(f"{r['found_s']:.2f}" for r in noise_rows) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=12, help="composites 0..N-1, 10 utterances each")
    parser.add_argument("--levels", type=float, nargs="+", default=LEVELS)
    parser.add_argument("--path", choices=("file", "live"), default="file")
    parser.add_argument("--audio", type=Path, default=AUDIO, help="folder of the shared clips (skipped when absent)")
    parser.add_argument("--threshold", type=float, default=VadOptions.threshold)
    parser.add_argument("--neg-threshold", type=float, default=VadOptions.neg_threshold)
    parser.add_argument("--max-gain", type=float, default=VadOptions.max_gain)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--pieces", action="store_true", help="instead: windows per hour and cue lengths by max_piece_s and max_gap_s")
    parser.add_argument("--cost", type=int, default=0, metavar="N", help="with --pieces: also time the decode of the first N composites")
    parser.add_argument("--tokens", type=int, default=8, help="with --cost: new tokens per piece")
    args = parser.parse_args(argv)
    opts = VadOptions(threshold=args.threshold, neg_threshold=args.neg_threshold, max_gain=args.max_gain)
    shared = dict(zip(("en", "zh"), clips(args.audio))) if (args.audio / "example_en.wav").is_file() else {}
    if args.pieces:
        audios = [composite(seed, shared, tuple(args.levels))[0] for seed in range(args.seeds)]
        print(piece_table(audios, opts))
        if args.cost:
            print()
            print(cost_table(audios[: args.cost], opts, args.tokens))
        return 0
    rows = []
    for seed in range(args.seeds):
        audio, truth = composite(seed, shared, tuple(args.levels))
        regions = regions_of(audio, opts, args.path)
        rows += [score(regions, clip) for clip in truth]
    rng = np.random.default_rng(7)
    noise_rows = []
    for level in (-45, -35, -25):
        for kind in ("white", "pink", "brown"):
            found = regions_of(noise(kind, 20 * SR, rng) * 10 ** (level / 20), opts, args.path)
            noise_rows.append({"kind": kind, "level_db": level, "found_s": round(sum(e - s for s, e in found), 3)})
    cov = [r["covered"] for r in rows]
    late = [r["start_error_s"] for r in rows if r["start_error_s"] is not None]
    summary = {"path": args.path, "utterances": len(rows), "least_covered": min(cov), "below_95": int(sum(c < 0.95 for c in cov)),
               "latest_start_s": max(late) if late else None, "starts_over_0.25_late": int(sum(s > 0.25 for s in late)),
               "noise_found_at_-45_s": sum(r["found_s"] for r in noise_rows if r["level_db"] == -45)}
    print(table(rows, noise_rows))
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows, "noise": noise_rows}, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
