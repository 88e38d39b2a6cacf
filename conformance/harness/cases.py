"""The golden cases: two tiny configs x nine audio inputs, all made by deterministic code of our own.

The configs differ in every dimension code could hard-code (widths, heads, kv-head ratio 2 and 4, head_dim
not equal to hidden/heads, layer counts, mel bins, vocab, RoPE theta, eps, tied and untied LM head), and none
uses a released value a port could hard-code by mistake and still pass (RoPE theta 10000, rms_norm_eps 1e-6).

Each is scaled so that every variant of the catalogue (conformance/kit/bugs.py) a case can see at all moves
its first stage past the fp32 tolerance on BOTH models, and so that greedy ids follow the audio:
- the encoder's LayerNorm eps is not in config.json (1e-5 in the reference), so both encoders run small: their
  residual writers at 1e-2 (tiny_a) and 3e-2 (tiny_b) keep the stream's variance near eps, where eps 1e-6
  moves encoder layer 0 by 18% (max_rel) or more (at unit scale, tiny_b's silence case moved by 2e-5 only);
- the decoder's eps is the config's: tiny_a feeds its first RMSNorm embeddings of 1e-2 (variance 1e-4 against
  eps 1e-5), tiny_b runs at unit scale with rms_norm_eps 1e-2; a hard-coded 1e-6 or an eps outside the square
  root then moves decoder layer 0 by 0.6% (max_rel) or more;
- the decoder's layers write at unit scale, far above tiny_a's embeddings: its LM head is tied, and with
  embeddings at the layers' scale the last token's own row won every step (one token repeated, every clip).
tools/kit_mutation_check.py shows each bug failing on both models; tests/test_cases.py checks the greedy ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from glm_asr.model.config import AudioConfig, GlmAsrConfig, TextConfig
from glm_asr.transcription.presets import FIRST_SPECIAL_ID, SPECIAL_TOKENS

SR = 16000
# The reference's input text, written out from SPEC on purpose rather than taken from glm_asr/transcription/processor.py:
# the processor tests compare our ids with the ids the reference makes from this text.
PROMPT = "<|user|>\n<|begin_of_audio|><|pad|><|end_of_audio|><|user|>\nPlease transcribe this audio into text<|assistant|>\n"


@dataclass(frozen=True)
class GoldenModel:
    name: str
    config: GlmAsrConfig
    n_base_tokens: int  # regular tokenizer tokens; the special tokens follow
    residual_scale: float  # gain of the layers that write into a residual stream
    seed: int
    checkpoint_dtype: str = "float32"  # as model.safetensors stores the weights
    embed_scale: float | None = None  # token embeddings' scale, when not residual_scale
    decoder_scale: float | None = None  # gain of the decoder's residual writers, when not residual_scale


def _special(base: int, name: str) -> int:
    return base + SPECIAL_TOKENS.index(name)


def _eos(base: int) -> tuple[int, ...]:
    return tuple(_special(base, n) for n in ("<|endoftext|>", "<|user|>", "<|observation|>"))


MODELS = {
    m.name: m
    for m in [
        GoldenModel(
            "tiny_a",
            GlmAsrConfig(
                AudioConfig(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=4, num_mel_bins=128, rope_theta=2000.0, partial_rotary_factor=0.5),
                TextConfig(vocab_size=320, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, head_dim=12, rms_norm_eps=1e-5, rope_theta=500000.0, eos_token_id=_eos(300)),
                audio_token_id=_special(300, "<|pad|>"),
                tie_word_embeddings=True,
            ),
            n_base_tokens=300, residual_scale=1e-2, seed=1, embed_scale=1e-2, decoder_scale=1.0,
        ),
        GoldenModel(
            "tiny_b",
            GlmAsrConfig(
                AudioConfig(hidden_size=24, intermediate_size=96, num_hidden_layers=3, num_attention_heads=2,
                            num_key_value_heads=2, num_mel_bins=80, rope_theta=5000.0, partial_rotary_factor=0.5),
                TextConfig(vocab_size=384, hidden_size=40, intermediate_size=112, num_hidden_layers=3, num_attention_heads=8,
                           num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-2, rope_theta=50000.0, eos_token_id=_eos(360)),
                audio_token_id=_special(360, "<|pad|>"),
                tie_word_embeddings=False,
            ),
            n_base_tokens=360, residual_scale=3e-2, seed=2, embed_scale=1.0, decoder_scale=1.0,
        ),
    ]
}


def _tone(seconds: float, hz: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return amp * np.sin(2 * np.pi * hz * t)


def _chirp(seconds: float, f0: float = 100.0, f1: float = 7000.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return 0.4 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))


def _noise(seconds: float, seed: int, std: float = 0.1) -> np.ndarray:
    return std * np.random.default_rng(seed).standard_normal(int(seconds * SR))


def _speech_like(seconds: float, seed: int) -> np.ndarray:
    """Voiced syllables: a wandering 100-220 Hz pitch with decaying harmonics under a 4 Hz envelope, plus breath."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    pitch = 160 + 60 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    return 0.2 * voiced * envelope + 0.01 * rng.standard_normal(n)


def clips(case: str) -> list[np.ndarray]:
    """The float32 16 kHz clips of a case: one, or two for the batch case."""
    made = {
        "silence": lambda: [np.zeros(SR)],
        "tone": lambda: [_tone(2.0, 440.0)],
        "chirp": lambda: [_chirp(2.5)],
        "noise": lambda: [_noise(1.5, seed=11)],
        "speech_like": lambda: [_speech_like(3.0, seed=12)],
        "odd_length": lambda: [_tone(12345 / SR, 300.0, 0.3) + _noise(12345 / SR, seed=13, std=0.02)],  # 12,345 samples
        "over_30s": lambda: [_speech_like(31.0, seed=14)],  # two windows, the second 1 s long
        "batch": lambda: [_tone(1.2, 250.0), _speech_like(2.7, seed=15)],  # left padding, two lengths
        # 12,500 samples = 79 valid frames = 8k - 1: conv2's output length ceil(79 / 2) = 40 keeps 10 audio tokens,
        # where a port that floors it (79 // 2 = 39) keeps 9 and builds a prompt one <|pad|> short.
        "frames_8k_minus_1": lambda: [_speech_like(12500 / SR, seed=16)],
    }[case]()
    return [c.astype(np.float32) for c in made]


CASES = ["silence", "tone", "chirp", "noise", "speech_like", "odd_length", "over_30s", "batch", "frames_8k_minus_1"]
# bf16 runs of the reference, for the numerics fp32 cannot see (e.g. RMSNorm's cast-back-then-scale order).
BF16_CASES = ["speech_like"]


# The released shape (GlmAsrConfig's defaults: 2.1B parameters), for ports that hard-code it: golden/full/ keeps
# slices of its stages (conformance/harness/stages.py sample_rows). Stored in bf16 as the release is, run in fp32: both
# the reference and a port widen the same bf16 values exactly. Embeddings at 0.02: with the LM head tied to
# them, unit-scale embeddings make the last token's own row win every step (seen: "\n" 24 times for every
# audio, so greedy ids would pass a port whose encoder is broken); at 0.02 the ids vary and follow the audio.
FULL = GoldenModel("full", GlmAsrConfig(), n_base_tokens=FIRST_SPECIAL_ID, residual_scale=1.0, seed=2512,
                   checkpoint_dtype="bfloat16", embed_scale=0.02)
FULL_CASES = ["speech_like", "batch"]
FULL_BF16_CASES = ["speech_like"]  # most ports run in reduced precision; no greedy ids (as the tiny bf16 cases)
