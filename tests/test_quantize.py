"""Int8 decoder weights and the int8 / bf16 audio path (glm_asr/runtime/quantize.py): the quantiser itself, and the
quantised model's agreement with fp32 on the golden cases, on each activation width (forced, so both run on any
CPU that can run them). An approximation: reported and bounded, never held to the conformance tolerances."""

import copy

import pytest
import torch
from torch import nn

from conformance.harness import golden
from conformance.harness import runner
from conformance.harness.cases import MODELS, clips
from conformance.harness.metrics import measure
from conformance.harness.ours import features
from conformance.harness.weights import golden_weights, save_checkpoint
from glm_asr import capture, load_model
from glm_asr.runtime import cpu
from glm_asr_cli import main as cli_main
from glm_asr.transcription.generate import greedy_generate, prompt_positions
from glm_asr.runtime.quantize import Int4Linear, Int8Linear, quantize_audio, quantize_decoder
from glm_asr.transcription.transcribe import load_model_and_processor

MANIFEST = golden.load_manifest()
FP32_CASES = sorted(c for c in MANIFEST["cases"] if c.endswith("/fp32"))
MAX_NEW = MANIFEST["generate"]["max_new_tokens"]
# Int8 weights per row and dynamic activations per tensor. Seen on the tiny models' prompt logits: min cosine
# 0.9903 (tiny_a) and 0.9961 (tiny_b) with 7-bit activations, 0.9968 and 0.9987 with 8-bit. A scale on the wrong
# axis or a transposed weight gives < 0.5. Loosened from 0.99 with issue 23's goldens (tiny_a's 0.9989 was its
# echoed embedding row, see MIN_INT4_LOGIT_COS): 0.9903 left no room for another CPU's rounding.
MIN_LOGIT_COS = 0.98
# The audio path in int8 (seen, every stage from encoder.norm to the logits: >= 0.9923 with 7-bit activations,
# >= 0.9992 with 8-bit) or bf16 (>= 0.99965). Loosened from 0.995 with issue 23's goldens: tiny_a's logits
# were its last token's own embedding row echoed (ids one token repeated), which no audio error could move;
# they now follow the audio, and 7-bit activations move them to 0.9923 (encoder.norm 0.9969). A wrong scale
# axis or a transposed weight gives < 0.5.
MIN_AUDIO_COS = {"int8": 0.99, "bf16": 0.9995}
# Which width is chosen is cpu.py's rule, tested with VNNI forced either way on any CPU. The accuracy of 8-bit
# activations is the kernel's: right only where the hardware sums int8 products in int32 (VNNI); elsewhere
# fbgemm's int16 pair sums can saturate and nothing can emulate VNNI, so those measurements run only there.
ACTIVATION_BITS = [pytest.param(False, id="7-bit"),
                   pytest.param(True, id="8-bit", marks=pytest.mark.skipif(
                       not torch.cpu._is_vnni_supported(), reason="8-bit int8 kernels are exact only on VNNI hardware"))]


def test_int8_linear_rounds_each_weight_to_its_row_scale():
    torch.manual_seed(0)
    linear = nn.Linear(96, 40, bias=False)
    with torch.no_grad():
        linear.weight[3] *= 100  # one loud row must not coarsen the others: scales are per row
    q = Int8Linear(linear)
    weight, scale = q.weight_and_scale()
    assert weight.dtype == torch.int8 and weight.shape == (40, 96) and scale.shape == (40,)
    assert torch.allclose(scale, linear.weight.abs().amax(1) / 127, rtol=1e-6)
    error = (weight.float() * scale[:, None] - linear.weight).abs()
    assert bool((error <= scale[:, None] / 2 * (1 + 1e-5)).all())
    x = torch.randn(5, 96)
    with torch.no_grad():
        cos = nn.functional.cosine_similarity(q(x), linear(x), dim=-1)
    assert float(cos.min()) > 0.999, cos


def test_int8_linear_keeps_leading_dims_and_refuses_what_it_cannot_run():
    q = Int8Linear(nn.Linear(16, 8, bias=False))
    assert q(torch.randn(2, 3, 16)).shape == (2, 3, 8)
    with pytest.raises(TypeError, match="fp32 activations"):
        q(torch.randn(2, 16, dtype=torch.bfloat16))


@pytest.mark.parametrize("vnni", [True, False])
def test_int8_activation_width_follows_vnni(vnni):
    with cpu.forced(vnni=vnni):
        q = Int8Linear(nn.Linear(16, 8))
    assert q.reduce_range is (not vnni) and f"{7 if not vnni else 8}-bit activations" in repr(q)


