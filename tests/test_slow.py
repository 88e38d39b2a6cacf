"""tox -e slow: the full-size architecture with deterministic random weights. One 30 s window, every stage
against transformers (peak RSS 17.2 GB, about 8 minutes on 2 cores), and the full-size ONNX export with
external data against PyTorch (peak RSS 16.9 GB, about 18 minutes)."""

import gc

import pytest
import torch

from conformance.harness import runner
from conformance.harness.cases import _speech_like
from conformance.harness.weights import make_weights, save_checkpoint
from glm_asr import GlmAsrConfig, load_model
from glm_asr.transcription.presets import synthetic_tokenizer_json

pytestmark = pytest.mark.slow
reference = pytest.importorskip("conformance.harness.reference", reason="transformers is not installed (tox -e slow)")


def test_full_size_every_stage_against_transformers(tmp_path):
    import json

    config = GlmAsrConfig()
    # bf16 on disk halves the checkpoint; both sides load it as fp32.
    weights = {k: v.to(torch.bfloat16) for k, v in make_weights(config, seed=3).items()}
    save_checkpoint(tmp_path, config, weights, dtype=torch.bfloat16)
    del weights
    (tmp_path / "tokenizer.json").write_text(json.dumps(synthetic_tokenizer_json()))
    clip = _speech_like(30.0, seed=21).astype("float32")  # exactly one full window: every stage stored whole

    processor = reference.make_processor(tmp_path / "tokenizer.json", 128)
    inputs = reference.prepare_inputs(processor, [clip])
    ref_model = reference.load_reference(tmp_path, torch.float32)
    tensors, info = reference.case_tensors(ref_model, inputs, config)
    del ref_model
    gc.collect()

    ours = load_model(tmp_path, dtype=torch.float32)
    rows = runner.compare_stages("full/speech_30s/fp32", ours, [clip], tensors, {s: i["stored_full"] for s, i in info.items()}, "fp32")
    print("\n" + runner.format_table(rows))
    assert {r.stage for r in rows if r.mode == "chained"} >= {"mel", "encoder.layers.31", "decoder.layers.27", "logits"}
    assert all(info[s]["stored_full"] for s in ("mel", "conv1", "conv2", "encoder.layers.0"))
    failed = [r for r in rows if not r.ok]
    assert not failed, "\n" + runner.format_table(failed)


def test_full_size_onnx_export_with_external_data_matches_pytorch(tmp_path, capsys):
    """The full-size random model through tools/export_onnx.py: weights in external data, every graph checked,
    fp32 within the exporter's gate on fresh shapes, and onnxruntime's greedy tokens equal to PyTorch's.
    Peak RSS about 10 GB (the exporter frees the PyTorch model before onnxruntime loads), about 12 minutes."""
    pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs onnxruntime")
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("export_onnx", root / "tools" / "export_onnx.py")
    export_onnx = sys.modules["export_onnx"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export_onnx)

    assert export_onnx.main(["--random", "full", "--out", str(tmp_path / "onnx")]) == 0
    report = capsys.readouterr().out
    print(report)
    assert "fp32: greedy tokens equal to PyTorch fp32's 100.0%" in report
    assert (tmp_path / "onnx" / "decoder.onnx.data").stat().st_size > 2**31  # the weights are external
    assert (tmp_path / "onnx" / "audio_encoder.onnx.data").stat().st_size > 2**31
