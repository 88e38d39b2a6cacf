"""The onnxruntime backend: both tiny golden models exported once, then every graph against PyTorch, greedy
ids against the goldens, int8 agreement, and one-line errors for bad folders and bad export arguments."""

import fcntl
import functools
import importlib.util
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
import torch

pytest.importorskip("onnx", reason="the ONNX export needs onnx (pip install onnx onnxscript)")
ort = pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs onnxruntime")

from conformance.harness import golden  # noqa: E402
from conformance.harness import runner
from conformance.harness.cases import MODELS, clips  # noqa: E402
from conformance.harness.metrics import Metrics, failures, measure  # noqa: E402
from conformance.harness.ours import features  # noqa: E402
from conformance.harness.tolerances import Tolerance  # noqa: E402
from conformance.harness.weights import golden_weights, save_checkpoint  # noqa: E402
from glm_asr_cli import main as cli_main  # noqa: E402
from glm_asr.model.decoder import KVCache  # noqa: E402
from glm_asr.transcription.generate import prompt_positions  # noqa: E402
from glm_asr.onnx.backend import OnnxModel, load_onnx_model_and_processor  # noqa: E402
from glm_asr.onnx.graphs import DECODER_FILE, ENCODER_FILE, METADATA_FILE, AudioEmbedder  # noqa: E402
from glm_asr.transcription.transcribe import transcribe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("export_onnx", ROOT / "tools" / "export_onnx.py")
export_onnx = sys.modules["export_onnx"] = importlib.util.module_from_spec(_spec)  # a script, not a package module
_spec.loader.exec_module(export_onnx)

MANIFEST = golden.load_manifest()
MAX_NEW = MANIFEST["generate"]["max_new_tokens"]
FP32_CASES = sorted(c for c in MANIFEST["cases"] if c.endswith("/fp32"))
BACKENDS = {"onnxruntime-cpu": "cpu", "onnxruntime-cuda": "cuda"}

ONNX_FP32 = Tolerance(
    None, 1e-5, 1e-10, 1 - 1e-8,
    "the same fp32 weights through onnxruntime's kernels instead of PyTorch's (fused LayerNorm, GELU and "
    "softmax, other reduction orders; seen on CPU: max_rel <= 1.3e-6 for audio embeddings, <= 6e-7 for logits "
    "and keys/values, 1 - cos <= 1e-12); ~8x headroom for other CPUs' SIMD paths and CUDA with TF32 off",
)
# uint8 weights per output channel and uint8 activations (tools/export_onnx.py INT8_FORMAT), whose products onnxruntime
# sums exactly in int32 on every x86 class: seen 1 - cos <= 3.6e-3 on the tiny models' prefill logits (AVX2-only,
# where int8 weights had given 0.932 through the saturating kernel). The bound is for quantisation error alone.
INT8_MIN_COS = 0.98


def row(metrics: Metrics) -> str:
    return f"max_abs {metrics.max_abs:.2e} max_rel {metrics.max_rel:.2e} nmse {metrics.nmse:.2e} 1-min_cos {1 - metrics.min_cos:.1e}"


def export(argv: list[str], capsys) -> tuple[int, str, str]:  # noqa: ANN001
    code = export_onnx.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# --- fixtures: both tiny models exported once per module -----------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for name, tiny in MODELS.items():
        directory = save_checkpoint(tmp_path_factory.mktemp(name), tiny.config, golden_weights(tiny))
        shutil.copy(golden.ROOT / MANIFEST["models"][name]["tokenizer"]["path"], directory / "tokenizer.json")
        out[name] = directory
    return out


