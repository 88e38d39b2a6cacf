"""`--fast`: the fastest path is measured on the running machine (glm_asr/runtime/fastest.py), never assumed."""

import pytest

from glm_asr.runtime import cpu, fastest
from glm_asr.runtime.quantize import DECODER_KINDS
from glm_asr_cli import fast as fast_cli
from glm_asr_cli.main import main


def test_a_quantised_path_needs_a_clear_win():
    order = ("fp32", "int8", "bf16")
    assert fastest._pick({"fp32": 100.0, "int8": 104.0}, order) == "fp32"  # inside the margin: the plain model's
    assert fastest._pick({"fp32": 100.0, "int8": 106.0}, order) == "int8"
    assert fastest._pick({"fp32": 100.0, "int8": 200.0, "bf16": 205.0}, order) == "int8"  # bf16 must beat int8, not fp32
    assert fastest._pick({"fp32": 100.0, "int8": 200.0, "bf16": 220.0}, order) == "bf16"
    assert fastest._pick({"int8": 10.0}, ("int8", "int4-ort")) == "int8"  # no onnxruntime: not measured, not taken


def test_the_timings_measure_every_path(monkeypatch):
    monkeypatch.setenv(cpu.FORCE_ENV, "matvec=torch,fp32_gemm=torch,fp32_few_rows=torch")  # no kernel calibration here
    monkeypatch.setattr(cpu, "_choices", None)
    from glm_asr.model.config import TextConfig

    monkeypatch.setattr(fastest, "WINDOW_GEMM", (64, 64, 96))
    tiny = TextConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=32)
    decoders, audio = fastest.time_decoders(tiny), fastest.time_audio()
    expected = {"int8", "int4-ort"} if _has_onnxruntime() else {"int8"}
    assert set(decoders) == expected and all(d["ms"] > 0 and d["gb_per_s"] > 0 for d in decoders.values())
    assert {"fp32", "int8"} <= set(audio) and min(audio.values()) > 0


def _has_onnxruntime() -> bool:
    import importlib.util

    return bool(importlib.util.find_spec("onnxruntime"))


def test_the_cli_knows_every_decoder_kind():
    assert fast_cli.DECODER_KINDS == DECODER_KINDS


def test_fast_sets_the_measured_path_and_refuses_to_be_overridden(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fastest, "fast_path", lambda refresh=False: fastest.FastPath("int8", "int8", {}))
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"")  # never read: the options are refused first
    assert main(["transcribe", str(wav), "--fast", "--quantize", "int4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--fast picks --quantize" in err
    import argparse

    args = argparse.Namespace(fast=True, quantize=None, quantize_audio=None, dtype="fp32", device="cpu", backend="torch")
    fast_cli.apply_fast(args)
    assert (args.quantize, args.quantize_audio) == ("int8", "int8") and "--fast: --quantize int8 --quantize-audio int8" in capsys.readouterr().err


def test_int4_ort_without_onnxruntime_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    import sys

    import numpy as np
    import scipy.io.wavfile

    from glm_asr.transcription.presets import demo_clip

    wav = tmp_path / "clip.wav"
    scipy.io.wavfile.write(wav, 16000, (demo_clip(1.0) * 32767).astype(np.int16))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    assert main(["transcribe", str(wav), "--quantize", "int4-ort", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("glm-asr: error:") and "pip install 'glm-asr[onnx]'" in err[-1] and "Traceback" not in "".join(err)