@pytest.mark.parametrize("vnni", ACTIVATION_BITS)
def test_int8_error_at_each_activation_width_and_a_bias_is_kept(vnni):
    torch.manual_seed(0)
    linear = nn.Linear(256, 64)
    with cpu.forced(vnni=vnni):
        q = Int8Linear(linear)
    x = torch.randn(32, 256)
    with torch.no_grad():
        error = float((q(x) - linear(x)).norm() / linear(x).norm())
        without_bias = float((q(x) - (linear(x) - linear.bias)).norm() / linear(x).norm())
    assert error < (0.012 if vnni else 0.02) < without_bias  # seen: 0.0060 (8-bit), 0.0108 (7-bit)


def test_only_the_decoder_is_quantized():
    model, _ = load_model_and_processor(None, random_preset="small", quantize="int8")
    linears = {name for name, m in model.named_modules() if isinstance(m, Int8Linear)}
    assert linears and all(name.startswith("language_model.") for name in linears)
    assert "language_model.lm_head" in linears
    assert not any(isinstance(m, nn.Linear) for m in model.language_model.modules())
    assert any(isinstance(m, Int8Linear) for m in model.modules())
    assert isinstance(model.audio_tower.layers[0].self_attn.q_proj, nn.Linear)
    with pytest.raises(ValueError, match="fp32 model on the CPU"):
        load_model_and_processor(None, random_preset="small", dtype=torch.bfloat16, quantize="int8")


def test_a_bf16_checkpoint_quantized_as_stored_is_its_fp32_load_quantized(tmp_path):
    # What transcribe(quantize="int8") does to keep the load peak near the stored size (quantize_decoder).
    spec = MODELS["tiny_b"]
    directory = save_checkpoint(tmp_path, spec.config, golden_weights(spec), dtype=torch.bfloat16)
    as_stored = quantize_decoder(load_model(directory, dtype=None))
    from_fp32 = quantize_decoder(load_model(directory, dtype=torch.float32))
    assert {p.dtype for p in as_stored.parameters()} == {torch.float32}
    assert as_stored.state_dict().keys() == from_fp32.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(as_stored.state_dict().values(), from_fp32.state_dict().values()))
    a, b = ({n: m.weight_and_scale() for n, m in model.named_modules() if isinstance(m, Int8Linear)} for model in (as_stored, from_fp32))
    assert a and a.keys() == b.keys()
    assert all(torch.equal(a[n][0], b[n][0]) and torch.equal(a[n][1], b[n][1]) for n in a)  # int8 weights, row scales
    ids = torch.arange(1, 10)[None] * 7  # text only: no audio-token id among them
    with torch.inference_mode():
        assert torch.equal(as_stored(ids), from_fp32(ids))


def agreement_on_the_goldens(model: torch.nn.Module, quantized: torch.nn.Module, model_name: str) -> tuple[float, int, int]:
    """Over the model's fp32 golden cases: the prompt logits' min cosine against fp32 (real tokens only: left
    padding is never used), and how many greedy ids equal the golden's, of how many."""
    cos, same, total = 1.0, 0, 0
    for case_id in [c for c in FP32_CASES if MANIFEST["cases"][c]["model"] == model_name]:
        entry = MANIFEST["cases"][case_id]
        stored = golden.load_case(golden.ROOT, entry)
        mel, mask = features(clips(entry["audio"]), model.config.audio_config.num_mel_bins)
        ids, attn = stored["inputs.input_ids"], stored["inputs.attention_mask"]
        with torch.inference_mode():
            ours = quantized(ids, mel, mask, attn, prompt_positions(attn))
            theirs = model(ids, mel, mask, attn, prompt_positions(attn))
        cos = min(cos, measure(ours[attn.bool()], theirs[attn.bool()], -1).min_cos)
        tokens = greedy_generate(quantized, ids, attn, mel, mask, max_new_tokens=MAX_NEW)
        n = min(tokens.shape[1], stored["generated_ids"].shape[1])
        same += int((tokens[:, :n] == stored["generated_ids"][:, :n]).sum())
        total += stored["generated_ids"].numel()
    return cos, same, total


@pytest.mark.parametrize("vnni", ACTIVATION_BITS)
@pytest.mark.parametrize("model_name", sorted(MANIFEST["models"]))
def test_int8_agrees_with_fp32_on_the_golden_cases(model_name, vnni):
    weights_sha = MANIFEST["models"][model_name]["weights_sha256"]
    model = runner.tiny_model(model_name, "fp32", "cpu", weights_sha)
    with cpu.forced(vnni=vnni):
        int8 = quantize_decoder(copy.deepcopy(model))
    cos, same, total = agreement_on_the_goldens(model, int8, model_name)
    line = (f"{model_name} int8 ({8 if vnni else 7}-bit activations) vs fp32: prompt logits min cosine {cos:.5f}, "
            f"greedy tokens equal to the golden {same}/{total}")
    print(line)
    assert cos >= MIN_LOGIT_COS, line
    assert same / total >= 0.5, line  # random tiny weights have near-tied logits; a broken int8 path gives ~1/vocab


