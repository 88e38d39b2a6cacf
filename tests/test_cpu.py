"""glm_asr/runtime/cpu.py: every choice follows its rule from the features given, any capability can be forced, and the
matvec calibration is measured once and cached. Nothing here assumes the CPU class it runs on."""

import dataclasses
import json

import pytest

from glm_asr.runtime import cpu
from glm_asr_cli import main

AVX2 = cpu.Features("an AVX2 CPU", avx2=True, avx512=False, avx512_bf16=False, vnni=False, amx=False, onednn=True, onednn_bf16=False)
ZEN4 = dataclasses.replace(AVX2, model="an AVX-512 BF16 CPU", avx512=True, avx512_bf16=True, vnni=True, onednn_bf16=True)
SPR = dataclasses.replace(ZEN4, model="an AMX CPU", amx=True)
# oneDNN reports bf16 on plain AVX-512 too, where it emulates it: 4x slower than widening to fp32.
SKYLAKE = dataclasses.replace(ZEN4, model="an AVX-512 CPU without BF16", avx512_bf16=False)


def test_each_class_gets_its_rules():
    avx2, zen4, spr = (cpu.decide(f, measure=False) for f in (AVX2, ZEN4, SPR))
    assert (avx2.native_bf16, avx2.int8_reduce_range, avx2.int8_gemm_engine) == (False, True, "x86")
    assert (zen4.native_bf16, zen4.int8_reduce_range, zen4.int8_gemm_engine) == (True, False, "x86")
    assert (spr.native_bf16, spr.int8_reduce_range, spr.int8_gemm_engine) == (True, False, "onednn")
    assert [f.cpu_class for f in (AVX2, ZEN4, SPR)] == ["AVX2", "AVX-512 + VNNI + BF16", "AVX-512 + VNNI + BF16 + AMX"]
    assert [c.bf16_packed for c in (avx2, zen4, spr)] == [False, True, True]
    skylake = cpu.decide(SKYLAKE, measure=False)
    assert (skylake.native_bf16, skylake.bf16_packed) == (False, True) and "emulates" in skylake.reasons["native_bf16"]
    # Widening pays for a prompt's rows; with an (emulated) oneDNN bf16 kernel a batched step's few rows keep it.
    assert [c.bf16_widen_rows for c in (avx2, skylake, zen4)] == [2, 32, 1]
    assert all(set(c.reasons) == {"fp32_gemm", "fp32_few_rows", "native_bf16", "bf16_packed", "bf16_widen_rows", "matvec", "int8_reduce_range", "int8_gemm_engine", "threads"}
               for c in (avx2, zen4, spr))


def test_forcing_overrides_features_and_choices():
    forced = cpu.decide(SPR, {"native_bf16": False, "vnni": False, "matvec": "torch"})
    assert (forced.native_bf16, forced.bf16_packed, forced.int8_reduce_range, forced.matvec) == (False, True, True, "torch")
    assert "(forced)" in forced.reasons["native_bf16"] and "(forced)" in forced.reasons["int8_reduce_range"]
    forced_native = cpu.decide(AVX2, {"native_bf16": True}, measure=False)
    assert forced_native.native_bf16 and not forced_native.bf16_packed  # oneDNN cannot pack bf16 on such a CPU


def test_forced_block_is_undone_and_nests():
    before = cpu.rules()
    with cpu.forced(native_bf16=not before.native_bf16):
        assert cpu.native_bf16() is (not before.native_bf16)
        with cpu.forced(vnni=not cpu.features().vnni):
            assert cpu.rules().int8_reduce_range is cpu.features().vnni
            assert cpu.native_bf16() is (not before.native_bf16)
    assert cpu.rules() == before


def test_force_environment_variable_is_parsed_and_bad_values_named(monkeypatch):
    assert cpu._parse_force(" native_bf16=0, vnni=1,matvec=onednn,fp32_gemm=torch") == {"native_bf16": False, "vnni": True, "matvec": "onednn",
                                                                                     "fp32_gemm": "torch"}
    for bad, named in [("native_bf16", "not NAME=VALUE"), ("turbo=1", "'turbo=1'"), ("vnni=yes", "vnni='yes'"), ("matvec=mkl", "matvec='mkl'"),
                       ("fp32_gemm=mkl", "fp32_gemm='mkl'")]:
        with pytest.raises(ValueError, match=named):
            cpu._parse_force(bad)


def test_calibration_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv(cpu.CACHE_ENV, str(tmp_path))
    measured = []
    monkeypatch.setattr(cpu, "time_matvec_kernels", lambda: measured.append(1) or {"openblas": 10.0, "onednn": 12.0, "torch": 8.0})
    assert cpu.calibrate()[0] == "onednn" and len(measured) == 1
    (cached,) = tmp_path.glob("matvec-*.json")
    assert json.loads(cached.read_text())["fastest"] == "onednn"
    fastest, rates, where = cpu.calibrate()
    assert (fastest, rates["onednn"], len(measured)) == ("onednn", 12.0, 1) and "cached" in where
    cpu.calibrate(refresh=True)
    assert len(measured) == 2
    assert "onednn 12.0" in cpu.decide(SPR).reasons["matvec"]


