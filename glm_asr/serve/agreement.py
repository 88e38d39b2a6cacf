"""LocalAgreement-2 (whisper_streaming, Machacek et al. 2023): partial text that never takes back a word.

The utterance heard so far is decoded again and again as it grows; a word is committed, and shown, once two
consecutive passes agree on it and on everything before it. What is committed stays: a later pass that
disagrees with it changes only the words after it. The final text of an utterance (its one pass once the
speaker pauses) replaces the partials, so the partials never decide what the transcript is.

Words: runs of non-space characters with their leading space; each CJK character (no spaces between words
in Chinese or Japanese) is a word on its own, so Chinese partials grow character by character.
"""

from __future__ import annotations

import re

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
_WORD = re.compile(rf"\s*[{_CJK}]|\s*[^\s{_CJK}]+")


def words(text: str) -> list[str]:
    """`text` as words that join back to it (its leading and trailing space dropped)."""
    return _WORD.findall(text.strip())


def common_prefix(a: list[str], b: list[str]) -> int:
    """How many words `a` and `b` begin with alike (compared without their spaces)."""
    n = 0
    for x, y in zip(a, b):
        if x.strip() != y.strip():
            break
        n += 1
    return n


class LocalAgreement:
    """Committed words of one utterance: `insert` each new hypothesis, get back the words newly committed."""

    def __init__(self) -> None:
        self.committed: list[str] = []
        self._previous: list[str] | None = None

    def insert(self, hypothesis: str) -> str:
        """The text committed by this pass (empty when the last two passes agree on nothing new)."""
        current = words(hypothesis)
        previous, self._previous = self._previous, current
        if previous is None:
            return ""
        agreed = common_prefix(previous, current)
        done = len(self.committed)
        if agreed <= done or common_prefix(self.committed, current) < done:
            return ""  # nothing new, or this pass disagrees with what is already shown: wait for the next
        new = current[done:agreed]
        self.committed.extend(new)
        return "".join(new).lstrip() if done == 0 else "".join(new)

    @property
    def text(self) -> str:
        return "".join(self.committed).lstrip()