@pytest.mark.parametrize("kind", ["int8", "bf16"])
@pytest.mark.parametrize("model_name", sorted(MANIFEST["models"]))
def test_quantized_audio_path_agrees_with_fp32_stage_by_stage(model_name, kind):
    model = runner.tiny_model(model_name, "fp32", "cpu", MANIFEST["models"][model_name]["weights_sha256"])
    with cpu.forced(vnni=False):  # 7-bit activations, the wider error, on any CPU
        quantized = quantize_audio(copy.deepcopy(model), kind)
    assert quantized.language_model.lm_head.weight.dtype == torch.float32  # the decoder is left alone
    cos, same, total = {}, 0, 0
    for case_id in [c for c in FP32_CASES if MANIFEST["cases"][c]["model"] == model_name]:
        entry = MANIFEST["cases"][case_id]
        stored = golden.load_case(golden.ROOT, entry)
        mel, mask = features(clips(entry["audio"]), model.config.audio_config.num_mel_bins)
        ids, attn = stored["inputs.input_ids"], stored["inputs.attention_mask"]
        with torch.inference_mode(), capture() as ours:
            quantized(ids, mel, mask, attn, prompt_positions(attn))
        with torch.inference_mode(), capture() as theirs:
            model(ids, mel, mask, attn, prompt_positions(attn))
        for stage in ("encoder.norm", "projector", "logits"):
            a, b = ours[stage].float(), theirs[stage].float()
            if stage == "logits":
                a, b = a[attn.bool()], b[attn.bool()]
            cos[stage] = min(cos.get(stage, 1.0), measure(a, b, -1).min_cos)
        tokens = greedy_generate(quantized, ids, attn, mel, mask, max_new_tokens=MAX_NEW)
        n = min(tokens.shape[1], stored["generated_ids"].shape[1])
        same += int((tokens[:, :n] == stored["generated_ids"][:, :n]).sum())
        total += stored["generated_ids"].numel()
    line = f"{model_name} {kind} audio path vs fp32: min cosine {cos}, greedy tokens equal to the golden {same}/{total}"
    print(line)
    assert min(cos.values()) >= MIN_AUDIO_COS[kind], line
    assert same / total >= 0.5, line


