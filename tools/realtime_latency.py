"""Latency of live transcription: from the end of each utterance to its final text, with 1, 2, 4... streams.

    OMP_NUM_THREADS=1 python tools/realtime_latency.py --streams 1 2 4 -- --random small --max-new-tokens 64

Starts `glm-asr serve --port 0 --partials off` (plus the arguments after --) itself, on 127.0.0.1. Each stream
sends the shared clips (example_en.wav, example_zh.wav) laid end to end with --gap seconds of silence between
them, --rounds times, at real-time pace (tools/stream_wav.py), the streams started --stagger seconds apart.
Where each utterance's speech ends is known beforehand: the server's own VAD is deterministic, so it is run
here on the same samples. Latency = when the `.completed` event arrived - that end, on the stream's clock
(its first frame sent at 0); its floor is --silence-ms (the pause that ends an utterance). A level keeps up
when its last round's latency is no worse than its first round's (+1 s), otherwise the queue grows and latency
with it, and when no utterance waited longer than a round of the stream lasts: a text that comes a round late
was queued behind the next round's speech, even where the last round's queue, which no further speech follows,
drains faster (a full-size stream on AVX2 showed first-round 118 s, last-round 74 s).

Then, in this process, where one utterance's time goes: features, the encoder (always one whole 30 s window,
3000 frames, however short the utterance), prefill of the prompt, and each decoded token.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))
from stream_wav import stream  # noqa: E402

SR = 16000


def layout(clips: list[np.ndarray], gap: float, rounds: int) -> tuple[np.ndarray, list[int]]:
    """The stream's audio, and the round each of its samples belongs to."""
    pieces, rounds_of = [np.zeros(int(gap * SR), np.float32)], [0] * int(gap * SR)
    for r in range(rounds):
        for clip in clips:
            pieces += [clip, np.zeros(int(gap * SR), np.float32)]
            rounds_of += [r] * (clip.shape[0] + int(gap * SR))
    return np.concatenate(pieces), rounds_of


def speech_ends(audio: np.ndarray, silence_ms: int) -> dict[int, float]:
    """audio_end_ms of each utterance the server will find (its own VAD, run here on the same PCM16 samples:
    deterministic) -> where its speech ends (s): the utterance's end less the padding kept after speech."""
    from glm_asr.serve.utterances import Segmenter, TurnOptions

    turn = TurnOptions(silence_duration_ms=silence_ms)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").astype(np.float32) / 32768
    segmenter = Segmenter(turn)
    events = [e for i in range(0, pcm.size, 1600) for e in segmenter.feed(pcm[i : i + 1600])] + segmenter.flush()
    pad = turn.prefix_padding_ms / 1000
    return {round(u.end * 1000 / SR): max(u.start / SR, u.end / SR - pad) for name, u in events if name == "stopped"}


def start_server(args: list[str]) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "glm_asr_cli", "serve", "--host", "127.0.0.1", "--port", "0", "--partials", "off",
                             "--max-streams", "64", *args], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    line = proc.stdout.readline()
    if "ready on" not in line:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, line.split()[4].replace("http://", "ws://") + "/v1/realtime"


