"""Greedy decoding against the reference's generate(do_sample=False) ids stored in the goldens."""

import copy

import pytest
import torch

from conformance.harness import golden
from conformance.harness import runner
from conformance.harness.cases import clips
from conformance.harness.ours import features
from glm_asr.runtime import cpu
from glm_asr.runtime import dispatch as kernels
from glm_asr.model.decoder import KVCache
from glm_asr.transcription.generate import greedy_generate, prompt_positions

MANIFEST = golden.load_manifest()
FP32_CASES = sorted(c for c in MANIFEST["cases"] if c.endswith("/fp32"))
MAX_NEW = MANIFEST["generate"]["max_new_tokens"]


def setup(case_id: str):  # noqa: ANN201
    entry = MANIFEST["cases"][case_id]
    model = runner.tiny_model(entry["model"], "fp32", "cpu", MANIFEST["models"][entry["model"]]["weights_sha256"])
    stored = golden.load_case(golden.ROOT, entry)
    mel, mask = features(clips(entry["audio"]), model.config.audio_config.num_mel_bins)
    return model, stored, (stored["inputs.input_ids"], stored["inputs.attention_mask"], mel, mask)


@pytest.mark.parametrize("case_id", FP32_CASES)
def test_greedy_ids_equal_the_reference(case_id):
    model, stored, inputs = setup(case_id)
    assert torch.equal(greedy_generate(model, *inputs, max_new_tokens=MAX_NEW), stored["generated_ids"])


@pytest.mark.parametrize("kernel", cpu.MATVEC_KERNELS)
def test_every_decode_kernel_gives_the_reference_ids(kernel):
    # The test above runs the kernel this machine chose; each of the others is forced here.
    for case_id in ("tiny_a/speech_like/fp32", "tiny_b/chirp/fp32"):
        model, stored, inputs = setup(case_id)
        with cpu.forced(matvec=kernel):
            assert torch.equal(greedy_generate(model, *inputs, max_new_tokens=MAX_NEW), stored["generated_ids"]), case_id


@pytest.mark.parametrize("name", ["tiny_a", "tiny_b"])
def test_bf16_decoding_on_packed_weights_chooses_the_same_ids(name, monkeypatch):
    model = copy.deepcopy(runner.tiny_model(name, "bf16", "cpu", MANIFEST["models"][name]["weights_sha256"]))
    _, stored, (ids, attn, mel, mask) = setup(f"{name}/speech_like/fp32")
    packed = []
    try:  # oneDNN's own packing where this CPU has it; elsewhere a stand-in, so that the routing is tested anyway
        kernels.pack_bf16_weight(torch.zeros(8, 8, dtype=torch.bfloat16))
        real = kernels.pack_bf16_weight
        monkeypatch.setattr(kernels, "pack_bf16_weight", lambda w: packed.append(w) or real(w))
    except RuntimeError:
        monkeypatch.setattr(kernels, "pack_bf16_weight", lambda w: packed.append(w) or w.clone())
        monkeypatch.setattr(kernels, "onednn_linear", torch.nn.functional.linear)
    runs = []
    for bf16_packed in (False, True):
        with cpu.forced(native_bf16=True, bf16_packed=bf16_packed):
            runs.append(greedy_generate(model, ids, attn, mel.bfloat16(), mask, max_new_tokens=MAX_NEW))
        assert bool(packed) is bf16_packed  # decode steps of a bf16 model take the packed branch when it is chosen
    assert torch.equal(*runs)


@pytest.mark.parametrize("case_id", [c for c in FP32_CASES if "/batch/" in c])
def test_a_finished_row_is_padded_while_the_other_goes_on(case_id):
    model, stored, inputs = setup(case_id)
    eos = tuple(stored["early_stop.eos_token_id"].tolist())
    assert torch.equal(greedy_generate(model, *inputs, max_new_tokens=MAX_NEW, eos_token_id=eos), stored["early_stop.generated_ids"])


@pytest.mark.parametrize("case_id", ["tiny_b/batch/fp32", "tiny_b/over_30s/fp32"])
def test_cached_decoding_equals_recomputation(case_id):
    model, _, inputs = setup(case_id)
    cached = greedy_generate(model, *inputs, max_new_tokens=12)
    assert torch.equal(cached, greedy_generate(model, *inputs, max_new_tokens=12, use_cache=False))


def test_cache_step_logits_equal_full_recomputation():
    """Not just the argmax: each cached step's logits equal the full forward's at that position."""
    model, _, (ids, attn, mel, mask) = setup("tiny_b/batch/fp32")
    new = greedy_generate(model, ids, attn, mel, mask, max_new_tokens=6)
    full_ids = torch.cat([ids, new], dim=1)
    full_attn = torch.cat([attn, torch.ones_like(new)], dim=1)
    with torch.inference_mode():
        full = model(full_ids, mel, mask, full_attn, prompt_positions(full_attn))
        audio = model.embed_audio(mel, mask)
        cache = KVCache.empty(model.config.text_config, 2, full_ids.shape[1], torch.float32, "cpu")
        T = ids.shape[1]
        positions = prompt_positions(full_attn)
        step_logits = [model.decode(model.embed_prompt(ids, audio), positions[:, :T], full_attn[:, :T].bool(), cache, 0)[:, -1]]
        for s in range(new.shape[1] - 1):
            embeds = model.language_model.model.embed_tokens(new[:, s : s + 1])
            step_logits.append(model.decode(embeds, positions[:, T + s : T + s + 1], full_attn[:, : T + s + 1].bool(), cache, T + s)[:, -1])
    expected = full[:, T - 1 : -1]
    # The cached steps and the full forward add the same terms in another order (SDPA's blocked kernel against
    # single-query attention and plain matmuls, each vectorised to the CPU's width), so they differ by rounding:
    # a few fp32 ulps at the logits' magnitude (seen 4 ulps on AVX-512 + VNNI and 6 on AVX2-only, 1.7e-6 to
    # 2.3e-6 against logits up to 3.3). 64 ulps leaves a 10x margin on every class and no other slack: a cache
    # offset, a position or a mask one step off moves these logits by a tenth of their scale, about 1e6 ulps.
    atol = 64 * torch.finfo(torch.float32).eps * float(expected.abs().max())
    torch.testing.assert_close(torch.stack(step_logits, dim=1), expected, rtol=0, atol=atol)


def test_max_new_tokens_must_be_positive():
    model, _, inputs = setup("tiny_a/tone/fp32")
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        greedy_generate(model, *inputs, max_new_tokens=0)


def test_on_token_sees_each_step_as_it_is_chosen():
    model, _, inputs = setup("tiny_b/batch/fp32")
    seen = []
    ids = greedy_generate(model, *inputs, max_new_tokens=5, on_token=lambda token: seen.append(token.clone()))
    assert torch.equal(torch.stack(seen, dim=1), ids)
