"""What a short request waits for behind a long one, in the scheduler itself (no HTTP): the breakdown behind
`tools/serve_load.py --isolation`.

    OMP_NUM_THREADS=1 python tools/newcomer_wait.py                          # small preset, 64 tokens
    OMP_NUM_THREADS=1 python tools/newcomer_wait.py --max-new-tokens 0       # the default token budget

A 3 s request runs alone; then a 10 minute request is submitted and, after `--after` decode steps of it (0:
as soon as its first window starts, as --isolation sends it), the 3 s one. For the 3 s request the tool
prints its latency alone and behind, split into: waiting for the work in progress when it arrived (an
encoder pass or a decode step), waiting for other units' joins after that, its own join (encoder pass and
prefill), and its decode steps (how many, their mean cost and rows) with the long request's rows beside it.
The long request's joins (encoder passes) are timed too; it is cancelled once the short one is answered.
Repeats --trials times; medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from glm_asr import load_model_and_processor  # noqa: E402
from glm_asr.engine.running import RunningBatch  # noqa: E402
from glm_asr.serve.limits import Limits  # noqa: E402
from glm_asr.serve.metrics import Metrics  # noqa: E402
from glm_asr.serve.scheduler import Job, Scheduler  # noqa: E402
from glm_asr.transcription.presets import demo_clip  # noqa: E402


class Trace:
    """Every join and step of the running batch: (kind, start, end, rows stepping, names of units)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float, float, int, list[str]]] = []
        self.on_step = None  # called before each step, with the step's number
        self.steps = 0
        self.joins = 0  # joins begun
        join, step = RunningBatch.join, RunningBatch.step
        trace = self

        def timed_join(batch, units):  # noqa: ANN001, ANN202
            started = time.perf_counter()
            trace.joins += bool(units)
            out = join(batch, units)
            if units:
                names = [u.result.item.audio_filepath for u in units]
                trace.events.append(("join", started, time.perf_counter(), len(units), names))
            return out

        def timed_step(batch, *args, **kwargs):  # noqa: ANN001, ANN202
            trace.steps += 1
            if trace.on_step is not None:
                trace.on_step(trace.steps)
            stepping = batch.stepping(*args, **kwargs) if hasattr(batch, "stepping") else batch.units()
            started = time.perf_counter()
            out = step(batch, *args, **kwargs)
            if stepping:
                names = [u.result.item.audio_filepath for u in stepping]
                trace.events.append(("step", started, time.perf_counter(), len(stepping), names))
            return out
        RunningBatch.join, RunningBatch.step = timed_join, timed_step


def run(model, processor, max_new_tokens: int | None, after: int | None, trace: Trace) -> dict[str, float]:  # noqa: ANN001
    """One trial: the short request alone (after=None) or behind the long one. Returns the short one's breakdown."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    limits = Limits(max_audio_seconds=1800.0)
    scheduler = Scheduler(model, processor, Metrics(), limits, batch_size=8, max_new_tokens=max_new_tokens)
    short = Job("short", demo_clip(3.0), loop, processor)
    resolve, resolved = short.resolve, []
    short.resolve = lambda value: (resolved.append(time.perf_counter()), resolve(value))[1]
    jobs, sent = [short], {}

    def send(job: Job) -> None:
        sent[job.result.item.audio_filepath] = time.perf_counter()
        scheduler.submit(job)
    trace.events.clear()
    trace.steps = trace.joins = 0
    trace.on_step = None
    if after is None:
        scheduler.start()
        send(short)
    else:
        long = Job("long", demo_clip(600.0), loop, processor)
        jobs.append(long)
        trace.on_step = lambda n: send(short) if n == after else None
        scheduler.start()
        send(long)
        if after == 0:  # as serve_load: as soon as the long request's windows are queued (its first join runs)
            while not trace.joins:
                time.sleep(0.001)
            send(short)
    try:
        loop.run_until_complete(short.done)
        answered = time.perf_counter()
        for job in jobs[1:]:  # the long request's own latency is serve_load's to measure: it is cut short here
            scheduler.cancel(job)
    finally:
        scheduler.stop()
        loop.close()
    t0 = sent["short"]
    events = list(trace.events)
    own_join = next(e for e in events if e[0] == "join" and "short" in e[4])
    in_progress = [e for e in events if e[1] < t0 < e[2]]
    first_free = in_progress[0][2] if in_progress else t0
    own_steps = [e for e in events if e[0] == "step" and "short" in e[4] and e[1] >= own_join[2]]
    others = [e for e in events if e[1] >= first_free and e[2] <= own_join[1] + 1e-9]
    after_join = [e for e in events if e[0] == "join" and e[1] >= own_join[2] and e[2] <= answered]
    long_joins = [e[2] - e[1] for e in events if e[0] == "join" and "long" in e[4]]
    return {
        "latency": answered - t0,
        "in progress": first_free - t0,
        "in progress kind": in_progress[0][0] if in_progress else "",
        "before own join": sum(e[2] - e[1] for e in others),
        "own join": own_join[2] - own_join[1],
        "steps": len(own_steps),
        "step ms": 1000 * statistics.mean(e[2] - e[1] for e in own_steps) if own_steps else float("nan"),
        "rows": statistics.mean(e[3] for e in own_steps) if own_steps else float("nan"),
        "joins meanwhile": sum(e[2] - e[1] for e in after_join),
        "answer delivered": answered - resolved[0],
        "long join": statistics.median(long_joins) if long_joins else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-new-tokens", type=int, default=64, help="the server's token budget (0: the default, by audio length)")
    parser.add_argument("--after", type=int, default=0, help="decode steps of the long request before the short one is sent")
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, processor = load_model_and_processor(None, random_preset="small")
    trace = Trace()
    budget = args.max_new_tokens or None
    run(model, processor, budget, None, trace)  # warm-up
    keys = ["latency", "in progress", "before own join", "own join", "steps", "step ms", "rows", "joins meanwhile", "answer delivered"]
    print(f"small preset, max_new_tokens {budget or 'default'}, short sent after {args.after} steps of the long request; "
          f"{args.trials} trials back to back, medians")
    print("| run | " + " | ".join(keys) + " | long join s |")
    print("|---" * (len(keys) + 2) + "|")
    alone, behind = [], []
    for _ in range(args.trials):
        alone.append(run(model, processor, budget, None, trace))
        behind.append(run(model, processor, budget, args.after, trace))
        print(f"  trial: alone {alone[-1]['latency']:.2f} s, behind {behind[-1]['latency']:.2f} s "
              f"(in progress: {behind[-1]['in progress kind'] or 'nothing'})", file=sys.stderr, flush=True)
    for name, rows in (("alone", alone), ("behind", behind)):
        cells = [f"{statistics.median(r[k] for r in rows):.3f}" for k in keys]
        print(f"| {name} | " + " | ".join(cells) + f" | {statistics.median(r['long join'] for r in rows):.3f} |")
    ratio = statistics.median(b["latency"] for b in behind) / statistics.median(a["latency"] for a in alone)
    print(f"behind / alone: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