def level(url: str, audio: np.ndarray, ends: dict[int, float], rounds_of: list[int], streams: int,
          stagger: float) -> tuple[list[tuple[int, float]], list[str]]:
    """(round, latency s) of every utterance answered, and the error codes, over `streams` streams at once."""
    out: list[tuple[int, float]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        time.sleep(i * stagger)
        run = stream(url, audio, speed=1.0)
        for at, event in run.events:
            if event["type"] == "error":
                with lock:
                    errors.append(event["error"]["code"])
            if event["type"] != "conversation.item.input_audio_transcription.completed":
                continue
            speech_end = ends[event["audio_end_ms"]]
            with lock:
                out.append((rounds_of[int(speech_end * SR)], at - speech_end))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, errors


def breakdown(model_args: list[str], clip: np.ndarray, tokens: int) -> dict[str, float]:
    """Seconds per stage for one utterance, medians of 3: features, encoder (one 30 s window), prefill, a token."""
    import torch

    from glm_asr.transcription.transcribe import load_model_and_processor, transcribe

    ap = argparse.ArgumentParser()  # the model options of glm-asr serve that the breakdown follows
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--random", default="small")
    ap.add_argument("--quantize", default=None)
    ap.add_argument("--quantize-audio", default=None)
    ap.add_argument("--fast", action="store_true")
    opts, _ = ap.parse_known_args(model_args)
    if opts.fast:  # what the server's --fast took: the same measured (cached) answer
        from glm_asr.runtime.fastest import fast_path

        opts.quantize, opts.quantize_audio = fast_path().decoder, fast_path().audio
    model, processor = load_model_and_processor(opts.model, random_preset=opts.random, quantize=opts.quantize,
                                                quantize_audio_path=opts.quantize_audio)

    def timed(fn) -> float:  # noqa: ANN001
        times = []
        for _ in range(3):
            started = time.perf_counter()
            with torch.inference_mode():
                fn()
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    batch = processor([clip])
    features = timed(lambda: processor([clip]))
    encoder = timed(lambda: model.embed_audio(batch.input_features, batch.input_features_mask))
    forward = timed(lambda: model(batch.input_ids, batch.input_features, batch.input_features_mask, batch.attention_mask))
    one = timed(lambda: transcribe(model, processor, clip, max_new_tokens=1))
    many = timed(lambda: transcribe(model, processor, clip, max_new_tokens=tokens))
    return {"features": features, "encoder (30 s window)": encoder, "prefill": forward - encoder,
            f"decode, per token ({tokens} tokens)": (many - one) / (tokens - 1), "whole pass": many}


def quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--audio", type=Path, default=ROOT.parent / "shared" / "audio")
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--gap", type=float, default=3.0, help="seconds of silence between the clips")
    ap.add_argument("--stagger", type=float, default=0.7, help="seconds between the streams' starts")
    ap.add_argument("--silence-ms", type=int, default=500)
    ap.add_argument("--tokens", type=int, default=64, help="tokens decoded in the breakdown")
    ap.add_argument("server_args", nargs="*", help="after --: glm-asr serve's model options")
    args = ap.parse_args()
    from glm_asr.io.audio_file import load_audio

    clips = [load_audio(args.audio / name) for name in ("example_en.wav", "example_zh.wav")]
    audio, rounds_of = layout(clips, args.gap, args.rounds)
    ends = speech_ends(audio, args.silence_ms)
    server_args = [*args.server_args, "--silence-ms", str(args.silence_ms)]
    proc, url = start_server(server_args)
    print(f"server {' '.join(server_args)}; each stream {audio.shape[0] / SR:.1f} s at real-time pace, "
          f"{len(ends)} utterances; latency = final text - end of speech")
    print("| streams | answered | errors | p50 s | p90 s | max s | first round p50 | last round p50 | keeps up |")
    print("|---|---|---|---|---|---|---|---|---|")
    try:
        for n in args.streams:
            got, errors = level(url, audio, ends, rounds_of, n, args.stagger)
            lat = sorted(x for _, x in got)
            first = [x for r, x in got if r == 0]
            last = [x for r, x in got if r == args.rounds - 1]
            if not lat:
                print(f"| {n} | 0 | {len(errors)} | | | | | | no answer |")
                continue
            round_s = audio.shape[0] / SR / args.rounds
            keeps = (not errors and args.rounds > 1 and bool(first and last) and statistics.median(last) <= statistics.median(first) + 1.0
                     and lat[-1] < round_s)
            print(f"| {n} | {len(lat)}/{n * len(ends)} | {', '.join(f'{errors.count(c)} {c}' for c in sorted(set(errors))) or 0} | {quantile(lat, 0.5):.2f} | {quantile(lat, 0.9):.2f} | {lat[-1]:.2f} | "
                  f"{statistics.median(first) if first else float('nan'):.2f} | {statistics.median(last) if last else float('nan'):.2f} | "
                  f"{'yes' if keeps else 'no' if args.rounds > 1 else 'one round: cannot tell'} |", flush=True)
    finally:
        proc.terminate()
        proc.wait(60)
    print("\nwhere one utterance's pass goes (example_en.wav, in this process, medians of 3):")
    for name, seconds in breakdown(args.server_args, clips[0], args.tokens).items():
        print(f"  {name}: {seconds * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
