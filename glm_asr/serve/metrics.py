"""Counters and histograms in Prometheus' text exposition format (version 0.0.4), kept by hand: a handful of
series does not need a client library. Updated from the event loop and the scheduler thread, hence the lock."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

OUTCOMES = ("ok", "bad_request", "too_large", "overloaded", "disconnected", "not_found", "error")


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets, self.counts, self.sum, self.count = buckets, [0] * len(buckets), 0.0, 0

    def observe(self, value: float) -> None:
        self.sum += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1

    def lines(self, name: str) -> list[str]:
        out = [f'{name}_bucket{{le="{b:g}"}} {n}' for b, n in zip(self.buckets, self.counts)]
        return out + [f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.sum:.6f}", f"{name}_count {self.count}"]


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.audio_seconds = 0.0
        self.batch_size = Histogram((1, 2, 4, 8, 16, 32, 64))
        self.real_time_factor = Histogram((0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
        self.request_seconds = Histogram((0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))

    def outcome(self, outcome: str, seconds: float | None = None) -> None:
        assert outcome in OUTCOMES, outcome
        with self.lock:
            self.requests[outcome] += 1
            if seconds is not None:
                self.request_seconds.observe(seconds)

    def transcribed(self, audio_seconds: float, model_seconds: float) -> None:
        with self.lock:
            self.audio_seconds += audio_seconds
            self.real_time_factor.observe(model_seconds / max(audio_seconds, 1e-9))

    def batch(self, size: int) -> None:
        with self.lock:
            self.batch_size.observe(size)

    def render(self, gauges: dict[str, tuple[str, Callable[[], float]]]) -> str:
        """The exposition text; `gauges` maps a name to (help, a function that reads it now)."""
        with self.lock:
            out = ["# HELP glm_asr_requests_total Transcription requests answered, by outcome.",
                   "# TYPE glm_asr_requests_total counter"]
            out += [f'glm_asr_requests_total{{outcome="{o}"}} {self.requests[o]}' for o in OUTCOMES]
            out += ["# HELP glm_asr_audio_seconds_total Seconds of audio transcribed.", "# TYPE glm_asr_audio_seconds_total counter",
                    f"glm_asr_audio_seconds_total {self.audio_seconds:.3f}"]
            for name, helptext, hist in (("glm_asr_batch_size", "Rows per decoding batch.", self.batch_size),
                                         ("glm_asr_real_time_factor", "Model seconds per audio second, per request.", self.real_time_factor),
                                         ("glm_asr_request_seconds", "Wall time of answered transcription requests.", self.request_seconds)):
                out += [f"# HELP {name} {helptext}", f"# TYPE {name} histogram", *hist.lines(name)]
        for name, (helptext, read) in gauges.items():
            out += [f"# HELP {name} {helptext}", f"# TYPE {name} gauge", f"{name} {read():g}"]
        return "\n".join(out) + "\n"
