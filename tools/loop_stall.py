"""Does `glm-asr serve`'s event loop stall under load? `/health` latency while live streams send large frames and
while many clients upload, to 127.0.0.1 only, for a bounded time.

    python tools/loop_stall.py                                  # small preset: idle, 4 streams of 1 MiB frames, 16 uploaders
    python tools/loop_stall.py --seconds 20 --streams 4 --uploaders 16 -- --random small --max-new-tokens 8
    python tools/loop_stall.py --url http://127.0.0.1:8000      # a server already running (loopback only)

The tool starts the server itself (`glm-asr serve --port 0` plus the arguments after `--`) unless --url names
one. A probe thread, apart from the load, asks GET /health every --every seconds; each scenario runs
--seconds: idle; --streams WebSocket streams each sending 1 MiB binary frames (32 s of 16 kHz PCM16, the
synthetic clip) as fast as the server takes them; --uploaders clients each posting a --upload-seconds WAV
as soon as the last is answered. Per scenario: the probes' count, p50, p99 and max, and the load it carried.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import scipy.io.wavfile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from glm_asr.transcription.presets import demo_clip  # noqa: E402
from serve_load import start  # noqa: E402  (tools/ is this script's folder: the same server start-up)

FRAME_BYTES = 1 << 20


def probe(url: str, every: float, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            started = time.perf_counter()
            client.get(f"{url}/health")
            out.append(time.perf_counter() - started)
            stop.wait(max(0.0, every - (time.perf_counter() - started)))


async def streams(url: str, n: int, seconds: float) -> str:
    from websockets.asyncio.client import connect

    frame = (demo_clip(FRAME_BYTES / 2 / 16000) * 32767).astype("<i2").tobytes()[:FRAME_BYTES]
    sent = [0] * n

    async def one(i: int) -> None:
        async with connect(url.replace("http://", "ws://") + "/v1/realtime", max_size=None) as ws:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                await ws.send(frame)
                sent[i] += 1
    await asyncio.gather(*(one(i) for i in range(n)))
    return f"{sum(sent)} frames of 1 MiB sent by {n} streams"


async def uploads(url: str, n: int, seconds: float, clip: bytes) -> str:
    codes: list[int] = []

    async def one(client: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            r = await client.post(f"{url}/v1/audio/transcriptions", files={"file": ("clip.wav", clip, "audio/wav")},
                                  data={"model": "glm-asr-nano-2512"})
            codes.append(r.status_code)
    async with httpx.AsyncClient(timeout=600) as client:
        await asyncio.gather(*(one(client) for _ in range(n)))
    return f"{len(codes)} uploads of {len(clip) / 1e6:.1f} MB by {n} clients ({sum(c == 200 for c in codes)} answered 200)"


def scenario(name: str, url: str, every: float, load) -> None:  # noqa: ANN001
    times: list[float] = []
    stop = threading.Event()
    thread = threading.Thread(target=probe, args=(url, every, stop, times))
    thread.start()
    try:
        what = asyncio.run(load())
    finally:
        stop.set()
        thread.join()
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    print(f"{name:<10} /health: {len(times):4d} probes, p50 {statistics.median(times) * 1000:7.1f} ms, p99 {p99 * 1000:7.1f} ms, "
          f"max {ordered[-1] * 1000:7.1f} ms; {what}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None, help="a running server on 127.0.0.1 (default: start one)")
    ap.add_argument("--seconds", type=float, default=15.0, help="each scenario's length")
    ap.add_argument("--every", type=float, default=0.05, help="seconds between two probes")
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--uploaders", type=int, default=16)
    ap.add_argument("--upload-seconds", type=float, default=60.0, help="the uploaded clip's length")
    ap.add_argument("server_args", nargs="*", help="after --: glm-asr serve's options")
    args = ap.parse_args()
    if not 0 < args.seconds <= 120 or args.streams < 0 or args.uploaders < 0 or not args.every > 0:
        raise SystemExit("--seconds in (0, 120], --streams and --uploaders >= 0, --every > 0")
    if args.url and urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"--url {args.url}: this tool sends load to loopback only")
    proc, url = (None, args.url) if args.url else start(args.server_args or ["--random", "small", "--max-new-tokens", "8"])
    buffer = io.BytesIO()
    scipy.io.wavfile.write(buffer, 16000, (demo_clip(args.upload_seconds) * 32767).astype(np.int16))
    try:
        async def idle() -> str:
            await asyncio.sleep(args.seconds)
            return "no load"
        scenario("idle", url, args.every, idle)
        if args.streams:
            scenario("streams", url, args.every, lambda: streams(url, args.streams, args.seconds))
        if args.uploaders:
            scenario("uploads", url, args.every, lambda: uploads(url, args.uploaders, args.seconds, buffer.getvalue()))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