def test_cli_transcribes_with_int8_and_refuses_it_with_onnxruntime(tmp_path, capsys):
    import numpy as np
    import scipy.io.wavfile

    from glm_asr.transcription.presets import demo_clip

    wav = tmp_path / "clip.wav"
    scipy.io.wavfile.write(wav, 16000, (demo_clip(2.0) * 32767).astype(np.int16))
    assert cli_main(["transcribe", str(wav), "--quantize", "int8", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.startswith(f"{wav}\t")
    assert cli_main(["transcribe", str(wav), "--quantize", "int8", "--quantize-audio", "bf16", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.startswith(f"{wav}\t")
    assert cli_main(["transcribe", str(wav), "--quantize-audio", "int8", "--dtype", "bf16"]) == 2
    assert "--quantize-audio int8 applies to --dtype fp32 on --device cpu" in capsys.readouterr().err  # named by its flags
    assert cli_main(["transcribe", str(wav), "--quantize", "int8", "--backend", "onnxruntime", "--onnx-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "drop --model, --dtype and --quantize" in err


@pytest.mark.parametrize("shape", [(48, 40), (6144 // 8, 2048 // 8), (40, 112)])  # padded rows, groups of 128, padded inputs
def test_int4_layer_computes_its_own_dequantised_weights(shape):
    # The layer's product equals x @ w4ᵀ, w4 its 4-bit weights dequantised, up to rounding x to bf16: a
    # wrong pairing of nibbles, a scale on the wrong axis or a dropped zero point breaks that, not only accuracy.
    N, K = shape
    linear = nn.Linear(K, N).requires_grad_(False)
    q = Int4Linear(linear)
    identity = torch.eye(K)
    w4 = (q(identity) - linear.bias).T  # (N, K): each input channel alone
    x = torch.randn(7, K)
    expected = x.bfloat16().float() @ w4.T + linear.bias
    assert (q(x) - expected).abs().max() <= 1e-2 * expected.abs().max()  # the kernel rounds its output to bf16
    step = (linear.weight.amax() - linear.weight.amin()) / 15  # one level of the widest group bounds the rounding
    assert (w4 - linear.weight).abs().max() <= step
    assert q.packed.dtype == torch.uint8 and q.packed.numel() == (N + -N % 16) * (K + q.k_pad) // 2  # half a byte a weight


# Weight-only int4 in groups of 128 (64 or 32 on the tiny models' narrow layers), bf16 activations. A broken
# layer gives a cosine near 0 and ~1/vocab ids (0.3%). Loosened from 0.95 and 0.2 with issue 23's goldens: on the
# earlier ones tiny_a's logits were its last token's embedding row echoed (0.9905, 240/240 ids: one token
# repeated), which 4-bit weights could not move. Now both models' logits follow the audio through every decoder
# layer, 40 and 48 wide: min cosine over all prompt positions 0.803 (tiny_a, one text position; median 0.98)
# and 0.930 (tiny_b), greedy ids equal to the golden 100/240 and 37/240 (near-tied random logits flip, and a
# flipped id changes the rest of its row).
MIN_INT4_LOGIT_COS = 0.7
MIN_INT4_SAME_IDS = 0.1


@pytest.mark.parametrize("kind", ["int4", "int4-ort"])
@pytest.mark.parametrize("model_name", sorted(MANIFEST["models"]))
def test_4bit_agrees_with_fp32_on_the_golden_cases(model_name, kind):
    if kind == "int4-ort":  # its figures and bounds: below, beside its layer test
        pytest.importorskip("onnxruntime")
        from glm_asr.runtime.nbits import NBitsLinear as layer
    else:
        layer = Int4Linear
    model = runner.tiny_model(model_name, "fp32", "cpu", MANIFEST["models"][model_name]["weights_sha256"])
    quantised = quantize_decoder(copy.deepcopy(model), kind)
    assert any(isinstance(m, layer) for m in quantised.language_model.modules())
    cos, same, total = agreement_on_the_goldens(model, quantised, model_name)
    line = f"{model_name} {kind} vs fp32: prompt logits min cosine {cos:.5f}, greedy tokens equal to the golden {same}/{total}"
    print(line)
    assert cos >= MIN_INT4_LOGIT_COS, line
    assert same / total >= MIN_INT4_SAME_IDS, line


def test_cli_transcribes_with_int4(tmp_path, capsys):
    import numpy as np
    import scipy.io.wavfile

    from glm_asr.transcription.presets import demo_clip

    wav = tmp_path / "clip.wav"
    scipy.io.wavfile.write(wav, 16000, (demo_clip(2.0) * 32767).astype(np.int16))
    assert cli_main(["transcribe", str(wav), "--quantize", "int4", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.startswith(f"{wav}\t")


# 4-bit weights on onnxruntime's MatMulNBits (runtime/nbits.py) for single rows: symmetric, blocks of 32, and int8
# activations per block (accuracy level 4), so each product also carries the activations' rounding; prompts run on
# the layer's int8 weights. Measured on the golden cases (AVX2): prompt logits (the int8 path) min cosine 0.990
# (tiny_a) and 0.996 (tiny_b); greedy ids, each step a single row on the 4-bit kernel, equal to the golden 107/240
# and 37/240. With the nibbles swapped the ids fall to 43/240 and 8/240 (each row's first id comes from the int8
# prompt), so only tiny_b fails test_4bit_agrees_with_fp32_on_the_golden_cases: the layer test below is the kernel's
# check.
@pytest.mark.parametrize("shape", [(48, 40), (6144 // 8, 2048 // 8)])  # a padded input, whole blocks
def test_nbits_layer_computes_its_own_dequantised_weights(shape):
    pytest.importorskip("onnxruntime")
    from glm_asr.runtime.nbits import NBitsLinear, pack_4bit, unpack_4bit

    N, K = shape
    linear = nn.Linear(K, N).requires_grad_(False)
    q = NBitsLinear(linear, Int8Linear(linear))
    codes, scale = pack_4bit(nn.functional.pad(linear.weight, (0, q.k_pad)), q.block)
    w4 = unpack_4bit(codes, scale)[:, :K]
    x = torch.randn(7, K)
    expected = x @ w4.T + linear.bias
    one_at_a_time = torch.cat([q(row[None]) for row in x])  # single rows: the 4-bit kernel
    # int8 activations per block of 32: each block's rounding is at most half a level of its largest value. The sums
    # are exact on every x86 class: 4-bit weights (0..15) times int8 activations add in pairs to at most 3810,
    # inside int16 even without VNNI (vpmaddubsw), so only the order of the fp32 block sums differs by CPU.
    assert (one_at_a_time - expected).abs().max() <= 2e-2 * expected.abs().max()
    assert torch.equal(q(x), q.rows(x))  # more rows: the layer's int8 weights
    assert (w4 - linear.weight).abs().max() <= linear.weight.abs().max() / 7 / 2 + 1e-7  # half a level of the widest block
    assert codes.dtype == torch.uint8 and codes.numel() == N * (K + q.k_pad) // 2  # half a byte a weight
