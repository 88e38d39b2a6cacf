"""The benchmark is a tool, not a test: this only checks that its smoke run works and reports every field."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke(tmp_path):
    pytest.importorskip("tokenizers", reason="the benchmark's tokenizer.json is built with tokenizers")
    pytest.importorskip("onnxruntime", reason="the onnxruntime systems need onnxruntime")
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench.py"), "--smoke", "--systems", "ours,onnxruntime", "--dtypes", "fp32,int8,int8+int8audio,int4,int4-ort",
         "--cache", str(tmp_path / "cache"), "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    records = json.loads(out.read_text())["records"]
    assert [(r["system"], r["dtype"]) for r in records] == [("ours", "fp32"), ("ours", "int8"), ("ours", "int8+int8audio"), ("ours", "int4"),
                                                            ("ours", "int4-ort"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")], done.stderr
    from glm_asr.runtime import cpu

    assert all(r["cpu"]["class"] == cpu.features().cpu_class for r in records)  # a figure holds on its CPU class
    assert set(records[0]["cpu"]["choices"]) >= {"native_bf16", "matvec", "int8_reduce_range"} and records[0]["cpu"]["reasons"]
    for record in records:
        for key in ("system", "dtype", "load_s", "load_peak_rss_bytes", "encoder_s_per_window", "prefill_s", "decode_ms_per_token",
                    "rtf_30s_100tok", "bandwidth_gbs", "encoder_limit_s", "decode_vs_limit", "encoder_vs_limit", "tokens_equal_fraction"):
            assert key in record and record[key] is not None, (record["system"], record["dtype"], key)
    assert "decode ms/tok" in done.stdout and f"class {cpu.features().cpu_class}" in done.stdout
    assert all(r["decode_step_ms_8rows"] > 0 for r in records if r["system"] == "ours") and "a decode step of 8 rows" in done.stdout
    assert all(set(r["utterances"]) == {"5.0", "10.6"} and all(u["vs_limit"] > 0 for u in r["utterances"].values()) for r in records)
    assert "one 10.6 s utterance's pass" in done.stdout
    assert records[2]["encoder_arithmetic"] == {"products": "int8", "attention": "fp32", "convolutions": "fp32"}



def test_bulk_bench_smoke(tmp_path):
    out = tmp_path / "bulk.json"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "bench.py"), "--bulk", "--preset", "small", "--clips", "2", "--seconds", "2",
                           "--tokens", "3", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert record["identical"] is True and all(record[k] > 0 for k in ("single_s", "batched_s", "bound_s"))
    assert "audio s/s" in done.stdout and "files/h" in done.stdout

def _bench_module():  # tools/ is not a package: load the script as a module
    spec = importlib.util.spec_from_file_location("bench", ROOT / "tools" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rounds_merge_to_medians_and_keep_every_round():
    bench = _bench_module()
    rounds = [dict(system="ours", dtype="fp32", tokens=[i], **dict.fromkeys(bench.TIMINGS, v)) for i, v in enumerate((4.0, 1.0, 2.0))]
    record = bench.merge_rounds(rounds)
    assert record["rounds"] == 3 and record["tokens"] == [0]
    assert all(record[key] == 2.0 for key in bench.TIMINGS)
    assert record["per_round"]["decode_ms_per_token"] == [4.0, 1.0, 2.0]
    assert "per_round" not in bench.merge_rounds(rounds[:1])


def test_speedups_are_against_transformers_in_the_same_dtype_and_int8_against_fp32():
    bench = _bench_module()

    def record(system, dtype, decode):  # noqa: ANN001, ANN202
        return {"system": system, "dtype": dtype, "decode_ms_per_token": decode, "encoder_s_per_window": 10.0, "prefill_s": 5.0,
                "rtf_30s_100tok": 2.0}

    records = [record("ours", "fp32", 100.0), record("transformers", "fp32", 130.0), record("ours", "bf16", 90.0), record("ours", "int8", 50.0)]
    bench.add_speedups(records)
    ours_fp32, transformers, ours_bf16, ours_int8 = records
    assert ours_fp32["speedup_vs"] == "transformers fp32" and ours_fp32["speedup_vs_transformers"]["decode"] == 1.3
    assert ours_fp32["speedup_vs_transformers"]["end_to_end"] == 1.0
    assert ours_int8["speedup_vs"] == "transformers fp32" and ours_int8["speedup_vs_transformers"]["decode"] == 2.6
    assert "speedup_vs_transformers" not in transformers and "speedup_vs_transformers" not in ours_bf16  # no transformers bf16 ran


def test_a_failure_is_reported_by_its_error_line_not_a_warning_before_it(tmp_path):
    bench = _bench_module()
    stderr = "UserWarning: torchvision is not available\n  warnings.warn(\nTraceback (most recent call last):\n  File x\nMemoryError: out of memory\n"
    line = bench.failure_line(stderr, tmp_path / "logs" / "export.log")
    assert line.startswith("MemoryError: out of memory") and str(tmp_path / "logs" / "export.log") in line
    assert (tmp_path / "logs" / "export.log").read_text() == stderr


def test_the_audio_limit_counts_each_part_at_its_own_rate():
    """int8 audio: the linear layers at the int8 rate, attention and the convolutions at the fp32 rate."""
    bench = _bench_module()
    limits = {"matmul_gops_int8": 400.0, "matmul_gflops_fp32": 100.0, "matmul_gflops_bf16": 200.0}
    flops = {"products": 4e9, "attention": 1e9, "convolutions": 2e8}
    assert bench.audio_limit_s(flops, bench.AUDIO_ARITHMETIC["int8"], limits) == pytest.approx(0.01 + 0.01 + 0.002)
    assert bench.audio_limit_s(flops, bench.AUDIO_ARITHMETIC["bf16"], limits) == pytest.approx(5.2e9 / 200e9)
    full = bench.model_costs("full", 0)["encoder_flops_per_window"]
    assert 0.1 < full["attention"] / sum(full.values()) < 0.25  # a sixth of the full encoder's work: 1500 frames, 1280 wide


def test_kernel_bench_reports_every_row_count_and_form(tmp_path):
    out = tmp_path / "kernels.json"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "bench.py"), "--kernels", "--weights", "1", "--rounds", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert [int(r) for r in record["products_ms"]] == [1, 2, 4, 8, 16, 64, 389]
    assert all({"fp32 oneDNN", "bf16 widened", "int8", "int4"} <= set(forms) for forms in record["products_ms"].values())
    assert set(record["attention_ms_per_28_layers"]) == {"fp32 SDPA", "fp32 single_query_attention", "bf16 SDPA", "bf16 single_query_attention"}


@pytest.mark.parametrize("bad, named", [(["--weights", "0"], "--weights 0"), (["--rounds", "0"], "--rounds 0"),
                                        (["--threads", "-1"], "--threads -1"), (["--json", "/nonexistent/k.json"], "its folder does not exist")])
def test_kernel_bench_refuses_bad_values_before_measuring(bad, named):
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "bench.py"), "--kernels", *bad], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and named in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_limits_are_the_best_measured_and_never_below_what_a_system_reached():
    bench = _bench_module()
    measured = [{"threads": 2, "bandwidth_gbs": 12.8, "matmul_gflops_fp32": 45.0},  # taken while the machine was busy
                {"threads": 2, "bandwidth_gbs": 30.1, "matmul_gflops_fp32": 160.0}]
    ours = {"system": "ours", "dtype": "fp32", "decode_bytes_per_token": 6.0e9, "decode_ms_per_token": 300.0}  # 20 GB/s
    limits = bench.best_limits(measured, [ours])
    assert (limits["bandwidth_gbs"], limits["matmul_gflops_fp32"], limits["limit_measurements"]) == (30.1, 160.0, 2)
    assert limits["bandwidth_source"] == "measured"
    fast = dict(ours, system="transformers", decode_ms_per_token=150.0)  # 40 GB/s: above every measurement
    limits = bench.best_limits(measured, [ours, fast])
    assert limits["bandwidth_gbs"] == 40.0 and limits["bandwidth_source"] == "reached by transformers fp32 decode"
