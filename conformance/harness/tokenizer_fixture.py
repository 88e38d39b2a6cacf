"""Builds GLM-style byte-level BPE tokenizer.json files for tests, trained with the `tokenizers` library.

Test-time only (imports `tokenizers`). The files mimic the real GLM-ASR-Nano-2512 tokenizer: a Split
pre-tokenizer with the GLM-4 regex followed by ByteLevel, a BPE model, ByteLevel decoding, and the 18
GLM special tokens right after the regular vocabulary.
"""

from __future__ import annotations

import json
import os
import random

from glm_asr.transcription.presets import SPECIAL_TOKENS

GLM_SPECIAL_TOKENS: list[str] = SPECIAL_TOKENS  # in id order; the real model puts them at 59246..59263
GLM_SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                     r"|\s*[\r\n]+|\s+(?!\S)|\s+")

_CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's a sunny day, isn't it? We'll see what they've done.",
    "Please transcribe this audio into text. The speaker talks about weather, travel and the economy.",
    "Speech recognition converts spoken language into written text; modern systems use neural networks.",
    "In 2024, the model processed 1,234,567 hours of audio at 16000 Hz with a 25 ms window and 10 ms hop.",
    "今天天气很好，我们去公园散步吧。语音识别技术已经广泛应用于智能助手和会议记录。",
    "请把这段音频转写成文字。这个模型支持普通话、粤语和英语，在嘈杂环境下也能准确识别。",
    "中华人民共和国成立于一九四九年。北京是中国的首都，上海是最大的城市。",
    "我喜欢学习新的东西，特别是人工智能和机器学习。你今天吃饭了吗？",
    "日本語のテキストも少し含めます。東京は日本の首都です。ありがとうございます。",
    "한국어 문장도 포함합니다. 서울은 대한민국의 수도입니다. 감사합니다.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю. Привет, мир!",
    "مرحبا بالعالم، هذا نص عربي قصير للاختبار. شكرا جزيلا.",
    "Ελληνικά: Καλημέρα κόσμε. Français: Où est la bibliothèque? Déjà vu, naïve café.",
    "def encode(self, text: str) -> list[int]:\n    return [self.vocab[t] for t in text.split()]\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }  // dot product\n",
    "if x != y and (a <= b or c >= d):\n\tprint(f\"{x!r} -> {y:.3f}\")\n",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 256 1024 65536 3.14159 2.71828 -17 +3 1e-5 0x1F",
    "Punctuation!!! ... ??? --- *** ### @@@ $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}} <<< >>> ||| ~~~",
    "Emoji: 😀 😃 😄 😁 👍 👍🏽 👨‍👩‍👧‍👦 🇨🇳 🇺🇸 ❤️ 🎉 🚀 🤖 🔥 ✨",
    "Whitespace   runs\t\ttabs\r\nwindows line\n\nblank lines    trailing   \n",
    "混合 mixed text 中文 English 123 数字 and 符号！@#￥%……&*（）",
    "<tag attr=\"value\">content</tag> https://example.com/path?query=1&b=2 user@example.com",
]


def _corpus() -> list[str]:
    # Repetition gives pairs enough frequency to be learned in a stable order.
    return [line for line in _CORPUS for _ in range(3)]


def _byte_level(text: str) -> list[str]:
    from tokenizers import pre_tokenizers

    return [p for p, _ in pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False).pre_tokenize_str(text)]


def _fill(vocab: dict[str, int], merges: list[list[str]], n: int) -> None:
    """Append synthetic merges until the vocab has n tokens: whole characters of common scripts, then
    character bigrams, so that big vocabularies still behave like a real tokenizer on such text."""
    chars = [chr(c) for r in ((0x4E00, 0xA000), (0x3040, 0x3100), (0xAC00, 0xD7A4), (0x0400, 0x0500),
                              (0x0370, 0x0400), (0x0600, 0x0700), (0x00C0, 0x0250)) for c in range(*r)]

    def add(a: str, b: str) -> bool:
        if len(vocab) >= n or a + b in vocab or a not in vocab or b not in vocab:
            return False
        vocab[a + b] = len(vocab)
        merges.append([a, b])
        return True

    for ch in chars:
        sym = _byte_level(ch)[0]
        for k in range(2, len(sym) + 1):  # build the character left to right: b0b1, b0b1b2, ...
            add(sym[:k - 1], sym[k - 1])
    rng = random.Random(1234)
    pieces = [_byte_level(c)[0] for c in chars[:20992]]  # CJK ideographs
    while len(vocab) < n:
        add(rng.choice(pieces), rng.choice(pieces))


def build_bpe_tokenizer_json(path, n_base_tokens: int, *, merges_as_pairs: bool = False,
                             corpus: list[str] | None = None) -> dict[str, int]:
    """Writes a byte-level BPE tokenizer.json with exactly n_base_tokens regular tokens (256 bytes + merges
    learned by BpeTrainer on a fixed multilingual corpus, then synthetic merges if training stops short)
    followed by the 18 GLM special tokens at ids n_base_tokens.. (added, special). Deterministic: the same
    arguments give a byte-identical file. Returns the special-token name -> id map."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    if n_base_tokens < 256:
        raise ValueError(f"n_base_tokens must be >= 256 (the byte alphabet), got {n_base_tokens}")
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(GLM_SPLIT_PATTERN), behavior="isolated"),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre
    trainer = trainers.BpeTrainer(vocab_size=n_base_tokens, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(_corpus() if corpus is None else corpus, trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = dict(sorted(model["vocab"].items(), key=lambda kv: kv[1]))
    merges = [m.split(" ") if isinstance(m, str) else list(m) for m in model["merges"]]
    if sorted(vocab.values()) != list(range(len(vocab))) or len(vocab) > n_base_tokens:
        raise RuntimeError(f"unexpected trained vocab: {len(vocab)} tokens for n_base_tokens={n_base_tokens}")
    _fill(vocab, merges, n_base_tokens)
    if len(vocab) != n_base_tokens:
        raise RuntimeError(f"could not fill the vocab to {n_base_tokens} tokens (got {len(vocab)})")
    specials = {t: n_base_tokens + k for k, t in enumerate(GLM_SPECIAL_TOKENS)}
    spec = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for t, i in specials.items()],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": GLM_SPLIT_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges if merges_as_pairs else [f"{a} {b}" for a, b in merges]},
    }
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(spec, f, ensure_ascii=False, separators=(",", ":"))
    os.replace(tmp, path)  # atomic: a reader never sees half a file
    return specials
