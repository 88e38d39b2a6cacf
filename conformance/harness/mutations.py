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
        "glm_asr/model/encoder.py",
        "rope_cos_sin(positions, self.config.rotary_dim,",
        "rope_cos_sin(positions, self.config.head_dim,",
        "encoder RoPE on all 64 head dims instead of the first 32",
    ),
    "rope_theta_10000": Mutation(
        "glm_asr/model/encoder.py",
        "rope_cos_sin(positions, self.config.rotary_dim, self.config.rope_theta, x.dtype)",
        "rope_cos_sin(positions, self.config.rotary_dim, 10000.0, x.dtype)",
        "encoder RoPE theta hard-coded to 10000 (the released value) instead of read from the config",
    ),
    "no_encoder_rope": Mutation(
        "glm_asr/model/encoder.py",
        "q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)",
        "pass  # no RoPE",
        "no RoPE in the encoder (as a Whisper encoder, which llama.cpp's GLM-ASR graph reuses)",
    ),
    "k_bias": Mutation(
        "glm_asr/model/encoder.py",
        "self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)",
        "self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=True)",
        "a bias on the encoder's k_proj (the checkpoint has none)",
    ),
    "tanh_gelu": Mutation(
        "glm_asr/model/encoder.py",
        "return self.fc2(F.gelu(self.fc1(x)))",
        'return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))',
        "tanh-approximated GELU in the encoder MLP instead of the exact (erf) one",
    ),
    "layer_norm_eps_1e-6": Mutation(
        "glm_asr/model/config.py",
        "layer_norm_eps: float = 1e-5",
        "layer_norm_eps: float = 1e-6",
        "encoder LayerNorm eps 1e-6 instead of 1e-5",
    ),
    "htk_mel": Mutation(
        "glm_asr/model/front_end.py",
        "    mel_points = np.linspace(*_hz_to_mel(edges), n_mels + 2)\n    filter_hz = _mel_to_hz(mel_points)",
        "    mel_points = np.linspace(*(2595.0 * np.log10(1.0 + edges / 700.0)), n_mels + 2)\n"
        "    filter_hz = 700.0 * (10.0 ** (mel_points / 2595.0) - 1.0)",
        "HTK mel scale instead of Slaney",
    ),
    "rms_norm_scale_before_cast": Mutation(
        "glm_asr/model/decoder.py",
        "return self.weight * x32.to(x.dtype)",
        "return (self.weight * x32).to(x.dtype)",
        "RMSNorm multiplies by its weight in fp32 before casting back (visible in bf16)",
    ),
    # The bugs below are also in conformance/bugs.py under the same names: the kit must diagnose each by name.
    "interleaved_rope": Mutation(
        "glm_asr/model/encoder.py",
        "from glm_asr.model.rope import apply_rope, rope_cos_sin",
        "from conformance.harness.rope_variants import apply_rope_interleaved as apply_rope\nfrom glm_asr.model.rope import rope_cos_sin",
        "encoder RoPE pairing dims (2i, 2i+1) instead of rotate-half's (i, i + 16)",
    ),
    "decoder_interleaved_rope": Mutation(
        "glm_asr/model/decoder.py",
        "from glm_asr.model.rope import apply_rope, rope_cos_sin",
        "from conformance.harness.rope_variants import apply_rope_interleaved as apply_rope\nfrom glm_asr.model.rope import rope_cos_sin",
        "decoder RoPE pairing dims (2i, 2i+1) instead of rotate-half's (i, i + 64)",
    ),
    "merge_order": Mutation(
        "glm_asr/model/projector.py",
        "return encoder_states.reshape(W, frames // MERGE_FACTOR, MERGE_FACTOR * D)",
        "return encoder_states.reshape(W, frames // MERGE_FACTOR, MERGE_FACTOR, D).transpose(2, 3).reshape(W, frames // MERGE_FACTOR, MERGE_FACTOR * D)",
        "the four merged encoder frames interleaved channel by channel instead of concatenated",
    ),
    "gqa_tiled": Mutation(
        "glm_asr/model/decoder.py",
        "out = self.attention(q, k, v, mask)",
        "out = self.attention(q, k.repeat(1, self.num_heads // self.num_kv_heads, 1, 1), v.repeat(1, self.num_heads // self.num_kv_heads, 1, 1), mask)",
        "GQA: query head h reads kv head h mod Hkv (tiled) instead of h // (H / Hkv)",
    ),
    "no_padding_mask": Mutation(
        "glm_asr/model/decoder.py",
        "allowed = (key_pos <= query_pos) & key_valid[:, None, :].bool()",
        "allowed = (key_pos <= query_pos) | ~key_valid[:, None, :].bool()",
        "left-padding tokens attended to: their keys are not masked",
    ),
    "rms_eps_outside_sqrt": Mutation(
        "glm_asr/model/decoder.py",
        "x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)",
        "x32 = x32 / (x32.pow(2).mean(-1, keepdim=True).sqrt() + self.eps)",
        "RMSNorm's eps added after the square root instead of under it",
    ),
    "symmetric_hann": Mutation(
        "glm_asr/model/front_end.py",
        "hann = torch.hann_window(N_FFT, device=windows.device)",
        "hann = torch.hann_window(N_FFT, periodic=False, device=windows.device)",
        "a symmetric Hann window for the STFT instead of the periodic one",
    ),
    "mel_unnormalised": Mutation(
        "glm_asr/model/front_end.py",
        "return triangles * (2.0 / (filter_hz[2:] - filter_hz[:-2]))[None, :]",
        "return triangles",
        "mel filters without the Slaney area normalisation",
    ),
    "extra_valid_frame": Mutation(
        "glm_asr/model/front_end.py",
        "return math.ceil(n_samples / HOP_LENGTH)",
        "return n_samples // HOP_LENGTH + 1",
        "n // 160 + 1 valid frames instead of ceil(n / 160): one too many for clips of a multiple of 160 samples",
    ),
    "prompt_one_user": Mutation(
        "glm_asr/transcription/processor.py",
        "<|end_of_audio|><|user|>\\n{instruction}",
        "<|end_of_audio|>\\n{instruction}",
        "the prompt without its second <|user|>",
    ),
    "prompt_no_final_newline": Mutation(
        "glm_asr/transcription/processor.py",
        "{instruction}<|assistant|>\\n\"",
        "{instruction}<|assistant|>\"",
        "the prompt without the newline after <|assistant|>",
    ),
    "conv_length_floor": Mutation(
        "glm_asr/model/projector.py",
        "after_conv2 = (valid_frames - 1) // 2 + 1",
        "after_conv2 = valid_frames // 2",
        "the frames after conv2 floored (L // 2) instead of ceil(L / 2): one audio token short where L = 8k - 1",
    ),
    "tokenizer_no_merges": Mutation(
        "glm_asr/text/tokenizer.py",
        "self._merges[vocab[pair[0]] * self._m + vocab[pair[1]]] = rank << 32 | vocab[pair[0] + pair[1]]",
        "pass  # merges dropped",
        "a tokenizer that ignores its BPE merges",
    ),
    # Classic one-line bugs added with issue 23; conformance/kit/bugs.py holds each under the same name.
    "encoder_silu": Mutation(
        "glm_asr/model/encoder.py",
        "return self.fc2(F.gelu(self.fc1(x)))",
        "return self.fc2(F.silu(self.fc1(x)))",
        "SiLU instead of GELU in the encoder MLP (the decoder's activation, copied)",
    ),
    "decoder_gelu": Mutation(
        "glm_asr/model/decoder.py",
        "return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))",
        "return self.down_proj(F.gelu(self.gate_proj(x)) * self.up_proj(x))",
        "GELU instead of SiLU in the decoder's gated MLP (the encoder's activation, copied)",
    ),
    "gate_up_swapped": Mutation(
        "glm_asr/model/decoder.py",
        "return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))",
        "return self.down_proj(F.silu(self.up_proj(x)) * self.gate_proj(x))",
        "gate_proj and up_proj swapped: SiLU(up) * gate",
    ),
    "rms_norm_eps_1e-6": Mutation(
        "glm_asr/model/decoder.py",
        "        self.eps = eps\n",
        "        self.eps = 1e-6\n",
        "RMSNorm eps hard-coded to 1e-6 instead of the config's rms_norm_eps",
    ),
    "encoder_attention_scale": Mutation(
        "glm_asr/model/encoder.py",
        "out = self.attention(q, k, v)",
        "out = self.attention(q / self.head_dim ** 0.5, k, v)",
        "encoder softmax scale 1/head_dim instead of 1/sqrt(head_dim)",
    ),
    "decoder_attention_scale": Mutation(
        "glm_asr/model/decoder.py",
        "out = self.attention(q, k, v, mask)",
        "out = self.attention(q / self.head_dim ** 0.5, k, v, mask)",
        "decoder softmax scale 1/head_dim instead of 1/sqrt(head_dim)",
    ),
}