@pytest.fixture(scope="module")
def exported(checkpoints, tmp_path_factory) -> dict[str, Path]:
    """tiny_a over an existing folder with --force (the swap); tiny_b with every weight in external data.

    Exported once per test session: pytest-xdist workers share their session's base folder, and the first one
    to take the lock exports for all (an export costs ~20 s of CPU per model)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "onnx-export"
    root.mkdir(exist_ok=True)
    runs = {"tiny_a": ["--force"], "tiny_b": ["--external-data", "always", "--no-verify"]}
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / ".done").exists():
            (root / "tiny_a").mkdir()
            (root / "tiny_a" / "stale.txt").write_text("from an earlier export")
            for name, extra in runs.items():
                assert export_onnx.main(["--model", str(checkpoints[name]), "--out", str(root / name), "--threads", "1", *extra]) == 0
            assert not (root / "tiny_a" / "stale.txt").exists()
            assert sorted(p.name for p in root.iterdir()) == [".lock", "tiny_a", "tiny_b"]  # no staging folder left behind
            (root / ".done").touch()
    return {name: root / name for name in runs}


@pytest.fixture(params=list(BACKENDS))
def device(request) -> str:
    if request.param == "onnxruntime-cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (install onnxruntime-gpu on a CUDA machine)")
    return BACKENDS[request.param]


@functools.lru_cache(maxsize=8)
def _loaded(directory: Path, device: str) -> tuple:
    return load_onnx_model_and_processor(directory, device=device, threads=1)


def torch_model(name: str):  # noqa: ANN201
    return runner.tiny_model(name, "fp32", "cpu", MANIFEST["models"][name]["weights_sha256"])


def case_inputs(case_id: str, n_mels: int) -> tuple[dict, tuple]:
    entry = MANIFEST["cases"][case_id]
    stored = golden.load_case(golden.ROOT, entry)
    mel, mask = features(clips(entry["audio"]), n_mels)
    return stored, (stored["inputs.input_ids"], stored["inputs.attention_mask"], mel, mask)


# --- numbers against PyTorch ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_audio_embeddings_match_pytorch(exported, device, name):
    onnx_model, _ = _loaded(exported[name], device)
    model = torch_model(name)
    mel, mask = features(clips("over_30s") + clips("batch"), model.config.audio_config.num_mel_bins)  # W = 4
    with torch.inference_mode():
        raw, valid = AudioEmbedder(model)(mel), model.embed_audio(mel, mask)
    for ours, ref in ((onnx_model.audio_windows(mel), raw), (onnx_model.embed_audio(mel, mask), valid)):
        metrics = measure(torch.from_numpy(ours), ref, -1)
        print(f"{name} audio {tuple(ref.shape)}: {row(metrics)}")
        assert not failures(metrics, ONNX_FP32), (tuple(ref.shape), failures(metrics, ONNX_FP32))


def step_logits(onnx_model: OnnxModel, model, inputs: tuple, new_ids: torch.Tensor) -> list[tuple[str, np.ndarray, torch.Tensor]]:  # noqa: ANN001
    """Prefill logits (B, T, V), then each teacher-forced decode step's (B, 1, V): ONNX and PyTorch's KV cache."""
    ids, attn, mel, mask = inputs
    B, T = ids.shape
    attn_all = torch.cat([attn, torch.ones_like(new_ids)], dim=1)
    positions = prompt_positions(attn_all)
    cache = KVCache.empty(model.config.text_config, B, attn_all.shape[1], torch.float32, "cpu")
    with torch.inference_mode():
        ref = model.decode(model.embed_prompt(ids, model.embed_audio(mel, mask)), positions[:, :T], attn.bool(), cache, 0)
    ours, past = onnx_model.decode(onnx_model.embed_prompt(ids.numpy(), onnx_model.embed_audio(mel, mask)),
                                   positions[:, :T].numpy(), attn.numpy(), onnx_model.empty_past(B))
    out = [("prefill", ours, ref)]
    for s in range(new_ids.shape[1] - 1):
        token = new_ids[:, s : s + 1]
        with torch.inference_mode():
            ref = model.decode(model.language_model.model.embed_tokens(token), positions[:, T + s : T + s + 1],
                               attn_all[:, : T + s + 1].bool(), cache, T + s)
        ours, past = onnx_model.decode(np.asarray(onnx_model.embed_tokens[token.numpy()]), positions[:, T + s : T + s + 1].numpy(),
                                       attn_all[:, : T + s + 1].numpy(), past)
        out.append((f"step {s + 1}", ours, ref))
    return out


@pytest.mark.parametrize("case_id", ["tiny_a/batch/fp32", "tiny_b/batch/fp32", "tiny_b/over_30s/fp32"])
def test_logits_at_prefill_and_every_decode_step_match_pytorch(exported, device, case_id):
    name = case_id.split("/")[0]
    onnx_model, _ = _loaded(exported[name], device)
    model = torch_model(name)
    stored, inputs = case_inputs(case_id, model.config.audio_config.num_mel_bins)
    results = [(label, measure(torch.from_numpy(ours), ref, -1)) for label, ours, ref in step_logits(onnx_model, model, inputs, stored["generated_ids"])]
    worst = max(results, key=lambda r: r[1].max_rel)
    print(f"{case_id}: {len(results)} logits checks, worst at {worst[0]}: {row(worst[1])}")
    assert len(results) == MAX_NEW
    assert [(label, failures(m, ONNX_FP32)) for label, m in results if failures(m, ONNX_FP32)] == []


def test_the_logits_check_can_fail(exported):
    """Keys and values swapped in the past: the same comparison must go red (it can fail, so it checks)."""
    onnx_model, _ = _loaded(exported["tiny_b"], "cpu")
    model = torch_model("tiny_b")
    stored, inputs = case_inputs("tiny_b/batch/fp32", model.config.audio_config.num_mel_bins)
    original = onnx_model.decode

    def swapped(embeds, positions, mask, past):  # noqa: ANN001, ANN202
        half = len(past) // 2
        return original(embeds, positions, mask, past[half:] + past[:half])

    onnx_model.decode = swapped
    try:
        results = step_logits(onnx_model, model, inputs, stored["generated_ids"][:, :3])
    finally:
        del onnx_model.decode
    assert not failures(measure(torch.from_numpy(results[0][1]), results[0][2], -1), ONNX_FP32)  # prefill has no past
    assert all(failures(measure(torch.from_numpy(ours), ref, -1), ONNX_FP32) for _, ours, ref in results[1:])


# --- tokens and transcripts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", FP32_CASES)
def test_greedy_ids_equal_the_golden(exported, device, case_id):
    name = case_id.split("/")[0]
    onnx_model, _ = _loaded(exported[name], device)
    stored, inputs = case_inputs(case_id, onnx_model.config.audio_config.num_mel_bins)
    assert torch.equal(onnx_model.generate(*inputs, max_new_tokens=MAX_NEW), stored["generated_ids"])
    if "early_stop.generated_ids" in stored:  # batch: a row that stopped is padded while the other goes on
        eos = tuple(stored["early_stop.eos_token_id"].tolist())
        assert torch.equal(onnx_model.generate(*inputs, max_new_tokens=MAX_NEW, eos_token_id=eos), stored["early_stop.generated_ids"])


def test_transcribe_api_and_cli(exported, tmp_path, capsys):
    onnx_model, processor = _loaded(exported["tiny_b"], "cpu")
    expected = [processor.decode(golden.load_case(golden.ROOT, MANIFEST["cases"][f"tiny_b/{c}/fp32"])["generated_ids"][0]).strip()
                for c in ("tone", "chirp")]  # transcribe() strips the text
    assert transcribe(onnx_model, processor, [clips("tone")[0], clips("chirp")[0]], max_new_tokens=MAX_NEW) == expected
    wav = tmp_path / "tone.wav"
    scipy.io.wavfile.write(wav, 16000, clips("tone")[0])
    assert cli_main(["transcribe", str(wav), "--backend", "onnxruntime", "--onnx-dir", str(exported["tiny_b"]),
                     "--max-new-tokens", str(MAX_NEW)]) == 0
    assert capsys.readouterr().out == f"{wav}\t{expected[0]}\n"


def test_folder_is_self_contained_and_described(exported, checkpoints):
    import onnx

    for name, directory in exported.items():
        metadata = json.loads((directory / METADATA_FILE).read_text())
        assert metadata["config"] == MODELS[name].config.to_dict() and metadata["opset"] == 20
        assert set(metadata["versions"]) == {"torch", "onnx", "onnxruntime", "onnxscript", "glm_asr"}
        assert metadata["features"]["n_fft"] == 400 and metadata["features"]["hop_length"] == 160
        assert (directory / "tokenizer.json").read_bytes() == (checkpoints[name] / "tokenizer.json").read_bytes()
        for graph in (ENCODER_FILE, DECODER_FILE):
            onnx.checker.check_model(str(directory / graph))
            assert metadata["graphs"][graph]["external_data"] == (name == "tiny_b") == (directory / f"{graph}.data").exists()
        decoder = metadata["graphs"][DECODER_FILE]
        assert decoder["inputs"][3]["shape"][0] == "batch" and decoder["inputs"][3]["shape"][2] == "past"  # not frozen
        assert decoder["outputs"][1]["shape"][2] == "past+tokens"
    assert sorted(p.name for p in exported["tiny_b"].iterdir()) == sorted(
        ["audio_encoder.onnx", "audio_encoder.onnx.data", "decoder.onnx", "decoder.onnx.data", "embed_tokens.npy",
         "metadata.json", "tokenizer.json"])


# --- int8 --------------------------------------------------------------------------------------------------------


def prefill_logits(onnx_model: OnnxModel, inputs: tuple) -> np.ndarray:
    ids, attn, mel, mask = inputs
    embeds = onnx_model.embed_prompt(ids.numpy(), onnx_model.embed_audio(mel, mask))
    return onnx_model.decode(embeds, prompt_positions(attn).numpy(), attn.numpy(), onnx_model.empty_past(ids.shape[0]))[0]


def assert_weights_are_uint8(directory: Path) -> None:
    """The agreement below holds on every CPU class only because no product takes int8 weights: onnxruntime
    multiplies uint8 activations by int8 weights with int16 pair sums that saturate on CPUs without VNNI."""
    import onnx

    for graph_file in (ENCODER_FILE, DECODER_FILE):
        graph = onnx.load(str(directory / graph_file), load_external_data=False).graph
        types = {t.name: t.data_type for t in graph.initializer}
        weights = [node.input[1] for node in graph.node if node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
        assert weights, f"{graph_file}: no quantized MatMul"
        assert {types[w] for w in weights} == {onnx.TensorProto.UINT8}, f"{graph_file}: weights not all uint8"


def test_int8_agrees_with_fp32(exported, tmp_path):
    rates, lines = [], []
    for name, directory in exported.items():
        export_onnx.quantize_folder(directory, tmp_path / name, external=False)
        int8, _ = load_onnx_model_and_processor(tmp_path / name, threads=1)
        fp32, _ = _loaded(directory, "cpu")
        assert int8.metadata["precision"]["quantize"] == "int8"
        assert int8.metadata["precision"]["int8"] == export_onnx.INT8_FORMAT
        assert_weights_are_uint8(tmp_path / name)
        assert export_onnx.folder_bytes(tmp_path / name, DECODER_FILE) < export_onnx.folder_bytes(directory, DECODER_FILE)
        same = total = 0
        cos = 1.0
        for case_id in [c for c in FP32_CASES if c.startswith(name)]:
            stored, inputs = case_inputs(case_id, fp32.config.audio_config.num_mel_bins)
            ids = int8.generate(*inputs, max_new_tokens=MAX_NEW)
            n = min(ids.shape[1], MAX_NEW)
            same += int((ids[:, :n] == stored["generated_ids"][:, :n]).sum())
            total += stored["generated_ids"].numel()
            ours, theirs = prefill_logits(int8, inputs), prefill_logits(fp32, inputs)
            cos = min(cos, measure(torch.from_numpy(ours), torch.from_numpy(theirs), -1).min_cos)
        rates.append(same / total)
        lines.append(f"{name} int8 vs fp32: prefill logits min cosine {cos:.5f}, greedy tokens equal to the golden "
                     f"{same}/{total} ({100 * same / total:.1f}%)")
        assert cos >= INT8_MIN_COS, lines[-1]
    print("\n".join(lines))
    # Random tiny weights: near-ties flip, and a flipped id changes the rest of its row; a broken int8 graph gives
    # ~1/vocab. Seen 78% (tiny_a) and 51% (tiny_b) with uint8 weights; 0.3 since issue 23's goldens, on which
    # tiny_a's ids follow the audio instead of repeating one token and tiny_b has 8 query heads for 2 kv heads.
    assert min(rates) >= 0.3, lines


# --- bad input ---------------------------------------------------------------------------------------------------


def one_line_error(code: int, err: str, fragment: str) -> None:
    assert code == 2 and err.count("\n") == 1 and fragment in err and "Traceback" not in err, err


def test_export_refuses_a_model_dir_that_does_not_load(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "tokenizer.json").write_text("{}")
    code, _, err = export(["--model", str(tmp_path / "model"), "--out", str(tmp_path / "out")], capsys)
    one_line_error(code, err, "config.json: no such file")
    assert not (tmp_path / "out").exists()


def test_export_refuses_an_existing_folder_without_force(checkpoints, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    code, _, err = export(["--model", str(checkpoints["tiny_a"]), "--out", str(tmp_path / "out")], capsys)
    one_line_error(code, err, "already exists; pass --force")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_a_failed_forced_export_leaves_the_old_folder_whole(checkpoints, tmp_path, capsys, monkeypatch):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")

    def half_done(staging: Path, *args) -> list[str]:  # noqa: ANN002
        (staging / "decoder.onnx").write_text("half written")
        raise RuntimeError("decoder.onnx: torch.onnx.export failed: simulated")

    monkeypatch.setattr(export_onnx, "build", half_done)
    code, _, err = export(["--model", str(checkpoints["tiny_a"]), "--out", str(tmp_path / "out"), "--force"], capsys)
    one_line_error(code, err, "simulated")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the staging folder is gone too


def _edit_metadata(directory: Path, edit) -> None:  # noqa: ANN001
    metadata = json.loads((directory / METADATA_FILE).read_text())
    edit(metadata)
    (directory / METADATA_FILE).write_text(json.dumps(metadata))


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda d, other: (d / DECODER_FILE).unlink(), "decoder.onnx: missing"),
        (lambda d, other: (d / ENCODER_FILE).unlink(), "audio_encoder.onnx: missing"),
        (lambda d, other: (d / METADATA_FILE).unlink(), "metadata.json: missing"),
        (lambda d, other: (d / METADATA_FILE).write_text("{oops"), "metadata.json: not valid JSON"),
        (lambda d, other: _edit_metadata(d, lambda m: m["config"]["text_config"].update(num_hidden_layers=3)),
         "metadata.json: graphs.decoder.onnx.inputs disagree with its own config"),
        (lambda d, other: _edit_metadata(d, lambda m: m["graphs"]["audio_encoder.onnx"]["outputs"][0].update(name="x")),
         "metadata.json: graphs.audio_encoder.onnx.outputs disagree"),
        (lambda d, other: [shutil.copy(p, d / p.name) for p in other.glob(DECODER_FILE + "*")],  # tiny_b's decoder
         "decoder.onnx: inputs do not match metadata.json"),
        (lambda d, other: shutil.copy(other / DECODER_FILE, d / DECODER_FILE), "decoder.onnx: onnxruntime cannot load it"),  # no .data
        (lambda d, other: (d / DECODER_FILE).write_bytes(b"not a graph"), "decoder.onnx: onnxruntime cannot load it"),
        (lambda d, other: np.save(d / "embed_tokens.npy", np.zeros((3, 4), np.float32)), "embed_tokens.npy: float32 (3, 4)"),
    ],
)
def test_a_bad_onnx_folder_is_one_line(exported, tmp_path, capsys, damage, fragment):
    broken = tmp_path / "onnx"
    shutil.copytree(exported["tiny_a"], broken)
    damage(broken, exported["tiny_b"])
    with pytest.raises(ValueError, match=re.escape(fragment.split(": ", 1)[1])):
        OnnxModel(broken)
    wav = tmp_path / "a.wav"
    scipy.io.wavfile.write(wav, 16000, clips("tone")[0])
    code = cli_main(["transcribe", str(wav), "--backend", "onnxruntime", "--onnx-dir", str(broken)])
    one_line_error(code, capsys.readouterr().err, fragment)


def test_cli_backend_arguments_are_checked(exported, tmp_path, capsys):
    wav = tmp_path / "a.wav"
    scipy.io.wavfile.write(wav, 16000, clips("tone")[0])
    for argv, fragment in [(["--backend", "onnxruntime"], "needs --onnx-dir"),
                           (["--onnx-dir", str(exported["tiny_a"])], "only read with --backend onnxruntime"),
                           (["--backend", "onnxruntime", "--onnx-dir", str(exported["tiny_a"]), "--dtype", "bf16"], "drop --model, --dtype and --quantize")]:
        one_line_error(cli_main(["transcribe", str(wav), *argv]), capsys.readouterr().err, fragment)
