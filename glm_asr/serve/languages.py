"""The `language` a client may name, and what naming it does.

OpenAI's clients send an ISO-639-1 code (many apps always do). GLM-ASR-Nano-2512 has no language token: its
instruction is fixed ("Please transcribe this audio into text") and it writes whatever language it hears.
So a named language changes nothing in decoding; it is checked against what the model covers and echoed in
verbose_json. What the model covers, by its model card (zai-org/GLM-ASR-Nano-2512): Mandarin and English,
"highly optimized for Cantonese and other dialects" (tags: English, Chinese). The card's Chinese README also
claims 17 languages at WER <= 20% but lists them only in an image, so no other language is taken here.
"""

from __future__ import annotations

LANGUAGES = {"zh": "chinese", "en": "english", "yue": "cantonese"}  # code -> the name verbose_json reports, as OpenAI's


class LanguageError(ValueError):
    pass


def check(value: str) -> str:
    """A language code as sent ('en', 'EN', 'zh-CN', 'zh_TW'), reduced to its primary tag; LanguageError when
    the model does not cover it."""
    code = value.strip().lower().replace("_", "-").split("-")[0]
    if code not in LANGUAGES:
        raise LanguageError(f"{value!r} is not a language this model transcribes; expected one of {', '.join(LANGUAGES)} "
                            "(ISO-639-1; 'yue' for Cantonese), or omit it: the model detects the language itself")
    return code
