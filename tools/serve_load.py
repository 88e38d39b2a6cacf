"""Load on `glm-asr serve`: bounded requests from 1, 4 and 16 concurrent clients, to 127.0.0.1 only.

    python tools/serve_load.py                                   # small preset, the 10.6 s clip, 32 requests per level
    python tools/serve_load.py --clients 1 4 16 --requests 48 -- --random full --max-new-tokens 64
    python tools/serve_load.py --isolation                       # a 3 s request alone, then while a 10 minute one runs
    python tools/serve_load.py --clients --isolation -- --random small   # only that, with the default token budget

The tool starts the server itself (`glm-asr serve --port 0` plus the arguments after `--`), waits for its
ready line, and at each level sends exactly --requests requests, each client posting its next one when the
last is answered. Per level: requests per second, p50/p95/p99 latency, audio seconds transcribed per wall
second, and errors (any status but 200). At the end the server's peak RSS (VmHWM). The clip is
shared/audio/example_en.wav beside the checkout, or a synthetic 10 s clip where that is absent.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import scipy.io.wavfile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from glm_asr.transcription.presets import demo_clip  # noqa: E402

SHARED_CLIP = ROOT.parent / "shared" / "audio" / "example_en.wav"


def write_clip(folder: Path, seconds: float, name: str) -> Path:
    path = folder / name
    scipy.io.wavfile.write(path, 16000, (demo_clip(seconds) * 32767).astype(np.int16))
    return path


def start(server_args: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "glm_asr_cli", "serve", "--host", "127.0.0.1", "--port", "0", *server_args],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    if "ready on" not in line:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, line.split()[4]


async def post(client: httpx.AsyncClient, url: str, clip: bytes) -> tuple[float, int]:
    started = time.perf_counter()
    response = await client.post(f"{url}/v1/audio/transcriptions", files={"file": ("clip.wav", clip, "audio/wav")},
                                 data={"model": "glm-asr-nano-2512"})
    return time.perf_counter() - started, response.status_code


async def level(url: str, clip: bytes, clients: int, requests: int) -> tuple[list[float], int, float]:
    left = list(range(requests))
    latencies, errors = [], 0

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while left:
            left.pop()
            seconds, status = await post(client, url, clip)
            latencies.append(seconds)
            errors += status != 200

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    return latencies, errors, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


async def queued_units(client: httpx.AsyncClient, url: str) -> float:
    for line in (await client.get(f"{url}/metrics")).text.splitlines():
        if line.startswith("glm_asr_queue_depth "):
            return float(line.split()[1])
    raise RuntimeError("no glm_asr_queue_depth in /metrics")


async def isolation(url: str, short: bytes, long: bytes, trials: int = 3) -> tuple[float, float, float]:
    """Median latency of a 3 s request alone; and sent while a 10 minute request's windows are queued (with
    that request's own latency, which is what the 3 s one would wait behind a first-come first-served lock).
    Each trial measures both, one after the other, so that a shared machine's drifting load weighs on both."""
    async with httpx.AsyncClient(timeout=600) as client:
        alone, during, long_latencies = [], [], []
        for _ in range(trials):
            alone.append((await post(client, url, short))[0])
            background = asyncio.ensure_future(post(client, url, long))
            while await queued_units(client, url) == 0:  # its upload decoded and its windows queued
                await asyncio.sleep(0.01)
            during.append((await post(client, url, short))[0])
            if background.done():
                raise SystemExit("the long request finished before the short one: the measurement means nothing")
            seconds, status = await background
            assert status == 200
            long_latencies.append(seconds)
    return statistics.median(alone), statistics.median(during), statistics.median(long_latencies)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="*", default=[1, 4, 16], help="client counts, one level each (none: no levels)")
    parser.add_argument("--requests", type=int, default=32, help="requests per level (bounded)")
    parser.add_argument("--clip", type=Path, default=None, help="a WAV to post (default: shared/audio/example_en.wav)")
    parser.add_argument("--isolation", action="store_true", help="measure a 3 s request's latency alone and behind a 10 minute one")
    parser.add_argument("--trials", type=int, default=3, help="isolation trials (medians); 1 for the full-size model, whose 10 minute request takes minutes")
    parser.add_argument("server_args", nargs="*", help="after --: arguments for glm-asr serve (default --random small --max-new-tokens 64)")
    args = parser.parse_args()
    if args.trials < 1 or args.requests < 1:
        parser.error(f"--trials {args.trials} --requests {args.requests}: expected 1 or more of each")
    server_args = args.server_args or ["--random", "small", "--max-new-tokens", "64"]
    with tempfile.TemporaryDirectory() as folder:
        clip_path = args.clip or (SHARED_CLIP if SHARED_CLIP.is_file() else write_clip(Path(folder), 10.0, "clip.wav"))
        clip = clip_path.read_bytes()
        clip_seconds = scipy.io.wavfile.read(clip_path)[1].shape[0] / scipy.io.wavfile.read(clip_path)[0]
        proc, url = start(server_args)
        try:
            print(f"server: glm-asr serve {' '.join(server_args)} at {url}; clip {clip_path.name} ({clip_seconds:.1f} s)")
            print("| clients | requests | errors | req/s | p50 s | p95 s | p99 s | audio s/s |")
            print("|---|---|---|---|---|---|---|---|")
            for clients in args.clients:
                latencies, errors, wall = asyncio.run(level(url, clip, clients, args.requests))
                print(f"| {clients} | {len(latencies)} | {errors} | {len(latencies) / wall:.2f} | {percentile(latencies, 50):.2f} | "
                      f"{percentile(latencies, 95):.2f} | {percentile(latencies, 99):.2f} | {len(latencies) * clip_seconds / wall:.1f} |", flush=True)
            if args.isolation:
                short = write_clip(Path(folder), 3.0, "short.wav").read_bytes()
                long = write_clip(Path(folder), 600.0, "long.wav").read_bytes()
                alone, during, behind = asyncio.run(isolation(url, short, long, args.trials))
                print(f"3 s request: {alone:.2f} s alone, {during:.2f} s ({during / alone:.1f}x) while a 10 minute request is in "
                      f"flight (that one took {behind:.2f} s; medians of {args.trials})")
            print(f"server peak RSS: {peak_rss_mb(proc.pid):.0f} MB")
        finally:
            proc.terminate()
            proc.wait(120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
