"""Corpus throughput: audio-seconds per second and files per hour, one file at a time and batched.

    python tools/bench.py --bulk                       # full-size random model, 8 clips of 10 s, 32 tokens each
    python tools/bench.py --bulk --preset small        # a quick check that it runs (what the test runs)

N WAV clips of S seconds (deterministic synthetic audio) are transcribed by `glm_asr.corpus.batching.transcribe_items`,
as `glm-asr transcribe` does, with exactly --tokens new tokens each (eos ignored: the weights are random),
once with --batch-size 1 and once with all clips in one batch; fp32, so the transcripts must be identical.
The bound is measured in the same run: for each clip alone, its features, audio path (encoder + projector)
and the prefill of its prompt, which every clip pays batched or not (each is one padded 30 s window, as the
reference requires), while batched decoding reads the weights once for the whole batch. Each mode is
reported as its wall time over that bound.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import scipy.io.wavfile
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from glm_asr.corpus.batching import transcribe_items  # noqa: E402
from glm_asr.corpus.inputs import Item  # noqa: E402
from glm_asr.transcription.generate import greedy_generate  # noqa: E402
from glm_asr.transcription.presets import demo_clip  # noqa: E402
from glm_asr.transcription.transcribe import load_model_and_processor, read_audio  # noqa: E402

NEVER = (-1,)  # an eos id no token has: every clip decodes exactly --tokens tokens


def bound_seconds(model, processor, paths: list[Path]) -> float:  # noqa: ANN001
    """Sum over the clips, each alone, of reading it, its features, audio path and prompt prefill."""
    total = 0.0
    for path in paths:
        started = time.perf_counter()
        batch = processor([read_audio(path)])
        greedy_generate(model, batch.input_ids, batch.attention_mask, batch.input_features, batch.input_features_mask,
                        max_new_tokens=1, eos_token_id=NEVER)  # the prefill's logits give the first token
        total += time.perf_counter() - started
    return total


def timed(model, processor, items: list[Item], tokens: int, batch_size: int) -> tuple[float, list[str]]:  # noqa: ANN001
    started = time.perf_counter()
    results = list(transcribe_items(model, processor, items, max_new_tokens=tokens, batch_size=batch_size, eos_token_id=NEVER))
    wall = time.perf_counter() - started
    failed = [r.error for r in results if r.error]
    if failed:
        raise RuntimeError(f"bulk bench: {failed[0]}")
    return wall, [r.text for r in results]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.py --bulk", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="full", choices=["small", "full"])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.clips < 1 or args.seconds <= 0 or args.tokens < 1:
        print(f"bench --bulk: --clips {args.clips}, --seconds {args.seconds}, --tokens {args.tokens}: expected positive values", file=sys.stderr)
        return 2
    model, processor = load_model_and_processor(None, random_preset=args.preset)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i in range(args.clips):
            paths.append(Path(folder) / f"clip{i:03d}.wav")
            scipy.io.wavfile.write(paths[-1], 16000, demo_clip(args.seconds, seed=i))
        items = [Item(p, str(p)) for p in paths]
        timed(model, processor, items[:1], 2, 1)  # warm-up: kernels chosen and weights paged in, untimed
        bound = bound_seconds(model, processor, paths)
        single, single_texts = timed(model, processor, items, args.tokens, 1)
        batched, batched_texts = timed(model, processor, items, args.tokens, args.clips)
    audio = args.clips * args.seconds
    rows = {"one at a time": single, f"batched ({args.clips})": batched, "bound (audio path + prefill)": bound}
    print(f"{args.preset} random model, fp32, {args.clips} clips of {args.seconds:g} s, {args.tokens} new tokens each, "
          f"{torch.get_num_threads()} threads")
    print(f"{'mode':30} {'wall s':>8} {'audio s/s':>10} {'files/h':>9} {'x bound':>8}")
    for name, wall in rows.items():
        print(f"{name:30} {wall:8.2f} {audio / wall:10.3f} {3600 * args.clips / wall:9.1f} {wall / bound:8.3f}")
    same = single_texts == batched_texts
    print(f"transcripts identical one at a time and batched: {same}")
    if args.json:
        args.json.write_text(json.dumps({"preset": args.preset, "clips": args.clips, "seconds": args.seconds, "tokens": args.tokens,
                                         "threads": torch.get_num_threads(), "single_s": single, "batched_s": batched, "bound_s": bound,
                                         "identical": same}, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