def test_a_matvec_kernel_must_win_by_more_than_the_measurements_noise():
    assert cpu.fastest_matvec({"openblas": 46.5, "onednn": 44.9, "torch": 30.0}) == "onednn"  # 3.5% apart: a tie
    assert cpu.fastest_matvec({"openblas": 46.5, "onednn": 40.0, "torch": 44.5}) == "torch"
    assert cpu.fastest_matvec({"openblas": 46.5, "onednn": 40.0, "torch": 30.0}) == "openblas"
    assert cpu.fastest_matvec({"openblas": 10.0, "torch": 10.2}) == "torch"  # a build without oneDNN
    assert cpu.fastest_matvec({"openblas": 20.0, "onednn": 20.5, "torch": 19.8}) == "torch"  # a tie: the plain model's kernel


def test_gemm_calibration_is_measured_once_cached_and_decides_each_band(tmp_path, monkeypatch):
    monkeypatch.setenv(cpu.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(cpu, "calibrate", lambda refresh=False: ("torch", {"torch": 1.0}, "stub"))
    measured = []
    rates = {"fp32_few_rows": {"onednn": 11.0, "torch": 4.0}, "fp32_gemm": {"onednn": 34.0, "torch": 40.0}}
    monkeypatch.setattr(cpu, "time_gemm_engines", lambda: measured.append(1) or rates)
    # the AVX2 EPYC's pattern: oneDNN wins the few rows and loses the GEMMs
    c = cpu.decide(AVX2)
    assert (c.fp32_few_rows, c.fp32_gemm, len(measured)) == ("onednn", "torch", 1)
    assert "onednn 34, torch 40" not in c.reasons["fp32_gemm"] and "torch 40, onednn 34" in c.reasons["fp32_gemm"]
    assert cpu.decide(AVX2).fp32_gemm == "torch" and len(measured) == 1  # cached
    (cached,) = tmp_path.glob("gemm-*.json")
    assert json.loads(cached.read_text())["gflop_per_s"] == rates
    cpu.calibrate_gemm(refresh=True)
    assert len(measured) == 2
    assert cpu.decide(dataclasses.replace(AVX2, onednn=False)).fp32_few_rows == "torch"  # no oneDNN in the build
    assert cpu.decide(AVX2, {"fp32_gemm": "onednn"}).fp32_gemm == "onednn"
    assert cpu.decide(AVX2, measure=False).fp32_gemm == "torch"  # unmeasured: the plain model's kernel


def test_onednn_must_beat_the_default_by_more_than_the_noise():
    assert cpu.fastest_gemm({"onednn": 41.0, "torch": 40.0}) == "torch"  # 2.5%: a tie goes to the plain model
    assert cpu.fastest_gemm({"onednn": 44.0, "torch": 40.0}) == "onednn"
    assert cpu.fastest_gemm({"torch": 40.0}) == "torch"


def test_the_gemm_timing_measures_both_engines_in_both_bands(monkeypatch):
    monkeypatch.setattr(cpu, "GEMM_SHAPES", {"fp32_few_rows": ((4, 64, 96),), "fp32_gemm": ((64, 64, 96), (96, 32, 64))})
    rates = cpu.time_gemm_engines(rounds=1)
    assert set(rates) == {"fp32_few_rows", "fp32_gemm"} and all(set(r) == {"onednn", "torch"} and min(r.values()) > 0 for r in rates.values())


def test_the_matvec_timing_measures_every_kernel():
    rates = cpu.time_matvec_kernels(megabytes=8, rounds=1)
    assert set(rates) <= set(cpu.MATVEC_KERNELS) and {"openblas", "torch"} <= set(rates)
    assert all(r > 0 for r in rates.values())


def test_info_prints_the_class_and_every_choice(capsys, monkeypatch):
    monkeypatch.setenv(cpu.FORCE_ENV, "matvec=torch,fp32_gemm=torch,fp32_few_rows=onednn")  # no calibration in the test
    monkeypatch.setattr(cpu, "_choices", None)
    monkeypatch.setattr(cpu, "_rules", None)
    from glm_asr.runtime import fastest  # its timings are tests/test_fastest.py's

    monkeypatch.setattr(fastest, "fast_path", lambda refresh=False: fastest.FastPath("int8", None, {"decoder": "measured", "audio": "measured"}))
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"class: {cpu.features().cpu_class}" in out
    for text in ("fp32 GEMMs (32+ rows)", "fp32 few rows (2-31)", "bf16:", "bf16 decode weights", "fp32 decode matvec: torch", "int8 activations", "int8 encoder GEMMs", "threads",
                 "--fast decoder: int8", "--fast audio path: fp32"):
        assert text in out
