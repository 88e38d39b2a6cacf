"""Ending a transcript that loops: `--stop-on-repeat N` (opt-in; never used by the conformance checks).

Random weights loop, and the released model is reported to loop on noise and music: the same word or phrase
again and again until max_new_tokens. A row stops once its ids end with an n-gram (n = 1..8) repeated N times
in a row; the repetitions already emitted stay in the transcript.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

MAX_NGRAM = 8


def ends_in_cycle(ids: Sequence[int], times: int, max_n: int = MAX_NGRAM) -> bool:
    """True when `ids` ends with some n-gram, n <= max_n, repeated `times` times back to back."""
    for n in range(1, max_n + 1):
        if len(ids) < n * times:
            return False
        tail = list(ids[-n:])
        if all(list(ids[len(ids) - (k + 1) * n : len(ids) - k * n]) == tail for k in range(1, times)):
            return True
    return False


class RepeatStop:
    """A `stop` callback for greedy_generate: called with each step's ids (B,), returns the rows that now end
    in a cycle repeated `times` times. `stopped[b]` says whether row b was ended this way; a row that has
    emitted an id of `eos` has ended on its own and is no longer watched."""

    def __init__(self, batch: int, times: int, eos: Sequence[int]) -> None:
        if times < 2:
            raise ValueError(f"--stop-on-repeat {times}: expected a count of 2 or more repetitions")
        self.times, self.eos = times, frozenset(eos)
        self.ended = [False] * batch
        self.history: list[list[int]] = [[] for _ in range(batch)]
        self.stopped = [False] * batch

    def __call__(self, token: torch.Tensor) -> torch.Tensor:
        ended = torch.zeros(len(self.history), dtype=torch.bool)
        for row, t in enumerate(token.tolist()):
            if self.ended[row] or t in self.eos:
                self.ended[row] = True
                continue
            self.history[row].append(t)
            if ends_in_cycle(self.history[row], self.times):
                self.stopped[row] = self.ended[row] = ended[row] = True
        return ended.to(token.device)
