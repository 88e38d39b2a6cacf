"""Voice activity detection: its cost per hour of audio, and the decoding time it saves on a half-silent corpus.

    python tools/bench.py --bulk --vad                  # small preset, 8 files of 120 s, half of it silence
    python tools/bench.py --bulk --vad --preset full    # the released size (slow on a CPU)
    python tools/bench.py --bulk --vad --hours 2        # also the VAD alone over one file of that length

VAD cost: Silero over WAV files streamed from disk in blocks (glm_asr/longform/stream.py), one onnxruntime
thread, in seconds per hour of audio, with the process's peak RSS growth (a two-hour file must not be held).
Decoding: N files, each two spans of 30 s of speech-like audio (demo_clip utterances with 0.4 s pauses) and
two of 30 s of silence, transcribed by `transcribe_items` (as `glm-asr transcribe` does) three ways: fixed
30 s windows (`--chunked`), fixed windows in one prompt (the default below 630 s) and `--vad`. Every decode
unit gets exactly --tokens new tokens (eos ignored: the weights are random), so a silent window costs what
the released model spends on one (it is reported to loop there), and a piece of speech costs what a window does.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.io.wavfile
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from glm_asr.corpus.batching import transcribe_items  # noqa: E402
from glm_asr.corpus.inputs import Item  # noqa: E402
from glm_asr.longform.segmentation import find_pieces  # noqa: E402
from glm_asr.longform.stream import stream_file  # noqa: E402
from glm_asr.longform.vad import VadOptions, speech_probabilities  # noqa: E402
from glm_asr.io.audio_file import load_audio  # noqa: E402
from glm_asr.runtime import cpu  # noqa: E402
from glm_asr.transcription.presets import demo_clip  # noqa: E402
from glm_asr.transcription.transcribe import load_model_and_processor  # noqa: E402

NEVER = (-1,)
SR = 16000


def half_silent(seed: int, clips: list[np.ndarray]) -> np.ndarray:
    """120 s: speech 0-30 s, silence 30-60 s, speech 60-90 s, silence 90-120 s. The speech: the shared real
    clips end to end (their own pauses kept) when given, else demo_clip utterances with 0.4 s pauses."""
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(2):
        speech, n = [], 0
        while n < 30 * SR:
            if clips:
                speech.append(clips[int(rng.integers(len(clips)))])
            else:
                speech += [demo_clip(rng.uniform(2.0, 6.0), seed=int(rng.integers(1 << 30))), np.zeros(int(0.4 * SR), np.float32)]
            n += sum(x.size for x in speech[-2:]) if not clips else speech[-1].size
        parts += [np.concatenate(speech)[: 30 * SR], np.zeros(30 * SR, np.float32)]
    return np.concatenate(parts)


def rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited across exec from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vad_seconds_per_hour(path: Path) -> tuple[float, float, float]:
    """(VAD seconds per hour of audio, audio seconds, peak RSS growth in MB) streaming `path`; the session is
    made before the clock starts."""
    speech_probabilities([np.zeros(512, np.float32)])
    before = rss_mb()
    started = time.perf_counter()
    probs = speech_probabilities(stream_file(path), VadOptions().max_gain)
    wall = time.perf_counter() - started
    seconds = probs.size * 512 / SR
    return wall * 3600 / seconds, seconds, rss_mb() - before


def vad_in_fresh_process(path: Path) -> dict:
    """`vad_seconds_per_hour` in a new process, whose peak RSS then says what streaming the file costs."""
    done = subprocess.run([sys.executable, __file__, "--vad-file", str(path)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.py --bulk --vad", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", choices=["small", "full"])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--hours", type=float, default=0.0, help="also run the VAD alone over one file this long (written to a temp folder)")
    parser.add_argument("--audio", type=Path, default=ROOT.parent / "shared" / "audio",
                        help="folder of the real clips for the speech (default ../shared/audio; demo_clip when absent)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--vad-file", type=Path, default=None, help=argparse.SUPPRESS)  # vad_in_fresh_process's child
    args = parser.parse_args(argv)
    if args.vad_file is not None:
        per_hour, seconds, grown = vad_seconds_per_hour(args.vad_file)
        print(json.dumps({"vad_s_per_hour": round(per_hour, 2), "seconds": seconds, "peak_rss_growth_mb": round(grown, 1),
                          "peak_rss_mb": round(rss_mb(), 1)}))
        return 0
    if args.files < 1 or args.tokens < 1 or args.batch_size < 1 or args.hours < 0:
        print("bench --bulk --vad: --files, --tokens and --batch-size must be positive, --hours 0 or more", file=sys.stderr)
        return 2
    out: dict = {"preset": args.preset, "files": args.files, "tokens": args.tokens, "threads": torch.get_num_threads(),
                 "cpu_class": cpu.features().cpu_class}
    clips = [load_audio(args.audio / f"example_{n}.wav") for n in ("en", "zh")] if (args.audio / "example_en.wav").is_file() else []
    out["speech"] = f"{args.audio} clips" if clips else "demo_clip (synthetic)"
    model, processor = load_model_and_processor(None, random_preset=args.preset)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i in range(args.files):
            paths.append(Path(folder) / f"half{i:03d}.wav")
            scipy.io.wavfile.write(paths[-1], SR, half_silent(i, clips))
        items = [Item(p, str(p)) for p in paths]
        per_hour = np.median([vad_seconds_per_hour(p)[0] for p in paths])
        out["vad_s_per_hour"] = round(float(per_hour), 2)
        pieces = [find_pieces(load_audio(p)) for p in paths]
        out["speech_fraction_decoded"] = round(sum(q.speech_samples for ps in pieces for q in ps) / (args.files * 120 * SR), 3)
        list(transcribe_items(model, processor, items[:1], max_new_tokens=2, batch_size=1, eos_token_id=NEVER))  # warm-up
        modes = {"fixed 30 s windows (--chunked)": {"chunked": True}, "one prompt per file (default)": {},
                 "--vad": {"vad": VadOptions()}}
        rows = {}
        for name, kwargs in modes.items():
            started = time.perf_counter()
            results = list(transcribe_items(model, processor, items, max_new_tokens=args.tokens, batch_size=args.batch_size,
                                            eos_token_id=NEVER, **kwargs))
            wall = time.perf_counter() - started
            assert not any(r.error for r in results), [r.error for r in results if r.error]
            rows[name] = {"wall_s": round(wall, 2), "units": sum(len(r.segments) for r in results)}
        out["modes"] = rows
        if args.hours:
            long = Path(folder) / "long.wav"
            block = half_silent(0, clips)
            _write_repeated(long, block, max(1, round(args.hours * 3600 / 120)))  # block by block: not held whole here either
            out["long_file"] = vad_in_fresh_process(long) | {"file_mb": round(long.stat().st_size / 2**20, 1)}
    base = rows["fixed 30 s windows (--chunked)"]["wall_s"]
    print(f"{args.preset} random model, fp32, {args.files} files of 120 s (half silence; speech: {out['speech']}), {args.tokens} new tokens per unit, "
          f"{out['threads']} threads, CPU class {out['cpu_class']}")
    print(f"VAD: {out['vad_s_per_hour']} s per hour of audio; speech decoded with --vad: {out['speech_fraction_decoded']:.1%} of the audio")
    print(f"{'mode':34} {'units':>6} {'wall s':>8} {'x fixed':>8}")
    for name, row in rows.items():
        print(f"{name:34} {row['units']:6d} {row['wall_s']:8.2f} {row['wall_s'] / base:8.3f}")
    if "long_file" in out:
        lf = out["long_file"]
        print(f"VAD alone over one {lf['seconds'] / 3600:.2f} h WAV ({lf['file_mb']} MB): {lf['vad_s_per_hour']} s per hour, "
              f"a fresh process's peak RSS grew {lf['peak_rss_growth_mb']} MB while streaming it (peak {lf['peak_rss_mb']} MB)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


def _write_repeated(path: Path, block: np.ndarray, reps: int) -> None:
    """A float32 mono 16 kHz WAV of `block` repeated, written block by block."""
    data = block.astype("<f4").tobytes()
    size = len(data) * reps
    with open(path, "wb") as f:
        f.write(b"RIFF" + (36 + size).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little"))
        f.write((3).to_bytes(2, "little") + (1).to_bytes(2, "little") + SR.to_bytes(4, "little") + (SR * 4).to_bytes(4, "little"))
        f.write((4).to_bytes(2, "little") + (32).to_bytes(2, "little") + b"data" + size.to_bytes(4, "little"))
        for _ in range(reps):
            f.write(data)


if __name__ == "__main__":
    sys.exit(main())
