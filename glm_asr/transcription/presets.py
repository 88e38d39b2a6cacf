"""Random-weight models for trying the pipeline without a download: `small` (seconds on a CPU) and `full`
(the released architecture, 2.1B parameters). The weights are deterministic noise, so the text they produce is
meaningless; shapes, memory, speed and every code path are real. The tokenizer is synthetic too: the 256
byte-level symbols, pronounceable filler words up to id 59245 and the 18 GLM special tokens at their real ids.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from glm_asr.model.config import AudioConfig, GlmAsrConfig, TextConfig
from glm_asr.model.glm_asr import GlmAsrModel
from glm_asr.runtime.prepare import prepare
from glm_asr.text.tokenizer import Tokenizer

SPECIAL_TOKENS = [
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>", "<|assistant|>",
    "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>",
    "<|pad|>", "<|begin_of_audio|>", "<|end_of_audio|>", "<|reserved_0|>",
]
FIRST_SPECIAL_ID = 59246

PRESETS = {
    "small": GlmAsrConfig(
        AudioConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4),
        TextConfig(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=64),
    ),
    "full": GlmAsrConfig(),
}


def random_model(preset: str, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", seed: int = 0) -> GlmAsrModel:
    """A model of a preset's shape with seeded normal weights (std 0.02), unit norms and zero biases."""
    if preset not in PRESETS:
        raise ValueError(f"random preset {preset!r}: expected one of {', '.join(PRESETS)}")
    config = PRESETS[preset]
    with torch.device("meta"):
        model = GlmAsrModel(config)
    model = model.to_empty(device=device).to(dtype).requires_grad_(False)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        if "norm" in name and name.endswith(".weight"):
            torch.nn.init.ones_(p)
        elif name.endswith(".bias"):
            torch.nn.init.zeros_(p)
        else:
            p.copy_(torch.randn(p.shape, generator=generator).mul_(0.02))  # drawn in fp32 on the CPU: same on any device
    if config.tie_word_embeddings:
        model.language_model.lm_head.weight = model.language_model.model.embed_tokens.weight
    return prepare(model.eval())


def _byte_symbols() -> list[str]:
    """GPT-2's byte-to-unicode map: printable bytes as themselves, the rest shifted past 255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def synthetic_tokenizer_json() -> dict:
    """A byte-level BPE tokenizer.json with the real special-token ids and filler words for the other ids."""
    vocab = {s: i for i, s in enumerate(_byte_symbols())}
    syllables = [c + v for c in "bdfghklmnprstvz" for v in "aeiou"]
    words = (("Ġ" + "".join(w)) for n in (1, 2, 3) for w in itertools.product(syllables, repeat=n))
    for word in itertools.islice(words, FIRST_SPECIAL_ID - len(vocab)):
        vocab[word] = len(vocab)
    assert len(vocab) == FIRST_SPECIAL_ID
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": FIRST_SPECIAL_ID + i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, t in enumerate(SPECIAL_TOKENS)
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }


def synthetic_tokenizer() -> Tokenizer:
    return Tokenizer(synthetic_tokenizer_json(), "synthetic tokenizer")


def demo_clip(seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    """A bundled synthetic utterance: voiced syllables with a wandering pitch, 16 kHz float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    pitch = 150 + 50 * np.sin(2 * np.pi * 0.6 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / 16000
    voiced = sum(np.sin(k * phase) / k for k in range(1, 10))
    envelope = np.clip(np.sin(2 * np.pi * 3.5 * t), 0, None) ** 2
    return (0.2 * voiced * envelope + 0.005 * rng.standard_normal(t.size)).astype(np.float32)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def human(n: float) -> str:
    exponent = min(int(math.log10(max(n, 1)) // 3), 3)
    return f"{n / 10 ** (3 * exponent):.2f}{['', 'K', 'M', 'B'][exponent]}"
