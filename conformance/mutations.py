"""The mutation catalogue: classic porting bugs, each one exact text edit to a file of this checkout.

tools/mutation_check.py applies them one at a time to a copy of the checkout and expects the default suite to
go red; tests/test_mutations.py checks that every edit still applies (its text occurs exactly once), so the
catalogue cannot rot silently when the code it edits moves.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutation:
    path: str  # relative to the checkout
    old: str  # must occur exactly once in `path`
    new: str
    why: str  # the bug, as a porter would meet it


MUTATIONS: dict[str, Mutation] = {
    "full_rotary": Mutation(
        "glm_asr/encoder.py",
        "rope_cos_sin(positions, self.config.rotary_dim,",
        "rope_cos_sin(positions, self.config.head_dim,",
        "encoder RoPE on all 64 head dims instead of the first 32",
    ),
    "k_bias": Mutation(
        "glm_asr/encoder.py",
        "self.k_proj = Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)",
        "self.k_proj = Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=True)",
        "a bias on the encoder's k_proj (the checkpoint has none)",
    ),
    "tanh_gelu": Mutation(
        "glm_asr/encoder.py",
        "return self.fc2(F.gelu(self.fc1(x)))",
        'return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))',
        "tanh-approximated GELU in the encoder MLP instead of the exact (erf) one",
    ),
    "layer_norm_eps_1e-6": Mutation(
        "glm_asr/config.py",
        "layer_norm_eps: float = 1e-5",
        "layer_norm_eps: float = 1e-6",
        "encoder LayerNorm eps 1e-6 instead of 1e-5",
    ),
    "htk_mel": Mutation(
        "glm_asr/audio.py",
        "    mel_points = np.linspace(*_hz_to_mel(edges), n_mels + 2)\n    filter_hz = _mel_to_hz(mel_points)",
        "    mel_points = np.linspace(*(2595.0 * np.log10(1.0 + edges / 700.0)), n_mels + 2)\n"
        "    filter_hz = 700.0 * (10.0 ** (mel_points / 2595.0) - 1.0)",
        "HTK mel scale instead of Slaney",
    ),
    "rms_norm_scale_before_cast": Mutation(
        "glm_asr/decoder.py",
        "return self.weight * x32.to(x.dtype)",
        "return (self.weight * x32).to(x.dtype)",
        "RMSNorm multiplies by its weight in fp32 before casting back (visible in bf16)",
    ),
}
